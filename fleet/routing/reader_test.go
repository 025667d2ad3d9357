package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// eventually polls cond until it holds or the deadline passes. Waiting is
// bounded but generous: these tests assert outcomes, never speed.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startWatcher(tb testing.TB, cfg WatcherConfig) *Watcher {
	tb.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = testPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel))
	}
	w, err := NewWatcher(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	w.Start(context.Background())
	tb.Cleanup(w.Close)
	return w
}

func waitReady(tb testing.TB, w *Watcher) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WaitReady(ctx); err != nil {
		tb.Fatal(err)
	}
}

// flipper drives a route through epochs whose version names encode the
// epoch ("v<epoch>"), so a reader can check every config it sees is whole.
type flipper struct {
	tb  testing.TB
	s   *Store
	cur Result
}

func newFlipper(tb testing.TB, s *Store, route string) *flipper {
	return &flipper{tb: tb, s: s, cur: mustPromote(tb, s, route, "v1", 0)}
}

func (f *flipper) flip() Result {
	f.tb.Helper()
	next := f.cur.Config.Epoch + 1
	kind := KindRollback
	if next%3 == 0 {
		kind = KindPromote
	}
	ch := Change{Route: f.cur.Config.Route, Kind: kind, To: fmt.Sprintf("v%d", next),
		ExpectRev: f.cur.Revision, Seen: &Entry{Config: f.cur.Config, ModRevision: f.cur.Revision},
		Op: fmt.Sprintf("op-%d", next), Actor: "flipper"}
	// While a cluster elects a new leader a flip can fail without landing;
	// retrying the same op is safe (a late landing is recognised as ours).
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		res, err := f.s.Flip(ctx, ch)
		cancel()
		if err == nil {
			f.cur = res
			return res
		}
		if errors.Is(err, ErrConflict) || errors.Is(err, ErrInvalid) || time.Now().After(deadline) {
			f.tb.Fatalf("flip to epoch %d: %v", next, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func checkWhole(v View) error {
	want := fmt.Sprintf("v%d", v.Epoch)
	if v.Active != want || v.Op != fmt.Sprintf("op-%d", v.Epoch) && v.Epoch > 1 {
		return fmt.Errorf("partial state: epoch %d active %s op %s", v.Epoch, v.Active, v.Op)
	}
	if v.Epoch > 1 && (v.From != fmt.Sprintf("v%d", v.Epoch-1) || v.Previous != v.From) {
		return fmt.Errorf("partial state: epoch %d from %s previous %s", v.Epoch, v.From, v.Previous)
	}
	return nil
}

// TestReadersSeeEpochsOnlyIncrease runs several readers on their own clients
// while a writer flips; every reader sees only whole configs, epochs only go
// up, and all end on the last epoch. Concurrent Current calls run under the
// race detector the whole time.
func TestReadersSeeEpochsOnlyIncrease(t *testing.T) {
	srv := etcdtest.Start(t)
	s := NewStore(srv.Client(t), testPrefix, zap.NewNop())
	f := newFlipper(t, s, "chat-70b")
	const readers, flips = 5, 60
	type seen struct {
		mu     sync.Mutex
		epochs []int64
		err    error
	}
	seens := make([]*seen, readers)
	ws := make([]*Watcher, readers)
	for i := range ws {
		sn := &seen{}
		seens[i] = sn
		ws[i] = startWatcher(t, WatcherConfig{Client: srv.Client(t), OnApply: func(v View) {
			sn.mu.Lock()
			defer sn.mu.Unlock()
			if err := checkWhole(v); err != nil && sn.err == nil {
				sn.err = err
			}
			if n := len(sn.epochs); n > 0 && v.Epoch <= sn.epochs[n-1] && sn.err == nil {
				sn.err = fmt.Errorf("epoch went from %d to %d", sn.epochs[n-1], v.Epoch)
			}
			sn.epochs = append(sn.epochs, v.Epoch)
		}})
		waitReady(t, ws[i])
	}
	stop := make(chan struct{})
	var readErr atomic.Value
	var rwg sync.WaitGroup
	for _, w := range ws {
		rwg.Add(1)
		go func(w *Watcher) {
			defer rwg.Done()
			var last int64
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, ok := w.Current("chat-70b")
				if !ok {
					continue
				}
				if err := checkWhole(v); err != nil {
					readErr.Store(err)
				}
				if v.Epoch < last {
					readErr.Store(fmt.Errorf("Current went back from %d to %d", last, v.Epoch))
				}
				last = v.Epoch
			}
		}(w)
	}
	for i := 0; i < flips; i++ {
		f.flip()
	}
	final := f.cur.Config.Epoch
	for i, w := range ws {
		eventually(t, fmt.Sprintf("reader %d at epoch %d", i, final), func() bool {
			v, ok := w.Current("chat-70b")
			return ok && v.Epoch == final
		})
	}
	close(stop)
	rwg.Wait()
	if err, _ := readErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	for i, sn := range seens {
		sn.mu.Lock()
		if sn.err != nil {
			t.Errorf("reader %d: %v", i, sn.err)
		}
		sn.mu.Unlock()
	}
}

func TestTicketValid(t *testing.T) {
	srv := etcdtest.Start(t)
	s := NewStore(srv.Client(t), testPrefix, zap.NewNop())
	f := newFlipper(t, s, "chat-70b")
	w := startWatcher(t, WatcherConfig{Client: srv.Client(t)})
	waitReady(t, w)

	if _, ok := w.Ticket("unknown-route"); ok {
		t.Fatal("ticket issued for an unknown route")
	}
	if st := w.Valid(Ticket{}); st != StatusUnknown || st.Serve() {
		t.Fatalf("zero ticket: %v", st)
	}
	tk, ok := w.Ticket("chat-70b")
	if !ok || tk.View().Active != "v1" {
		t.Fatalf("ticket: %v %+v", ok, tk.View())
	}
	if st := w.Valid(tk); st != StatusOK || !st.Serve() {
		t.Fatalf("fresh ticket: %v", st)
	}
	f.flip()
	eventually(t, "ticket moved", func() bool { return w.Valid(tk) == StatusMoved })
	if w.Valid(tk).Serve() {
		t.Fatal("a moved ticket must not be served")
	}
	tk2, _ := w.Ticket("chat-70b")
	if tk2.View().Epoch != 2 || w.Valid(tk2) != StatusOK {
		t.Fatalf("new ticket: %+v %v", tk2.View(), w.Valid(tk2))
	}
}

func TestReaderMalformedValues(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	s := NewStore(cli, testPrefix, zap.NewNop())
	ctx := testCtx(t)
	newFlipper(t, s, "chat-70b")
	if _, err := cli.Put(ctx, testPrefix+"/routes/garbage", `{"route":"garbage","active":`); err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, WatcherConfig{Client: srv.Client(t), Logger: zap.NewNop()})
	waitReady(t, w)

	if _, ok := w.Current("garbage"); ok {
		t.Fatal("malformed route applied")
	}
	if h := w.Health(); h.Malformed[testPrefix+"/routes/garbage"] == "" {
		t.Fatalf("malformed key not reported: %+v", h.Malformed)
	}
	if v, ok := w.Current("chat-70b"); !ok || v.Active != "v1" {
		t.Fatal("a malformed neighbour hid a good route")
	}

	t.Run("HandEditKeepsLastGood", func(t *testing.T) {
		tk, _ := w.Ticket("chat-70b")
		bad := `{"route":"chat-70b","active":"v9","previous":"v1","kind":"rollback","from":"v1","epoch":2,"op":"hand","reason":"","actor":"vim","at":"2026-11-25T10:00:00Z","sneaky":true}`
		if _, err := cli.Put(ctx, testPrefix+"/routes/chat-70b", bad); err != nil {
			t.Fatal(err)
		}
		eventually(t, "hand edit reported", func() bool {
			return w.Health().Malformed[testPrefix+"/routes/chat-70b"] != ""
		})
		if v, _ := w.Current("chat-70b"); v.Active != "v1" || w.Valid(tk) != StatusOK {
			t.Fatalf("half-applied a malformed value: %+v", v)
		}
		// A good value replaces it and clears the report. The store refuses
		// to flip over a malformed value, so write the repair directly.
		good := RouteConfig{Route: "chat-70b", Active: "v3", Previous: "v1", From: "v1", Kind: KindPromote, Epoch: 3, Op: "repair", Actor: "ops", At: time.Now()}
		b, _ := good.Encode()
		if _, err := cli.Put(ctx, testPrefix+"/routes/chat-70b", string(b)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "repair applied", func() bool {
			v, _ := w.Current("chat-70b")
			return v.Active == "v3" && w.Health().Malformed[testPrefix+"/routes/chat-70b"] == ""
		})
	})
	t.Run("StoreReportsMalformedWithKey", func(t *testing.T) {
		_, err := s.Get(ctx, "garbage")
		if err == nil || !strings.Contains(err.Error(), testPrefix+"/routes/garbage") {
			t.Fatalf("got %v, want an error naming the key", err)
		}
		_, bad, _, err := s.List(ctx)
		if err != nil || len(bad) != 1 {
			t.Fatalf("List: malformed %v, err %v", bad, err)
		}
	})
}

// TestReaderSurvivesCompaction cuts a reader off, moves the route and
// compacts etcd past the reader's revision, then reconnects it: the reader
// must recover from ErrCompacted by re-reading, landing on the last epoch.
func TestReaderSurvivesCompaction(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	s := NewStore(cli, testPrefix, zap.NewNop())
	f := newFlipper(t, s, "chat-70b")
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	w := startWatcher(t, WatcherConfig{Client: proxiedClient(t, proxy.Endpoint()), MaxStaleness: 2 * time.Second})
	waitReady(t, w)
	tk, _ := w.Ticket("chat-70b")

	proxy.Blackhole()
	for i := 0; i < 20; i++ {
		f.flip()
	}
	if _, err := cli.Compact(testCtx(t), f.cur.Revision); err != nil {
		t.Fatal(err)
	}
	proxy.Unblackhole()
	eventually(t, "reader at the last epoch after compaction", func() bool {
		v, _ := w.Current("chat-70b")
		return v.Epoch == f.cur.Config.Epoch
	})
	if w.Valid(tk) != StatusMoved {
		t.Fatal("old ticket still valid after recovery")
	}
	// And it keeps following.
	f.flip()
	eventually(t, "reader follows after recovery", func() bool {
		v, _ := w.Current("chat-70b")
		return v.Epoch == f.cur.Config.Epoch
	})
}

// TestWatchCompactedRevisionEnds checks the mechanism directly: a watch from
// a compacted revision ends at once so the loop re-reads.
func TestWatchCompactedRevisionEnds(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	s := NewStore(cli, testPrefix, zap.NewNop())
	f := newFlipper(t, s, "chat-70b")
	old := f.cur.Revision
	for i := 0; i < 5; i++ {
		f.flip()
	}
	if _, err := cli.Compact(testCtx(t), f.cur.Revision); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(WatcherConfig{Client: srv.Client(t), Prefix: testPrefix, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { w.watch(testCtx(t), old, 0); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("watch from a compacted revision did not end")
	}
}

func TestReaderStaleWhileCutOff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy Policy
		want   Status
	}{
		{"ServeLastKnown", ServeLastKnown, StatusStale},
		{"FailClosed", FailClosed, StatusStaleRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := etcdtest.Start(t)
			s := NewStore(srv.Client(t), testPrefix, zap.NewNop())
			f := newFlipper(t, s, "chat-70b")
			proxy := etcdtest.NewProxy(t, srv.Endpoint())
			w := startWatcher(t, WatcherConfig{Client: proxiedClient(t, proxy.Endpoint()), MaxStaleness: time.Second, Policy: tc.policy})
			waitReady(t, w)
			tk, _ := w.Ticket("chat-70b")
			if w.Valid(tk) != StatusOK {
				t.Fatal("not OK before the cut")
			}
			proxy.Blackhole()
			eventually(t, "stale reported while cut off", func() bool { return w.Valid(tk) == tc.want })
			if got := w.Valid(tk).Serve(); got != (tc.policy == ServeLastKnown) {
				t.Fatalf("Serve() = %v under %v", got, tc.policy)
			}
			if h := w.Health(); !h.Stale {
				t.Fatal("Health does not say stale")
			}
			if v, ok := w.Current("chat-70b"); !ok || v.Active != "v1" {
				t.Fatal("last known config lost while cut off")
			}
			f.flip()
			proxy.Unblackhole()
			eventually(t, "current again and caught up", func() bool {
				v, _ := w.Current("chat-70b")
				return v.Epoch == 2 && !w.Health().Stale
			})
			tk2, _ := w.Ticket("chat-70b")
			if w.Valid(tk2) != StatusOK {
				t.Fatalf("after recovery: %v", w.Valid(tk2))
			}
		})
	}
}

func TestReaderStaleByClock(t *testing.T) {
	// With an injected clock the staleness decision is checked without
	// waiting for real time to pass.
	srv := etcdtest.Start(t)
	s := NewStore(srv.Client(t), testPrefix, zap.NewNop())
	newFlipper(t, s, "chat-70b")
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	w, err := NewWatcher(WatcherConfig{Client: srv.Client(t), Prefix: testPrefix, Logger: zap.NewNop(), Now: now, MaxStaleness: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := w.load(ctx); err != nil {
		t.Fatal(err)
	}
	tk, _ := w.Ticket("chat-70b")
	w.checkStale()
	if w.Valid(tk) != StatusOK {
		t.Fatal("fresh reader stale")
	}
	offset.Store(int64(2 * time.Hour))
	w.checkStale()
	if w.Valid(tk) != StatusStale {
		t.Fatalf("after 2h of silence: %v", w.Valid(tk))
	}
	w.heard(w.Revision())
	if w.Valid(tk) != StatusOK {
		t.Fatal("hearing from etcd did not clear stale")
	}
}

func TestReaderSurvivesMemberRestart(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	eps := c.Endpoints()
	s := NewStore(c.Client(t), testPrefix, zap.NewNop())
	f := newFlipper(t, s, "chat-70b")
	// The reader talks to member 0 only, so its restart is felt.
	rcli, err := clientv3.New(clientv3.Config{Endpoints: eps[:1], DialTimeout: 5 * time.Second,
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rcli.Close() })
	w := startWatcher(t, WatcherConfig{Client: rcli, MaxStaleness: 2 * time.Second})
	waitReady(t, w)

	c.HardStop(t, 0)
	for i := 0; i < 5; i++ {
		f.flip()
	}
	eventually(t, "stale while its member is down", func() bool { return w.Health().Stale })
	c.Restart(t, 0)
	eventually(t, "caught up after member restart", func() bool {
		v, _ := w.Current("chat-70b")
		return v.Epoch == f.cur.Config.Epoch && !w.Health().Stale
	})
}

func writePin(tb testing.TB, path string, routes map[string]string) {
	tb.Helper()
	b, _ := json.Marshal(PinFile{Reason: "etcd down", Actor: "alice", Routes: routes})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

func TestPinFileWins(t *testing.T) {
	srv := etcdtest.Start(t)
	s := NewStore(srv.Client(t), testPrefix, zap.NewNop())
	f := newFlipper(t, s, "chat-70b")
	pin := filepath.Join(t.TempDir(), "pins.json")
	w := startWatcher(t, WatcherConfig{Client: srv.Client(t), PinFile: pin, PinPollInterval: 20 * time.Millisecond, Logger: zap.NewNop()})
	waitReady(t, w)
	tk, _ := w.Ticket("chat-70b")

	writePin(t, pin, map[string]string{"chat-70b": "v0", "offline": "v9"})
	eventually(t, "pin applied", func() bool {
		v, _ := w.Current("chat-70b")
		return v.Pinned && v.Active == "v0"
	})
	if w.Valid(tk) != StatusMoved {
		t.Fatal("pin did not invalidate tickets on the old version")
	}
	if v, ok := w.Current("offline"); !ok || v.Active != "v9" || !v.Pinned {
		t.Fatalf("pin for a route etcd does not know: %+v %v", v, ok)
	}

	f.flip()
	eventually(t, "etcd change seen under the pin", func() bool {
		v, _ := w.Current("chat-70b")
		return v.EtcdActive == "v2"
	})
	if v, _ := w.Current("chat-70b"); v.Active != "v0" {
		t.Fatalf("etcd overrode the pin: %+v", v)
	}

	t.Run("MalformedPinKeepsPins", func(t *testing.T) {
		if err := os.WriteFile(pin, []byte(`{"routes":{"chat-70b":"v 1"}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		eventually(t, "pin error reported", func() bool { return w.Health().PinError != "" })
		if v, _ := w.Current("chat-70b"); v.Active != "v0" {
			t.Fatal("a bad pin file unpinned the router")
		}
	})
	t.Run("RemovingThePinReturnsToEtcd", func(t *testing.T) {
		if err := os.Remove(pin); err != nil {
			t.Fatal(err)
		}
		eventually(t, "unpinned", func() bool {
			v, _ := w.Current("chat-70b")
			return !v.Pinned && v.Active == "v2"
		})
		if _, ok := w.Current("offline"); ok {
			t.Fatal("pin-only route outlived its pin")
		}
		if w.Health().PinError != "" {
			t.Fatal("pin error not cleared")
		}
	})
	t.Run("MalformedAtStartIsAnError", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.json")
		if err := os.WriteFile(bad, []byte("chat-70b=v1"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := NewWatcher(WatcherConfig{Client: srv.Client(t), Prefix: testPrefix, Logger: zap.NewNop(), PinFile: bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Fatalf("got %v, want an error naming the pin file", err)
		}
	})
}

// TestPinServesWithoutEtcd: the break-glass case. etcd is unreachable from
// the start, and the pinned route is served anyway.
func TestPinServesWithoutEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	proxy.Blackhole()
	pin := filepath.Join(t.TempDir(), "pins.json")
	writePin(t, pin, map[string]string{"chat-70b": "v41"})
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{proxy.Endpoint()}, DialTimeout: 100 * time.Millisecond, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	w := startWatcher(t, WatcherConfig{Client: cli, PinFile: pin, MaxStaleness: time.Second, Logger: zap.NewNop()})
	tk, ok := w.Ticket("chat-70b")
	if !ok || tk.View().Active != "v41" {
		t.Fatalf("pinned route not served without etcd: %+v", tk.View())
	}
	if st := w.Valid(tk); st != StatusStale || !st.Serve() {
		t.Fatalf("pinned route without etcd: %v, want stale but served", st)
	}
}

func TestRouterPublishesObservedEpochs(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	s := NewStore(cli, testPrefix, zap.NewNop())
	f := newFlipper(t, s, "chat-70b")
	ctx := testCtx(t)
	w := startWatcher(t, WatcherConfig{Client: srv.Client(t), RouterID: "router-a", LeaseTTL: 5})
	key := testPrefix + "/routers/router-a"
	read := func() (RouterRecord, int64) {
		resp, err := cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) == 0 {
			return RouterRecord{}, 0
		}
		var rec RouterRecord
		if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
			t.Fatalf("router record: %v", err)
		}
		return rec, resp.Kvs[0].Lease
	}
	eventually(t, "router registered with epoch 1", func() bool {
		rec, _ := read()
		return rec.ID == "router-a" && rec.Observed["chat-70b"] == 1
	})
	if _, lease := read(); lease == 0 {
		t.Fatal("router record is not under a lease")
	}
	f.flip()
	eventually(t, "router publishes epoch 2", func() bool {
		rec, _ := read()
		return rec.Observed["chat-70b"] == 2
	})
	w.Close()
	if rec, _ := read(); rec.ID != "" {
		t.Fatal("router record outlived Close")
	}
}
