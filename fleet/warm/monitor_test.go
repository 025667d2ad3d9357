package warm

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// events records what a Monitor emits.
type events struct {
	mu  sync.Mutex
	got []Event
}

func (e *events) emit(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, ev)
}

func (e *events) take() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.got
	e.got = nil
	return out
}

func (e *events) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.got)
}

// barrier holds every check of a round until n checks have started, so that
// two monitors are sure to have read the same state before either writes.
type barrier struct {
	mu sync.Mutex
	wg *sync.WaitGroup
}

func (b *barrier) arm(n int) {
	wg := &sync.WaitGroup{}
	wg.Add(n)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.wg = wg
}

func (b *barrier) wait() {
	b.mu.Lock()
	wg := b.wg
	b.mu.Unlock()
	if wg != nil {
		wg.Done()
		wg.Wait()
	}
}

// countingChecker counts the checks a Monitor makes and, with a barrier,
// holds them.
type countingChecker struct {
	WarmChecker
	n       atomic.Int32
	barrier *barrier
}

func (c *countingChecker) Check(ctx context.Context, route, target string) (Report, error) {
	c.n.Add(1)
	if c.barrier != nil {
		c.barrier.wait()
	}
	return c.WarmChecker.Check(ctx, route, target)
}

func (f *fleet) monitor(cli *clientv3.Client, ev *events) (*Monitor, *countingChecker) {
	return f.monitorWith(cli, ev, nil)
}

func (f *fleet) monitorWith(cli *clientv3.Client, ev *events, b *barrier) (*Monitor, *countingChecker) {
	f.tb.Helper()
	checker := f.checker(func(c *Config) { c.KV = cli; c.Timeout = 2 * time.Second })
	cc := &countingChecker{WarmChecker: checker, barrier: b}
	m, err := NewMonitor(MonitorConfig{Checker: cc, KV: cli, Prefix: f.prefix, Interval: 20 * time.Millisecond,
		Logger: zap.NewNop(), Emit: ev.emit})
	if err != nil {
		f.tb.Fatal(err)
	}
	return m, cc
}

func (f *fleet) keepState(route string) (KeepState, bool) {
	f.tb.Helper()
	key := Keys{Prefix: f.prefix}.WarmKeep(route)
	resp, err := f.cli.Get(testCtx(f.tb), key)
	if err != nil {
		f.tb.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return KeepState{}, false
	}
	s, err := DecodeKeepState(key, resp.Kvs[0].Value, route)
	if err != nil {
		f.tb.Fatal(err)
	}
	return s, true
}

func mustTick(tb testing.TB, m *Monitor) {
	tb.Helper()
	if err := m.Tick(testCtx(tb)); err != nil {
		tb.Fatal(err)
	}
}

func statesOf(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%s %s@%s rev %d", e.State, e.Route, e.Target, e.Revision))
	}
	return out
}

func wantEvents(tb testing.TB, ev *events, states ...EventState) []Event {
	tb.Helper()
	got := ev.take()
	if len(got) != len(states) {
		tb.Fatalf("events %v, want %v", statesOf(got), states)
	}
	for i, s := range states {
		if got[i].State != s {
			tb.Fatalf("event %d is %s, want %s", i, got[i].State, s)
		}
	}
	return got
}

// TestMonitorStateChanges: warm on first sight is recorded silently; cold is
// one event, staying cold none, warm again one; a restarted monitor does
// not repeat anything.
func TestMonitorStateChanges(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	f := newFleet(t, cli)
	f.route("chat-70b", "v42", "v41")
	f.route("embed", "e2", "") // no rollback target: not checked
	agents := f.nodes("chat-70b", []nodeSpec{
		{name: "n1", active: 4, target: 4, agent: warmB(4)},
		{name: "n2", active: 4, target: 4, agent: warmB(4)},
	})
	ev := &events{}
	m, cc := f.monitor(cli, ev)

	mustTick(t, m)
	wantEvents(t, ev)
	if s, ok := f.keepState("chat-70b"); !ok || s.State != "warm" || s.Target != "v41" || s.Summary != "2/2 nodes, 8/8 GPUs warm" {
		t.Fatalf("state after a warm first sight: %+v %v", s, ok)
	}
	if _, ok := f.keepState("embed"); ok || cc.n.Load() != 1 {
		t.Fatalf("a route without a previous version was checked (%d checks)", cc.n.Load())
	}

	agents["n2"].set(coldB(4))
	mustTick(t, m)
	cold := wantEvents(t, ev, EventCold)[0]
	if cold.Route != "chat-70b" || cold.Target != "v41" || cold.Active != "v42" || cold.Revision == 0 || cold.Report.Warm ||
		cold.Report.Nodes[0].Node != "n2" {
		t.Fatalf("cold event %+v", cold)
	}
	for _, want := range []string{"chat-70b: rollback target v41 is not warm: 1/2 nodes, 4/8 GPUs warm",
		"n2 cold (canary took 2.1s, budget 800ms)", "would be refused unless forced"} {
		if !strings.Contains(cold.Text(), want) {
			t.Errorf("cold text %q lacks %q", cold.Text(), want)
		}
	}
	coldState, _ := f.keepState("chat-70b")

	mustTick(t, m)
	mustTick(t, m)
	wantEvents(t, ev)

	// A restarted replica (a new Monitor, same etcd) stays quiet.
	m2, _ := f.monitor(srv.Client(t), ev)
	mustTick(t, m2)
	wantEvents(t, ev)

	agents["n2"].set(warmB(4))
	mustTick(t, m)
	again := wantEvents(t, ev, EventWarmAgain)[0]
	if !again.ColdSince.Equal(coldState.Since) || !strings.Contains(again.Text(), "rollback target v41 is warm again: 2/2 nodes, 8/8 GPUs warm (cold for") {
		t.Fatalf("warm-again event %+v: %s", again, again.Text())
	}
	mustTick(t, m)
	mustTick(t, m2)
	wantEvents(t, ev)
}

// TestMonitorTargets: a target cold on first sight is news; a promote gives
// the route a new rollback target whose state starts afresh; a route that
// loses its rollback target loses its state.
func TestMonitorTargets(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	f := newFleet(t, cli)
	f.route("chat-70b", "v42", "v41")
	a := startAgent(t, "n1", coldB(4))
	f.node("n1", a.url(), map[string]map[string]int{"chat-70b": {"v41": 4, "v42": 4, "v43": 4}})
	ev := &events{}
	m, _ := f.monitor(cli, ev)

	mustTick(t, m)
	wantEvents(t, ev, EventCold)

	// Promote v43: the rollback target becomes v42, which the agent (it
	// answers the same for every version) reports warm: recorded, no event.
	entry, err := f.store.Get(testCtx(t), "chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Promote(testCtx(t), routing.Change{Route: "chat-70b", To: "v43", ExpectRev: entry.ModRevision, Op: "op-promote-v43", Actor: "t", Reason: "t"}); err != nil {
		t.Fatal(err)
	}
	a.set(warmB(4))
	mustTick(t, m)
	wantEvents(t, ev)
	if s, _ := f.keepState("chat-70b"); s.Target != "v42" || s.State != "warm" {
		t.Fatalf("state after the promote: %+v", s)
	}
	a.set(coldB(4))
	mustTick(t, m)
	if e := wantEvents(t, ev, EventCold)[0]; e.Target != "v42" || e.Active != "v43" {
		t.Fatalf("event %+v", e)
	}

	// A state whose route is gone is removed.
	key := Keys{Prefix: f.prefix}.WarmKeep("gone")
	f.put(key, `{"route":"gone","target":"v1","state":"cold","since":"2026-01-01T00:00:00Z","summary":"0/0 nodes, 0/0 GPUs warm"}`)
	mustTick(t, m)
	if _, ok := f.keepState("gone"); ok {
		t.Fatal("the state of a route that is gone was kept")
	}
	wantEvents(t, ev)
}

// TestMonitorTwoReplicas: two monitors on the same etcd, each with its own
// client and checker, both reading the state before either writes (the
// barrier): one event per change in total, from whichever write wins.
func TestMonitorTwoReplicas(t *testing.T) {
	srv := etcdtest.Start(t)
	f := newFleet(t, srv.Client(t))
	f.route("chat-70b", "v42", "v41")
	a := startAgent(t, "n1", warmB(4))
	f.node("n1", a.url(), map[string]map[string]int{"chat-70b": {"v41": 4, "v42": 4}})
	ev := &events{}
	b := &barrier{}
	m1, _ := f.monitorWith(srv.Client(t), ev, b)
	m2, _ := f.monitorWith(srv.Client(t), ev, b)
	both := func() {
		b.arm(2)
		var wg sync.WaitGroup
		for _, m := range []*Monitor{m1, m2} {
			wg.Go(func() { mustTick(t, m) })
		}
		wg.Wait()
	}
	for _, step := range []struct {
		name string
		b    behaviour
		want []EventState
	}{
		{"FirstSightWarm", warmB(4), nil},
		{"GoesCold", coldB(4), []EventState{EventCold}},
		{"StaysCold", coldB(4), nil},
		{"WarmAgain", warmB(4), []EventState{EventWarmAgain}},
		{"StaysWarm", warmB(4), nil},
		{"ColdOnceMore", coldB(4), []EventState{EventCold}},
	} {
		a.set(step.b)
		both()
		both()
		got := ev.take()
		if len(got) != len(step.want) || (len(got) == 1 && got[0].State != step.want[0]) {
			t.Fatalf("%s: events %v, want %v", step.name, statesOf(got), step.want)
		}
	}
}

// TestMonitorRun: two replicas running on their own tickers emit one event
// for a change, however many passes each makes after it.
func TestMonitorRun(t *testing.T) {
	srv := etcdtest.Start(t)
	f := newFleet(t, srv.Client(t))
	f.route("chat-70b", "v42", "v41")
	a := startAgent(t, "n1", coldB(4))
	f.node("n1", a.url(), map[string]map[string]int{"chat-70b": {"v41": 4, "v42": 4}})
	ev := &events{}
	m1, c1 := f.monitor(srv.Client(t), ev)
	m2, c2 := f.monitor(srv.Client(t), ev)
	ctx, cancel := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	wg.Go(func() { m1.Run(ctx) })
	wg.Go(func() { m2.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("the cold event", func() bool { return ev.len() >= 1 })
	n1, n2 := c1.n.Load(), c2.n.Load()
	waitFor("five more passes of each replica", func() bool { return c1.n.Load() >= n1+5 && c2.n.Load() >= n2+5 })
	wantEvents(t, ev, EventCold)
}

func TestDecodeKeepState(t *testing.T) {
	const key = "/p/warmkeep/chat-70b"
	good := `{"route":"chat-70b","target":"v41","state":"cold","since":"2026-01-01T00:00:00Z","summary":"s"}`
	if s, err := DecodeKeepState(key, []byte(good), "chat-70b"); err != nil || s.State != "cold" {
		t.Fatalf("%+v %v", s, err)
	}
	for name, bad := range map[string]string{
		"Garbage":       `{`,
		"Trailing":      good + `{}`,
		"Unknown":       `{"route":"chat-70b","target":"v41","state":"cold","x":1}`,
		"RouteMismatch": `{"route":"other","target":"v41","state":"cold"}`,
		"BadState":      `{"route":"chat-70b","target":"v41","state":"lukewarm"}`,
		"BadTarget":     `{"route":"chat-70b","target":"v 41","state":"warm"}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeKeepState(key, []byte(bad), "chat-70b"); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// flipDuringCheck is a WarmChecker that promotes the route (so its rollback
// target changes) while the check of the old target runs, and judges that
// old target cold.
type flipDuringCheck struct {
	f  *fleet
	to string
	n  atomic.Int32
}

func (c *flipDuringCheck) Check(ctx context.Context, route, target string) (Report, error) {
	if c.n.Add(1) == 1 {
		entry, err := c.f.store.Get(ctx, route)
		if err != nil {
			return Report{}, err
		}
		if _, err := c.f.store.Promote(ctx, routing.Change{Route: route, To: c.to, ExpectRev: entry.ModRevision,
			Op: "op-promote-during-check", Actor: "t", Reason: "t"}); err != nil {
			return Report{}, err
		}
	}
	rep := Report{Route: route, Target: target, Active: "v42", Reason: "4 GPUs short of the quorum"}
	return rep, &NotWarmError{Report: rep}
}

// TestMonitorRouteFlippedDuringCheck: a flip while the rollback target is
// being checked makes that check's result about a version that is no longer
// the target: it is neither stored nor emitted, and the next pass checks
// the new target.
func TestMonitorRouteFlippedDuringCheck(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	f := newFleet(t, cli)
	f.route("chat-70b", "v42", "v41")
	ev := &events{}
	chk := &flipDuringCheck{f: f, to: "v43"}
	m, err := NewMonitor(MonitorConfig{Checker: chk, KV: cli, Prefix: f.prefix, Logger: zap.NewNop(), Emit: ev.emit})
	if err != nil {
		t.Fatal(err)
	}
	mustTick(t, m)
	if got := ev.take(); len(got) != 0 {
		t.Fatalf("a check of the old target v41, which a promote replaced during the check, emitted %v", statesOf(got))
	}
	if s, ok := f.keepState("chat-70b"); ok {
		t.Fatalf("stored a state about the old target: %+v", s)
	}
	mustTick(t, m)
	if e := wantEvents(t, ev, EventCold)[0]; e.Target != "v42" {
		t.Fatalf("the next pass reported %s, want the new target v42", e.Target)
	}
}
