package drills

import (
	"math"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

const lastSuccessMetric = "backflip_drill_last_success_timestamp_seconds"

// lastSuccess reads backflip_drill_last_success_timestamp_seconds by route.
func lastSuccess(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != lastSuccessMetric {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" {
					out[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// sameInstant compares a gauge with a time stored in Postgres (which keeps
// microseconds).
func sameInstant(v float64, at time.Time) bool { return math.Abs(v-unixSeconds(at)) < 1e-3 }

// TestDrillMetricEndToEnd: a completed drill sets its route's last-success
// time on the replica that ran it; a refused one sets nothing; a replica
// that starts afterwards loads the time from the audit database.
func TestDrillMetricEndToEnd(t *testing.T) {
	e := newRunnerEnv(t)
	ctx := runnerCtx(t)
	reg := prometheus.NewRegistry()
	r := e.runner(t, func(c *Config) { c.Registerer = reg })
	if got := lastSuccess(t, reg); len(got) != 0 {
		t.Fatalf("before any drill: %v", got)
	}

	before := r.cfg.Now()
	out, err := r.Run(ctx, drillOrigin(), drillRouteOK, false, nil)
	if err != nil || out.State != RunCompleted {
		t.Fatalf("drill: %v\n%s", err, out.Text())
	}
	after := r.cfg.Now()
	got := lastSuccess(t, reg)
	if v, ok := got[drillRouteOK]; !ok || v < unixSeconds(before) || v > unixSeconds(after) || len(got) != 1 {
		t.Fatalf("after a completed drill: %v, want %s within the drill's run", got, drillRouteOK)
	}

	// The previous version of embed-small is not loaded: the drill fails
	// at the warm check, and its route gets no series.
	if _, err := r.Run(ctx, drillOrigin(), drillRouteBad, false, nil); err == nil {
		t.Fatal("a drill of a route with a cold previous version did not fail")
	}
	if got := lastSuccess(t, reg); len(got) != 1 {
		t.Fatalf("after a failed drill: %v", got)
	}

	// Another replica starts: it reads the completed drill from Postgres.
	ev := e.onlyEvent(t, out.Op, audit.KindDrillCompleted, RunCompleted)
	e.ship(t)
	reg2 := prometheus.NewRegistry()
	r2 := e.runner(t, func(c *Config) { c.Registerer = reg2 })
	if err := r2.LoadMetrics(ctx); err != nil {
		t.Fatal(err)
	}
	got = lastSuccess(t, reg2)
	if v, ok := got[drillRouteOK]; !ok || !sameInstant(v, ev.OccurredAt) || len(got) != 1 {
		t.Fatalf("loaded from the audit database: %v, want %s at the event's time %s", got, drillRouteOK, ev.OccurredAt)
	}
	// The replica that ran it keeps its own (later) time: loading never
	// moves a value back.
	v := lastSuccess(t, reg)[drillRouteOK]
	if err := r.LoadMetrics(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lastSuccess(t, reg)[drillRouteOK]; got != v {
		t.Errorf("loading moved the value from %v to %v", v, got)
	}
}

// TestDrillMetricLoad: at start-up each route in etcd gets the time of its
// newest drill.completed event, whatever came after it; routes never
// drilled successfully get no series; without a database nothing is set;
// an unreachable database is an error that changes nothing.
func TestDrillMetricLoad(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := runnerCtx(t)
	const prefix = "/drillmetric"
	store := routing.NewStore(cli, prefix, zap.NewNop())
	for _, route := range []string{"chat-70b", "embed", "never"} {
		if _, err := store.Promote(ctx, routing.Change{Route: route, To: "v1", Op: "op-" + route, Actor: "test", Reason: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	db := historyDB(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	ev := func(route string, kind audit.Kind, outcome string, ago time.Duration) audit.Event {
		return audit.Event{EventID: uuid.New(), OpID: uuid.New(), Kind: kind, Route: route, FromVersion: "v2", ToVersion: "v1",
			Actor: "system:drills", Reason: "drill", Outcome: outcome, SchemaVersion: audit.SchemaVersion, OccurredAt: now.Add(-ago)}
	}
	day := 24 * time.Hour
	if _, err := audit.InsertEvents(ctx, db, []audit.Event{
		ev("chat-70b", audit.KindDrillCompleted, RunCompleted, 40*day),
		ev("chat-70b", audit.KindDrillCompleted, RunCompleted, 3*day), // the newest success
		ev("chat-70b", audit.KindDrillCompleted, RunCompleted, 10*day),
		ev("chat-70b", audit.KindDrillFailed, RunFailed, day), // newer, but failed
		ev("chat-70b", audit.KindDrillSuperseded, RunSuperseded, 2*day),
		ev("embed", audit.KindDrillCompleted, RunCompleted, 50*day),
		ev("never", audit.KindDrillFailed, RunFailed, day),
		ev("gone", audit.KindDrillCompleted, RunCompleted, day), // no longer in etcd
	}); err != nil {
		t.Fatal(err)
	}
	newRunner := func(db audit.DBTX) (*Runner, *prometheus.Registry) {
		reg := prometheus.NewRegistry()
		m, err := newRunnerMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		return &Runner{cfg: Config{DB: db}, routes: store, metrics: m, log: zap.NewNop()}, reg
	}

	r, reg := newRunner(db)
	if err := r.LoadMetrics(ctx); err != nil {
		t.Fatal(err)
	}
	got := lastSuccess(t, reg)
	if len(got) != 2 || !sameInstant(got["chat-70b"], now.Add(-3*day)) || !sameInstant(got["embed"], now.Add(-50*day)) {
		t.Fatalf("loaded %v; want chat-70b 3 days and embed 50 days before %s", got, now)
	}

	// A drill completed here since is not undone by loading again.
	r.metrics.succeeded("embed", now)
	if err := r.LoadMetrics(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lastSuccess(t, reg); !sameInstant(got["embed"], now) {
		t.Errorf("after a local success and a reload: %v", got)
	}

	// No database: nothing to load, no error, no series.
	r0, reg0 := newRunner(nil)
	if err := r0.LoadMetrics(ctx); err != nil || len(lastSuccess(t, reg0)) != 0 {
		t.Errorf("without a database: %v, %v", err, lastSuccess(t, reg0))
	}
	// A database that does not answer: an error, and nothing set.
	dead := historyDB(t)
	dead.Close()
	rd, regd := newRunner(dead)
	if err := rd.LoadMetrics(ctx); err == nil || len(lastSuccess(t, regd)) != 0 {
		t.Errorf("with a closed database: %v, %v", err, lastSuccess(t, regd))
	}
	// Without a Registerer, LoadMetrics does nothing.
	if err := (&Runner{cfg: Config{DB: db}, routes: store, log: zap.NewNop()}).LoadMetrics(ctx); err != nil {
		t.Error(err)
	}
}
