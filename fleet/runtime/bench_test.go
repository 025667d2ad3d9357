package runtime_test

import (
	"testing"

	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// BenchmarkCheckpoint measures the per-step check of a request whose route
// has not changed: the cost every workflow step pays. Target ≤ 5 ns/op,
// 0 allocs. Run with:
//
//	go test -run '^$' -bench BenchmarkCheckpoint -benchmem ./fleet/runtime/
func BenchmarkCheckpoint(b *testing.B) {
	srv := etcdtest.Start(b)
	cli := srv.Client(b)
	d := &sdkRouteDriver{tb: b, s: routing.NewStore(cli, sdkPrefix, zap.NewNop())}
	d.change(routing.KindPromote, "v1")
	in := startSDKInstance(b, srv.Client(b), runtime.InstanceConfig{ID: "bench", Logger: zap.NewNop()})
	ctx := b.Context()

	b.Run("Serial", func(b *testing.B) {
		req, err := in.Begin(sdkRoute)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := req.Checkpoint(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		_ = req.Done()
	})

	b.Run("Parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			req, err := in.Begin(sdkRoute)
			if err != nil {
				b.Error(err)
				return
			}
			for pb.Next() {
				if err := req.Checkpoint(ctx); err != nil {
					b.Error(err)
					return
				}
			}
			_ = req.Done()
		})
	})
}
