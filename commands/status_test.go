package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// readPrefix is the etcd prefix of the read-side tests (status, history,
// fleet).
const readPrefix = "/backflip"

// readEnv is a Service over a real etcd and, when asked for, a real audit
// database, for the read-side use cases.
type readEnv struct {
	cli *clientv3.Client
	db  *pgx.Conn
	svc *Service
	// now is the Service's clock; routes are changed a few minutes before.
	now time.Time
}

// readOpts choose the parts of a readEnv.
type readOpts struct {
	// warm checks targets; nil means a real warm.Checker over the etcd.
	warm WarmChecker
	// noDB leaves Config.DB nil; db, when set, is used instead of a fresh
	// audit database.
	noDB bool
	db   audit.DBTX
	// cli is the etcd client the Service reads with; nil means a client
	// of a fresh embedded etcd.
	cli *clientv3.Client
}

func newReadEnv(t *testing.T, o readOpts) *readEnv {
	t.Helper()
	env := &readEnv{now: time.Date(2025, 6, 1, 14, 0, 0, 0, time.UTC)}
	env.cli = o.cli
	if env.cli == nil {
		env.cli = etcdtest.Start(t).Client(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{Etcd: env.cli, Prefix: readPrefix, Now: func() time.Time { return env.now }}
	switch {
	case o.db != nil:
		cfg.DB = o.db
	case !o.noDB:
		conn, err := pgx.ConnectConfig(ctx, pg.NewDatabase(t))
		if err != nil {
			t.Fatalf("connect to the audit database: %v", err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		env.db, cfg.DB = conn, conn
	}
	cfg.Warm = o.warm
	if cfg.Warm == nil {
		// A check against a dead agent must not take the default 2 s.
		checker, err := warm.NewChecker(warm.Config{KV: env.cli, Prefix: readPrefix, AgentToken: "t", Timeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(checker.Close)
		cfg.Warm = checker
	}
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: env.cli, Prefix: readPrefix, Secret: []byte("s")})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Runtime = sig
	sess, err := concurrency.NewSession(env.cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	cfg.Owner = sess
	env.svc, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// promote moves route to version as a deploy would, at the given time.
func (e *readEnv) promote(t *testing.T, route, version string, at time.Time) {
	t.Helper()
	e.change(t, routing.KindPromote, route, version, at)
}

// change applies one route change of kind at the given time.
func (e *readEnv) change(t *testing.T, kind routing.Kind, route, version string, at time.Time) routing.Result {
	t.Helper()
	st := routing.NewStore(e.cli, readPrefix, nil)
	st.Now = func() time.Time { return at }
	var rev int64
	if cur, err := st.Get(testCtx(t), route); err == nil {
		rev = cur.ModRevision
	}
	res, err := st.Flip(testCtx(t), routing.Change{Route: route, Kind: kind, To: version, ExpectRev: rev,
		Op: uuid.NewString(), Reason: "test", Actor: "cli:ana@ops-1"})
	if err != nil {
		t.Fatalf("%s %s to %s: %v", kind, route, version, err)
	}
	return res
}

func (e *readEnv) put(t *testing.T, key string, value any) {
	t.Helper()
	var s string
	switch v := value.(type) {
	case string:
		s = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		s = string(b)
	}
	if _, err := e.cli.Put(testCtx(t), key, s); err != nil {
		t.Fatal(err)
	}
}

func (e *readEnv) instance(t *testing.T, id string, inflight map[string]map[string]int) {
	t.Helper()
	e.put(t, runtime.Keys{Prefix: readPrefix}.Instance(id), runtime.InstanceRecord{ID: id, InFlight: inflight})
}

func (e *readEnv) node(t *testing.T, rec fleetapi.NodeRecord) {
	t.Helper()
	e.put(t, fleetapi.Keys{Prefix: readPrefix}.Node(rec.Node), rec)
}

// drill records a completed drill of route in the audit database.
func (e *readEnv) drill(t *testing.T, route string, at time.Time, totalMS float64) {
	t.Helper()
	ev := audit.Event{EventID: uuid.New(), OpID: uuid.New(), Kind: audit.KindDrillCompleted, Route: route,
		Actor: "system:drills", Outcome: "completed", Timings: map[string]float64{"total": totalMS, "flip": 2},
		SchemaVersion: audit.SchemaVersion, OccurredAt: at}
	if _, err := audit.InsertEvents(testCtx(t), e.db, []audit.Event{ev}); err != nil {
		t.Fatal(err)
	}
}

// scriptedWarm answers warm checks from a table, for the tests of how
// Status reports what a check found (the checks themselves are tested in
// fleet/warm against real agents).
type scriptedWarm struct {
	answers map[string]scriptedAnswer // by route@target
}

type scriptedAnswer struct {
	rep warm.Report
	err error
}

func (w *scriptedWarm) Check(ctx context.Context, route, target string) (warm.Report, error) {
	a, ok := w.answers[route+"@"+target]
	if !ok {
		return warm.Report{}, fmt.Errorf("scriptedWarm: no answer for %s@%s", route, target)
	}
	return a.rep, a.err
}

func warmReport(route, target string, warmNodes, nodes, warmGPUs, gpus int) warm.Report {
	rep := warm.Report{Route: route, Target: target, Warm: warmGPUs == gpus, WarmNodes: warmNodes, TargetNodes: nodes,
		WarmGPUs: warmGPUs, TargetGPUs: gpus, NeededGPUs: gpus}
	for i := range nodes {
		n := warm.NodeResult{Node: fmt.Sprintf("gpu-%02d", i+1), GPUs: gpus / nodes, State: warm.StateWarm, WarmGPUs: gpus / nodes}
		if i >= warmNodes {
			n.State, n.WarmGPUs, n.Reason = warm.StateCold, 0, "canary took 2.1 s, budget 800 ms"
		}
		rep.Nodes = append(rep.Nodes, n)
	}
	if !rep.Warm {
		rep.Reason = fmt.Sprintf("%d GPUs short of the quorum", gpus-warmGPUs)
	}
	return rep
}

// seedStatus writes the routes, runtime instances and drills most status
// tests look at:
//   - chat-70b promoted v41 then v42 three minutes ago, v41 warm, drilled
//     three days ago, 37 requests in flight on v42 and 2 on v41;
//   - embed-small rolled back from v7 to v6 an hour ago, v7 not warm;
//   - fresh-route promoted once (no rollback target).
func seedStatus(t *testing.T, e *readEnv) {
	t.Helper()
	e.promote(t, "chat-70b", "v41", e.now.Add(-48*time.Hour))
	e.promote(t, "chat-70b", "v42", e.now.Add(-3*time.Minute))
	e.promote(t, "embed-small", "v6", e.now.Add(-72*time.Hour))
	e.promote(t, "embed-small", "v7", e.now.Add(-2*time.Hour))
	e.change(t, routing.KindRollback, "embed-small", "v6", e.now.Add(-time.Hour))
	e.promote(t, "fresh-route", "v1", e.now.Add(-10*time.Second))
	e.instance(t, "rt-1", map[string]map[string]int{"chat-70b": {"v42": 30, "v41": 2}, "embed-small": {"v6": 0}})
	e.instance(t, "rt-2", map[string]map[string]int{"chat-70b": {"v42": 7}})
	if e.db != nil {
		e.drill(t, "chat-70b", e.now.Add(-5*24*time.Hour), 1400)
		e.drill(t, "chat-70b", e.now.Add(-3*24*time.Hour), 1000)
		e.drill(t, "chat-70b", e.now.Add(-4*24*time.Hour), 1200)
	}
}

func seededWarm() *scriptedWarm {
	cold := warmReport("embed-small", "v7", 1, 4, 1, 4)
	return &scriptedWarm{answers: map[string]scriptedAnswer{
		"chat-70b@v41":   {rep: warmReport("chat-70b", "v41", 24, 24, 96, 96)},
		"embed-small@v7": {rep: cold, err: &warm.NotWarmError{Report: cold}},
	}}
}

func TestStatusEveryRoute(t *testing.T) {
	e := newReadEnv(t, readOpts{warm: seededWarm()})
	seedStatus(t, e)
	e.put(t, runtime.Keys{Prefix: readPrefix}.Instance("rt-bad"), `{"id":"rt-bad","inflight":{"chat-70b":{"v42":-1}}}`)

	rep, err := e.svc.Status(testCtx(t), Origin{Actor: Actor{ID: "cli:ana@ops-1"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Routes) != 3 || rep.Routes[0].Route != "chat-70b" || rep.Routes[1].Route != "embed-small" || rep.Routes[2].Route != "fresh-route" {
		t.Fatalf("routes: %+v", rep.Routes)
	}
	chat, embed, fresh := rep.Routes[0], rep.Routes[1], rep.Routes[2]

	cur, err := routing.NewStore(e.cli, readPrefix, nil).Get(testCtx(t), "chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	if chat.Revision != cur.ModRevision || chat.Config.Active != "v42" || chat.Config.Previous != "v41" || rep.Revision < chat.Revision {
		t.Errorf("chat-70b: revision %d (want %d), config %+v, report revision %d", chat.Revision, cur.ModRevision, chat.Config, rep.Revision)
	}
	if r := chat.Readiness; r.Target != "v41" || !r.Warm || r.Report == nil || r.Summary != "24/24 nodes, 96/96 GPUs warm" || r.Error != "" {
		t.Errorf("chat-70b readiness: %+v", r)
	}
	if chat.InFlight["v42"] != 37 || chat.InFlight["v41"] != 2 || len(chat.InFlight) != 2 {
		t.Errorf("chat-70b in flight: %v", chat.InFlight)
	}
	if d := chat.LastDrill; d == nil || !d.At.Equal(e.now.Add(-3*24*time.Hour)) || d.Count != 3 || d.P50 != 1200*time.Millisecond {
		t.Errorf("chat-70b last drill: %+v (error %q)", d, chat.DrillError)
	}
	if r := embed.Readiness; r.Target != "v7" || r.Warm || r.Reason != "3 GPUs short of the quorum" || r.Report == nil || r.Error != "" {
		t.Errorf("embed-small readiness: %+v", r)
	}
	if embed.LastDrill != nil || embed.DrillError != "" || len(embed.InFlight) != 0 || embed.InFlight == nil {
		t.Errorf("embed-small: drill %+v %q, in flight %v", embed.LastDrill, embed.DrillError, embed.InFlight)
	}
	if fresh.Readiness != (Readiness{}) {
		t.Errorf("fresh-route has no previous version, readiness %+v", fresh.Readiness)
	}
	if len(rep.Malformed) != 1 || !strings.Contains(rep.Malformed[0], "rt-bad") {
		t.Errorf("malformed: %q", rep.Malformed)
	}

	text := rep.String()
	for _, want := range []string{
		fmt.Sprintf("chat-70b: v42 (promote by cli:ana@ops-1 3 min ago, epoch 2, rev %d) · rollback target v41 warm (24/24 nodes, 96/96 GPUs) · last drill 3 days ago (p50 1.2 s) · 39 in flight (v42 37, v41 2)\n", chat.Revision),
		fmt.Sprintf("embed-small: v6 (rollback by cli:ana@ops-1 60 min ago, epoch 3, rev %d) · rollback target v7 NOT warm (1/4 nodes, 1/4 GPUs) · never drilled · 0 in flight\n", embed.Revision),
		"    not warm: 3 GPUs short of the quorum\n",
		"    not warm on: gpu-02 cold (canary took 2.1 s, budget 800 ms), gpu-03 cold",
		"    the last change was a rollback from v7: a rollback without --to is refused; --to v7 undoes it\n",
		"fresh-route: v1 (promote by cli:ana@ops-1 10 s ago, epoch 1, rev",
		"no rollback target (no previous version) · never drilled · 0 in flight\n",
		"warning: runtime instance record /backflip/runtime/instances/rt-bad",
		fmt.Sprintf("(etcd revision %d)\n", rep.Revision),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status text lacks %q:\n%s", want, text)
		}
	}

	// --json prints the report as it is; it must encode and keep its shape.
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var shape struct {
		Routes []struct {
			Route     string `json:"route"`
			Revision  int64  `json:"revision"`
			Readiness struct {
				Target string `json:"target"`
				Warm   bool   `json:"warm"`
			} `json:"readiness"`
			InFlight map[string]int `json:"inflight"`
		} `json:"routes"`
		Revision int64 `json:"revision"`
	}
	if err := json.Unmarshal(b, &shape); err != nil || len(shape.Routes) != 3 || shape.Routes[0].Readiness.Target != "v41" ||
		!shape.Routes[0].Readiness.Warm || shape.Routes[0].InFlight["v42"] != 37 || shape.Revision != rep.Revision {
		t.Errorf("JSON shape: %s (%v)", b, err)
	}
}

func TestStatusOneRoute(t *testing.T) {
	e := newReadEnv(t, readOpts{warm: seededWarm(), noDB: true})
	seedStatus(t, e)
	// A hand-edited key elsewhere must not show in one route's status.
	e.put(t, routing.Keyspace{Prefix: readPrefix}.Route("broken"), `{"route":"broken"}`)

	rep, err := e.svc.Status(testCtx(t), Origin{}, "chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Routes) != 1 || rep.Routes[0].Route != "chat-70b" || len(rep.Malformed) != 0 {
		t.Fatalf("one route: %+v, malformed %q", rep.Routes, rep.Malformed)
	}
	if got := rep.Routes[0].DrillError; got != "audit database unavailable: none is configured" {
		t.Errorf("drill error without a database: %q", got)
	}
	if text := rep.String(); !strings.Contains(text, "· last drill unknown ·") || !strings.Contains(text, "    drills: audit database unavailable: none is configured\n") {
		t.Errorf("text:\n%s", text)
	}

	t.Run("Malformed", func(t *testing.T) {
		rep, err := e.svc.Status(testCtx(t), Origin{}, "broken")
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Routes) != 0 || len(rep.Malformed) != 1 || !strings.Contains(rep.Malformed[0], "/backflip/routes/broken") {
			t.Fatalf("malformed route: %+v", rep)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		_, err := e.svc.Status(testCtx(t), Origin{}, "chat-7b")
		if ErrorCode(err) != ENOTFOUND || ErrorMessage(err) != "route chat-7b does not exist; routes: chat-70b, embed-small, fresh-route" {
			t.Fatalf("missing route: %v (%s)", err, ErrorCode(err))
		}
	})
	for _, name := range []string{"../etc", "status", "a b", strings.Repeat("x", 64)} {
		t.Run("Invalid/"+name, func(t *testing.T) {
			_, err := e.svc.Status(testCtx(t), Origin{}, name)
			if ErrorCode(err) != EINVALID || strings.HasPrefix(ErrorMessage(err), "invalid:") {
				t.Fatalf("route %q: %v (%s)", name, err, ErrorCode(err))
			}
		})
	}
}

func TestStatusNoRoutes(t *testing.T) {
	e := newReadEnv(t, readOpts{warm: seededWarm(), noDB: true})
	rep, err := e.svc.Status(testCtx(t), Origin{}, "")
	if err != nil || len(rep.Routes) != 0 {
		t.Fatalf("%+v %v", rep, err)
	}
	if !strings.Contains(rep.String(), "no routes yet") {
		t.Errorf("text: %s", rep.String())
	}
	_, err = e.svc.Status(testCtx(t), Origin{}, "chat-70b")
	if ErrorCode(err) != ENOTFOUND || ErrorMessage(err) != "route chat-70b does not exist; there are no routes yet" {
		t.Fatalf("%v", err)
	}
}

// TestStatusAuditDatabaseDown: with Postgres unreachable the drill column
// says so and everything else is still reported.
func TestStatusAuditDatabaseDown(t *testing.T) {
	pool, err := audit.Connect(testCtx(t), "postgres://backflip@127.0.0.1:1/audit?connect_timeout=2&sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := newReadEnv(t, readOpts{warm: seededWarm(), db: pool})
	seedStatus(t, e)
	rep, err := e.svc.Status(testCtx(t), Origin{}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range rep.Routes {
		if !strings.HasPrefix(rs.DrillError, "audit database unavailable: ") || rs.LastDrill != nil {
			t.Errorf("%s: drill %+v, error %q", rs.Route, rs.LastDrill, rs.DrillError)
		}
	}
	if !rep.Routes[0].Readiness.Warm || rep.Routes[0].InFlight["v42"] != 37 {
		t.Errorf("the rest of the status is missing: %+v", rep.Routes[0])
	}
}

// TestStatusWarmCheckFails: a check that cannot be made is that route's
// Readiness.Error; the other routes are reported as usual.
func TestStatusWarmCheckFails(t *testing.T) {
	w := seededWarm()
	w.answers["embed-small@v7"] = scriptedAnswer{err: errors.New("warm check of embed-small@v7: read policy: etcdserver: request timed out")}
	e := newReadEnv(t, readOpts{warm: w, noDB: true})
	seedStatus(t, e)
	rep, err := e.svc.Status(testCtx(t), Origin{}, "")
	if err != nil {
		t.Fatal(err)
	}
	embed := rep.Routes[1]
	if r := embed.Readiness; r.Target != "v7" || r.Warm || r.Report != nil || !strings.Contains(r.Error, "request timed out") {
		t.Errorf("embed-small readiness: %+v", r)
	}
	if !rep.Routes[0].Readiness.Warm {
		t.Errorf("chat-70b: %+v", rep.Routes[0].Readiness)
	}
	if text := rep.String(); !strings.Contains(text, "rollback target v7: warm check failed") || !strings.Contains(text, "    warm check: warm check of embed-small@v7: read policy: etcdserver: request timed out\n") {
		t.Errorf("text:\n%s", text)
	}
}

// blockingWarm holds every check until released and records how many ran
// at once.
type blockingWarm struct {
	mu            sync.Mutex
	running, peak int
	started       chan struct{}
	release       chan struct{}
}

func (w *blockingWarm) Check(ctx context.Context, route, target string) (warm.Report, error) {
	w.mu.Lock()
	w.running++
	w.peak = max(w.peak, w.running)
	w.mu.Unlock()
	w.started <- struct{}{}
	<-w.release
	w.mu.Lock()
	w.running--
	w.mu.Unlock()
	return warmReport(route, target, 1, 1, 1, 1), nil
}

// TestStatusBoundsWarmChecks: the checks of many routes run concurrently,
// but at most statusWarmWorkers at a time.
func TestStatusBoundsWarmChecks(t *testing.T) {
	const routes = 3*statusWarmWorkers + 1
	w := &blockingWarm{started: make(chan struct{}), release: make(chan struct{})}
	e := newReadEnv(t, readOpts{warm: w, noDB: true})
	for i := range routes {
		name := fmt.Sprintf("route-%02d", i)
		e.promote(t, name, "v1", e.now)
		e.promote(t, name, "v2", e.now)
	}
	done := make(chan error, 1)
	var rep StatusReport
	ctx := testCtx(t)
	go func() {
		var err error
		rep, err = e.svc.Status(ctx, Origin{}, "")
		done <- err
	}()
	// Exactly statusWarmWorkers checks start before any is released.
	for range statusWarmWorkers {
		<-w.started
	}
	select {
	case <-w.started:
		t.Fatal("more than statusWarmWorkers checks ran at once")
	case <-time.After(100 * time.Millisecond):
	}
	close(w.release)
	for range routes - statusWarmWorkers {
		<-w.started
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.peak != statusWarmWorkers {
		t.Errorf("peak concurrency %d, want %d", w.peak, statusWarmWorkers)
	}
	for _, rs := range rep.Routes {
		if !rs.Readiness.Warm {
			t.Errorf("%s: %+v", rs.Route, rs.Readiness)
		}
	}
}

// TestStatusRealCheckerDeadAgents runs Status with the real warm checker:
// the nodes registered for the rollback target do not answer, so the target
// is reported not warm, node by node, within the check's deadline.
func TestStatusRealCheckerDeadAgents(t *testing.T) {
	e := newReadEnv(t, readOpts{noDB: true})
	e.promote(t, "chat-70b", "v41", e.now.Add(-time.Hour))
	e.promote(t, "chat-70b", "v42", e.now.Add(-time.Minute))
	for _, n := range []string{"gpu-01", "gpu-02"} {
		e.node(t, fleetapi.NodeRecord{Node: n, URL: "http://127.0.0.1:1", Serving: map[string]map[string]int{"chat-70b": {"v41": 4, "v42": 4}}})
	}
	rep, err := e.svc.Status(testCtx(t), Origin{}, "chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Routes[0].Readiness
	if r.Warm || r.Error != "" || r.Report == nil || r.Report.TargetNodes != 2 || r.Report.WarmNodes != 0 || r.Summary != "0/2 nodes, 0/8 GPUs warm" {
		t.Fatalf("readiness: %+v", r)
	}
	text := rep.String()
	for _, want := range []string{"rollback target v41 NOT warm (0/2 nodes, 0/8 GPUs)", "not warm on: gpu-01 unreachable (", "gpu-02 unreachable ("} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}

// TestStatusEtcdDown: with etcd unreachable there is nothing to report;
// the error says etcd could not be read.
func TestStatusEtcdDown(t *testing.T) {
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	cli := proxy.Client(t)
	e := newReadEnv(t, readOpts{cli: cli, warm: seededWarm(), noDB: true})
	seedStatus(t, e)
	proxy.Blackhole()
	// Cleanups run last first: etcd answers again before the session
	// revokes its lease.
	t.Cleanup(proxy.Unblackhole)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := e.svc.Status(ctx, Origin{}, "")
	if ErrorCode(err) != EUNAVAILABLE || !strings.HasPrefix(ErrorMessage(err), "etcd could not be read") {
		t.Fatalf("etcd down: %v (%s)", err, ErrorCode(err))
	}
}

func TestPlainText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"ok", 5, "ok"},
		{"two\nlines\x1b[31m", 100, "two lines [31m"},
		{"bidi\u202eevil", 100, "bidi evil"},
		{"ééééé", 5, "éé…"},
	} {
		if got := plainText(tc.in, tc.max); got != tc.want {
			t.Errorf("plainText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestStatusSimulatedFleet runs Status against a simulated fleet: real
// agents over simulated inference servers, asked by the real warm checker.
// chat-70b's previous version is warm on every node; embed-small's is not
// loaded anywhere.
func TestStatusSimulatedFleet(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	f, err := simfleet.Start(testCtx(t), simfleet.Config{Client: cli, Prefix: readPrefix, Nodes: 3,
		Routes: simfleet.DemoRoutes(), Routers: 1, Runtimes: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	checker, err := warm.NewChecker(warm.Config{KV: cli, Prefix: readPrefix, AgentToken: f.AgentToken()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(checker.Close)
	e := newReadEnv(t, readOpts{cli: cli, warm: checker})
	// The fleet stamps its routes with the real clock.
	e.now = time.Now()
	e.drill(t, "chat-70b", e.now.Add(-26*time.Hour), 900)

	rep, err := e.svc.Status(testCtx(t), Origin{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Routes) != 2 {
		t.Fatalf("routes: %+v", rep.Routes)
	}
	chat, embed := rep.Routes[0], rep.Routes[1]
	if r := chat.Readiness; r.Target != "v41" || !r.Warm || r.Summary != "3/3 nodes, 12/12 GPUs warm" || r.Error != "" {
		t.Errorf("chat-70b readiness: %+v", r)
	}
	if r := embed.Readiness; r.Target != "v6" || r.Warm || r.Reason == "" || r.Report == nil || r.Report.WarmNodes != 0 || r.Report.TargetNodes != 3 {
		t.Errorf("embed-small readiness: %+v", r)
	}
	if chat.LastDrill == nil || chat.LastDrill.Count != 1 || chat.LastDrill.P50 != 900*time.Millisecond {
		t.Errorf("chat-70b drill: %+v %q", chat.LastDrill, chat.DrillError)
	}
	text := rep.String()
	for _, want := range []string{
		"chat-70b: v42 (promote by simfleet ",
		"· rollback target v41 warm (3/3 nodes, 12/12 GPUs) · last drill 26 h ago (p50 0.9 s) · 0 in flight\n",
		"embed-small: v7 (promote by simfleet ",
		"· rollback target v6 NOT warm (0/3 nodes, 0/3 GPUs) · never drilled · 0 in flight\n",
		"    not warm on: gpu-01 cold (",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}
