#!/usr/bin/env bash
# bench.sh runs the performance benchmarks, writes them with the machine
# they ran on to bench.txt (raw go test -bench output: benchstat reads it as
# is) and generates BENCHMARKS.md from it (scripts/benchreport).
#   BENCH=regexp          which benchmarks (a go test -bench pattern; default: all)
#   BENCH_COUNT=n         runs of each, for benchstat (default 3)
#   FANOUT_SAMPLES=n      samples per run of the fan-out benchmarks (flips of
#                         1000 routers, warm checks, runtime signals; default 30)
#   FANOUT5000_SAMPLES=n  samples per run at 5000 routers (default 10)
#   E2E_SAMPLES=n         rollbacks per run of the end-to-end benchmark, and
#                         seconds of the etcd steady-state window (default 20)
#   ACK_SAMPLES=n         slash commands per run of the Slack ack benchmarks (default 2000)
#   BENCH_OUT, BENCH_REPORT   where to write (default bench.txt, BENCHMARKS.md)
#   BENCH_NOTE=text       a note for the report (e.g. what else ran on the machine)
# Benchmarks never run in make test: every go test here has -run '^$'.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
bench=${BENCH:-.}
count=${BENCH_COUNT:-3}
samples=${FANOUT_SAMPLES:-30}
samples5000=${FANOUT5000_SAMPLES:-10}
e2e=${E2E_SAMPLES:-20}
acks=${ACK_SAMPLES:-2000}
out=${BENCH_OUT:-bench.txt}
report=${BENCH_REPORT:-BENCHMARKS.md}
started=$(date +%s)

load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null; }

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then
	commit+=" (with uncommitted changes)"
fi
{
	echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "# commit: $commit"
	echo "# command: make bench BENCH='$bench' BENCH_COUNT=$count (FANOUT_SAMPLES=$samples FANOUT5000_SAMPLES=$samples5000 E2E_SAMPLES=$e2e ACK_SAMPLES=$acks)"
	echo "# go: $($GO version)"
	echo "# kernel: $(uname -srm)"
	echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//;s/ *$//')"
	echo "# cores: $(nproc)"
	echo "# ram: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo 2>/dev/null)"
	echo "# open files: $(ulimit -n)"
	echo "# load: $(load)"
	if [[ -n "${BENCH_NOTE:-}" ]]; then
		echo "# note: $BENCH_NOTE"
	fi
} >"$out"

# selected NAME: the -bench pattern that runs NAME's part of $bench, or
# nothing when $bench does not select NAME.
selected() {
	local name=$1 top=${1%%/*} sub="" want=${bench#^}
	want=${want#Benchmark}
	if [[ "$name" == */* ]]; then
		sub=${name#*/}
	fi
	if [[ "$bench" == "." || "$want" == "$top" || "$want" == "$top\$" ]]; then
		echo "$name"
	elif [[ "$want" == "$top/"* ]]; then
		local wsub=${want#"$top/"}
		if [[ -z "$sub" || "$sub" =~ $wsub || "$wsub" =~ $sub ]]; then
			echo "$bench"
		fi
	elif [[ "$top" =~ $bench ]]; then
		echo "$name"
	fi
}

# The benchmarks that set up a fleet (1000 etcd clients, 1000 agents, 50
# runtimes, a bot process, ...) report percentiles of their own samples, so
# they take a fixed number of iterations rather than letting the testing
# package scale b.N; the others run as usual. A failing benchmark does not
# stop the others: the report lists it, and bench.sh exits non-zero at the
# end.
fixed='FlipToLastWatcher|WarmCheck|FlipToAllAcks|Shipper|RollbackEndToEnd|SlashAck|AgentMemory'
failed=()
if ! $GO test -run '^$' -bench "$bench" -skip "$fixed" -benchmem -count "$count" -timeout 30m ./... | tee -a "$out"; then
	failed+=("$bench (without $fixed)")
fi
while read -r name pkg times timeout; do
	pattern=$(selected "$name")
	if [[ -n "$pattern" ]]; then
		echo "# load at $name: $(load)" >>"$out"
		if ! $GO test -run '^$' -bench "$pattern" -benchtime "${times}x" -count "$count" -timeout "$timeout" "$pkg" | tee -a "$out"; then
			failed+=("$pattern in $pkg")
		fi
	fi
done <<EOF
FlipToLastWatcher/routers=1000 ./fleet/routing/ $samples 30m
FlipToLastWatcher/routers=5000 ./fleet/routing/ $samples5000 60m
WarmCheck ./fleet/warm/ $samples 30m
FlipToAllAcks ./fleet/runtime/ $samples 30m
Shipper ./audit/ 3 30m
SlashAck ./bot/ $acks 30m
AgentMemory ./fleet/agent/ 200 30m
RollbackEndToEnd ./commands/ $e2e 120m
EOF
took=$(($(date +%s) - started))
{
	echo "# load at end: $(load)"
	echo "# took: $((took / 60)) min $((took % 60)) s"
	for f in "${failed[@]}"; do
		echo "# failed: $f"
	done
} >>"$out"
$GO run ./scripts/benchreport "$out" >"$report"
echo "bench.sh: wrote $out and $report in $((took / 60)) min $((took % 60)) s"
if ((${#failed[@]} > 0)); then
	printf 'bench.sh: failed: %s\n' "${failed[@]}" >&2
	exit 1
fi
