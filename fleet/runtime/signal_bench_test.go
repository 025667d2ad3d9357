package runtime

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// BenchmarkFlipToAllAcks measures, for 50 HTTP runtime instances (the
// reference receiver) with 200 requests in flight each, the time from the
// start of SignalRollback to the return of WaitAcks: every instance has
// answered the signal, the bot has written its ack, and the instance has
// reported its 200 re-issues through the bot's acks endpoint.
//
//	go test -run '^$' -bench BenchmarkFlipToAllAcks -benchtime 20x ./fleet/runtime/
func BenchmarkFlipToAllAcks(b *testing.B) {
	const instances, inflight = 50, 200
	c := etcdtest.Start(b).Client(b)
	const prefix = "/bench"
	bot := sigBot(b, c, prefix)
	var wg sync.WaitGroup
	for i := 0; i < instances; i++ {
		in := startSigInstance(b, &wg, bot.URL, fmt.Sprintf("wf-%02d", i), inflight, inflight)
		sigRegister(b, c, prefix, in.id, in.srv.URL)
	}
	flipper := newSigFlipper(b, c, prefix, "chat-70b")
	s := newTestSignaller(b, c, prefix, 30*time.Second)
	ctx := context.Background()
	var ms []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := flipper.rollback(b)
		b.StartTimer()
		start := time.Now()
		sig, err := s.SignalRollback(ctx, f.op, "chat-70b", f.epoch, f.from, f.to, f.rev)
		if err != nil {
			b.Fatal(err)
		}
		res, err := s.WaitAcks(ctx, sig)
		if err != nil {
			b.Fatal(err)
		}
		ms = append(ms, float64(time.Since(start).Microseconds())/1000)
		if !res.Complete || res.Acked != instances || res.Aborted != instances*inflight || res.Reissued != instances*inflight {
			b.Fatalf("result %+v", res)
		}
		b.StopTimer()
		wg.Wait()
		b.StartTimer()
	}
	b.StopTimer()
	sort.Float64s(ms)
	b.ReportMetric(ms[len(ms)/2], "p50-ms")
	b.ReportMetric(ms[len(ms)-1], "max-ms")
}
