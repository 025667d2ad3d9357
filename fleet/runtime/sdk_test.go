package runtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

const (
	sdkPrefix = "/backflip"
	sdkRoute  = "chat-70b"
)

func sdkCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func sdkEventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sdkRouteDriver changes the test route through the real Store.
type sdkRouteDriver struct {
	tb  testing.TB
	s   *routing.Store
	cur routing.Result
	n   int
}

func (d *sdkRouteDriver) change(kind routing.Kind, to string) routing.Result {
	d.tb.Helper()
	d.n++
	ch := routing.Change{Route: sdkRoute, Kind: kind, To: to, ExpectRev: d.cur.Revision,
		Op: fmt.Sprintf("op-%d-%s", d.n, kind), Actor: "test", Reason: "test"}
	res, err := d.s.Flip(sdkCtx(d.tb), ch)
	if err != nil {
		d.tb.Fatalf("%s to %s: %v", kind, to, err)
	}
	d.cur = res
	return res
}

// sdkApplied records, per epoch, the sequence number at which an instance
// finished applying it (the same counter numbers the Done calls).
type sdkApplied struct {
	seq *atomic.Int64
	mu  sync.Mutex
	at  map[int64]int64
}

func (a *sdkApplied) hook(v routing.View) {
	s := a.seq.Add(1)
	a.mu.Lock()
	a.at[v.Epoch] = s
	a.mu.Unlock()
}

func (a *sdkApplied) get(epoch int64) (int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.at[epoch]
	return s, ok
}

func startSDKInstance(tb testing.TB, cli *clientv3.Client, cfg runtime.InstanceConfig) *runtime.Instance {
	tb.Helper()
	cfg.Client, cfg.Prefix = cli, sdkPrefix
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel))
	}
	in, err := runtime.NewInstance(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	in.Start(context.Background())
	tb.Cleanup(in.Close)
	if err := in.WaitReady(sdkCtx(tb)); err != nil {
		tb.Fatal(err)
	}
	return in
}

func readAck(tb testing.TB, cli *clientv3.Client, op, id string) (runtime.AckRecord, bool) {
	tb.Helper()
	resp, err := cli.Get(sdkCtx(tb), runtime.Keys{Prefix: sdkPrefix}.Ack(op, id))
	if err != nil {
		tb.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return runtime.AckRecord{}, false
	}
	var rec runtime.AckRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		tb.Fatal(err)
	}
	if resp.Kvs[0].Lease == 0 {
		tb.Errorf("ack %s/%s is not leased", op, id)
	}
	return rec, true
}

// waitAck waits for an instance's final ack (reissued set) and checks it.
func waitAck(tb testing.TB, cli *clientv3.Client, op, id string, inflight, aborted, reissued int, rev int64) {
	tb.Helper()
	var rec runtime.AckRecord
	sdkEventually(tb, "final ack of "+op+" by "+id, func() bool {
		var ok bool
		rec, ok = readAck(tb, cli, op, id)
		return ok && rec.Reissued != nil
	})
	if rec.InFlight != inflight || rec.Aborted != aborted || *rec.Reissued != reissued || rec.AppliedRev != rev {
		tb.Errorf("ack %s by %s = inflight %d aborted %d reissued %d applied_rev %d; want %d %d %d %d",
			op, id, rec.InFlight, rec.Aborted, *rec.Reissued, rec.AppliedRev, inflight, aborted, reissued, rev)
	}
}

// runOutcome is what one Run did.
type runOutcome struct {
	inst     int
	attempts int
	err      error
	versions []string // version of each attempt
	doneOn   string   // version Done succeeded on
	doneSeq  int64    // sequence number taken just before that Done
}

// loadRuns starts n Runs on each instance whose jobs step (checkpoint,
// sleep) until release is closed, then finish; the first racy of them on
// each instance instead finish after a few steps of their own, racing
// whatever change the test makes. started is done when every first attempt
// has begun.
func loadRuns(ctx context.Context, insts []*runtime.Instance, n, racy int, seq *atomic.Int64, release <-chan struct{}) (started, finished *sync.WaitGroup, out []*runOutcome) {
	started, finished = &sync.WaitGroup{}, &sync.WaitGroup{}
	for i, in := range insts {
		for k := range n {
			o := &runOutcome{inst: i}
			finishAt := -1
			if k < racy {
				finishAt = 2 + k%40
			}
			out = append(out, o)
			started.Add(1)
			finished.Add(1)
			go func() {
				defer finished.Done()
				first := true
				o.attempts, o.err = runtime.Run(ctx, in, sdkRoute, 3, func(ctx context.Context, req *runtime.Request) error {
					o.versions = append(o.versions, req.Version())
					if first {
						first = false
						started.Done()
					}
					for steps := 0; ; steps++ {
						if err := req.Checkpoint(ctx); err != nil {
							return err
						}
						ready := steps == finishAt
						select {
						case <-release:
							ready = ready || steps >= 2
						default:
						}
						if ready {
							{
								s := seq.Add(1)
								if err := req.Done(); err != nil {
									return err
								}
								o.doneOn, o.doneSeq = req.Version(), s
								return nil
							}
						}
						time.Sleep(time.Millisecond)
					}
				})
				if first {
					started.Done()
				}
			}()
		}
	}
	return started, finished, out
}

func TestSDKRollbackUnderLoad(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	d := &sdkRouteDriver{tb: t, s: routing.NewStore(cli, sdkPrefix, zap.NewNop())}
	d.change(routing.KindPromote, "v1")
	d.change(routing.KindPromote, "v2")

	const instances, perInstance, racy, shortOnes = 5, 100, 40, 5
	var seq atomic.Int64
	insts := make([]*runtime.Instance, instances)
	applied := make([]*sdkApplied, instances)
	for i := range insts {
		applied[i] = &sdkApplied{seq: &seq, at: map[int64]int64{}}
		insts[i] = startSDKInstance(t, srv.Client(t), runtime.InstanceConfig{
			ID: fmt.Sprintf("rt-%d", i), OnApply: applied[i].hook, RefreshEvery: 200 * time.Millisecond})
	}
	ctx := sdkCtx(t)
	waitApplied := func(epoch int64) {
		t.Helper()
		for i := range applied {
			sdkEventually(t, fmt.Sprintf("instance %d applies epoch %d", i, epoch), func() bool {
				_, ok := applied[i].get(epoch)
				return ok
			})
		}
	}

	t.Run("RollbackAbortsAndReissues", func(t *testing.T) {
		// Requests that finish before the rollback are not counted.
		for _, in := range insts {
			for range shortOnes {
				if _, err := runtime.Run(ctx, in, sdkRoute, 0, func(context.Context, *runtime.Request) error { return nil }); err != nil {
					t.Fatal(err)
				}
			}
		}
		release := make(chan struct{})
		started, finished, outs := loadRuns(ctx, insts, perInstance+racy, racy, &seq, release)
		started.Wait()
		time.Sleep(10 * time.Millisecond) // let some racy requests finish first
		res := d.change(routing.KindRollback, "v1")
		waitApplied(res.Config.Epoch)
		close(release)
		finished.Wait()

		reissued := make([]int, len(insts))
		finishedOld := 0
		for _, o := range outs {
			if o.err != nil {
				t.Fatalf("instance %d: run failed after %d attempts: %v", o.inst, o.attempts, o.err)
			}
			at, _ := applied[o.inst].get(res.Config.Epoch)
			switch {
			case o.attempts == 1 && o.doneOn == "v2":
				finishedOld++
				if o.doneSeq > at {
					t.Errorf("instance %d: a request passed Done on v2 after applying the rollback", o.inst)
				}
			case o.attempts == 2 && o.versions[0] == "v2" && o.versions[1] == "v1" && o.doneOn == "v1":
				reissued[o.inst]++
			default:
				t.Errorf("instance %d: attempts %d on %v, done on %s; want v2, or v2 then v1", o.inst, o.attempts, o.versions, o.doneOn)
			}
		}
		t.Logf("%d requests finished on v2 before their instance applied the rollback", finishedOld)
		for i, in := range insts {
			if reissued[i] < perInstance {
				t.Errorf("instance %d: %d re-issued; want at least the %d held requests", i, reissued[i], perInstance)
			}
			// Everything in flight at the rollback was on v2 and aborted.
			waitAck(t, cli, res.Config.Op, in.ID(), reissued[i], reissued[i], reissued[i], res.Revision)
		}
	})

	t.Run("PromotionAbortsNothing", func(t *testing.T) {
		release := make(chan struct{})
		started, finished, outs := loadRuns(ctx, insts, perInstance, 0, &seq, release)
		started.Wait()
		res := d.change(routing.KindPromote, "v3")
		waitApplied(res.Config.Epoch)
		close(release)
		finished.Wait()
		for _, o := range outs {
			if o.err != nil || o.attempts != 1 || o.doneOn != "v1" {
				t.Errorf("instance %d: attempts %d on %v, done on %q, err %v; want one attempt done on v1",
					o.inst, o.attempts, o.versions, o.doneOn, o.err)
			}
		}
		resp, err := cli.Get(ctx, runtime.Keys{Prefix: sdkPrefix}.Acks(res.Config.Op), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != 0 {
			t.Errorf("a promotion was acknowledged %d times; want none", resp.Count)
		}
	})

	t.Run("DrillThenReturnAborts", func(t *testing.T) {
		in := insts[0]
		// One request outside Run (aborted, then abandoned: nobody re-issues
		// it) and one inside Run.
		bare, err := in.Begin(sdkRoute)
		if err != nil {
			t.Fatal(err)
		}
		if bare.Version() != "v3" {
			t.Fatalf("pinned %s, want v3", bare.Version())
		}
		returned := make(chan struct{})
		type result struct {
			attempts int
			err      error
			versions []string
		}
		done := make(chan result, 1)
		began := make(chan struct{})
		go func() {
			var r result
			r.attempts, r.err = runtime.Run(ctx, in, sdkRoute, 3, func(ctx context.Context, req *runtime.Request) error {
				r.versions = append(r.versions, req.Version())
				if len(r.versions) == 1 {
					close(began)
					<-returned
				}
				return req.Checkpoint(ctx)
			})
			done <- r
		}()
		<-began
		drill := d.change(routing.KindDrill, "v1")
		back := d.change(routing.KindDrillReturn, "v3")
		waitApplied(back.Config.Epoch)
		close(returned)

		var rb *runtime.RolledBackError
		if err := bare.Checkpoint(ctx); !errors.As(err, &rb) || !errors.Is(err, runtime.ErrRolledBack) {
			t.Fatalf("checkpoint after drill and return = %v; want a rolled-back error", err)
		}
		if rb.Pinned != "v3" || rb.ReissueOn != "v3" {
			t.Errorf("rolled back from %s, re-issue on %s; want v3 and v3", rb.Pinned, rb.ReissueOn)
		}
		if err := bare.Done(); !errors.Is(err, runtime.ErrRolledBack) {
			t.Errorf("Done after the abort = %v; want the same rolled-back error", err)
		}
		r := <-done
		if r.err != nil || r.attempts != 2 || r.versions[1] != "v3" {
			t.Errorf("run: attempts %d on %v, err %v; want a second attempt on v3", r.attempts, r.versions, r.err)
		}
		waitAck(t, cli, drill.Config.Op, in.ID(), 2, 2, 1, drill.Revision)
		// Both were already marked by the drill: the return aborts no more.
		waitAck(t, cli, back.Config.Op, in.ID(), 2, 0, 0, back.Revision)
		for _, other := range insts[1:] {
			waitAck(t, cli, drill.Config.Op, other.ID(), 0, 0, 0, drill.Revision)
		}
	})

	t.Run("BoundedReissue", func(t *testing.T) {
		// Every attempt is rolled back: Run gives up after maxAttempts.
		in := insts[1]
		var attempts atomic.Int32
		n, err := runtime.Run(ctx, in, sdkRoute, 2, func(ctx context.Context, req *runtime.Request) error {
			attempts.Add(1)
			to := "v1"
			if req.Version() == "v1" {
				to = "v3"
			}
			res := d.change(routing.KindRollback, to)
			sdkEventually(t, "instance applies the rollback", func() bool {
				_, ok := applied[1].get(res.Config.Epoch)
				return ok
			})
			return req.Checkpoint(ctx)
		})
		if !errors.Is(err, runtime.ErrRolledBack) || n != 2 || attempts.Load() != 2 {
			t.Errorf("run = %d attempts, %v; want 2 attempts and ErrRolledBack", n, err)
		}
	})

	t.Run("DoneTwice", func(t *testing.T) {
		req, err := insts[2].Begin(sdkRoute)
		if err != nil {
			t.Fatal(err)
		}
		if err := req.Done(); err != nil {
			t.Fatal(err)
		}
		if err := req.Done(); !errors.Is(err, runtime.ErrFinished) {
			t.Errorf("second Done = %v; want ErrFinished", err)
		}
		if _, err := insts[2].Begin("no-such-route"); !errors.Is(err, runtime.ErrUnknownRoute) {
			t.Errorf("Begin on an unknown route = %v; want ErrUnknownRoute", err)
		}
	})
}

func readRecord(tb testing.TB, cli *clientv3.Client, id string) (runtime.InstanceRecord, clientv3.LeaseID, bool) {
	tb.Helper()
	resp, err := cli.Get(sdkCtx(tb), runtime.Keys{Prefix: sdkPrefix}.Instance(id))
	if err != nil {
		tb.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return runtime.InstanceRecord{}, 0, false
	}
	var rec runtime.InstanceRecord
	if err := runtime.Decode(resp.Kvs[0].Value, &rec); err != nil {
		tb.Fatal(err)
	}
	return rec, clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func TestSDKRegistration(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	d := &sdkRouteDriver{tb: t, s: routing.NewStore(cli, sdkPrefix, zap.NewNop())}
	d.change(routing.KindPromote, "v1")

	// Count every write of the record from before the instance starts.
	const id = "rt-reg"
	wctx, wcancel := context.WithCancel(context.Background())
	var puts atomic.Int64
	watchDone := make(chan struct{})
	wch := cli.Watch(wctx, runtime.Keys{Prefix: sdkPrefix}.Instance(id))
	go func() {
		defer close(watchDone)
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypePut {
					puts.Add(1)
				}
			}
		}
	}()
	defer func() { wcancel(); <-watchDone }()

	in := startSDKInstance(t, srv.Client(t), runtime.InstanceConfig{
		ID: id, LeaseTTL: 2, RefreshEvery: 100 * time.Millisecond})

	t.Run("RecordAppearsWithCounts", func(t *testing.T) {
		const n = 150
		reqs := make([]*runtime.Request, n)
		for i := range reqs {
			var err error
			if reqs[i], err = in.Begin(sdkRoute); err != nil {
				t.Fatal(err)
			}
		}
		sdkEventually(t, "record shows 150 in flight", func() bool {
			rec, _, ok := readRecord(t, cli, id)
			return ok && rec.InFlight[sdkRoute]["v1"] == n
		})
		for _, r := range reqs {
			if err := r.Done(); err != nil {
				t.Fatal(err)
			}
		}
		sdkEventually(t, "record shows none in flight", func() bool {
			rec, _, ok := readRecord(t, cli, id)
			return ok && len(rec.InFlight) == 0
		})
	})

	t.Run("RefreshIsNotPerRequest", func(t *testing.T) {
		before := puts.Load()
		for range 2000 {
			r, err := in.Begin(sdkRoute)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Done(); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(300 * time.Millisecond)
		if got := puts.Load() - before; got > 5 {
			t.Errorf("%d record writes for 2000 requests; want at most a few", got)
		}
		if total := puts.Load(); total > 15 {
			t.Errorf("%d record writes in all; want a handful", total)
		}
	})

	t.Run("LeaseLostReregisters", func(t *testing.T) {
		_, lease, ok := readRecord(t, cli, id)
		if !ok || lease == 0 {
			t.Fatalf("record missing or not leased (lease %x)", lease)
		}
		if _, err := cli.Revoke(sdkCtx(t), lease); err != nil {
			t.Fatal(err)
		}
		sdkEventually(t, "record written again under a new lease", func() bool {
			_, l, ok := readRecord(t, cli, id)
			return ok && l != 0 && l != lease
		})
	})

	t.Run("CloseRemovesRecord", func(t *testing.T) {
		in.Close()
		if _, _, ok := readRecord(t, cli, id); ok {
			t.Error("record still there after Close")
		}
	})
}
