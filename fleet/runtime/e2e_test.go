package runtime_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// TestRollbackEndToEnd puts the two halves together as the bot will: SDK
// instances with requests in flight on v42, a rollback through the routing
// store, then the bot's Signaller waits for the acknowledgements. Every
// request in flight on v42 must abort and be re-issued on v41, and the
// totals the bot sees must say exactly that.
func TestRollbackEndToEnd(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	store := routing.NewStore(cli, sdkPrefix, zap.NewNop())
	ctx := sdkCtx(t)
	first, err := store.Promote(ctx, routing.Change{Route: sdkRoute, To: "v42", Op: "op-create", Actor: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Promote(ctx, routing.Change{Route: sdkRoute, To: "v41", ExpectRev: first.Revision, Op: "op-v41", Actor: "t"}); err != nil {
		t.Fatal(err)
	}
	cur, err := store.Get(ctx, sdkRoute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Promote(ctx, routing.Change{Route: sdkRoute, To: "v42", ExpectRev: cur.ModRevision, Seen: &cur, Op: "op-v42", Actor: "t"}); err != nil {
		t.Fatal(err)
	}

	const instances, perInstance = 3, 20
	var started sync.WaitGroup
	started.Add(instances * perInstance)
	var finished sync.WaitGroup
	type outcome struct {
		version  string
		attempts int
		err      error
	}
	outcomes := make(chan outcome, instances*perInstance)
	for i := 0; i < instances; i++ {
		in := startSDKInstance(t, srv.Client(t), runtime.InstanceConfig{ID: fmt.Sprintf("wf-%d", i)})
		for j := 0; j < perInstance; j++ {
			finished.Add(1)
			go func() {
				defer finished.Done()
				var once sync.Once
				var last string
				attempts, err := runtime.Run(ctx, in, sdkRoute, 3, func(ctx context.Context, req *runtime.Request) error {
					last = req.Version()
					if req.Version() == "v42" {
						once.Do(started.Done)
						for {
							if err := req.Checkpoint(ctx); err != nil {
								return err
							}
							time.Sleep(2 * time.Millisecond)
						}
					}
					return req.Done()
				})
				outcomes <- outcome{last, attempts, err}
			}()
		}
	}
	started.Wait()
	// The bot waits for the instances registered before the flip; make sure
	// all three are (registration runs beside the reader's start).
	sdkEventually(t, "three instances registered", func() bool {
		resp, err := cli.Get(ctx, runtime.Keys{Prefix: sdkPrefix}.Instances(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == instances
	})

	cur, err = store.Get(ctx, sdkRoute)
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.Flip(ctx, routing.Change{Route: sdkRoute, Kind: routing.KindRollback, To: "v41",
		ExpectRev: cur.ModRevision, Seen: &cur, Op: "op-rollback", Actor: "t", Reason: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: cli, Prefix: sdkPrefix, Secret: []byte("s"),
		AckTimeout: 20 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	signal, err := sig.SignalRollback(ctx, res.Config.Op, sdkRoute, res.Config.Epoch, "v42", "v41", res.Revision)
	if err != nil {
		t.Fatal(err)
	}
	result, err := sig.WaitAcks(ctx, signal)
	if err != nil {
		t.Fatal(err)
	}
	finished.Wait()
	close(outcomes)
	for o := range outcomes {
		if o.err != nil || o.version != "v41" || o.attempts != 2 {
			t.Errorf("request ended on %s after %d attempts: %v", o.version, o.attempts, o.err)
		}
	}
	want := instances * perInstance
	if !result.Complete || result.Expected != instances || result.Acked != instances ||
		result.Aborted != want || result.Reissued != want || result.InFlight < want ||
		len(result.Missing) != 0 || len(result.Vanished) != 0 {
		t.Fatalf("bot saw %+v; want %d instances, %d aborted and re-issued", result, instances, want)
	}
	t.Logf("%d aborted, %d re-issued, drained in %v", result.Aborted, result.Reissued, result.Drain)
}
