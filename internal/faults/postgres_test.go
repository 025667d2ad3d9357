package faults

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/internal/pgtest"
)

// TestPostgresDownDuringOperations is scenario 4: the audit database is
// stopped while operators make their operations (rollbacks and promotions
// going on regardless, their events queued in etcd) and started again
// before they are done. Once it is back every audit event arrives, each
// exactly once, with nothing left in the outbox.
func TestPostgresDownDuringOperations(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := pgtest.Start(ctx, pgtest.Options{Local: true, Template: migrate})
	cancel()
	if err != nil {
		t.Fatalf("start a Postgres of its own: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close postgres: %v", err)
		}
	})
	e := newEnv(t, envOpts{db: srv.NewDatabase(t)})
	r1, r2 := e.replica("bot-1", replicaOpts{}), e.replica("bot-2", replicaOpts{})
	e.runRecovery(r1)
	e.startShipper(nil)

	total := int64(e.sz.pgOps)
	var made atomic.Int64
	operators := 4
	if e.sz.full {
		operators = 8
	}
	var wg sync.WaitGroup
	for i := range operators {
		o := e.operator(i, []*replica{r1, r2}[i%2], 4)
		wg.Go(func() {
			for made.Load() < total {
				if c := o.act(e.specs[o.rng.IntN(len(e.specs))].Route); c.Kind != kindRead {
					made.Add(1)
				}
			}
		})
	}
	waitFor := func(n int64) {
		for made.Load() < n {
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(total / 5)
	if err := srv.Stop(); err != nil {
		t.Fatalf("stop postgres: %v", err)
	}
	t.Logf("postgres stopped after %d operations", made.Load())
	waitFor(total * 7 / 10)
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	queued, err := e.countKeys(ctx, audit.Keys{Prefix: prefix}.Outbox())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("restart postgres: %v", err)
	}
	t.Logf("postgres restarted after %d operations, with %d audit events waiting in etcd", made.Load(), queued)
	if queued == 0 {
		t.Errorf("no audit event waited while Postgres was down: the scenario proves nothing")
	}
	e.waitCalls(&wg)
	e.settle()
	e.check()
}
