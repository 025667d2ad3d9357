package routing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

const testPrefix = "/backflip"

func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func mustPromote(tb testing.TB, s *Store, route, to string, expect int64) Result {
	tb.Helper()
	res, err := s.Promote(testCtx(tb), Change{Route: route, To: to, ExpectRev: expect, Op: newOpID(), Actor: "test", Reason: "test"})
	if err != nil {
		tb.Fatalf("promote %s to %s at rev %d: %v", route, to, expect, err)
	}
	return res
}

// opCounter makes op ids unique within a test binary without package state.
type opCounter struct {
	mu sync.Mutex
	n  int
}

func (c *opCounter) next() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return fmt.Sprintf("op-%d-%d", time.Now().UnixNano(), c.n)
}

func newOpID() string { return fmt.Sprintf("op-%d", time.Now().UnixNano()) }

func TestPromoteAndRollbackSemantics(t *testing.T) {
	srv := etcdtest.Start(t)
	s := NewStore(srv.Client(t), testPrefix, zaptest.NewLogger(t))
	ctx := testCtx(t)

	r1 := mustPromote(t, s, "chat-70b", "v41", 0)
	if c := r1.Config; c.Active != "v41" || c.Previous != "" || c.From != "" || c.Epoch != 1 || c.Kind != KindPromote {
		t.Fatalf("create: %+v", c)
	}
	r2 := mustPromote(t, s, "chat-70b", "v42", r1.Revision)
	if c := r2.Config; c.Active != "v42" || c.Previous != "v41" || c.From != "v41" || c.Epoch != 2 {
		t.Fatalf("promote: %+v", c)
	}
	if r2.Previous.Active != "v41" {
		t.Fatalf("Result.Previous = %+v", r2.Previous)
	}
	r3, err := s.Flip(ctx, Change{Route: "chat-70b", Kind: KindRollback, To: "v41", ExpectRev: r2.Revision, Op: "op-rb", Actor: "U1", Reason: "latency spike"})
	if err != nil {
		t.Fatal(err)
	}
	if c := r3.Config; c.Active != "v41" || c.Previous != "v42" || c.From != "v42" || c.Epoch != 3 || c.Kind != KindRollback || c.Op != "op-rb" || c.Reason != "latency spike" {
		t.Fatalf("rollback: %+v", c)
	}
	got, err := s.Get(ctx, "chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	if got.Config != r3.Config || got.ModRevision != r3.Revision {
		t.Fatalf("Get = %+v rev %d, want %+v rev %d", got.Config, got.ModRevision, r3.Config, r3.Revision)
	}

	t.Run("NoChange", func(t *testing.T) {
		_, err := s.Flip(ctx, Change{Route: "chat-70b", Kind: KindRollback, To: "v41", ExpectRev: r3.Revision, Op: "op-x"})
		if !errors.Is(err, ErrNoChange) {
			t.Fatalf("got %v, want ErrNoChange", err)
		}
	})
	t.Run("RollbackNeedsExistingRoute", func(t *testing.T) {
		_, err := s.Flip(ctx, Change{Route: "nope", Kind: KindRollback, To: "v1", ExpectRev: 0, Op: "op-y"})
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("got %v, want ErrInvalid", err)
		}
		_, err = s.Flip(ctx, Change{Route: "nope", Kind: KindRollback, To: "v1", ExpectRev: 5, Op: "op-y"})
		var ce *ConflictError
		if !errors.As(err, &ce) || ce.Exists {
			t.Fatalf("got %v, want a conflict saying the route does not exist", err)
		}
	})
	t.Run("CreateTwiceConflicts", func(t *testing.T) {
		_, err := s.Promote(ctx, Change{Route: "chat-70b", To: "v50", ExpectRev: 0, Op: "op-z"})
		var ce *ConflictError
		if !errors.As(err, &ce) || !ce.Exists || ce.Current.Active != "v41" {
			t.Fatalf("got %v, want conflict carrying the current config", err)
		}
	})
	t.Run("SeenEntrySkipsTheReadButNotTheGuard", func(t *testing.T) {
		stale := Entry{Config: r2.Config, ModRevision: r2.Revision}
		_, err := s.Flip(ctx, Change{Route: "chat-70b", Kind: KindRollback, To: "v40", ExpectRev: stale.ModRevision, Seen: &stale, Op: "op-stale"})
		var ce *ConflictError
		if !errors.As(err, &ce) || ce.Current.Op != "op-rb" {
			t.Fatalf("flip from a stale seen entry: got %v, want a conflict carrying op-rb", err)
		}
		_, err = s.Flip(ctx, Change{Route: "chat-70b", Kind: KindRollback, To: "v40", ExpectRev: r3.Revision + 1, Seen: &Entry{Config: r3.Config, ModRevision: r3.Revision}, Op: "op-mismatch"})
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("seen entry not matching ExpectRev: got %v, want ErrInvalid", err)
		}
		_, err = s.Flip(ctx, Change{Route: "other", Kind: KindRollback, To: "v40", ExpectRev: r3.Revision, Seen: &Entry{Config: r3.Config, ModRevision: r3.Revision}, Op: "op-other"})
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("seen entry of another route: got %v, want ErrInvalid", err)
		}
	})
	t.Run("GetMissing", func(t *testing.T) {
		if _, err := s.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("InvalidNamesNeverReachEtcd", func(t *testing.T) {
		for _, ch := range []Change{
			{Route: "../x", Kind: KindPromote, To: "v1", Op: "o"},
			{Route: "status", Kind: KindPromote, To: "v1", Op: "o"},
			{Route: "ok", Kind: KindPromote, To: "v/1", Op: "o"},
			{Route: "ok", Kind: "sideways", To: "v1", Op: "o"},
			{Route: "ok", Kind: KindPromote, To: "v1", Op: "o/p"},
			{Route: "ok", Kind: KindPromote, To: "v1", Op: "o", ExpectRev: -1},
		} {
			if _, err := s.Flip(ctx, ch); !errors.Is(err, ErrInvalid) {
				t.Errorf("%+v: got %v, want ErrInvalid", ch, err)
			}
		}
		resp, err := srv.Client(t).Get(ctx, testPrefix+"/routes/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || resp.Count != 1 {
			t.Fatalf("routes in etcd: %d (%v), want only chat-70b", resp.Count, err)
		}
	})
}

func TestFlipExtraOpsAreAtomic(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	s := NewStore(cli, testPrefix, zaptest.NewLogger(t))
	ctx := testCtx(t)
	r1 := mustPromote(t, s, "chat-70b", "v1", 0)

	idem := testPrefix + "/idem/card-1"
	ch := Change{Route: "chat-70b", Kind: KindRollback, To: "v0", ExpectRev: r1.Revision, Op: "op-a",
		Cmps: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(idem), "=", 0)},
		Ops:  []clientv3.Op{clientv3.OpPut(idem, "op-a"), clientv3.OpPut(testPrefix+"/audit/outbox/op-a/1", "{}")}}
	res, err := s.Flip(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{idem, testPrefix + "/audit/outbox/op-a/1"} {
		g, err := cli.Get(ctx, k)
		if err != nil || len(g.Kvs) != 1 || g.Kvs[0].ModRevision != res.Revision {
			t.Fatalf("%s not written in the flip's transaction (rev %d): %v %v", k, res.Revision, g, err)
		}
	}

	t.Run("GuardFailureWritesNothing", func(t *testing.T) {
		ch2 := ch
		ch2.To, ch2.Op, ch2.ExpectRev = "v1", "op-b", res.Revision
		ch2.Ops = []clientv3.Op{clientv3.OpPut(testPrefix+"/audit/outbox/op-b/1", "{}")}
		_, err := s.Flip(ctx, ch2)
		if !errors.Is(err, ErrGuard) {
			t.Fatalf("got %v, want ErrGuard", err)
		}
		cur, _ := s.Get(ctx, "chat-70b")
		if cur.ModRevision != res.Revision {
			t.Fatal("route changed although the guard failed")
		}
		g, _ := cli.Get(ctx, testPrefix+"/audit/outbox/op-b/1")
		if len(g.Kvs) != 0 {
			t.Fatal("extra op written although the guard failed")
		}
	})
	t.Run("RetryOfLandedFlipIsReported", func(t *testing.T) {
		again, err := s.Flip(ctx, ch)
		if err != nil {
			t.Fatalf("retry of a landed flip: %v", err)
		}
		if !again.Reread || again.Config.Epoch != res.Config.Epoch || again.Revision != res.Revision {
			t.Fatalf("retry flipped again or lost the result: %+v vs %+v", again, res)
		}
	})
}

// TestConcurrentFlipOneWins races many goroutines on many clients, round
// after round, all expecting the same revision: exactly one must win each
// round and every loser must get a conflict carrying the winner's config.
func TestConcurrentFlipOneWins(t *testing.T) {
	srv := etcdtest.Start(t)
	const clients, perClient, rounds = 4, 8, 10
	stores := make([]*Store, clients)
	for i := range stores {
		stores[i] = NewStore(srv.Client(t), testPrefix, zap.NewNop())
	}
	ctx := testCtx(t)
	cur := mustPromote(t, stores[0], "chat-70b", "v0", 0)
	var ops opCounter
	for round := 1; round <= rounds; round++ {
		type outcome struct {
			res Result
			err error
			op  string
		}
		out := make(chan outcome, clients*perClient)
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			for g := 0; g < perClient; g++ {
				wg.Add(1)
				go func(s *Store, version string) {
					defer wg.Done()
					op := ops.next()
					kind := KindRollback
					if len(op)%2 == 0 {
						kind = KindPromote
					}
					res, err := s.Flip(ctx, Change{Route: "chat-70b", Kind: kind, To: version, ExpectRev: cur.Revision, Op: op, Actor: "racer"})
					out <- outcome{res, err, op}
				}(stores[c], fmt.Sprintf("v%d-%d-%d", round, c, g))
			}
		}
		wg.Wait()
		close(out)
		var winners []outcome
		var losers []outcome
		for o := range out {
			switch {
			case o.err == nil:
				winners = append(winners, o)
			case errors.Is(o.err, ErrConflict):
				losers = append(losers, o)
			default:
				t.Fatalf("round %d: unexpected error %v", round, o.err)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners, want exactly 1", round, len(winners))
		}
		w := winners[0]
		if w.res.Config.Epoch != cur.Config.Epoch+1 || w.res.Config.From != cur.Config.Active {
			t.Fatalf("round %d: winner %+v does not follow %+v", round, w.res.Config, cur.Config)
		}
		for _, l := range losers {
			var ce *ConflictError
			if !errors.As(l.err, &ce) || ce.Current.Op != w.op || ce.CurrentRev != w.res.Revision {
				t.Fatalf("round %d: loser error %v does not carry the winner (op %s)", round, l.err, w.op)
			}
		}
		cur = w.res
	}
	final, err := stores[0].Get(ctx, "chat-70b")
	if err != nil || final.Config.Epoch != rounds+1 {
		t.Fatalf("final epoch %d (%v), want %d", final.Config.Epoch, err, rounds+1)
	}
}

// splitKV sends transactions through one client and reads through another,
// so a test can lose a transaction's reply (through a fault proxy) while the
// re-read still reaches etcd.
type splitKV struct {
	txn  *clientv3.Client
	read *clientv3.Client
}

func (s splitKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return s.read.Get(ctx, key, opts...)
}
func (s splitKV) Txn(ctx context.Context) clientv3.Txn { return s.txn.Txn(ctx) }

func proxiedClient(tb testing.TB, endpoint string) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second,
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

func TestFlipAfterTimeoutRereads(t *testing.T) {
	srv := etcdtest.Start(t)
	direct := srv.Client(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	viaProxy := proxiedClient(t, proxy.Endpoint())
	s := NewStore(splitKV{txn: viaProxy, read: direct}, testPrefix, zaptest.NewLogger(t))
	ctx := testCtx(t)
	cur := mustPromote(t, s, "chat-70b", "v1", 0)
	// Warm the proxied connection so the faults hit an established stream.
	if _, err := viaProxy.Get(ctx, "warmup"); err != nil {
		t.Fatal(err)
	}

	t.Run("ReplyLostWriteLanded", func(t *testing.T) {
		proxy.BlackholeRx() // the request reaches etcd; its reply does not come back
		defer proxy.UnblackholeRx()
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		res, err := s.Flip(fctx, Change{Route: "chat-70b", Kind: KindRollback, To: "v0", ExpectRev: cur.Revision, Op: "op-landed"})
		if err != nil {
			t.Fatalf("flip whose reply was lost: %v", err)
		}
		if !res.Reread || res.Config.Op != "op-landed" || res.Config.Epoch != 2 {
			t.Fatalf("result %+v: want the re-read to find the landed write", res)
		}
		cur = Result{Config: res.Config, Revision: res.Revision}
	})
	t.Run("RequestLostNotApplied", func(t *testing.T) {
		proxy.BlackholeTx() // the request never reaches etcd
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := s.Flip(fctx, Change{Route: "chat-70b", Kind: KindRollback, To: "v1", ExpectRev: cur.Revision, Op: "op-lost"})
		proxy.UnblackholeTx()
		if !errors.Is(err, ErrNotApplied) {
			t.Fatalf("got %v, want ErrNotApplied", err)
		}
		got, _ := s.Get(ctx, "chat-70b")
		if got.ModRevision != cur.Revision {
			t.Fatalf("route moved although the request was lost: %+v", got.Config)
		}
	})
}
