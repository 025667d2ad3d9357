package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

var sigTestSecret = []byte("runtime-test-secret")

// sigFlipper flips one route back and forth with the routing Store, as the
// bot does, and returns what SignalRollback needs.
type sigFlipper struct {
	store *routing.Store
	route string
	n     int
}

type sigFlip struct {
	op, from, to string
	epoch, rev   int64
}

func newSigFlipper(tb testing.TB, c *clientv3.Client, prefix, route string) *sigFlipper {
	tb.Helper()
	f := &sigFlipper{store: routing.NewStore(c, prefix, nil), route: route}
	if _, err := f.store.Promote(context.Background(), routing.Change{Route: route, To: "v42", Op: "op-create", Reason: "test", Actor: "test"}); err != nil {
		tb.Fatalf("create route: %v", err)
	}
	return f
}

// rollback flips the route away from its active version with kind rollback.
func (f *sigFlipper) rollback(tb testing.TB) sigFlip {
	tb.Helper()
	ctx := context.Background()
	cur, err := f.store.Get(ctx, f.route)
	if err != nil {
		tb.Fatalf("get route: %v", err)
	}
	to := "v41"
	if cur.Config.Active == "v41" {
		to = "v42"
	}
	f.n++
	op := fmt.Sprintf("op-%d", f.n)
	res, err := f.store.Flip(ctx, routing.Change{Route: f.route, Kind: routing.KindRollback, To: to, ExpectRev: cur.ModRevision, Op: op, Reason: "test", Actor: "test"})
	if err != nil {
		tb.Fatalf("flip: %v", err)
	}
	return sigFlip{op: op, from: cur.Config.Active, to: to, epoch: res.Config.Epoch, rev: res.Revision}
}

// sigRegister puts an instance record under a fresh lease.
func sigRegister(tb testing.TB, c *clientv3.Client, prefix, id, url string) clientv3.LeaseID {
	tb.Helper()
	ctx := context.Background()
	l, err := c.Grant(ctx, 60)
	if err != nil {
		tb.Fatalf("grant: %v", err)
	}
	val, _ := json.Marshal(InstanceRecord{ID: id, URL: url, InFlight: map[string]map[string]int{"chat-70b": {"v42": 3}}})
	if _, err := c.Put(ctx, Keys{Prefix: prefix}.Instance(id), string(val), clientv3.WithLease(l.ID)); err != nil {
		tb.Fatalf("register %s: %v", id, err)
	}
	return l.ID
}

// sigBot is an httptest bot serving the runtime endpoints.
func sigBot(tb testing.TB, c *clientv3.Client, prefix string) *httptest.Server {
	tb.Helper()
	cfg := HandlerConfig{Etcd: c, Prefix: prefix, Secret: sigTestSecret}
	hb, err := NewHeartbeatHandler(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	acks, err := NewAcksHandler(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(HeartbeatPath, hb)
	mux.Handle(AcksPath, acks)
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv
}

// sigInstance is an HTTP runtime instance built on the reference receiver:
// it reports inflight/aborted and then, in the background, its re-issues
// to the bot.
type sigInstance struct {
	id       string
	srv      *httptest.Server
	calls    atomic.Int32
	inflight int
	aborted  int
	lastSig  atomic.Pointer[AbortSignal]
}

func startSigInstance(tb testing.TB, wg *sync.WaitGroup, botURL, id string, inflight, aborted int) *sigInstance {
	tb.Helper()
	in := &sigInstance{id: id, inflight: inflight, aborted: aborted}
	rc := NewReceiver(sigTestSecret, func(_ context.Context, s AbortSignal) (int, int) {
		in.calls.Add(1)
		in.lastSig.Store(&s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := ReportAcks(ctx, botURL, sigTestSecret, AckReport{Op: s.Op, Instance: id, Reissued: aborted}); err != nil {
				tb.Errorf("instance %s: report acks: %v", id, err)
			}
		}()
		return inflight, aborted
	})
	mux := http.NewServeMux()
	mux.Handle(AbortPath, rc)
	in.srv = httptest.NewServer(mux)
	tb.Cleanup(in.srv.Close)
	return in
}

func newTestSignaller(tb testing.TB, c *clientv3.Client, prefix string, ackTimeout time.Duration) *Signaller {
	tb.Helper()
	s, err := NewSignaller(SignallerConfig{Etcd: c, Prefix: prefix, Secret: sigTestSecret, AckTimeout: ackTimeout, AttemptTimeout: ackTimeout})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func signalAndWait(tb testing.TB, s *Signaller, f sigFlip) (Signal, Result) {
	tb.Helper()
	ctx := context.Background()
	sig, err := s.SignalRollback(ctx, f.op, "chat-70b", f.epoch, f.from, f.to, f.rev)
	if err != nil {
		tb.Fatalf("SignalRollback: %v", err)
	}
	res, err := s.WaitAcks(ctx, sig)
	if err != nil {
		tb.Fatalf("WaitAcks: %v", err)
	}
	return sig, res
}

func expectedIDs(sig Signal) []string {
	var ids []string
	for _, e := range sig.Expected {
		ids = append(ids, e.ID)
	}
	return ids
}

func TestSignalRollback(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client(t)

	t.Run("HTTPInstancesAckWithCounts", func(t *testing.T) {
		prefix := "/t-http"
		bot := sigBot(t, c, prefix)
		var wg sync.WaitGroup
		var ins []*sigInstance
		for i := 0; i < 3; i++ {
			in := startSigInstance(t, &wg, bot.URL, fmt.Sprintf("wf-%d", i), 10+i, 5+i)
			sigRegister(t, c, prefix, in.id, in.srv.URL)
			ins = append(ins, in)
		}
		f := newSigFlipper(t, c, prefix, "chat-70b").rollback(t)
		sig, res := signalAndWait(t, newTestSignaller(t, c, prefix, 10*time.Second), f)
		wg.Wait()
		if !res.Complete || res.Expected != 3 || res.Acked != 3 || res.InFlight != 33 || res.Aborted != 18 || res.Reissued != 18 {
			t.Fatalf("result %+v", res)
		}
		if len(res.Missing)+len(res.Vanished)+len(res.PendingReissue) != 0 || res.Drain <= 0 {
			t.Fatalf("result %+v", res)
		}
		for _, in := range ins {
			got := in.lastSig.Load()
			want := AbortSignal{Op: f.op, Route: "chat-70b", Epoch: f.epoch, ActiveAfter: f.to, From: f.from}
			if in.calls.Load() != 1 || got == nil || *got != want {
				t.Fatalf("instance %s: %d calls, signal %+v, want %+v", in.id, in.calls.Load(), got, want)
			}
			resp, err := c.Get(context.Background(), Keys{Prefix: prefix}.Ack(f.op, in.id))
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("ack of %s: %v %v", in.id, resp, err)
			}
			var rec AckRecord
			if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
				t.Fatal(err)
			}
			if rec.InFlight != in.inflight || rec.Aborted != in.aborted || rec.Reissued == nil || *rec.Reissued != in.aborted || rec.AppliedRev != f.rev || rec.At.IsZero() {
				t.Fatalf("ack of %s: %+v", in.id, rec)
			}
			if resp.Kvs[0].Lease == 0 {
				t.Fatalf("ack of %s is not leased", in.id)
			}
		}
		if !slices.Equal(expectedIDs(sig), []string{"wf-0", "wf-1", "wf-2"}) {
			t.Fatalf("expected %v", expectedIDs(sig))
		}
	})

	t.Run("HangingInstanceReportedMissing", func(t *testing.T) {
		prefix := "/t-hang"
		bot := sigBot(t, c, prefix)
		var wg sync.WaitGroup
		ok := startSigInstance(t, &wg, bot.URL, "wf-ok", 2, 2)
		sigRegister(t, c, prefix, ok.id, ok.srv.URL)
		release := make(chan struct{})
		hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		t.Cleanup(hang.Close)
		t.Cleanup(func() { close(release) })
		sigRegister(t, c, prefix, "wf-hang", hang.URL)
		f := newSigFlipper(t, c, prefix, "chat-70b").rollback(t)
		start := time.Now()
		_, res := signalAndWait(t, newTestSignaller(t, c, prefix, 500*time.Millisecond), f)
		wg.Wait()
		if time.Since(start) < 500*time.Millisecond {
			t.Fatalf("returned after %v, before the ack timeout", time.Since(start))
		}
		if res.Complete || !slices.Equal(res.Missing, []string{"wf-hang"}) || res.Acked != 1 || res.Aborted != 2 {
			t.Fatalf("result %+v", res)
		}
		if res.DeliveryErrors["wf-hang"] == "" {
			t.Fatalf("no delivery error for the hanging instance: %+v", res.DeliveryErrors)
		}
	})

	t.Run("RevokedLeaseReportedVanished", func(t *testing.T) {
		prefix := "/t-vanish"
		sigRegister(t, c, prefix, "wf-sdk-live", "")
		lease := sigRegister(t, c, prefix, "wf-sdk-gone", "")
		f := newSigFlipper(t, c, prefix, "chat-70b").rollback(t)
		s := newTestSignaller(t, c, prefix, 20*time.Second)
		sig, err := s.SignalRollback(context.Background(), f.op, "chat-70b", f.epoch, f.from, f.to, f.rev)
		if err != nil {
			t.Fatal(err)
		}
		// The live SDK instance writes its own ack; the other one's lease is
		// revoked while the bot waits.
		zero := 0
		val, _ := json.Marshal(AckRecord{InFlight: 4, Aborted: 0, Reissued: &zero, AppliedRev: f.rev, At: time.Now()})
		if _, err := c.Put(context.Background(), Keys{Prefix: prefix}.Ack(f.op, "wf-sdk-live"), string(val)); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(200 * time.Millisecond)
			_, _ = c.Revoke(context.Background(), lease)
		}()
		start := time.Now()
		res, err := s.WaitAcks(context.Background(), sig)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("waited %v for a vanished instance", time.Since(start))
		}
		if !res.Complete || !slices.Equal(res.Vanished, []string{"wf-sdk-gone"}) || res.Acked != 1 || res.InFlight != 4 || len(res.Missing) != 0 {
			t.Fatalf("result %+v", res)
		}
	})

	t.Run("LateRegistrationNotWaitedFor", func(t *testing.T) {
		prefix := "/t-late"
		bot := sigBot(t, c, prefix)
		var wg sync.WaitGroup
		early := startSigInstance(t, &wg, bot.URL, "wf-early", 1, 1)
		sigRegister(t, c, prefix, early.id, early.srv.URL)
		f := newSigFlipper(t, c, prefix, "chat-70b").rollback(t)
		late := startSigInstance(t, &wg, bot.URL, "wf-late", 1, 1)
		sigRegister(t, c, prefix, late.id, late.srv.URL)
		sigRegister(t, c, prefix, "wf-late-sdk", "")
		sig, res := signalAndWait(t, newTestSignaller(t, c, prefix, 5*time.Second), f)
		wg.Wait()
		if !slices.Equal(expectedIDs(sig), []string{"wf-early"}) || !res.Complete || res.Expected != 1 {
			t.Fatalf("expected %v, result %+v", expectedIDs(sig), res)
		}
		if late.calls.Load() != 0 {
			t.Fatalf("late instance signalled %d times", late.calls.Load())
		}
	})

	t.Run("RefusedSignalNotRetried", func(t *testing.T) {
		prefix := "/t-refused"
		var calls atomic.Int32
		other := NewReceiver([]byte("another-secret"), func(context.Context, AbortSignal) (int, int) { return 0, 0 })
		refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			other.ServeHTTP(w, r)
		}))
		t.Cleanup(refuse.Close)
		sigRegister(t, c, prefix, "wf-wrong-secret", refuse.URL)
		f := newSigFlipper(t, c, prefix, "chat-70b").rollback(t)
		_, res := signalAndWait(t, newTestSignaller(t, c, prefix, 500*time.Millisecond), f)
		if calls.Load() != 1 || !slices.Equal(res.Missing, []string{"wf-wrong-secret"}) || res.DeliveryErrors["wf-wrong-secret"] != "status 401" {
			t.Fatalf("%d calls, result %+v", calls.Load(), res)
		}
	})

	t.Run("CompactedRevisionFallsBackToCurrent", func(t *testing.T) {
		prefix := "/t-compact"
		sigRegister(t, c, prefix, "wf-sdk", "")
		f := newSigFlipper(t, c, prefix, "chat-70b").rollback(t)
		resp, err := c.Put(context.Background(), prefix+"/other", "x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Compact(context.Background(), resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
		s := newTestSignaller(t, c, prefix, 300*time.Millisecond)
		sig, res := signalAndWait(t, s, f)
		if !sig.Compacted || sig.ReadRev < resp.Header.Revision || !slices.Equal(res.Missing, []string{"wf-sdk"}) {
			t.Fatalf("signal %+v, result %+v", sig, res)
		}
	})

	t.Run("NoInstancesReturnsAtOnce", func(t *testing.T) {
		f := newSigFlipper(t, c, "/t-empty", "chat-70b").rollback(t)
		_, res := signalAndWait(t, newTestSignaller(t, c, "/t-empty", time.Minute), f)
		if !res.Complete || res.Expected != 0 {
			t.Fatalf("result %+v", res)
		}
	})
}
