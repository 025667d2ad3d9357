package drills

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/strictjson"
)

const announceChan = "C0DRILLS"

// schedCall is one call of the recording RunFunc.
type schedCall struct {
	route     string
	scheduled time.Time
}

// schedRuns is a recording RunFunc. A route in errs returns that error;
// with block set, every run waits until block is closed or its context
// ends (and then returns the context's error).
type schedRuns struct {
	mu    sync.Mutex
	calls []schedCall
	errs  map[string]error
	block chan struct{}
}

func (r *schedRuns) Run(ctx context.Context, route string, scheduled time.Time) error {
	r.mu.Lock()
	r.calls = append(r.calls, schedCall{route, scheduled})
	err, block := r.errs[route], r.block
	r.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (r *schedRuns) Calls() []schedCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]schedCall(nil), r.calls...)
}

// schedMsg is one announcement, with the replica that posted it.
type schedMsg struct {
	replica, channel, text string
}

// schedAnnouncer records announcements of every replica of a test.
type schedAnnouncer struct {
	mu   sync.Mutex
	msgs []schedMsg
}

func (a *schedAnnouncer) For(replica string) Announcer { return replicaAnnouncer{a, replica} }

func (a *schedAnnouncer) Msgs() []schedMsg {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]schedMsg(nil), a.msgs...)
}

// Containing returns the announcements whose text contains every part.
func (a *schedAnnouncer) Containing(parts ...string) []schedMsg {
	var out []schedMsg
	for _, m := range a.Msgs() {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(m.text, p)
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

type replicaAnnouncer struct {
	a       *schedAnnouncer
	replica string
}

func (r replicaAnnouncer) Announce(_ context.Context, channel, text string) error {
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	r.a.msgs = append(r.a.msgs, schedMsg{r.replica, channel, text})
	return nil
}

// schedEnv is a real etcd (one member or a cluster), a settable clock, a
// recording RunFunc and Announcer shared by the test's schedulers.
type schedEnv struct {
	prefix string
	admin  *clientv3.Client
	// newClient returns another client of the same etcd, one per replica.
	newClient func(t *testing.T) *clientv3.Client
	clock     *schedClock
	store     *Store
	runs      *schedRuns
	ann       *schedAnnouncer
	log       *zap.Logger
}

func newSchedEnv(t *testing.T, now time.Time) *schedEnv {
	t.Helper()
	srv := etcdtest.Start(t)
	return newSchedEnvOn(t, now, srv.Client(t), func(t *testing.T) *clientv3.Client { return srv.Client(t) })
}

func newSchedEnvOn(t *testing.T, now time.Time, admin *clientv3.Client, newClient func(t *testing.T) *clientv3.Client) *schedEnv {
	t.Helper()
	clock := newSchedClock(now)
	prefix := "/" + t.Name()
	return &schedEnv{
		prefix: prefix, admin: admin, newClient: newClient, clock: clock,
		store: NewStore(admin, prefix, nil, clock.Now),
		runs:  &schedRuns{errs: map[string]error{}},
		ann:   &schedAnnouncer{},
		log:   zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	}
}

// replica is one bot replica's scheduler, with its own client and
// liveness lease; ticks counts how often its scheduler read the clock.
type replica struct {
	name  string
	sess  *concurrency.Session
	cli   *clientv3.Client
	sched *Scheduler
	ticks atomic.Int64
}

func (e *schedEnv) replica(t *testing.T, name string, mod func(*SchedulerConfig)) *replica {
	t.Helper()
	r := &replica{name: name, cli: e.newClient(t)}
	var err error
	if r.sess, err = concurrency.NewSession(r.cli, concurrency.WithTTL(10)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.sess.Close() })
	cfg := SchedulerConfig{
		Store: NewStore(r.cli, e.prefix, e.log.Named(name), e.clock.Now), Owner: r.sess, Run: e.runs.Run,
		Announcer: e.ann.For(name), AnnounceChannel: announceChan, Logger: e.log.Named(name),
		Now: func() time.Time { r.ticks.Add(1); return e.clock.Now() },
	}
	if mod != nil {
		mod(&cfg)
	}
	if r.sched, err = NewScheduler(cfg); err != nil {
		t.Fatal(err)
	}
	return r
}

// once runs one tick and waits for the drills it started.
func (r *replica) once(t *testing.T) {
	t.Helper()
	if err := r.sched.Once(schedCtx(t)); err != nil {
		t.Fatalf("%s: Once: %v", r.name, err)
	}
	r.sched.Wait()
}

// seedRoute creates route on v41 and promotes it to v42, so a drill rolls
// it back from v42 to v41.
func (e *schedEnv) seedRoute(t *testing.T, route string) {
	t.Helper()
	rs := routing.NewStore(e.admin, e.prefix, nil)
	ctx := schedCtx(t)
	r1, err := rs.Promote(ctx, routing.Change{Route: route, To: "v41", Op: uuid.NewString(), Reason: "seed", Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Promote(ctx, routing.Change{Route: route, To: "v42", ExpectRev: r1.Revision, Op: uuid.NewString(), Reason: "release", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
}

func (e *schedEnv) put(t *testing.T, route, expr string, createdAt time.Time) {
	t.Helper()
	// A schedule needs its route; a test that did not seed one gets a
	// bare route config (its runner is a fake that never reads it).
	if _, err := e.admin.Txn(schedCtx(t)).
		If(clientv3.Compare(clientv3.CreateRevision(routing.Keyspace{Prefix: e.prefix}.Route(route)), "=", 0)).
		Then(clientv3.OpPut(routing.Keyspace{Prefix: e.prefix}.Route(route), `{"active":"v42","previous":"v41"}`)).
		Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Put(schedCtx(t), route, Schedule{Cron: expr, CreatedBy: "U0SCHED", CreatedAt: createdAt}); err != nil {
		t.Fatal(err)
	}
}

// record returns the run record of route at t; ok is false when none.
func (e *schedEnv) record(t *testing.T, route string, at time.Time) (rec RunRecord, lease clientv3.LeaseID, ok bool) {
	t.Helper()
	resp, err := e.admin.Get(schedCtx(t), Keys{Prefix: e.prefix}.Run(route, at.Unix()))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return rec, 0, false
	}
	if err := strictjson.Decode(resp.Kvs[0].Value, &rec); err != nil {
		t.Fatalf("run record of %s at %v: %v", route, at, err)
	}
	return rec, clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func (e *schedEnv) events(t *testing.T, kind audit.Kind) []audit.Event {
	t.Helper()
	return eventsOfKind(outboxEvents(t, e.admin, e.prefix), kind)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSchedulerDueRunRunsOnce(t *testing.T) {
	e := newSchedEnv(t, utc("2026-03-02T08:00:00Z"))
	e.put(t, "chat-70b", "0 9 * * *", time.Time{})
	e.put(t, "refuse-me", "0 9 * * *", time.Time{})
	e.put(t, "break-me", "0 9 * * *", time.Time{})
	e.runs.errs["refuse-me"] = commands.Errorf(commands.EREFUSED, "quiet period")
	e.runs.errs["break-me"] = errors.New("boom")
	r := e.replica(t, "a", nil)

	for _, at := range []string{"2026-03-02T08:00:00Z", "2026-03-02T08:59:59Z"} {
		e.clock.Set(utc(at))
		r.once(t)
	}
	if n := len(e.runs.Calls()); n != 0 {
		t.Fatalf("%d runs before 09:00", n)
	}
	due := utc("2026-03-02T09:00:00Z")
	e.clock.Set(due.Add(5 * time.Second))
	r.once(t)
	calls := e.runs.Calls()
	if len(calls) != 3 {
		t.Fatalf("calls %v, want one per route", calls)
	}
	for _, c := range calls {
		if !c.scheduled.Equal(due) {
			t.Fatalf("run %v, want scheduled at %v", c, due)
		}
	}
	for route, state := range map[string]string{"chat-70b": RunCompleted, "refuse-me": RunRefused, "break-me": RunFailed} {
		rec, lease, ok := e.record(t, route, due)
		if !ok || rec.State != state || rec.Owner != leaseHex(r.sess.Lease()) || !rec.StartedAt.Equal(due.Add(5*time.Second)) ||
			!rec.Scheduled.Equal(due) || rec.FinishedAt.IsZero() || lease == 0 {
			t.Fatalf("%s: record %+v (lease %x), want state %s", route, rec, lease, state)
		}
		if state == RunRefused && rec.Detail != "quiet period" {
			t.Fatalf("refused record detail %q", rec.Detail)
		}
	}
	for _, at := range []string{"2026-03-02T09:00:20Z", "2026-03-02T09:09:00Z", "2026-03-02T12:00:00Z"} {
		e.clock.Set(utc(at))
		r.once(t)
	}
	if n := len(e.runs.Calls()); n != 3 {
		t.Fatalf("%d runs, want each run once", n)
	}
	// The next day's run is the next run.
	e.clock.Set(utc("2026-03-03T09:00:01Z"))
	r.once(t)
	if n := len(e.runs.Calls()); n != 6 {
		t.Fatalf("%d runs after the second day, want 6", n)
	}
}

func TestSchedulerTwoReplicasOneRun(t *testing.T) {
	e := newSchedEnv(t, utc("2026-03-02T08:00:00Z"))
	e.seedRoute(t, "chat-70b")
	e.put(t, "chat-70b", "0 9 * * *", time.Time{})
	a, b := e.replica(t, "a", nil), e.replica(t, "b", nil)
	e.clock.Set(utc("2026-03-02T09:00:01Z"))
	for range 5 {
		var wg sync.WaitGroup
		for _, r := range []*replica{a, b} {
			wg.Go(func() {
				if err := r.sched.Once(schedCtx(t)); err != nil {
					t.Errorf("%s: %v", r.name, err)
				}
			})
		}
		wg.Wait()
	}
	a.sched.Wait()
	b.sched.Wait()
	if calls := e.runs.Calls(); len(calls) != 1 {
		t.Fatalf("calls %v, want exactly one run", calls)
	}
	// Tomorrow's run was announced 24 h ahead, once.
	if msgs := e.ann.Containing("Tue 3 Mar"); len(msgs) != 1 {
		t.Fatalf("announcements %v, want one for tomorrow", e.ann.Msgs())
	}
}

func TestSchedulerLateRunSkipped(t *testing.T) {
	e := newSchedEnv(t, utc("2026-03-02T08:00:00Z"))
	e.put(t, "chat-70b", "0 9 * * *", time.Time{})
	r := e.replica(t, "a", nil)
	due := utc("2026-03-02T09:00:00Z")
	e.clock.Set(due.Add(15 * time.Minute))
	r.once(t)
	r.once(t)
	if calls := e.runs.Calls(); len(calls) != 0 {
		t.Fatalf("a run 15 minutes late ran: %v", calls)
	}
	rec, _, ok := e.record(t, "chat-70b", due)
	if !ok || rec.State != RunSkipped || !strings.Contains(rec.Detail, "no leader for 15 min") {
		t.Fatalf("record %+v, want skipped for having no leader", rec)
	}
	evs := e.events(t, audit.KindDrillSkipped)
	if len(evs) != 1 {
		t.Fatalf("%d drill.skipped events, want 1", len(evs))
	}
	if ev := evs[0]; ev.Route != "chat-70b" || ev.Actor != SchedulerActor || ev.Outcome != RunSkipped ||
		!strings.Contains(ev.Reason, "backflip had no leader for 15 min (a drill may start at most 10 min late)") ||
		!strings.Contains(string(ev.Details), `"scheduled":"2026-03-02T09:00:00Z"`) {
		t.Fatalf("event %+v details %s", ev, ev.Details)
	}
	msgs := e.ann.Containing("was skipped")
	if len(msgs) != 1 || msgs[0].channel != announceChan {
		t.Fatalf("skip notices %v", e.ann.Msgs())
	}
	want := "The drill of chat-70b due at 09:00 UTC on Mon 2 Mar was skipped: backflip had no leader for 15 min (a drill may start at most 10 min late). The next is at 09:00 UTC on Tue 3 Mar (in 23 h 45 min)."
	if msgs[0].text != want {
		t.Fatalf("notice\n%q\nwant\n%q", msgs[0].text, want)
	}
	// A scheduler that was ticking when the run was due, but could not
	// claim it (etcd refused its writes), says it was late instead.
	e.put(t, "chat-8b", "30 9 * * *", time.Time{})
	flaky := &failingTxns{Client: e.newClient(t)}
	r2 := e.replica(t, "flaky", func(c *SchedulerConfig) { c.Etcd = flaky })
	flaky.fail.Store(true)
	e.clock.Set(utc("2026-03-02T09:31:00Z"))
	if err := r2.sched.Once(schedCtx(t)); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Once with failing writes: %v", err)
	}
	flaky.fail.Store(false)
	e.clock.Set(utc("2026-03-02T09:40:30Z"))
	r2.once(t)
	if rec, _, _ := e.record(t, "chat-8b", utc("2026-03-02T09:30:00Z")); rec.State != RunSkipped ||
		rec.Detail != "late by 10 min 30s (a drill may start at most 10 min late)" {
		t.Fatalf("record %+v, want skipped late by 10 min 30s", rec)
	}
	if calls := e.runs.Calls(); len(calls) != 0 {
		t.Fatalf("late runs ran: %v", calls)
	}
}

// failingTxns is an etcd client whose transactions fail while fail is
// set, as when etcd refuses writes (NOSPACE, lost quorum).
type failingTxns struct {
	*clientv3.Client
	fail atomic.Bool
}

func (f *failingTxns) Txn(ctx context.Context) clientv3.Txn {
	if f.fail.Load() {
		return failedTxn{}
	}
	return f.Client.Txn(ctx)
}

type failedTxn struct{}

func (t failedTxn) If(...clientv3.Cmp) clientv3.Txn  { return t }
func (t failedTxn) Then(...clientv3.Op) clientv3.Txn { return t }
func (t failedTxn) Else(...clientv3.Op) clientv3.Txn { return t }
func (failedTxn) Commit() (*clientv3.TxnResponse, error) {
	return nil, errors.New("injected: etcd refused the transaction")
}

func TestSchedulerBusyRouteSkipsNextWhenLate(t *testing.T) {
	e := newSchedEnv(t, utc("2026-03-02T08:00:00Z"))
	e.put(t, "chat-70b", "0 * * * *", time.Time{})
	e.runs.block = make(chan struct{})
	r := e.replica(t, "a", nil)
	e.clock.Set(utc("2026-03-02T09:00:01Z"))
	if err := r.sched.Once(schedCtx(t)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the 09:00 drill to start", func() bool { return len(e.runs.Calls()) == 1 })
	// The 10:00 run waits while the 09:00 drill is still running ...
	e.clock.Set(utc("2026-03-02T10:00:01Z"))
	if err := r.sched.Once(schedCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := e.record(t, "chat-70b", utc("2026-03-02T10:00:00Z")); ok {
		t.Fatal("the 10:00 run was claimed while the 09:00 drill ran")
	}
	// ... and is skipped once it is too late.
	e.clock.Set(utc("2026-03-02T10:10:30Z"))
	if err := r.sched.Once(schedCtx(t)); err != nil {
		t.Fatal(err)
	}
	close(e.runs.block)
	r.sched.Wait()
	rec, _, _ := e.record(t, "chat-70b", utc("2026-03-02T10:00:00Z"))
	if rec.State != RunSkipped || !strings.Contains(rec.Detail, "the previous drill of chat-70b was still running 10 min 30s after this one was due") {
		t.Fatalf("record %+v", rec)
	}
	if rec, _, _ := e.record(t, "chat-70b", utc("2026-03-02T09:00:00Z")); rec.State != RunCompleted {
		t.Fatalf("09:00 record %+v", rec)
	}
	if calls := e.runs.Calls(); len(calls) != 1 {
		t.Fatalf("calls %v", calls)
	}
}

func TestSchedulerSkipAsked(t *testing.T) {
	e := newSchedEnv(t, utc("2026-03-02T08:00:00Z"))
	e.seedRoute(t, "chat-70b")
	e.put(t, "chat-70b", "0 9 * * *", time.Time{})
	r := e.replica(t, "a", nil)
	due := utc("2026-03-02T09:00:00Z")
	if got, err := e.store.SkipNext(schedCtx(t), "chat-70b", "U-SKIPPER"); err != nil || !got.Equal(due) {
		t.Fatalf("SkipNext: %v %v", got, err)
	}
	// A skipped run is not announced.
	e.clock.Set(utc("2026-03-02T08:46:00Z"))
	r.once(t)
	if msgs := e.ann.Msgs(); len(msgs) != 0 {
		t.Fatalf("announcements of a skipped run: %v", msgs)
	}
	e.clock.Set(due.Add(5 * time.Second))
	r.once(t)
	r.once(t)
	if calls := e.runs.Calls(); len(calls) != 0 {
		t.Fatalf("a skipped run ran: %v", calls)
	}
	rec, _, ok := e.record(t, "chat-70b", due)
	if !ok || rec.State != RunSkipped || !strings.Contains(rec.Detail, "skipped with /drill skip by U-SKIPPER") {
		t.Fatalf("record %+v", rec)
	}
	evs := e.events(t, audit.KindDrillSkipped)
	if len(evs) != 1 || evs[0].Actor != "U-SKIPPER" || evs[0].Reason != "skipped with /drill skip by U-SKIPPER (the schedule was created by U0SCHED)" {
		t.Fatalf("drill.skipped events %+v", evs)
	}
	if sc, _, err := e.store.Get(schedCtx(t), "chat-70b"); err != nil || sc.Skip != 0 || sc.SkippedBy != "" {
		t.Fatalf("skip not cleared: %+v %v", sc, err)
	}
	if msgs := e.ann.Containing("was skipped, as U-SKIPPER asked with /drill skip", "The next is at 09:00 UTC on Tue 3 Mar"); len(msgs) != 1 {
		t.Fatalf("skip notices %v", e.ann.Msgs())
	}
	// The run after it runs.
	e.clock.Set(utc("2026-03-03T09:00:05Z"))
	r.once(t)
	if calls := e.runs.Calls(); len(calls) != 1 || !calls[0].scheduled.Equal(utc("2026-03-03T09:00:00Z")) {
		t.Fatalf("calls %v, want the next day's run", calls)
	}
}

func TestSchedulerAnnouncements(t *testing.T) {
	e := newSchedEnv(t, utc("2026-02-27T12:00:00Z"))
	e.seedRoute(t, "chat-70b")
	e.put(t, "chat-70b", "0 9 * * 1", time.Time{})
	e.put(t, "ghost", "CRON_TZ=Europe/Berlin 0 10 * * 1", time.Time{})
	// The route is removed after its drills were scheduled.
	if _, err := e.admin.Delete(schedCtx(t), routing.Keyspace{Prefix: e.prefix}.Route("ghost")); err != nil {
		t.Fatal(err)
	}
	a, b := e.replica(t, "a", nil), e.replica(t, "b", nil)
	both := func() {
		a.once(t)
		b.once(t)
	}
	e.clock.Set(utc("2026-03-01T08:59:00Z"))
	both()
	if msgs := e.ann.Msgs(); len(msgs) != 0 {
		t.Fatalf("announced too early: %v", msgs)
	}
	e.clock.Set(utc("2026-03-01T09:00:10Z"))
	both()
	msgs := e.ann.Msgs()
	if len(msgs) != 2 {
		t.Fatalf("announcements %v, want one per route", msgs)
	}
	want := "Drill at 09:00 UTC on Mon 2 Mar (in 24 h): a real rollback of chat-70b from v42 to v41, held 30s, then flipped back to v42. " +
		"Impact: in-flight requests on chat-70b are aborted and re-issued twice (at the rollback and at the return). " +
		"To postpone it: /drill skip chat-70b (cancel the schedule: /drill cancel chat-70b)."
	if got := e.ann.Containing("chat-70b"); len(got) != 1 || got[0].text != want || got[0].channel != announceChan {
		t.Fatalf("announcement\n%v\nwant\n%q", got, want)
	}
	if got := e.ann.Containing("ghost", "10:00 CET on Mon 2 Mar", "does not exist now", "/drill skip ghost"); len(got) != 1 {
		t.Fatalf("announcement of a missing route: %v", e.ann.Msgs())
	}
	for _, at := range []string{"2026-03-01T09:00:25Z", "2026-03-01T09:09:59Z", "2026-03-01T09:10:00Z"} {
		e.clock.Set(utc(at))
		both()
	}
	if n := len(e.ann.Msgs()); n != 2 {
		t.Fatalf("%d announcements after more ticks of both replicas, want still 2: %v", n, e.ann.Msgs())
	}
	e.clock.Set(utc("2026-03-02T08:45:00Z"))
	b.once(t)
	a.once(t)
	e.clock.Set(utc("2026-03-02T08:54:00Z"))
	both()
	for _, route := range []string{"chat-70b", "ghost"} {
		if got := e.ann.Containing(route, "(in 15 min)"); len(got) != 1 || got[0].replica != "b" {
			t.Fatalf("15-minute announcements of %s: %v", route, e.ann.Msgs())
		}
	}
	if n := len(e.ann.Msgs()); n != 4 {
		t.Fatalf("%d announcements, want 4: %v", n, e.ann.Msgs())
	}
	// Announcement records expire with a 7-day lease.
	key := (&Scheduler{keys: Keys{Prefix: e.prefix}}).announceKey("chat-70b", utc("2026-03-02T09:00:00Z"), 15*time.Minute)
	resp, err := e.admin.Get(schedCtx(t), key)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("announcement record at %s: %v %v", key, resp, err)
	}
	ttl, err := e.admin.TimeToLive(schedCtx(t), clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil || ttl.TTL < int64((7*24*time.Hour-time.Hour)/time.Second) {
		t.Fatalf("announcement lease TTL %+v %v", ttl, err)
	}
}

// TestSchedulerLeaderFailover runs two replicas under the singleton
// election against a 3-member etcd cluster, kills the etcd leader and
// stops the leading replica, first after the announcement and then in the
// middle of the drill: the announcement is made once and the drill runs
// once.
func TestSchedulerLeaderFailover(t *testing.T) {
	cluster := etcdtest.StartCluster(t, 3)
	e := newSchedEnvOn(t, utc("2026-03-02T08:00:00Z"), cluster.Client(t), func(t *testing.T) *clientv3.Client { return cluster.Client(t) })
	e.seedRoute(t, "chat-70b")
	e.put(t, "chat-70b", "0 9 * * *", time.Time{})
	e.runs.block = make(chan struct{})
	defer close(e.runs.block)
	e.clock.Set(utc("2026-03-02T08:45:01Z"))

	type running struct {
		r      *replica
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func(name string) *running {
		r := e.replica(t, name, func(c *SchedulerConfig) { c.Tick = 20 * time.Millisecond })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			commands.RunElected(ctx, r.cli, e.prefix, name, 2, e.log.Named(name), commands.Job{Name: "drills", Run: r.sched.Run})
		}()
		run := &running{r: r, cancel: cancel, done: done}
		t.Cleanup(func() { cancel(); <-done })
		return run
	}
	stop := func(run *running) {
		run.cancel()
		select {
		case <-run.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("replica %s did not stop", run.r.name)
		}
	}
	// waitTicks waits until run's scheduler has read the clock n more
	// times, so it has led and looked at the schedules.
	waitTicks := func(run *running, n int64) {
		t.Helper()
		from := run.r.ticks.Load()
		waitUntil(t, fmt.Sprintf("%s to tick", run.r.name), func() bool { return run.r.ticks.Load() >= from+n })
	}
	replicas := map[string]*running{"a": start("a"), "b": start("b")}

	waitUntil(t, "the 15-minute announcement", func() bool { return len(e.ann.Msgs()) >= 1 })
	first := e.ann.Msgs()[0]
	leader := replicas[first.replica]
	var other *running
	for name, run := range replicas {
		if name != first.replica {
			other = run
		}
	}
	// Crash the etcd leader, then stop the leading replica: the other
	// takes over while the announcement window is still open.
	cluster.HardStop(t, cluster.WaitLeader(t))
	cluster.WaitLeader(t)
	stop(leader)
	waitTicks(other, 5)
	if msgs := e.ann.Msgs(); len(msgs) != 1 {
		t.Fatalf("announcements after failover %v, want the one", msgs)
	}
	third := start("c")

	// The run is due: whoever leads starts it; stop that replica while
	// the drill is running.
	due := utc("2026-03-02T09:00:00Z")
	e.clock.Set(due.Add(2 * time.Second))
	waitUntil(t, "the drill to start", func() bool { return len(e.runs.Calls()) == 1 })
	rec, _, ok := e.record(t, "chat-70b", due)
	if !ok || rec.State != RunStarted {
		t.Fatalf("record %+v while the drill runs", rec)
	}
	var runner, survivor *running
	for _, run := range []*running{other, third} {
		if rec.Owner == leaseHex(run.r.sess.Lease()) {
			runner = run
		} else {
			survivor = run
		}
	}
	if runner == nil {
		t.Fatalf("record owner %s is neither live replica", rec.Owner)
	}
	stop(runner)
	waitTicks(survivor, 5)
	e.clock.Set(due.Add(5 * time.Minute))
	waitTicks(survivor, 5)

	if calls := e.runs.Calls(); len(calls) != 1 {
		t.Fatalf("drill calls %v, want exactly one", calls)
	}
	rec, _, _ = e.record(t, "chat-70b", due)
	if rec.State != RunFailed || rec.Owner != leaseHex(runner.r.sess.Lease()) {
		t.Fatalf("record %+v, want failed (the drill's replica stopped) and owned by %s", rec, runner.r.name)
	}
	if got := e.ann.Containing("Mon 2 Mar"); len(got) != 1 {
		t.Fatalf("announcements of today's run %v, want one", got)
	}
	if got := e.ann.Containing("Tue 3 Mar"); len(got) != 1 {
		t.Fatalf("announcements of tomorrow's run %v, want one (24 h ahead)", e.ann.Msgs())
	}
}
