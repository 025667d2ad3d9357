package commands

import (
	"context"
	"sort"
	"testing"
	"time"
)

// BenchmarkRollbackEndToEnd measures whole rollbacks through the use case
// on a simulated fleet with live traffic: 16 GPU nodes (real agents), 20
// routers (the reader library), 4 runtime instances (the SDK) each starting
// 50 multi-step requests a second. One sample is one Rollback call, from
// the call to its return: resolve, warm check of every node, flip, every
// router converged, every runtime acknowledged its aborts and re-issues,
// final audit event queued. Each rollback names its target (--to), going
// back and forth between v42 and v41.
//
//	go test -run '^$' -bench RollbackEndToEnd -benchtime 20x ./commands/
func BenchmarkRollbackEndToEnd(b *testing.B) {
	e := newFleetEnv(b, fleetOpts{nodes: 16, routers: 20, runtimes: 4, rps: 50})
	r := e.replica(b, "bench")
	ctx := context.Background()
	time.Sleep(500 * time.Millisecond) // traffic in flight
	var total []float64
	phases := map[Phase][]float64{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cur := e.route(b, "chat-70b")
		to := cur.Config.Previous
		start := time.Now()
		res, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "chat-70b", To: to, Reason: "bench", ExpectRev: cur.ModRevision}, nil)
		took := time.Since(start)
		if err != nil || res.Outcome != OutcomeCompleted {
			b.Fatalf("rollback %d: %v %s", i, err, res.Report())
		}
		total = append(total, float64(took.Microseconds())/1000)
		for _, t := range res.Timings {
			phases[t.Phase] = append(phases[t.Phase], float64(t.Took.Microseconds())/1000)
		}
	}
	b.StopTimer()
	b.ReportMetric(pct(total, 0.5), "p50-ms")
	b.ReportMetric(pct(total, 0.99), "p99-ms")
	for _, p := range []Phase{PhaseWarm, PhaseFlip, PhaseRouters, PhaseInFlight} {
		b.ReportMetric(pct(phases[p], 0.5), string(p)+"-p50-ms")
	}
}

// pct is the q-quantile of xs (nearest rank).
func pct(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
