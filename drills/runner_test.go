package drills

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/sim"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// runnerPrefix is the etcd prefix of the runner tests' fleets.
const runnerPrefix = "/bf"

// Actors and channels of the runner tests. The drill is asked for by a
// drill user in the ops channel, which is not an incident channel: the
// drill's flips must still run (the drill was authorized as a drill).
const (
	drillUser     = "U0DRILLER"
	incidentUser  = "U0ONCALL"
	incidentChan  = "C0INC"
	opsChan       = "C0OPS"
	drillRouteOK  = "chat-70b"    // previous version warm
	drillRouteBad = "embed-small" // previous version not loaded
)

// runnerEnv is a real embedded etcd with a simulated fleet (real agents,
// routers and runtime SDK instances with traffic), an audit database, and
// the commands Service the drills flip through.
type runnerEnv struct {
	cli     *clientv3.Client
	fleet   *simfleet.Fleet
	db      *pgxpool.Pool
	svc     *commands.Service
	sess    *concurrency.Session
	checker *warm.Checker
	log     *zap.Logger
}

func newRunnerEnv(t *testing.T) *runnerEnv {
	t.Helper()
	srv := etcdtest.Start(t)
	e := &runnerEnv{cli: srv.Client(t), log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))}
	ctx := runnerCtx(t)
	f, err := simfleet.Start(ctx, simfleet.Config{
		Client: e.cli, Prefix: runnerPrefix, Nodes: 2, Routes: simfleet.DemoRoutes(),
		Routers: 2, Runtimes: 2, Traffic: simfleet.Traffic{RPS: 20, Steps: 4, StepDelay: 5 * time.Millisecond},
		Logger: e.log.Named("fleet"),
	})
	if err != nil {
		t.Fatalf("start the simulated fleet: %v", err)
	}
	e.fleet = f
	t.Cleanup(f.Close)

	pc, err := pgxpool.ParseConfig("")
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig = pg.NewDatabase(t)
	if e.db, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.db.Close)

	e.checker, err = warm.NewChecker(warm.Config{KV: e.cli, Prefix: runnerPrefix, AgentToken: f.AgentToken(), Timeout: 3 * time.Second, Logger: e.log.Named("warm")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.checker.Close)
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: e.cli, Prefix: runnerPrefix, Secret: f.RuntimeSecret(), AckTimeout: 5 * time.Second, Logger: e.log.Named("signal")})
	if err != nil {
		t.Fatal(err)
	}
	if e.sess, err = concurrency.NewSession(e.cli, concurrency.WithTTL(10)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.sess.Close() })
	e.svc, err = commands.New(commands.Config{
		Etcd: e.cli, Prefix: runnerPrefix, Warm: e.checker, Runtime: sig, Owner: e.sess, DB: e.db,
		Access: commands.Access{IncidentChannels: []string{incidentChan}, RollbackUsers: []string{incidentUser}, DrillUsers: []string{drillUser}},
		Logger: e.log.Named("commands"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// runner returns a Runner over the env. Its clock is two hours ahead, so
// the routes the fleet has just seeded (by promotes) are out of the quiet
// period of one hour; mod adjusts the rest.
func (e *runnerEnv) runner(t *testing.T, mod func(*Config)) *Runner {
	t.Helper()
	cfg := Config{
		Etcd: e.cli, Prefix: runnerPrefix, Commands: e.svc, Warm: e.checker, Owner: e.sess, DB: e.db,
		VerifyWindow: 300 * time.Millisecond, QuietPeriod: time.Hour, SLO: 90 * time.Second,
		Logger: e.log.Named("drills"),
		Now:    func() time.Time { return time.Now().Add(2 * time.Hour) },
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *runnerEnv) route(t *testing.T, route string) routing.Entry {
	t.Helper()
	ent, err := routing.NewStore(e.cli, runnerPrefix, nil).Get(runnerCtx(t), route)
	if err != nil {
		t.Fatal(err)
	}
	return ent
}

// events returns the outbox events of op.
func (e *runnerEnv) events(t *testing.T, op string) []audit.Event {
	t.Helper()
	keys := audit.Keys{Prefix: runnerPrefix}
	resp, err := e.cli.Get(runnerCtx(t), keys.Outbox()+op+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, kv := range resp.Kvs {
		ev, err := audit.DecodeEvent(kv.Value)
		if err != nil {
			t.Fatalf("outbox value at %s: %v", kv.Key, err)
		}
		out = append(out, ev)
	}
	return out
}

// onlyEvent returns op's single outbox event, checking its kind and
// outcome.
func (e *runnerEnv) onlyEvent(t *testing.T, op string, kind audit.Kind, outcome string) audit.Event {
	t.Helper()
	evs := e.events(t, op)
	if len(evs) != 1 {
		t.Fatalf("op %s has %d outbox events, want 1: %+v", op, len(evs), evs)
	}
	if evs[0].Kind != kind || evs[0].Outcome != outcome {
		t.Fatalf("event %s/%s, want %s/%s", evs[0].Kind, evs[0].Outcome, kind, outcome)
	}
	return evs[0]
}

// ship runs an audit shipper until the outbox is empty.
func (e *runnerEnv) ship(t *testing.T) {
	t.Helper()
	sh, err := audit.NewShipper(audit.ShipperConfig{Etcd: e.cli, Prefix: runnerPrefix, DB: e.db, Logger: e.log.Named("shipper")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sh.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := e.cli.Get(runnerCtx(t), audit.Keys{Prefix: runnerPrefix}.Outbox(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox not shipped: %s", sh.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func drillOrigin() commands.Origin {
	return commands.Origin{Actor: commands.Actor{ID: drillUser, Name: "driller"}, Channel: commands.Channel{ID: opsChan, Name: "ops"}, Transport: commands.TransportSlack}
}

// drillProgress records progress reports; with a hook, it calls it on each.
type drillProgress struct {
	mu   sync.Mutex
	got  []commands.Progress
	hook func(commands.Progress)
}

func (p *drillProgress) add(pr commands.Progress) {
	p.mu.Lock()
	p.got = append(p.got, pr)
	hook := p.hook
	p.mu.Unlock()
	if hook != nil {
		hook(pr)
	}
}

// drillPhases returns "phase:state" of the drill's own reports, in order.
func (p *drillProgress) drillPhases() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s []string
	for _, pr := range p.got {
		if strings.HasPrefix(string(pr.Phase), "drill.") {
			s = append(s, string(pr.Phase)+":"+string(pr.State))
		}
	}
	return strings.Join(s, " ")
}

func runnerCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, code string, contains ...string) {
	t.Helper()
	if got := commands.ErrorCode(err); got != code {
		t.Fatalf("error code %q (%v), want %q", got, err, code)
	}
	for _, c := range contains {
		if !strings.Contains(commands.ErrorMessage(err), c) {
			t.Errorf("message %q lacks %q", commands.ErrorMessage(err), c)
		}
	}
}

func wantText(t *testing.T, text string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Errorf("text lacks %q:\n%s", p, text)
		}
	}
}

func eventDetails(t *testing.T, ev audit.Event) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(ev.Details, &d); err != nil {
		t.Fatalf("details %s: %v", ev.Details, err)
	}
	return d
}

// TestDrillEndToEnd runs a drill on a simulated fleet with live traffic:
// the route flips to its previous version and back through the commands
// path, every phase is timed, and the drill.completed event carries the
// timings the statistics read.
func TestDrillEndToEnd(t *testing.T) {
	e := newRunnerEnv(t)
	r := e.runner(t, nil)
	ctx := runnerCtx(t)
	before := e.route(t, drillRouteOK)

	t.Run("DryRunChangesNothing", func(t *testing.T) {
		out, err := r.Run(ctx, drillOrigin(), drillRouteOK, true, nil)
		if err != nil || out.State != RunDryRun {
			t.Fatalf("dry run: %v, %+v", err, out)
		}
		wantText(t, out.Text(), "dry run", "would roll chat-70b back v42 → v41", "return to v42")
		if after := e.route(t, drillRouteOK); after.ModRevision != before.ModRevision {
			t.Error("a dry run changed the route")
		}
		if evs := e.events(t, out.Op); len(evs) != 0 {
			t.Errorf("a dry run was recorded: %+v", evs)
		}
	})

	var pl drillProgress
	out, err := r.Run(ctx, drillOrigin(), drillRouteOK, false, pl.add)
	if err != nil {
		t.Fatalf("drill: %v\n%s", err, out.Text())
	}
	if out.State != RunCompleted || out.FailedAt != "" || !out.Returned {
		t.Fatalf("outcome %s at %q: %s", out.State, out.FailedAt, out.Text())
	}
	want := "drill.check:running drill.check:done drill.rollback:running drill.rollback:done drill.verify:running drill.verify:done drill.hold:running drill.hold:done drill.return:running drill.return:done"
	if got := pl.drillPhases(); got != want {
		t.Errorf("drill progress:\n got %s\nwant %s", got, want)
	}
	rb, ret := out.Rollback, out.Return
	if rb == nil || rb.Kind != routing.KindDrill || rb.From != "v42" || rb.To != "v41" || rb.Epoch != before.Config.Epoch+1 {
		t.Fatalf("rollback %+v", rb)
	}
	if ret == nil || ret.Kind != routing.KindDrillReturn || ret.From != "v41" || ret.To != "v42" || ret.Epoch != before.Config.Epoch+2 {
		t.Fatalf("return %+v", ret)
	}
	if !out.Verify.OK || out.Verify.RoutersExpected != 2 || out.Verify.RoutersConverged != 2 || !out.Verify.InFlightComplete || out.Verify.Warm == nil {
		t.Errorf("verification %+v", out.Verify)
	}
	if out.Held < r.cfg.VerifyWindow {
		t.Errorf("held %s, less than the window %s", out.Held, r.cfg.VerifyWindow)
	}
	after := e.route(t, drillRouteOK)
	if after.Config.Active != "v42" || after.Config.Previous != "v41" || after.Config.Kind != routing.KindDrillReturn ||
		after.Config.Epoch != before.Config.Epoch+2 || after.ModRevision != ret.Revision {
		t.Errorf("route after the drill: %+v at rev %d", after.Config, after.ModRevision)
	}

	ev := e.onlyEvent(t, out.Op, audit.KindDrillCompleted, RunCompleted)
	for _, k := range []string{"total", "rollback", "return", "warm", "flip", "routers", "inflight", "check", "verify", "hold", "drill"} {
		if ev.Timings[k] <= 0 {
			t.Errorf("timing %q missing or zero: %v", k, ev.Timings)
		}
	}
	if ev.Timings["total"] != durationMS(rb.Total) || ev.FromVersion != "v42" || ev.ToVersion != "v41" || ev.Actor != drillUser || ev.EtcdRevision != ret.Revision {
		t.Errorf("event %+v", ev)
	}
	d := eventDetails(t, ev)
	if d["rollback_op"] != rb.Op || d["return_op"] != ret.Op || d["verify"] == nil || d["calibration"] == nil {
		t.Errorf("details %v", d)
	}
	// The flips are rollbacks of the model like any other, recorded by
	// commands under their own ops.
	if evs := e.events(t, rb.Op); len(evs) != 2 || evs[0].Kind != audit.KindRollback {
		t.Errorf("events of the drill flip: %+v", evs)
	}

	text := out.Text()
	wantText(t, text, "drill of chat-70b completed", "chat-70b drill: rolled back v42 → v41 in ", "chat-70b drill: returned v41 → v42 in ",
		"verified: 2/2 routers", "held ", "calibration: ", "no earlier drill to compare with", "SLO 90 s: ok")
	if out.Calibration.Regression {
		t.Errorf("a first drill flagged a regression: %s", out.Calibration.Text)
	}
	t.Logf("report:\n%s", text)

	// Once shipped, the drill is the route's history: what the next
	// drill is calibrated against, and what status shows.
	e.ship(t)
	st, err := audit.DrillStatsOf(ctx, e.db, drillRouteOK)
	if err != nil {
		t.Fatal(err)
	}
	if st.Count != 1 || st.Total.N != 1 || st.Total.P50 != ev.Timings["total"] || st.Phases["flip"].N != 1 {
		t.Errorf("drill stats %+v", st)
	}
	again, err := r.Run(ctx, drillOrigin(), drillRouteOK, false, nil)
	if err != nil || again.State != RunCompleted {
		t.Fatalf("second drill: %v %s", err, again.Text())
	}
	if again.Calibration.History.Count != 1 || again.Calibration.HistoryError != "" {
		t.Errorf("second drill's calibration: %+v", again.Calibration)
	}
	wantText(t, again.Calibration.Text, "over 1 drill")
	if e.route(t, drillRouteOK).Config.Epoch != before.Config.Epoch+4 {
		t.Error("the second drill did not flip twice")
	}

	t.Run("OneDrillOfARouteAtATime", func(t *testing.T) {
		held := make(chan struct{})
		pl := drillProgress{hook: func(p commands.Progress) {
			if p.Phase == PhaseDrillHold && p.State == commands.StateRunning {
				close(held)
			}
		}}
		var (
			wg    sync.WaitGroup
			first Outcome
		)
		wg.Go(func() { first, _ = r.Run(ctx, drillOrigin(), drillRouteOK, false, pl.add) })
		select {
		case <-held:
		case <-ctx.Done():
			t.Fatal("the first drill never reached its hold")
		}
		out, err := r.Run(ctx, drillOrigin(), drillRouteOK, false, nil)
		wg.Wait()
		wantCode(t, err, commands.EREFUSED, "a drill of chat-70b is already running (op "+first.Op+")")
		if out.State != RunRefused || first.State != RunCompleted {
			t.Errorf("second %s, first %s", out.State, first.State)
		}
	})
}

// TestDrillRefusals checks what stops a drill before it flips.
func TestDrillRefusals(t *testing.T) {
	e := newRunnerEnv(t)
	ctx := runnerCtx(t)

	t.Run("InsideQuietPeriod", func(t *testing.T) {
		// The fleet promoted the route when it started; a minute later,
		// with a quiet period of an hour, no drill.
		r := e.runner(t, func(c *Config) { c.Now = func() time.Time { return time.Now().Add(time.Minute) } })
		before := e.route(t, drillRouteOK)
		out, err := r.Run(ctx, drillOrigin(), drillRouteOK, false, nil)
		wantCode(t, err, commands.EREFUSED, "chat-70b was promoted", "drills wait 1h after a real change (BACKFLIP_DRILL_QUIET_PERIOD)")
		if out.State != RunRefused || out.FailedAt != StepCheck || out.Rollback != nil {
			t.Errorf("outcome %+v", out)
		}
		if after := e.route(t, drillRouteOK); after.ModRevision != before.ModRevision {
			t.Error("route changed")
		}
		ev := e.onlyEvent(t, out.Op, audit.KindDrillFailed, RunRefused)
		if d := eventDetails(t, ev); d["failed_at"] != StepCheck || !strings.Contains(d["detail"].(string), "QUIET_PERIOD") {
			t.Errorf("details %v", d)
		}
		wantText(t, out.Text(), "drill of chat-70b refused: chat-70b was promoted")
		t.Logf("report:\n%s", out.Text())
	})

	t.Run("ColdPreviousIsAFinding", func(t *testing.T) {
		r := e.runner(t, nil)
		before := e.route(t, drillRouteBad)
		out, err := r.Run(ctx, drillOrigin(), drillRouteBad, false, nil)
		wantCode(t, err, commands.EREFUSED, "embed-small@v6, the rollback target, is not warm", "cold start")
		if out.State != RunFailed || out.FailedAt != StepWarm || out.PreWarm == nil || out.PreWarm.Warm {
			t.Errorf("outcome %+v", out)
		}
		if after := e.route(t, drillRouteBad); after.ModRevision != before.ModRevision {
			t.Error("route changed")
		}
		ev := e.onlyEvent(t, out.Op, audit.KindDrillFailed, RunFailed)
		if d := eventDetails(t, ev); d["failed_at"] != StepWarm {
			t.Errorf("details %v", d)
		}
		wantText(t, out.Text(), "drill of embed-small FAILED at warm")
		t.Logf("report:\n%s", out.Text())
	})

	t.Run("OpInProgress", func(t *testing.T) {
		// An op record of a rollback that has not finished (its replica
		// died, recovery has not run yet).
		key := commands.Keys{Prefix: runnerPrefix}.Op("6b0c4d5e-1f2a-4b3c-8d4e-5f6a7b8c9d0e")
		rec := `{"kind":"rollback","route":"chat-70b","from":"v42","to":"v41","phase":"started","timings":{},"actor":"U0ONCALL","reason":"x","channel":"","ts":"","idem":"","owner":"1f","outcome":"","started":"2026-01-01T00:00:00Z"}`
		if _, err := e.cli.Put(ctx, key, rec); err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = e.cli.Delete(context.Background(), key) }()
		r := e.runner(t, nil)
		out, err := r.Run(ctx, drillOrigin(), drillRouteOK, false, nil)
		wantCode(t, err, commands.EREFUSED, "op 6b0c4d5e-1f2a-4b3c-8d4e-5f6a7b8c9d0e (rollback v42 → v41", "is in progress on chat-70b")
		if out.State != RunRefused || out.FailedAt != StepCheck {
			t.Errorf("outcome %+v", out)
		}
	})

	t.Run("AfterRealRollback", func(t *testing.T) {
		// Past the quiet period, the previous version of a rolled-back
		// route is the version rolled away from: no drill sends traffic
		// back to it.
		res, err := e.svc.Rollback(ctx, commands.RollbackRequest{
			Origin: commands.Origin{Actor: commands.Actor{ID: incidentUser}, Channel: commands.Channel{ID: incidentChan}, Transport: commands.TransportSlack},
			Route:  drillRouteOK, Reason: "error rate after v42",
		}, nil)
		if err != nil {
			t.Fatalf("rollback: %v", err)
		}
		r := e.runner(t, nil)
		out, err := r.Run(ctx, drillOrigin(), drillRouteOK, false, nil)
		wantCode(t, err, commands.EREFUSED, "chat-70b was rolled back from v42 by <@U0ONCALL>", "resume after its next promote")
		if out.State != RunRefused || out.Rollback != nil {
			t.Errorf("outcome %+v", out)
		}
		if after := e.route(t, drillRouteOK); after.ModRevision != res.Revision {
			t.Error("route changed")
		}
	})

	t.Run("UnknownRouteNotRecorded", func(t *testing.T) {
		r := e.runner(t, nil)
		out, err := r.Run(ctx, drillOrigin(), "no-such-route", false, nil)
		wantCode(t, err, commands.ENOTFOUND, "does not exist")
		if out.Op != "" || out.State != RunRefused {
			t.Errorf("outcome %+v", out)
		}
	})

	t.Run("InvalidRoute", func(t *testing.T) {
		r := e.runner(t, nil)
		_, err := r.Run(ctx, drillOrigin(), "Bad Route", false, nil)
		wantCode(t, err, commands.EINVALID)
	})
}

// TestDrillSupersededByRealRollback: a real rollback during the hold wins,
// and the drill flips nothing back.
func TestDrillSupersededByRealRollback(t *testing.T) {
	e := newRunnerEnv(t)
	// A long window: the real rollback, not the timer, ends the hold.
	r := e.runner(t, func(c *Config) { c.VerifyWindow = 30 * time.Second })
	ctx := runnerCtx(t)

	var (
		wg      sync.WaitGroup
		realRes *commands.Result
		realErr error
	)
	pl := drillProgress{hook: func(p commands.Progress) {
		if p.Phase != PhaseDrillHold || p.State != commands.StateRunning {
			return
		}
		wg.Go(func() {
			realRes, realErr = e.svc.Rollback(ctx, commands.RollbackRequest{
				Origin: commands.Origin{Actor: commands.Actor{ID: incidentUser}, Channel: commands.Channel{ID: incidentChan}, Transport: commands.TransportSlack},
				Route:  drillRouteOK, To: "v42", Reason: "v41 misbehaves under the drill",
			}, nil)
		})
	}}
	out, err := r.Run(ctx, drillOrigin(), drillRouteOK, false, pl.add)
	wg.Wait()
	if realErr != nil {
		t.Fatalf("real rollback: %v", realErr)
	}
	if err != nil {
		t.Fatalf("drill: %v", err)
	}
	if out.State != RunSuperseded || out.FailedAt != StepHold || out.Return != nil || out.Returned {
		t.Fatalf("outcome %s at %s: %s", out.State, out.FailedAt, out.Text())
	}
	if out.Held >= r.cfg.VerifyWindow {
		t.Errorf("the hold was not cut short: %s", out.Held)
	}
	after := e.route(t, drillRouteOK)
	if after.Config.Active != "v42" || after.Config.Kind != routing.KindRollback || after.Config.Op != realRes.Op || after.ModRevision != realRes.Revision {
		t.Errorf("route after: %+v at %d (real rollback at %d)", after.Config, after.ModRevision, realRes.Revision)
	}
	ev := e.onlyEvent(t, out.Op, audit.KindDrillSuperseded, RunSuperseded)
	if d := eventDetails(t, ev); !strings.Contains(d["superseded_by"].(string), realRes.Op) {
		t.Errorf("details %v", d)
	}
	wantText(t, out.Text(), "drill of chat-70b superseded at hold", "rolled back v41 → v42", "did not flip it back")
	t.Logf("report:\n%s", out.Text())
	if strings.Contains(out.Text(), "returned v41") {
		t.Errorf("a superseded drill reports a return:\n%s", out.Text())
	}
}

// TestDrillVerifyFailureFlipsBack: the rolled-back version goes cold right
// after the drill's flip (every node unloads it), the canary finds it, and
// the drill flips back and says where it failed.
func TestDrillVerifyFailureFlipsBack(t *testing.T) {
	e := newRunnerEnv(t)
	r := e.runner(t, nil)
	ctx := runnerCtx(t)
	before := e.route(t, drillRouteOK)

	pl := drillProgress{hook: func(p commands.Progress) {
		if p.Phase != PhaseDrillRollback || p.State != commands.StateDone {
			return
		}
		if err := e.fleet.SetBehavior(simfleet.AllNodes, drillRouteOK, "v41", sim.Unloaded, 0); err != nil {
			t.Error(err)
			return
		}
		// The agents see it at their next probe; the drill's canary must
		// find what they find.
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			_, err := e.checker.Check(ctx, drillRouteOK, "v41")
			if errors.Is(err, warm.ErrTargetNotWarm) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Error("the agents never reported v41 unloaded")
	}}
	out, err := r.Run(ctx, drillOrigin(), drillRouteOK, false, pl.add)
	if err != nil {
		t.Fatalf("drill: %v", err)
	}
	if out.State != RunFailed || out.FailedAt != StepVerify || !out.Returned || out.Held != 0 {
		t.Fatalf("outcome %s at %s (returned %v): %s", out.State, out.FailedAt, out.Returned, out.Text())
	}
	if out.Verify.OK || out.Verify.Warm == nil || out.Verify.Warm.Warm {
		t.Errorf("verification %+v", out.Verify)
	}
	want := "drill.check:running drill.check:done drill.rollback:running drill.rollback:done drill.verify:running drill.verify:failed drill.return:running drill.return:done"
	if got := pl.drillPhases(); got != want {
		t.Errorf("drill progress:\n got %s\nwant %s", got, want)
	}
	after := e.route(t, drillRouteOK)
	if after.Config.Active != "v42" || after.Config.Kind != routing.KindDrillReturn || after.Config.Epoch != before.Config.Epoch+2 {
		t.Errorf("route after: %+v", after.Config)
	}
	ev := e.onlyEvent(t, out.Op, audit.KindDrillFailed, RunFailed)
	if d := eventDetails(t, ev); d["failed_at"] != StepVerify || d["returned"] != true {
		t.Errorf("details %v", d)
	}
	if ev.Timings["total"] <= 0 || ev.Timings["return"] <= 0 {
		t.Errorf("timings %v", ev.Timings)
	}
	wantText(t, out.Text(), "drill of chat-70b FAILED at verify: v41 is not warm while serving", "verification FAILED", "flipped back to v42",
		"chat-70b drill: returned v41 → v42")
	t.Logf("report:\n%s", out.Text())
}
