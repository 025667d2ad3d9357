package faults

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// TestCompactionDuringWatches is scenario 3: etcd's history is compacted
// to the current revision, again and again, while the routers, the
// runtimes and the audit shipper watch it and operators flip routes. Now
// and then the fleet and the shipper (which reach etcd through links) are
// partitioned off while routes change, the history is compacted past what
// their watches have seen, and their connections are cut: their watches
// cannot resume where they were and must recover by reading everything
// again. Every reader ends on every route's last epoch having only moved
// forward; no request passes Done on a version rolled away from; no audit
// event is lost or doubled.
func TestCompactionDuringWatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{linkFleet: true})
	r1, r2 := e.replica("bot-1", replicaOpts{}), e.replica("bot-2", replicaOpts{})
	// The driver changes a route while the watchers are cut off; it waits
	// for them only briefly, since they cannot answer then.
	driver := e.replica("bot-driver", replicaOpts{converge: 300 * time.Millisecond, acks: 300 * time.Millisecond})
	e.runRecovery(r1)
	e.startShipper(e.linkEndpoints())

	// The compactor: to the current revision, every 200 ms.
	ctx, cancel := context.WithCancel(context.Background())
	var compactions int
	var last int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			if rev, err := e.compact(cctx); err == nil && rev > last {
				compactions++
				last = rev
			}
			ccancel()
		}
	})
	defer func() { cancel(); wg.Wait() }()

	stop := e.operate(4, []*replica{r1, r2}, 3, nil)
	defer stop()
	// A cut episode needs a route to change twice while the watchers are
	// cut off, before the agents' node leases (10 s, kept alive through the
	// links) run out and nothing can change any more; one that does not
	// make it in time is healed and tried again.
	done := 0
	for k := 0; done < e.sz.compactionCuts; k++ {
		if k == 3*e.sz.compactionCuts {
			t.Fatalf("only %d of %d cuts had a route change twice while the watchers were cut off", done, e.sz.compactionCuts)
		}
		time.Sleep(time.Second)
		// The background operators wait while the driver changes a route
		// (their conflicts would only slow it down).
		e.hold.Store(true)
		for _, l := range e.links {
			l.Partition()
		}
		// What the routers have applied once the partition holds (a
		// change already on its way is delivered or held by then).
		time.Sleep(200 * time.Millisecond)
		before := e.routersAt()
		// A route changes at least twice past what any router has, so
		// that a router's watch resuming where it was would have to
		// deliver an epoch the compaction removes.
		route := e.specs[k%len(e.specs)].Route
		deadline := time.Now().Add(5 * time.Second)
		for e.epochs()[route] < before[route]+2 && time.Now().Before(deadline) {
			if c := e.flipOnce(driver, 15, route); c != nil && c.Err != nil {
				t.Logf("driver: %s", c)
			}
		}
		achieved := e.epochs()[route] >= before[route]+2
		rev := int64(0)
		if achieved {
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			var err error
			rev, err = e.compact(cctx)
			ccancel()
			if err != nil {
				t.Fatalf("compact: %v", err)
			}
			done++
		}
		for _, l := range e.links {
			l.Cut()
			l.Heal()
		}
		e.hold.Store(false)
		if !achieved {
			t.Logf("cut %d: %s did not change twice in time; healed, trying again", k+1, route)
			continue
		}
		t.Logf("cut %d: routes went from epochs %v (the routers' highest) to %v while the watchers were cut off; history compacted to revision %d", k+1, before, e.epochs(), rev)
	}
	time.Sleep(time.Second)
	stop()
	cancel()
	wg.Wait()
	t.Logf("%d compactions", compactions)
	e.settle()
	e.check()

	// The cut-off watchers could not resume: they read everything again,
	// which shows as an epoch skipped by every router.
	for id, vs := range e.obs.Record().Routers {
		jumps := 0
		last := map[string]int64{}
		for _, v := range vs {
			if last[v.Route] != 0 && v.Epoch > last[v.Route]+1 {
				jumps++
			}
			last[v.Route] = v.Epoch
		}
		if jumps == 0 {
			t.Errorf("router %s never skipped an epoch: its watch was never compacted away", id)
		}
	}
}

// flipOnce reads route (a harness read: the revision an operator would
// pass) and changes it: a default rollback after a promotion, else a
// promotion of the previous version.
func (e *env) flipOnce(r *replica, i int, route string) *call {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seen, err := routing.NewStore(e.admin, prefix, nil).Get(ctx, route)
	if err != nil {
		e.t.Logf("read %s: %v", route, err)
		return nil
	}
	if seen.Config.Kind == routing.KindPromote {
		return e.change(r, i, kindRollback, route, "", seen.ModRevision, seen.Config.Epoch, nil)
	}
	return e.change(r, i, kindPromote, route, seen.Config.Previous, seen.ModRevision, seen.Config.Epoch, nil)
}

// routersAt returns, by route, the highest epoch any router has applied.
func (e *env) routersAt() map[string]int64 {
	out := map[string]int64{}
	for _, vs := range e.obs.Record().Routers {
		last := map[string]int64{}
		for _, v := range vs {
			last[v.Route] = v.Epoch
		}
		for route, ep := range last {
			out[route] = max(out[route], ep)
		}
	}
	return out
}

// epochs are the routes' current epochs, as the ground truth has seen
// them.
func (e *env) epochs() map[string]int64 {
	changes, _ := e.rec.snapshot()
	out := map[string]int64{}
	for route, cs := range changes {
		out[route] = cs[len(cs)-1].Config.Epoch
	}
	return out
}
