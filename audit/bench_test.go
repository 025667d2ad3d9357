package audit

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/google/uuid"
)

// BenchmarkShipper measures the shipper against a real embedded etcd and
// the package's throwaway Postgres:
//
//	go test -run '^$' -bench BenchmarkShipper -benchtime 3x ./audit/
//
// Throughput: 5000 single-event ops are pre-written to the outbox (not
// timed), then one shipper is started and timed until every row is in
// Postgres and the outbox is empty; events/s is reported.
//
// Lag: in steady state (shipper running, outbox empty), one event is written
// at a time and Postgres is polled every 0.5 ms until its row is visible;
// p50_ms and p95_ms of write-to-visible are reported.
func BenchmarkShipper(b *testing.B) {
	b.Run("Throughput", func(b *testing.B) {
		const events = 5000
		var total time.Duration
		for range b.N {
			b.StopTimer()
			cli := etcdtest.Start(b).Client(b)
			cfg := pg.NewDatabase(b)
			conn := mustConnect(b, cfg)
			prewrite(b, cli, events)
			s, reg := newShipper(b, cli, newLazyDB(b, cfg), nil)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.StartTimer()

			t0 := time.Now()
			go func() { done <- s.Run(ctx) }()
			for {
				if s.Backlog() == 0 {
					if rows, _ := rowCounts(b, conn); rows == events {
						break
					}
				}
				time.Sleep(time.Millisecond)
			}
			total += time.Since(t0)

			b.StopTimer()
			cancel()
			<-done
			_ = reg
			b.StartTimer()
		}
		b.ReportMetric(float64(events*b.N)/total.Seconds(), "events/s")
	})

	b.Run("Lag", func(b *testing.B) {
		const samples = 200
		cli := etcdtest.Start(b).Client(b)
		cfg := pg.NewDatabase(b)
		conn := mustConnect(b, cfg)
		s, reg := newShipper(b, cli, newLazyDB(b, cfg), nil)
		r := start(b, s, reg)
		defer r.stop(b)
		rec := newRecorder(b, cli)
		ctx := context.Background()
		var lags []time.Duration
		b.ResetTimer()
		for range b.N {
			for range samples {
				e := shipEvent(uuid.New(), 0, time.Now())
				t0 := time.Now()
				rec.put(ctx, 0, e)
				for {
					var n int
					if err := conn.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE event_id = $1`, e.EventID).Scan(&n); err != nil {
						b.Fatal(err)
					}
					if n == 1 {
						break
					}
					time.Sleep(500 * time.Microsecond)
				}
				lags = append(lags, time.Since(t0))
			}
		}
		b.StopTimer()
		slices.Sort(lags)
		ms := func(q float64) float64 {
			return float64(lags[int(q*float64(len(lags)-1))]) / float64(time.Millisecond)
		}
		b.ReportMetric(ms(0.50), "p50_ms")
		b.ReportMetric(ms(0.95), "p95_ms")
		b.ReportMetric(0, "ns/op")
	})
}
