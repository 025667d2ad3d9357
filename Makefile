# backflip — the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCH ?= .
BENCH_COUNT ?= 3

.PHONY: build test bench lint run clean

build:
	$(GO) build -o bin/ ./cmd/...

# make test: vet, then every test under the race detector against a real
# etcd (embedded) and a real Postgres (a throwaway cluster from the local
# binaries, installed with apt when missing and running as root).
test:
	@if [[ "$$($(GO) env CGO_ENABLED)" != 1 ]]; then \
		echo "make test: the race detector needs cgo, and cgo a C compiler: install gcc and libc6-dev, or set CC" >&2; exit 1; \
	fi
	@pgbin=$$(bash scripts/ensure-postgres.sh) || exit 1; \
	set -x; \
	$(GO) vet ./... && \
	BACKFLIP_PG_BIN="$$pgbin" $(GO) test -race -count=1 -timeout 9m ./...

# make bench: the performance figures, written raw to bench.txt with the
# machine they ran on (benchstat reads it as is), and as a report with
# targets and verdicts to BENCHMARKS.md (scripts/benchreport). BENCH=regexp
# narrows them, BENCH_COUNT=n sets the runs of each (default 3, for
# benchstat); scripts/bench.sh lists the sample-count knobs. About half an
# hour on two cores with the defaults (10 minutes with BENCH_COUNT=1).
bench:
	@pgbin=$$(bash scripts/ensure-postgres.sh) || exit 1; \
	BACKFLIP_PG_BIN="$$pgbin" GO=$(GO) BENCH='$(BENCH)' BENCH_COUNT=$(BENCH_COUNT) bash scripts/bench.sh

# make faults: the fault suite in its full form (the issue's figures: 1000
# operations with Postgres down, 100 concurrent, a replica killed at the
# start and end of every phase, ...), 2 to 5 minutes on two cores; make
# test runs its bounded form. See internal/faults/doc.go.
.PHONY: faults
faults:
	@if [[ "$$($(GO) env CGO_ENABLED)" != 1 ]]; then \
		echo "make faults: the race detector needs cgo, and cgo a C compiler: install gcc and libc6-dev, or set CC" >&2; exit 1; \
	fi
	@pgbin=$$(bash scripts/ensure-postgres.sh) || exit 1; \
	set -x; \
	BACKFLIP_PG_BIN="$$pgbin" BACKFLIP_FAULTS=full $(GO) test -race -count=1 -timeout 30m -v -run . ./internal/faults

# make fuzz: every fuzz target, one at a time, FUZZTIME each (default 10s;
# FUZZ=regexp narrows them). A failing input is saved by Go under the
# package's testdata/fuzz/<Target>/ and becomes a seed plain go test runs.
.PHONY: fuzz
fuzz:
	@pgbin=$$(bash scripts/ensure-postgres.sh) || exit 1; \
	BACKFLIP_PG_BIN="$$pgbin" GO=$(GO) bash scripts/fuzz.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# make run: the whole system on this machine, state in .backflip/.
# (built, then run, so Ctrl-C reaches backflip directly and exits cleanly.)
# Its audit database is a Postgres started from the local binaries, found
# or installed as for make test; without them backflip dev still runs, says
# why there is no database, and keeps audit events queued in etcd.
run:
	@$(GO) build -o bin/backflip ./cmd/backflip
	@pgbin=$$(bash scripts/ensure-postgres.sh) || pgbin=; \
	exec env $${pgbin:+BACKFLIP_PG_BIN="$$pgbin"} ./bin/backflip dev

clean:
	rm -rf bin/ .backflip/ bench.txt
