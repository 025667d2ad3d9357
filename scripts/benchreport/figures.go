package main

import (
	"math"
	"strings"
)

// figure is one line of the report: a benchmark's headline metric with the
// metrics shown beside it, what it is compared with, and its target.
type figure struct {
	// name is the figure, for a person; short is its README label.
	name, short string
	bench       string
	// head is the headline metric; shown lists what is printed (the
	// headline first, usually).
	head  string
	shown []part
	cmp   anchor
	tgt   *target
	// cmd reproduces the figure.
	cmd string
}

// part is one metric as printed: label, unit in the file, suffix printed,
// and a factor to print it in another unit (0: as is).
type part struct {
	label, unit, suffix string
	scale               float64
}

// pt is a part printed as it is in the file.
func pt(label, unit, suffix string) part { return part{label, unit, suffix, 0} }

// inMS prints an ns/op metric in milliseconds.
func inMS(label string) part { return part{label, "ns/op", " ms", 1e-6} }

// anchor is what a figure is judged against: a floor measured in the same
// run (bench and unit, with the ratio taken from ratioUnit when the
// benchmark reports it, else computed), or fixed values (ms) such as the
// runbook's 90 s.
type anchor struct {
	text        string
	bench, unit string
	ratioUnit   string
	fixed       []fixedAnchor
	// floors, when set, is a floor made of parts measured by other
	// benchmarks of the same run (each one's median, added up), printed
	// before the fixed anchors.
	floors *floorSum
}

// floorSum is a floor added up from other benchmarks' floors.
type floorSum struct {
	text  string
	parts []floorPart
}

type floorPart struct{ label, bench, unit string }

type fixedAnchor struct {
	text string
	// value, and hi for a range (0: none), in the headline's unit.
	value, hi float64
}

// target is a bound on a metric (the headline's unless unit is set).
type target struct {
	text  string
	unit  string
	max   float64
	exact bool // the metric must equal max (0 allocs)
	also  *target
}

func (t *target) check(r *results, f figure) (ok, known bool) {
	unit := t.unit
	if unit == "" {
		unit = f.head
	}
	s, found := r.stat(f.bench, unit)
	if !found {
		return false, false
	}
	if t.exact {
		ok = s.med == t.max
	} else {
		ok = s.med <= t.max
	}
	if t.also != nil {
		ok2, known2 := t.also.check(r, f)
		return ok && ok2, known2
	}
	return ok, true
}

const (
	e2eBig   = "BenchmarkRollbackEndToEnd/nodes=1000,routers=1000,runtimes=50,inflight=10000"
	e2eProcs = "BenchmarkRollbackEndToEnd/nodes=1000,routers=1000,router-processes=10,runtimes=50,inflight=10000"
	e2eSmall = "BenchmarkRollbackEndToEnd/nodes=16,routers=20,runtimes=4,inflight=200"
	runbook  = 90_000.0 // ms
)

var coldStart = []fixedAnchor{
	{"manual runbook rollback, 90 s", runbook, 0},
	{"70B cold start, 2–10 min", 120_000, 600_000},
}

// figures lists the report's figures, in the order.
func figures() []figure {
	var fs []figure
	fs = append(fs,
		figure{
			name: "Request-boundary check `Valid(ticket)`, per request", short: "request-boundary check",
			bench: "BenchmarkRequestBoundaryCheck/Valid", head: "ns/op",
			shown: []part{pt("", "ns/op", " ns/op"), pt("", "allocs/op", " allocs/op")},
			cmp:   anchor{text: "atomic pointer load + compare (same run)", bench: "BenchmarkRequestBoundaryCheck/FloorAtomicLoad", unit: "ns/op"},
			tgt:   &target{text: "≤ 2 ns, 0 allocs", max: 2, also: &target{unit: "allocs/op", max: 0, exact: true}},
			cmd:   "go test -run '^$' -bench RequestBoundaryCheck -benchmem ./fleet/routing/",
		},
		figure{
			name: "`Valid(ticket)` from every core at once", short: "request-boundary check, parallel",
			bench: "BenchmarkRequestBoundaryCheck/ValidParallel", head: "ns/op",
			shown: []part{pt("", "ns/op", " ns/op"), pt("", "allocs/op", " allocs/op")},
			cmp:   anchor{text: "atomic pointer load + compare (same run)", bench: "BenchmarkRequestBoundaryCheck/FloorAtomicLoad", unit: "ns/op"},
			cmd:   "go test -run '^$' -bench RequestBoundaryCheck -benchmem ./fleet/routing/",
		},
		figure{
			name: "`Ticket(route)` at request start", short: "ticket at request start",
			bench: "BenchmarkRequestBoundaryCheck/Ticket", head: "ns/op",
			shown: []part{pt("", "ns/op", " ns/op"), pt("", "allocs/op", " allocs/op")},
			cmd:   "go test -run '^$' -bench RequestBoundaryCheck -benchmem ./fleet/routing/",
		},
		figure{
			name: "Runtime `Checkpoint` on an unchanged route", short: "runtime checkpoint",
			bench: "BenchmarkCheckpoint/Serial", head: "ns/op",
			shown: []part{pt("", "ns/op", " ns/op"), pt("", "allocs/op", " allocs/op")},
			tgt:   &target{text: "≤ 5 ns, 0 allocs", max: 5, also: &target{unit: "allocs/op", max: 0, exact: true}},
			cmd:   "go test -run '^$' -bench Checkpoint -benchmem ./fleet/runtime/",
		},
	)
	for _, t := range []struct{ sub, topo, samples string }{
		{"routers=1000,clients=1000", "1000 routers, one etcd client (gRPC connection) each", "30x"},
		{"routers=1000,clients=10", "1000 routers as 10 processes × 100 (one connection each)", "30x"},
		{"routers=5000,clients=50", "5000 routers as 50 processes × 100 (one connection each)", "10x"},
	} {
		n := strings.TrimPrefix(strings.Split(t.sub, ",")[0], "routers=")
		cmd := "go test -run '^$' -bench 'FlipToLastWatcher/" + t.sub + "' -benchtime " + t.samples + " ./fleet/routing/"
		fs = append(fs,
			figure{
				name: "Flip → last router applied (reader-apply), " + t.topo, short: "flip → last of " + n + " routers applied (" + strings.ReplaceAll(t.sub, ",", ", ") + ")",
				bench: "BenchmarkFlipToLastWatcher/" + t.sub, head: "reader-p50-ms",
				shown: []part{pt("p50 ", "reader-p50-ms", " ms"), pt("p99 ", "reader-p99-ms", " ms")},
				cmp:   anchor{text: "raw etcd watch fan-out, same clients, same run", bench: "BenchmarkFlipToLastWatcher/" + t.sub, unit: "raw-p50-ms", ratioUnit: "ratio"},
				tgt:   &target{text: "≤ 1.2× raw", unit: "ratio", max: 1.2},
				cmd:   cmd,
			},
			figure{
				name: "Flip → every router's record seen by the bot (bot-observed convergence), " + t.topo, short: "flip → bot saw " + n + " routers converged (" + strings.ReplaceAll(t.sub, ",", ", ") + ")",
				bench: "BenchmarkFlipToLastWatcher/" + t.sub, head: "bot-p50-ms",
				shown: []part{pt("p50 ", "bot-p50-ms", " ms"), pt("p99 ", "bot-p99-ms", " ms")},
				cmp:   anchor{text: "raw watch + raw acknowledgement put, watched back (same run)", bench: "BenchmarkFlipToLastWatcher/" + t.sub, unit: "raw-acked-p50-ms", ratioUnit: "bot-ratio"},
				tgt:   &target{text: "p99 within ROUTER_CONVERGE_TIMEOUT (5 s)", unit: "bot-p99-ms", max: 5000},
				cmd:   cmd,
			},
		)
	}
	fs = append(fs,
		figure{
			name: "Warm check across 1000 agents, all healthy", short: "warm check, 1000 agents",
			bench: "BenchmarkWarmCheck/all-healthy", head: "p50-ms",
			shown: []part{pt("p50 ", "p50-ms", " ms"), pt("p99 ", "p99-ms", " ms"), pt("heap +", "peak-heap-MB", " MB")},
			cmp:   anchor{text: "the same 1000 GETs alone (same run)", bench: "BenchmarkWarmCheck/all-healthy", unit: "floor-p50-ms", ratioUnit: "x-floor"},
			tgt:   &target{text: "p50 ≤ 150 ms", max: 150},
			cmd:   "go test -run '^$' -bench WarmCheck -benchtime 30x ./fleet/warm/",
		},
		figure{
			name: "Warm check across 1000 agents, 5% hung", short: "warm check, 1000 agents, 5% hung",
			bench: "BenchmarkWarmCheck/5pct-hung", head: "p99-ms",
			shown: []part{pt("p50 ", "p50-ms", " ms"), pt("p99 ", "p99-ms", " ms")},
			cmp:   anchor{fixed: []fixedAnchor{{"WARM_TIMEOUT, 2 s", 2000, 0}}},
			tgt:   &target{text: "ends at WARM_TIMEOUT: p99 ≤ 2.1 s", max: 2100},
			cmd:   "go test -run '^$' -bench WarmCheck -benchtime 30x ./fleet/warm/",
		},
	)
	// The phases' floors, measured by the fan-out benchmarks of the same
	// run: the warm check's 1000 GETs alone, and the raw round trip to the
	// routers (a raw watch event to every router, each putting an
	// acknowledgement that the writer watches back).
	floorsFor := func(clients string) *floorSum {
		return &floorSum{text: "the warm and routers phases' raw floors (same run)", parts: []floorPart{
			{"1000 GETs", "BenchmarkWarmCheck/all-healthy", "floor-p50-ms"},
			{"raw watch-and-ack round trip", "BenchmarkFlipToLastWatcher/routers=1000,clients=" + clients, "raw-acked-p50-ms"},
		}}
	}
	for _, v := range []struct {
		size, label, sub, short string
		floors                  *floorSum
		main                    bool
	}{
		{e2eBig, "1000 GPU nodes, 1000 routers (one process, so one etcd connection, each), 50 runtimes, 10,000 requests in flight", "postgres=up",
			"rollback end to end, 1000 nodes/routers, 50 runtimes, 10k in flight", floorsFor("1000"), true},
		{e2eBig, "1000 GPU nodes, 1000 routers (one process each), 50 runtimes, 10,000 requests in flight, Postgres down", "postgres=down",
			"rollback end to end, 1000 nodes/routers, 50 runtimes, 10k in flight, Postgres down", floorsFor("1000"), true},
		{e2eProcs, "1000 GPU nodes, 1000 routers as 10 router processes × 100 (10 etcd connections), 50 runtimes, 10,000 requests in flight", "postgres=up",
			"rollback end to end, 1000 nodes, 1000 routers as 10 processes × 100, 50 runtimes, 10k in flight", floorsFor("10"), true},
		{e2eSmall, "16 nodes, 20 routers, 4 runtimes, 200 in flight", "postgres=up",
			"rollback end to end, 16 nodes, 20 routers, 4 runtimes", nil, false},
	} {
		short := v.short
		f := figure{
			name:  "Rollback end to end without the runtime's re-issue work (command → routers converged → abort acks → audit queued), " + v.label,
			short: short, bench: v.size + "/" + v.sub, head: "p50-ms",
			shown: []part{pt("p50 ", "p50-ms", " ms"), pt("p99 ", "p99-ms", " ms")},
			cmp:   anchor{fixed: coldStart, floors: v.floors},
			cmd:   "go test -run '^$' -bench 'RollbackEndToEnd/" + strings.TrimPrefix(v.size, "BenchmarkRollbackEndToEnd/") + "' -benchtime 20x -timeout 60m ./commands/",
		}
		if v.main {
			f.tgt = &target{text: "p50 ≤ 250 ms", max: 250}
		}
		fs = append(fs, f)
		full := f
		full.name = "The same rollback in full, until every runtime reported its re-issued requests done (" + v.label + ")"
		full.short = short + ", re-issues included"
		full.head = "full-p50-ms"
		full.shown = []part{pt("p50 ", "full-p50-ms", " ms"), pt("p99 ", "full-p99-ms", " ms"), pt("phases p50: warm ", "warm-p50-ms", " ms"),
			pt("flip ", "flip-p50-ms", " ms"), pt("routers ", "routers-p50-ms", " ms"), pt("abort acks at ", "abort-acked-p50-ms", " ms"),
			pt("in-flight ", "inflight-p50-ms", " ms"), pt("audit ", "audit-p50-ms", " ms"), pt("in flight ", "inflight/op", ""),
			pt("aborted and re-issued ", "aborted/op", " per rollback"), pt("audit events waiting ", "audit-backlog", ""),
			pt("rollbacks refused ", "refused", ""), pt("degraded ", "degraded", "")}
		full.tgt = nil
		full.cmp.floors = nil // the floors leave out the re-issues
		fs = append(fs, full)
	}
	fs = append(fs,
		figure{
			name: "Bot replica memory after the rollbacks at 1000 nodes/routers, 50 runtimes (its own process)", short: "bot memory at that size",
			bench: e2eBig + "/postgres=up", head: "bot-heap-MB",
			shown: []part{pt("heap in use ", "bot-heap-MB", " MB"), pt("peak heap ", "bot-peak-heap-MB", " MB"), pt("peak RSS ", "bot-rss-MB", " MB")},
			cmd:   "go test -run '^$' -bench 'RollbackEndToEnd/nodes=1000,routers=1000,runtimes/postgres=up' -benchtime 20x -timeout 60m ./commands/",
		},
		figure{
			name: "Agent memory, one node with 2 inference servers", short: "agent memory, 2 servers",
			bench: "BenchmarkAgentMemory/servers=2", head: "agent-heap-MB",
			shown: []part{pt("heap in use ", "agent-heap-MB", " MB"), pt("", "agent-goroutines", " goroutines"), inMS("fresh warm round ")},
			cmd:   "go test -run '^$' -bench AgentMemory -benchtime 200x ./fleet/agent/",
		},
		figure{
			name: "Agent memory, one node with 8 inference servers", short: "agent memory, 8 servers",
			bench: "BenchmarkAgentMemory/servers=8", head: "agent-heap-MB",
			shown: []part{pt("heap in use ", "agent-heap-MB", " MB"), pt("", "agent-goroutines", " goroutines"), inMS("fresh warm round ")},
			cmd:   "go test -run '^$' -bench AgentMemory -benchtime 200x ./fleet/agent/",
		},
		figure{
			name: "etcd steady state with that fleet (1000 agents, 1000 routers, 50 runtimes with 10,000 in flight; no rollback): revisions", short: "etcd revisions, steady state",
			bench: e2eBig + "/etcd-steady-state", head: "revs/s",
			shown: []part{pt("", "revs/s", " revisions/s")},
			cmd:   "go test -run '^$' -bench 'RollbackEndToEnd/nodes=1000,routers=1000,runtimes/etcd-steady-state' -benchtime 20x -timeout 60m ./commands/",
		},
		figure{
			name: "etcd steady state with that fleet: growth per hour (measured over the window, extrapolated)", short: "etcd growth per hour, steady state",
			bench: e2eBig + "/etcd-steady-state", head: "write-MB/h",
			shown: []part{pt("written ", "write-MB/h", " MB/h"), pt("db file ", "db-MB/h", " MB/h"), pt("db in use ", "db-inuse-MB/h", " MB/h"), pt("db at the end ", "db-MB", " MB")},
			cmd:   "go test -run '^$' -bench 'RollbackEndToEnd/nodes=1000,routers=1000,runtimes/etcd-steady-state' -benchtime 20x -timeout 60m ./commands/",
		},
		figure{
			name: "Slack slash-command ack, signed HTTP on loopback, real Bot handler (/rollback → pre-flight card started)", short: "Slack ack, real handler",
			bench: "BenchmarkSlashAckBot", head: "p99-ms",
			shown: []part{pt("p50 ", "p50-ms", " ms"), pt("p99 ", "p99-ms", " ms")},
			cmp:   anchor{text: "the same round trip to a handler that only writes the reply (same run)", bench: "BenchmarkSlashAckFloor", unit: "p99-ms"},
			tgt:   &target{text: "p99 ≤ 50 ms (Slack's limit: 3 s)", max: 50},
			cmd:   "go test -run '^$' -bench SlashAck -benchtime 2000x ./bot/",
		},
		figure{
			name: "Slack slash-command ack, transport only (signature, timestamp, form, reply)", short: "Slack ack, transport",
			bench: "BenchmarkSlashAck", head: "p99-ms",
			shown: []part{pt("p50 ", "p50-ms", " ms"), pt("p99 ", "p99-ms", " ms")},
			cmp:   anchor{text: "the same round trip to a handler that only writes the reply (same run)", bench: "BenchmarkSlashAckFloor", unit: "p99-ms"},
			tgt:   &target{text: "p99 ≤ 50 ms", max: 50},
			cmd:   "go test -run '^$' -bench SlashAck -benchtime 2000x ./bot/",
		},
		figure{
			name: "Signal → all acks, 50 HTTP runtimes × 200 in flight (re-issue reports included)", short: "runtime signal → all acks, 50 HTTP runtimes",
			bench: "BenchmarkFlipToAllAcks", head: "p50-ms",
			shown: []part{pt("p50 ", "p50-ms", " ms"), pt("max ", "max-ms", " ms")},
			cmd:   "go test -run '^$' -bench FlipToAllAcks -benchtime 30x ./fleet/runtime/",
		},
		figure{
			name: "Audit shipping, etcd outbox → Postgres (5000 events queued)", short: "audit shipping throughput",
			bench: "BenchmarkShipper/Throughput", head: "events/s",
			shown: []part{pt("", "events/s", " events/s")},
			cmd:   "go test -run '^$' -bench Shipper -benchtime 3x ./audit/",
		},
		figure{
			name: "Audit lag, outbox write → row visible (steady state)", short: "audit lag",
			bench: "BenchmarkShipper/Lag", head: "p50_ms",
			shown: []part{pt("p50 ", "p50_ms", " ms"), pt("p95 ", "p95_ms", " ms")},
			cmd:   "go test -run '^$' -bench Shipper -benchtime 3x ./audit/",
		},
	)
	return fs
}

// measured prints a figure's metrics, or "not run".
func (f figure) measured(r *results) (string, bool) {
	var parts []string
	for _, p := range f.shown {
		if s, ok := r.stat(f.bench, p.unit); ok {
			parts = append(parts, p.label+s.scaled(p.scale).show(p.suffix))
		}
	}
	if len(parts) == 0 {
		return "not run", false
	}
	return strings.Join(parts, ", "), true
}

// against prints what the figure is compared with and the ratio.
func (f figure) against(r *results) (anchorText, ratio string) {
	a := f.cmp
	head, haveHead := r.stat(f.bench, f.head)
	switch {
	case a.bench != "":
		floor, ok := r.stat(a.bench, a.unit)
		if !ok {
			return a.text + ": not run", "—"
		}
		anchorText = a.text + ": " + floor.show(unitSuffix(a.unit))
		if a.ratioUnit != "" {
			if s, ok := r.stat(f.bench, a.ratioUnit); ok {
				return anchorText, s.show("×")
			}
		}
		if haveHead && floor.med > 0 {
			return anchorText, num(head.med/floor.med) + "×"
		}
		return anchorText, "—"
	case len(a.fixed) > 0:
		var texts, ratios []string
		if fs := a.floors; fs != nil {
			var sum float64
			var shown []string
			all := true
			for _, p := range fs.parts {
				st, ok := r.stat(p.bench, p.unit)
				if !ok {
					all = false
					break
				}
				sum += st.med
				shown = append(shown, p.label+" "+num(st.med)+" ms")
			}
			if all {
				texts = append(texts, fs.text+": "+num(sum)+" ms ("+strings.Join(shown, " + ")+")")
				if haveHead && sum > 0 {
					ratios = append(ratios, num(head.med/sum)+"×")
				}
			} else {
				texts = append(texts, fs.text+": not run")
			}
		}
		for _, fx := range a.fixed {
			texts = append(texts, fx.text)
			if !haveHead {
				continue
			}
			ratio := fraction(head.med / fx.value)
			if fx.hi > 0 {
				ratio += "–" + fraction(head.med/fx.hi)
			}
			ratios = append(ratios, ratio)
		}
		if len(ratios) == 0 {
			return strings.Join(texts, "; "), "—"
		}
		return strings.Join(texts, "; "), strings.Join(ratios, "; ")
	}
	return "—", "—"
}

// fraction prints a ratio, one below 1 as "1/n".
func fraction(x float64) string {
	if x >= 1 || x <= 0 {
		return num(x) + "×"
	}
	return "1/" + num(math.Round(1/x))
}

func unitSuffix(unit string) string {
	switch {
	case strings.HasSuffix(unit, "-ms"), strings.HasSuffix(unit, "_ms"):
		return " ms"
	case unit == "ns/op":
		return " ns/op"
	}
	return " " + unit
}

func (f figure) verdict(r *results) string {
	if f.tgt == nil {
		return "reported"
	}
	ok, known := f.tgt.check(r, f)
	switch {
	case !known:
		return "not run"
	case ok:
		return "✅ met"
	}
	return "❌ missed"
}
