package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// convRoute is the route the convergence tests flip.
const convRoute = "chat-70b"

// convFixture is one test's corner of an etcd: its own prefix, a route on
// epoch 1, and simulated routers that register the way the reader library
// does (a RouterRecord under a lease).
type convFixture struct {
	tb     testing.TB
	cli    *clientv3.Client
	prefix string
	store  *Store
	lease  clientv3.LeaseID
	cur    Result
}

func newConvFixture(tb testing.TB, cli *clientv3.Client) *convFixture {
	tb.Helper()
	// The test's name keeps subtests sharing one etcd apart.
	f := &convFixture{tb: tb, cli: cli, prefix: "/" + strings.ReplaceAll(tb.Name(), "/", "_")}
	f.store = NewStore(cli, f.prefix, zap.NewNop())
	f.cur = mustPromote(tb, f.store, convRoute, "v1", 0)
	f.lease = f.grant()
	return f
}

// grant returns a lease long enough never to expire during a test: a test
// that wants a router gone revokes its lease.
func (f *convFixture) grant() clientv3.LeaseID {
	f.tb.Helper()
	l, err := f.cli.Grant(testCtx(f.tb), 120)
	if err != nil {
		f.tb.Fatal(err)
	}
	return l.ID
}

// record is the value router id publishes when it has applied epoch.
func record(id string, epoch int64) string {
	b, _ := json.Marshal(RouterRecord{ID: id, Observed: map[string]int64{convRoute: epoch, "other-route": 7}})
	return string(b)
}

func (f *convFixture) putRaw(id, value string, lease clientv3.LeaseID) {
	f.tb.Helper()
	if _, err := f.cli.Put(testCtx(f.tb), Keyspace{Prefix: f.prefix}.Router(id), value, clientv3.WithLease(lease)); err != nil {
		f.tb.Fatal(err)
	}
}

// report registers router id (or updates its registration) at epoch, under
// the fixture's shared lease.
func (f *convFixture) report(id string, epoch int64) {
	f.tb.Helper()
	f.putRaw(id, record(id, epoch), f.lease)
}

// reportOwn is report under a lease of the router's own, which the test
// revokes to make the router vanish.
func (f *convFixture) reportOwn(id string, epoch int64) clientv3.LeaseID {
	f.tb.Helper()
	l := f.grant()
	f.putRaw(id, record(id, epoch), l)
	return l
}

func (f *convFixture) revoke(l clientv3.LeaseID) {
	f.tb.Helper()
	if _, err := f.cli.Revoke(testCtx(f.tb), l); err != nil {
		f.tb.Fatal(err)
	}
}

// flip promotes the route to the next epoch and returns the change.
func (f *convFixture) flip() Result {
	f.tb.Helper()
	f.cur = mustPromote(f.tb, f.store, convRoute, fmt.Sprintf("v%d", f.cur.Config.Epoch+1), f.cur.Revision)
	return f.cur
}

func (f *convFixture) wait(ctx context.Context, c Watchable, timeout time.Duration) (Convergence, error) {
	return WaitConverged(ctx, c, f.prefix, convRoute, f.cur.Config.Epoch, f.cur.Revision, timeout)
}

// short is the timeout of the cases that end by reaching it. It is not
// shorter because the timeout also bounds the first read, which a loaded
// two-core machine running -race can take hundreds of milliseconds to answer.
const short = 2 * time.Second

// long is a timeout no passing case reaches: those cases end because every
// router answered, and a failure shows as a Pending router, not a hang.
const long = 30 * time.Second

// watchFault is how a hookedClient makes one watch fail.
type watchFault int

const (
	watchOK watchFault = iota
	// watchFailsAtOnce: the watch ends with an error before it is created.
	watchFailsAtOnce
	// watchFailsAfterCreated: the watch is created, then ends with an
	// error, the way a compaction or a lost leader ends one.
	watchFailsAfterCreated
)

// hookedClient is the real client with hooks: tests use them to act between
// the wait's steps (once its watch is created, once it has read) and to make
// a watch fail.
type hookedClient struct {
	*clientv3.Client
	mu             sync.Mutex
	watches, reads int
	// fault, if set, says how the n-th watch (from 1) behaves.
	fault func(n int) watchFault
	// beforeRead and afterRead, if set, run around the n-th read (a Txn
	// or a Get, from 1).
	beforeRead, afterRead func(n int)
}

func (h *hookedClient) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	h.mu.Lock()
	h.watches++
	n := h.watches
	h.mu.Unlock()
	var fault watchFault
	if h.fault != nil {
		fault = h.fault(n)
	}
	switch fault {
	case watchFailsAtOnce:
		ch := make(chan clientv3.WatchResponse, 1)
		ch <- clientv3.WatchResponse{CompactRevision: 1}
		close(ch)
		return ch
	case watchFailsAfterCreated:
		ch := make(chan clientv3.WatchResponse, 2)
		ch <- clientv3.WatchResponse{Created: true}
		ch <- clientv3.WatchResponse{CompactRevision: 1}
		close(ch)
		return ch
	}
	return h.Client.Watch(ctx, key, opts...)
}

func (h *hookedClient) read(f func() error) {
	h.mu.Lock()
	h.reads++
	n := h.reads
	h.mu.Unlock()
	if h.beforeRead != nil {
		h.beforeRead(n)
	}
	if f() == nil && h.afterRead != nil {
		h.afterRead(n)
	}
}

func (h *hookedClient) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (resp *clientv3.GetResponse, err error) {
	h.read(func() error { resp, err = h.Client.Get(ctx, key, opts...); return err })
	return resp, err
}

func (h *hookedClient) Txn(ctx context.Context) clientv3.Txn {
	return &hookedTxn{Txn: h.Client.Txn(ctx), h: h}
}

func (h *hookedClient) count() (watches, reads int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.watches, h.reads
}

// hookedTxn runs its client's read hooks around Commit.
type hookedTxn struct {
	clientv3.Txn
	h *hookedClient
}

func (t *hookedTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *hookedTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *hookedTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *hookedTxn) Commit() (resp *clientv3.TxnResponse, err error) {
	t.h.read(func() error { resp, err = t.Txn.Commit(); return err })
	return resp, err
}

// want is the expected partition of a Convergence.
type want struct {
	expected, converged, lost, pending, malformed []string
}

func checkConv(tb testing.TB, got Convergence, w want) {
	tb.Helper()
	for _, c := range []struct {
		name      string
		got, want []string
	}{
		{"expected", got.Expected, w.expected},
		{"converged", got.Converged, w.converged},
		{"lost", got.Lost, w.lost},
		{"pending", got.Pending, w.pending},
		{"malformed", got.Malformed, w.malformed},
	} {
		if !slices.Equal(c.got, c.want) {
			tb.Errorf("%s = %q, want %q (whole result %+v)", c.name, c.got, c.want, got)
		}
	}
	if len(got.Converged) > 0 && got.Last.IsZero() {
		tb.Errorf("routers converged but Last is zero")
	}
	if len(got.Converged) == 0 && !got.Last.IsZero() {
		tb.Errorf("no router converged but Last is %v", got.Last)
	}
}

func TestWaitConverged(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)

	t.Run("AllConverge", func(t *testing.T) {
		f := newConvFixture(t, cli)
		for _, id := range []string{"r-c", "r-a", "r-b"} {
			f.report(id, 1)
		}
		res := f.flip()
		// One router applies before the wait reads, the others once it
		// has read: their reports reach it through the watch.
		f.report("r-a", res.Config.Epoch)
		h := &hookedClient{Client: cli, afterRead: func(n int) {
			if n == 1 {
				f.report("r-b", res.Config.Epoch)
				f.report("r-c", res.Config.Epoch+1) // a router already past the epoch counts
			}
		}}
		got, err := f.wait(testCtx(t), h, long)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{expected: []string{"r-a", "r-b", "r-c"}, converged: []string{"r-a", "r-b", "r-c"}})
		if got.ReadRev != res.Revision-1 || got.Compacted {
			t.Errorf("read at %d (compacted %v), want %d", got.ReadRev, got.Compacted, res.Revision-1)
		}
	})

	t.Run("VanishedBeforeTheWait", func(t *testing.T) {
		// Both routers are gone when the wait first reads: only the
		// history since the flip can tell that r-early reported first.
		f := newConvFixture(t, cli)
		early := f.reportOwn("r-early", 1)
		gone := f.reportOwn("r-gone", 1)
		res := f.flip()
		// r-early converges, then stops: it did apply the flip.
		f.putRaw("r-early", record("r-early", res.Config.Epoch), early)
		f.revoke(early)
		// r-gone's lease ends before it reports.
		f.revoke(gone)
		got, err := f.wait(testCtx(t), cli, long)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{expected: []string{"r-early", "r-gone"}, converged: []string{"r-early"}, lost: []string{"r-gone"}})
	})

	t.Run("VanishedHistoryUnavailable", func(t *testing.T) {
		f := newConvFixture(t, cli)
		l := f.reportOwn("r-early", 1)
		res := f.flip()
		f.putRaw("r-early", record("r-early", res.Config.Epoch), l)
		f.revoke(l)
		// The second watch is the history replay; when it fails (as it
		// does when the history is compacted) the router that is gone
		// without a known report is lost, and the wait does not hang.
		h := &hookedClient{Client: cli, fault: func(n int) watchFault {
			if n == 2 {
				return watchFailsAtOnce
			}
			return watchOK
		}}
		got, err := f.wait(testCtx(t), h, long)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{expected: []string{"r-early"}, lost: []string{"r-early"}})
	})

	t.Run("VanishesWhileWatched", func(t *testing.T) {
		f := newConvFixture(t, cli)
		done := f.reportOwn("r-done", 1)
		gone := f.reportOwn("r-gone", 1)
		res := f.flip()
		// Once the wait watches, r-done reports and then stops, and
		// r-gone's lease ends before it reports: the live watch sees both.
		h := &hookedClient{Client: cli, afterRead: func(n int) {
			if n == 1 {
				f.putRaw("r-done", record("r-done", res.Config.Epoch), done)
				f.revoke(done)
				f.revoke(gone)
			}
		}}
		got, err := f.wait(testCtx(t), h, long)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{expected: []string{"r-done", "r-gone"}, converged: []string{"r-done"}, lost: []string{"r-gone"}})
	})

	t.Run("SlowRouterPendingAfterTimeout", func(t *testing.T) {
		f := newConvFixture(t, cli)
		f.report("r-fast", 1)
		f.report("r-slow", 1)
		res := f.flip()
		f.report("r-fast", res.Config.Epoch)
		f.report("r-slow", 1) // it writes again, still on the old epoch
		got, err := f.wait(testCtx(t), cli, short)
		if err != nil {
			t.Fatalf("a timeout is not an error: %v", err)
		}
		checkConv(t, got, want{expected: []string{"r-fast", "r-slow"}, converged: []string{"r-fast"}, pending: []string{"r-slow"}})
	})

	t.Run("RoutersRegisteredAfterFlipIgnored", func(t *testing.T) {
		f := newConvFixture(t, cli)
		f.report("r-a", 1)
		res := f.flip()
		// A router that registers after the flip on an older epoch (it has
		// not read yet) would otherwise keep the wait open until timeout.
		f.report("r-late", 1)
		f.report("r-a", res.Config.Epoch)
		got, err := f.wait(testCtx(t), cli, long)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{expected: []string{"r-a"}, converged: []string{"r-a"}})
	})

	t.Run("ConvergedAlreadyAtFlipRevMinusOne", func(t *testing.T) {
		f := newConvFixture(t, cli)
		f.report("r-a", f.cur.Config.Epoch+1)
		f.flip()
		got, err := f.wait(testCtx(t), cli, long)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{expected: []string{"r-a"}, converged: []string{"r-a"}})
	})

	t.Run("MalformedRecords", func(t *testing.T) {
		f := newConvFixture(t, cli)
		f.putRaw("r-garbage", `{"id":"r-garbage","observed":`, f.lease)
		f.putRaw("r-unknown-field", `{"id":"r-unknown-field","observed":{},"extra":1}`, f.lease)
		f.putRaw("r-other-id", record("r-someone-else", 1), f.lease)
		f.putRaw("r-fixed", `not json`, f.lease)
		f.report("r-good", 1)
		f.report("r-broken", 1)
		res := f.flip()
		f.report("r-good", res.Config.Epoch)
		// A router whose value was malformed is waited for by id: its
		// later valid report counts like any other.
		f.report("r-fixed", res.Config.Epoch)
		// And a router whose valid value turns malformed is no longer
		// pending but malformed.
		f.putRaw("r-broken", `{"id":"r-broken","observed":{"chat-70b":"2"}}`, f.lease)
		got, err := f.wait(testCtx(t), cli, short)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{
			expected:  []string{"r-broken", "r-fixed", "r-garbage", "r-good", "r-other-id", "r-unknown-field"},
			converged: []string{"r-fixed", "r-good"},
			malformed: []string{"r-broken", "r-garbage", "r-other-id", "r-unknown-field"},
		})
	})

	t.Run("ZeroRouters", func(t *testing.T) {
		f := newConvFixture(t, cli)
		f.flip()
		f.report("r-late", 1)
		// With nothing to wait for the call returns at once; the long
		// timeout would show as a slow test, never as a pass.
		got, err := f.wait(testCtx(t), cli, long)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{})
	})

	t.Run("ContextCanceled", func(t *testing.T) {
		f := newConvFixture(t, cli)
		// r-a is converged in the first read (it reported the flip's epoch
		// before the flip), so the wait knows it before it is cancelled.
		f.report("r-a", f.cur.Config.Epoch+1)
		f.report("r-b", 1)
		f.flip()
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		h := &hookedClient{Client: cli, afterRead: func(int) { cancel() }}
		got, err := f.wait(ctx, h, long)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		// What was known when the caller gave up is still reported.
		checkConv(t, got, want{expected: []string{"r-a", "r-b"}, converged: []string{"r-a"}, pending: []string{"r-b"}})
	})

	t.Run("WatchFailureResumesFromReread", func(t *testing.T) {
		f := newConvFixture(t, cli)
		f.report("r-a", 1)
		gone := f.reportOwn("r-gone", 1)
		f.report("r-c", 1)
		res := f.flip()
		f.report("r-a", res.Config.Epoch)
		f.revoke(gone)
		h := &hookedClient{Client: cli,
			// The first watch is created, the first read made, then the
			// watch ends with an error.
			fault: func(n int) watchFault {
				if n == 1 {
					return watchFailsAfterCreated
				}
				return watchOK
			},
			// The wait has read again (r-a converged, r-gone lost) and
			// watches from there: r-c's report must reach it.
			afterRead: func(n int) {
				if n == 2 {
					f.report("r-c", res.Config.Epoch)
				}
			}}
		got, err := f.wait(testCtx(t), h, long)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{expected: []string{"r-a", "r-c", "r-gone"}, converged: []string{"r-a", "r-c"}, lost: []string{"r-gone"}})
		if w, r := h.count(); w < 2 || r < 2 {
			t.Errorf("%d watches and %d reads, want a second of each after the failure", w, r)
		}
	})

	t.Run("WatchCreationFails", func(t *testing.T) {
		f := newConvFixture(t, cli)
		f.report("r-a", 1)
		res := f.flip()
		f.report("r-a", res.Config.Epoch)
		// Without a watch the first read is only of the flip's revision −
		// 1; the wait must watch and read again to see r-a's report.
		h := &hookedClient{Client: cli, fault: func(n int) watchFault {
			if n == 1 {
				return watchFailsAtOnce
			}
			return watchOK
		}}
		got, err := f.wait(testCtx(t), h, long)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{expected: []string{"r-a"}, converged: []string{"r-a"}})
	})

	t.Run("EventsTheReadSawAreSkipped", func(t *testing.T) {
		f := newConvFixture(t, cli)
		f.report("r-a", f.cur.Config.Epoch+1)
		l := f.reportOwn("r-b", 1)
		f.flip()
		// Between the watch's creation and the read, r-b's lease ends and
		// r-b registers again. The read shows it registered; the watch
		// then delivers the deletion, which must not make it lost (and
		// end the wait) since the read already saw what followed.
		h := &hookedClient{Client: cli, beforeRead: func(n int) {
			if n == 1 {
				f.revoke(l)
				f.report("r-b", 1)
			}
		}}
		got, err := f.wait(testCtx(t), h, short)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{expected: []string{"r-a", "r-b"}, converged: []string{"r-a"}, pending: []string{"r-b"}})
	})

	t.Run("LostRouterRegistersAgain", func(t *testing.T) {
		f := newConvFixture(t, cli)
		f.report("r-a", 1)
		l := f.reportOwn("r-flappy", 1)
		res := f.flip()
		// r-flappy's lease ends and it registers again under a new lease
		// before it reports: it is waited for again, not left lost.
		f.revoke(l)
		f.report("r-flappy", 1)
		f.report("r-a", res.Config.Epoch)
		got, err := f.wait(testCtx(t), cli, short)
		if err != nil {
			t.Fatal(err)
		}
		checkConv(t, got, want{expected: []string{"r-a", "r-flappy"}, converged: []string{"r-a"}, pending: []string{"r-flappy"}})
	})

	t.Run("InvalidArguments", func(t *testing.T) {
		f := newConvFixture(t, cli)
		for name, call := range map[string]func() error{
			"BadRoute":    func() error { _, err := WaitConverged(testCtx(t), cli, f.prefix, "no/slash", 2, 10, long); return err },
			"ZeroEpoch":   func() error { _, err := WaitConverged(testCtx(t), cli, f.prefix, convRoute, 0, 10, long); return err },
			"FlipRevOne":  func() error { _, err := WaitConverged(testCtx(t), cli, f.prefix, convRoute, 2, 1, long); return err },
			"ZeroTimeout": func() error { _, err := WaitConverged(testCtx(t), cli, f.prefix, convRoute, 2, 10, 0); return err },
		} {
			if err := call(); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", name, err)
			}
		}
	})
}

// TestWaitConvergedCompactedFlipRevision compacts the keyspace past the
// flip's revision before the wait reads it: the registrations are read at
// the current revision instead, and the result says so.
func TestWaitConvergedCompactedFlipRevision(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	f := newConvFixture(t, cli)
	f.report("r-a", 1)
	f.report("r-b", 1)
	res := f.flip()
	f.report("r-a", res.Config.Epoch)
	resp, err := cli.Put(testCtx(t), f.prefix+"/test/marker", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(testCtx(t), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	got, err := f.wait(testCtx(t), cli, short)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Compacted || got.ReadRev < resp.Header.Revision {
		t.Errorf("compacted %v, read at %d; want compacted, read at %d or later", got.Compacted, got.ReadRev, resp.Header.Revision)
	}
	checkConv(t, got, want{expected: []string{"r-a", "r-b"}, converged: []string{"r-a"}, pending: []string{"r-b"}})
}

// TestWaitConvergedRealRouters runs the reader library's own routers: a flip
// with Store.Flip is seen by every one of them.
func TestWaitConvergedRealRouters(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	s := NewStore(cli, testPrefix, zap.NewNop())
	first := mustPromote(t, s, convRoute, "v1", 0)
	ids := []string{"router-1", "router-2", "router-3"}
	for _, id := range ids {
		startWatcher(t, WatcherConfig{Client: srv.Client(t), RouterID: id, LeaseTTL: 5})
	}
	// Convergence counts the routers registered before the flip, so wait
	// until all of them are.
	eventually(t, "every router registered on epoch 1", func() bool {
		resp, err := cli.Get(testCtx(t), Keyspace{Prefix: testPrefix}.Routers(), clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != len(ids) {
			return false
		}
		for _, kv := range resp.Kvs {
			var rec RouterRecord
			if json.Unmarshal(kv.Value, &rec) != nil || rec.Observed[convRoute] != 1 {
				return false
			}
		}
		return true
	})
	res, err := s.Flip(testCtx(t), Change{Route: convRoute, Kind: KindPromote, To: "v2", ExpectRev: first.Revision,
		Op: newOpID(), Actor: "test", Reason: "end to end"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := WaitConverged(testCtx(t), cli, testPrefix, convRoute, res.Config.Epoch, res.Revision, long)
	if err != nil {
		t.Fatal(err)
	}
	checkConv(t, got, want{expected: ids, converged: ids})
}

// BenchmarkWaitConverged100 is the bot's side of a flip with 100 routers:
// the wait is running (it has read and watches) when the 100 routers report,
// in one transaction so that etcd's write path is not what is measured. The
// metrics are p50 latencies from that transaction's commit: wait-ms until
// WaitConverged returns with all 100 converged, floor-ms until a bare watch
// on the same client has received the 100 events, and their ratio. ns/op
// and allocs/op cover a whole iteration (flip, reports, the wait and the
// bare watch) and are only for comparing runs.
func BenchmarkWaitConverged100(b *testing.B) {
	const routers = 100
	srv := etcdtest.Start(b)
	cli := srv.Client(b)
	f := newConvFixture(b, cli)
	ks := Keyspace{Prefix: f.prefix}
	ids := make([]string, routers)
	for i := range ids {
		ids[i] = fmt.Sprintf("router-%03d", i)
	}
	reportAll := func(epoch int64) {
		ops := make([]clientv3.Op, 0, routers)
		for _, id := range ids {
			ops = append(ops, clientv3.OpPut(ks.Router(id), record(id, epoch), clientv3.WithLease(f.lease)))
		}
		if _, err := cli.Txn(testCtx(b)).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	// The routers are registered before the first flip, as in production.
	reportAll(f.cur.Config.Epoch)
	var waitLat, floorLat []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		res := f.flip()
		ctx, cancel := context.WithCancel(testCtx(b))
		floor := cli.Watch(clientv3.WithRequireLeader(ctx), ks.Routers(), clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		<-floor
		ready := make(chan struct{})
		h := &hookedClient{Client: cli, afterRead: func(n int) {
			if n == 1 {
				close(ready)
			}
		}}
		type outcome struct {
			conv Convergence
			err  error
			at   time.Time
		}
		done := make(chan outcome, 1)
		go func() {
			conv, err := f.wait(ctx, h, long)
			done <- outcome{conv, err, time.Now()}
		}()
		<-ready
		start := time.Now()
		reportAll(res.Config.Epoch)
		for n := 0; n < routers; {
			resp := <-floor
			if err := resp.Err(); err != nil {
				b.Fatal(err)
			}
			n += len(resp.Events)
		}
		floorLat = append(floorLat, time.Since(start))
		o := <-done
		if o.err != nil || len(o.conv.Converged) != routers {
			b.Fatalf("converged %d of %d: %v", len(o.conv.Converged), routers, o.err)
		}
		waitLat = append(waitLat, o.at.Sub(start))
		cancel()
	}
	b.StopTimer()
	wp, fp := p50(waitLat), p50(floorLat)
	b.ReportMetric(float64(wp.Microseconds())/1000, "wait-ms")
	b.ReportMetric(float64(fp.Microseconds())/1000, "floor-ms")
	if fp > 0 {
		b.ReportMetric(float64(wp)/float64(fp), "ratio")
	}
}
