package simfleet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/sim"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// TestMain fails the package if an agent, server, router, runtime or
// request goroutine outlives Close.
func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

const prefix = "/simfleet-test"

// testRoutes are the brief's two routes, with the simulated servers chosen
// by position (DemoRoutes, with named models, is what `backflip dev` uses).
func testRoutes() []simfleet.RouteSpec {
	return []simfleet.RouteSpec{
		{Route: "chat-70b", Active: "v42", Previous: "v41", PreviousWarm: true, GPUsPerNode: 4},
		{Route: "embed-small", Active: "v7", Previous: "v6", PreviousWarm: false},
	}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	// Generous: -race on a shared two-core machine. Nothing below waits
	// this long when things work.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds, failing the test after a minute.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func count(t *testing.T, cli *clientv3.Client, key string) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), key, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// TestFleet starts the brief's fleet — 4 nodes, 2 routes, 3 routers, 2
// runtimes with traffic — and checks it from the bot's side of the wire:
// node records, router records, warm checks through the real Checker, a
// rollback signalled through the real Signaller, a lost router, and that
// Close leaves nothing registered (and, through TestMain, no goroutine).
func TestFleet(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := testCtx(t)
	store := routing.NewStore(cli, prefix, zap.NewNop())
	obs := simfleet.NewRecorder()

	start := time.Now()
	f, err := simfleet.Start(ctx, simfleet.Config{
		Client:   cli,
		Prefix:   prefix,
		Nodes:    4,
		Routes:   testRoutes(),
		Routers:  3,
		Runtimes: 2,
		// The shortest etcd allows: the lost router's record expires soon.
		RouterLeaseTTL: 2 * time.Second,
		// About 20 requests of about 200 ms in flight per runtime.
		Traffic: simfleet.Traffic{RPS: 100, Steps: 20, StepDelay: 10 * time.Millisecond},
		Logger:  zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		Observe: obs.Observer(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("4 nodes, 3 routers, 2 runtimes up in %v", time.Since(start))
	t.Cleanup(f.Close)

	t.Run("NodesRegistered", func(t *testing.T) {
		if got, want := f.Nodes(), []string{"gpu-01", "gpu-02", "gpu-03", "gpu-04"}; !slices.Equal(got, want) {
			t.Fatalf("nodes %v, want %v", got, want)
		}
		keys := fleetapi.Keys{Prefix: prefix}
		resp, err := cli.Get(ctx, keys.Nodes(), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 4 {
			t.Fatalf("%d node records, want 4", len(resp.Kvs))
		}
		for _, kv := range resp.Kvs {
			rec, err := fleetapi.DecodeNodeRecord(keys, string(kv.Key), kv.Value)
			if err != nil {
				t.Fatal(err)
			}
			if kv.Lease == 0 || rec.GPUs("chat-70b", "v42") != 4 || rec.GPUs("chat-70b", "v41") != 4 ||
				rec.GPUs("embed-small", "v7") != 1 || rec.GPUs("embed-small", "v6") != 1 {
				t.Errorf("node record %s (lease %x): %+v", kv.Key, kv.Lease, rec)
			}
		}
	})

	t.Run("RoutesSeeded", func(t *testing.T) {
		for _, want := range []routing.RouteConfig{
			{Route: "chat-70b", Active: "v42", Previous: "v41", Epoch: 2},
			{Route: "embed-small", Active: "v7", Previous: "v6", Epoch: 2},
		} {
			e, err := store.Get(ctx, want.Route)
			if err != nil {
				t.Fatal(err)
			}
			if c := e.Config; c.Active != want.Active || c.Previous != want.Previous || c.Epoch != want.Epoch || c.Kind != routing.KindPromote {
				t.Errorf("%s seeded as %+v", want.Route, c)
			}
		}
	})

	t.Run("RoutersConverged", func(t *testing.T) {
		if got, want := f.RouterIDs(), []string{"router-1", "router-2", "router-3"}; !slices.Equal(got, want) {
			t.Fatalf("routers %v, want %v", got, want)
		}
		resp, err := cli.Get(ctx, routing.Keyspace{Prefix: prefix}.Routers(), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 3 {
			t.Fatalf("%d router records, want 3", len(resp.Kvs))
		}
		for _, kv := range resp.Kvs {
			var rec routing.RouterRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				t.Fatal(err)
			}
			if kv.Lease == 0 || !strings.HasSuffix(string(kv.Key), "/"+rec.ID) ||
				rec.Observed["chat-70b"] != 2 || rec.Observed["embed-small"] != 2 {
				t.Errorf("router record %s (lease %x): %+v", kv.Key, kv.Lease, rec)
			}
		}
		for _, route := range []string{"chat-70b", "embed-small"} {
			if c := f.Converged(route, 2); !c.Done() || c.Routers != 3 || c.Last.IsZero() {
				t.Errorf("%s: convergence %+v", route, c)
			}
		}
	})

	t.Run("RuntimesRegistered", func(t *testing.T) {
		if got, want := f.RuntimeIDs(), []string{"runtime-1", "runtime-2"}; !slices.Equal(got, want) {
			t.Fatalf("runtimes %v, want %v", got, want)
		}
		if n := count(t, cli, runtime.Keys{Prefix: prefix}.Instances()); n != 2 {
			t.Fatalf("%d runtime records, want 2", n)
		}
	})

	checker, err := warm.NewChecker(warm.Config{KV: cli, Prefix: prefix, AgentToken: f.AgentToken(),
		Timeout: 20 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(checker.Close)

	t.Run("WarmPreviousIsWarm", func(t *testing.T) {
		rep, err := checker.Check(ctx, "chat-70b", "v41")
		if err != nil {
			t.Fatalf("chat-70b v41: %v\n%s", err, rep.String())
		}
		if rep.WarmNodes != 4 || rep.WarmGPUs != 16 || rep.ActiveGPUs != 16 {
			t.Fatalf("chat-70b v41: %s", rep.String())
		}
	})

	t.Run("ColdPreviousRefused", func(t *testing.T) {
		rep, err := checker.Check(ctx, "embed-small", "v6")
		if !errors.Is(err, warm.ErrTargetNotWarm) {
			t.Fatalf("embed-small v6: want ErrTargetNotWarm, got %v\n%s", err, rep.String())
		}
		if rep.TargetNodes != 4 || rep.WarmNodes != 0 || len(rep.NotWarm()) != 4 {
			t.Fatalf("embed-small v6: %s", rep.String())
		}
		for _, n := range rep.Nodes {
			if n.State != warm.StateCold {
				t.Errorf("%s is %s, want cold: %s", n.Node, n.State, n.Reason)
			}
		}
	})

	t.Run("SetBehavior", func(t *testing.T) {
		if err := f.SetBehavior("gpu-09", "chat-70b", "v41", sim.Warm, 0); err == nil || !strings.Contains(err.Error(), `no node "gpu-09"`) {
			t.Errorf("unknown node: %v", err)
		}
		if err := f.SetBehavior(simfleet.AllNodes, "chat-70b", "v40", sim.Warm, 0); err == nil || !strings.Contains(err.Error(), "no simulated server for chat-70b v40") {
			t.Errorf("unknown version: %v", err)
		}
		// The agents notice at their next probe, about a second later.
		if err := f.SetBehavior("gpu-02", "chat-70b", "v41", sim.InferenceDead, 0); err != nil {
			t.Fatal(err)
		}
		eventually(t, "gpu-02 to report chat-70b v41 cold", func() bool {
			rep, err := checker.Check(ctx, "chat-70b", "v41")
			nw := rep.NotWarm()
			return errors.Is(err, warm.ErrTargetNotWarm) && len(nw) == 1 && nw[0].Node == "gpu-02" && nw[0].State == warm.StateCold
		})
		if err := f.SetBehavior(simfleet.AllNodes, "chat-70b", "v41", sim.Warm, 0); err != nil {
			t.Fatal(err)
		}
		eventually(t, "chat-70b v41 warm again", func() bool {
			_, err := checker.Check(ctx, "chat-70b", "v41")
			return err == nil
		})
	})

	t.Run("RollbackAbortsAndReissues", func(t *testing.T) {
		// Requests must be in flight on v42 for the rollback to abort any.
		eventually(t, "requests in flight on chat-70b v42", func() bool { return f.InFlight("chat-70b")["v42"] >= 4 })
		cur, err := store.Get(ctx, "chat-70b")
		if err != nil {
			t.Fatal(err)
		}
		res, err := store.Flip(ctx, routing.Change{Route: "chat-70b", Kind: routing.KindRollback, To: "v41",
			ExpectRev: cur.ModRevision, Seen: &cur, Op: uuid.NewString(), Actor: "test", Reason: "simfleet test"})
		if err != nil {
			t.Fatal(err)
		}
		sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: cli, Prefix: prefix, Secret: f.RuntimeSecret(),
			AckTimeout: time.Minute, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		signal, err := sig.SignalRollback(ctx, res.Config.Op, "chat-70b", res.Config.Epoch, "v42", "v41", res.Revision)
		if err != nil {
			t.Fatal(err)
		}
		result, err := sig.WaitAcks(ctx, signal)
		if err != nil {
			t.Fatal(err)
		}
		if !result.Complete || result.Expected != 2 || result.Acked != 2 || result.Aborted == 0 ||
			result.Reissued != result.Aborted || len(result.Missing)+len(result.Vanished) != 0 {
			t.Fatalf("acks: %+v", result)
		}
		if c := f.WaitConverged(ctx, "chat-70b", res.Config.Epoch); !c.Done() || c.Routers != 3 {
			t.Fatalf("routers after the rollback: %+v", c)
		}

		f.StopTraffic()
		st := f.Stats()
		t.Logf("acks %+v; traffic %+v", result, st)
		if st.Aborted != int64(result.Aborted) || st.Reissued != st.Aborted {
			t.Errorf("stats %+v: want %d aborted and as many re-issued", st, result.Aborted)
		}
		if st.CompletedOnRolledBack != 0 || st.Failed != 0 || st.Completed == 0 || st.Completed != st.Started {
			t.Errorf("stats %+v: want every request completed, none on the rolled-back version", st)
		}
		checkRecord(t, obs.Record(), "chat-70b", res.Config.Epoch, "v42", st)
		for _, route := range []string{"chat-70b", "embed-small"} {
			if n := f.InFlight(route); len(n) != 0 {
				t.Errorf("%s still in flight after StopTraffic: %v", route, n)
			}
		}
	})

	t.Run("StoppedRouterIsLost", func(t *testing.T) {
		if err := f.StopRouter("router-9"); err == nil {
			t.Error("StopRouter of an unknown router succeeded")
		}
		if err := f.StopRouter("router-3"); err != nil {
			t.Fatal(err)
		}
		if err := f.StopRouter("router-3"); err == nil {
			t.Error("StopRouter twice succeeded")
		}
		if got, want := f.RouterIDs(), []string{"router-1", "router-2"}; !slices.Equal(got, want) {
			t.Fatalf("routers %v, want %v", got, want)
		}
		cur, err := store.Get(ctx, "embed-small")
		if err != nil {
			t.Fatal(err)
		}
		res, err := store.Promote(ctx, routing.Change{Route: "embed-small", To: "v8", ExpectRev: cur.ModRevision,
			Seen: &cur, Op: uuid.NewString(), Actor: "test", Reason: "simfleet test"})
		if err != nil {
			t.Fatal(err)
		}
		if c := f.WaitConverged(ctx, "embed-small", res.Config.Epoch); !c.Done() || c.Routers != 2 {
			t.Fatalf("running routers after the promotion: %+v", c)
		}
		// The stopped router never applies the change; its record, left to
		// its lease, vanishes.
		key := routing.Keyspace{Prefix: prefix}.Router("router-3")
		eventually(t, "the stopped router's record to expire", func() bool {
			resp, err := cli.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) == 0 {
				return true
			}
			var rec routing.RouterRecord
			if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil || rec.Observed["embed-small"] >= res.Config.Epoch {
				t.Fatalf("stopped router published %s (%v)", resp.Kvs[0].Value, err)
			}
			return false
		})
	})

	t.Run("CloseDeregisters", func(t *testing.T) {
		f.Close()
		f.Close() // idempotent
		for _, key := range []string{
			fleetapi.Keys{Prefix: prefix}.Nodes(),
			routing.Keyspace{Prefix: prefix}.Routers(),
			runtime.Keys{Prefix: prefix}.Instances(),
		} {
			if n := count(t, cli, key); n != 0 {
				t.Errorf("%d records left under %s", n, key)
			}
		}
	})
}

// TestRestartKeepsRoutes starts a fleet on an etcd whose routes have moved
// on since the seed: they are left alone, and the routers wait for their
// real epochs.
func TestRestartKeepsRoutes(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := testCtx(t)
	cfg := simfleet.Config{Client: cli, Prefix: prefix, Nodes: 1, Routes: testRoutes(), Routers: 1}
	f, err := simfleet.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	store := routing.NewStore(cli, prefix, zap.NewNop())
	cur, err := store.Get(ctx, "chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Flip(ctx, routing.Change{Route: "chat-70b", Kind: routing.KindRollback, To: "v41",
		ExpectRev: cur.ModRevision, Seen: &cur, Op: uuid.NewString(), Actor: "test"}); err != nil {
		t.Fatal(err)
	}

	f, err = simfleet.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e, err := store.Get(ctx, "chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	if e.Config.Active != "v41" || e.Config.Epoch != 3 {
		t.Fatalf("chat-70b after a restart: %+v", e.Config)
	}
	if c := f.Converged("chat-70b", 3); !c.Done() {
		t.Fatalf("router after a restart: %+v", c)
	}
}

// TestRouterProcesses runs 5 routers as 2 router processes: each process's
// routers share one etcd client, every router still publishes its own
// record, converges on a flip as the bot counts it, and is withdrawn on
// Close; a simulated crash is refused, since it would pull the client from
// under the process's other routers.
func TestRouterProcesses(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := testCtx(t)
	f, err := simfleet.Start(ctx, simfleet.Config{Client: cli, Prefix: prefix, Routes: testRoutes(),
		Routers: 5, RouterProcesses: 2, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	keys := routing.Keyspace{Prefix: prefix}
	if n := count(t, cli, keys.Routers()); n != 5 {
		t.Fatalf("%d router records, want 5", n)
	}
	store := routing.NewStore(cli, prefix, zap.NewNop())
	cur, err := store.Get(ctx, "chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.Flip(ctx, routing.Change{Route: "chat-70b", Kind: routing.KindRollback, To: "v41",
		ExpectRev: cur.ModRevision, Seen: &cur, Op: uuid.NewString(), Actor: "test", Reason: "simfleet test"})
	if err != nil {
		t.Fatal(err)
	}
	conv, err := routing.WaitConverged(ctx, cli, prefix, "chat-70b", res.Config.Epoch, res.Revision, time.Minute)
	if err != nil || len(conv.Converged) != 5 || len(conv.Expected) != 5 {
		t.Fatalf("bot-observed convergence: %v: %d of %d converged (lost %v, pending %v)",
			err, len(conv.Converged), len(conv.Expected), conv.Lost, conv.Pending)
	}
	if c := f.WaitConverged(ctx, "chat-70b", res.Config.Epoch); !c.Done() || c.Routers != 5 {
		t.Fatalf("fleet-side convergence: %+v", c)
	}
	if err := f.StopRouter("router-2"); err == nil || !strings.Contains(err.Error(), "shares its process's etcd client") {
		t.Fatalf("StopRouter with shared clients: %v, want a refusal", err)
	}
	f.Close()
	if n := count(t, cli, keys.Routers()); n != 0 {
		t.Fatalf("%d router records left after Close, want 0", n)
	}
}

func TestConfigRejected(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	good := func() simfleet.Config { return simfleet.Config{Client: cli, Prefix: prefix, Routes: testRoutes()} }
	for _, tc := range []struct {
		name   string
		change func(*simfleet.Config)
		want   string
	}{
		{"NoClient", func(c *simfleet.Config) { c.Client = nil }, "Client is required"},
		{"NegativeNodes", func(c *simfleet.Config) { c.Nodes = -1 }, "Nodes must be"},
		{"MoreProcessesThanRouters", func(c *simfleet.Config) { c.Routers = 2; c.RouterProcesses = 3 }, "RouterProcesses must be"},
		{"NegativeProcesses", func(c *simfleet.Config) { c.RouterProcesses = -1 }, "RouterProcesses must be"},
		{"BadRoute", func(c *simfleet.Config) { c.Routes[0].Route = "../etc" }, "route 0"},
		{"DuplicateRoute", func(c *simfleet.Config) { c.Routes[1].Route = "chat-70b" }, "listed twice"},
		{"PreviousIsActive", func(c *simfleet.Config) { c.Routes[0].Previous = "v42" }, "previous and active"},
		{"TooManyGPUs", func(c *simfleet.Config) { c.Routes[0].GPUsPerNode = 1 << 20 }, "GPUsPerNode"},
		{"TrafficWithoutRoutes", func(c *simfleet.Config) { c.Routes = nil; c.Traffic.RPS = 1 }, "at least one route"},
		{"TooMuchTraffic", func(c *simfleet.Config) { c.Traffic.RPS = 1 << 30 }, "Traffic.RPS"},
		{"BadKind", func(c *simfleet.Config) { c.Nodes = 1; c.Routes[0].ActiveServer.Kind = "gopher" }, "gopher"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good()
			tc.change(&cfg)
			f, err := simfleet.Start(testCtx(t), cfg)
			if err == nil {
				f.Close()
				t.Fatalf("Start succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

// BenchmarkStart measures starting and closing an 8-node fleet with 4
// routers and 2 runtimes (the dev stack's default size), against a
// single-member etcd.
func BenchmarkStart(b *testing.B) {
	cli := etcdtest.Start(b).Client(b)
	ctx := context.Background()
	var starting, closing time.Duration
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		f, err := simfleet.Start(ctx, simfleet.Config{Client: cli, Prefix: fmt.Sprintf("/bench-%d", i), Nodes: 8,
			Routes: simfleet.DemoRoutes(), Routers: 4, Runtimes: 2})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		f.Close()
		starting, closing = starting+t1.Sub(t0), closing+time.Since(t1)
	}
	b.ReportMetric(float64(starting.Milliseconds())/float64(b.N), "start-ms/op")
	b.ReportMetric(float64(closing.Milliseconds())/float64(b.N), "close-ms/op")
}

// checkRecord checks what a Recorder saw of a rollback of route to epoch
// away from version against the traffic's final stats: every router and runtime
// applied it, one passing Done per completed request, and none on version
// after its runtime applied the rollback.
func checkRecord(t *testing.T, rec simfleet.Record, route string, epoch int64, from string, st simfleet.Stats) {
	t.Helper()
	for what, by := range map[string]map[string][]routing.View{"router": rec.Routers, "runtime": rec.Runtimes} {
		if len(by) == 0 {
			t.Errorf("no %s applied anything", what)
		}
		for id, vs := range by {
			if !slices.ContainsFunc(vs, func(v routing.View) bool {
				return v.Route == route && v.Epoch == epoch && v.From == from && v.Kind == routing.KindRollback
			}) {
				t.Errorf("%s %s never applied %s epoch %d: %+v", what, id, route, epoch, vs)
			}
		}
	}
	passed, refused := 0, 0
	for _, f := range rec.Finishes {
		if f.Attempt < 1 {
			t.Errorf("finish %+v", f)
		}
		if f.Err != nil {
			refused++
			continue
		}
		passed++
		if f.Route == route && f.Version == from && f.Epoch < epoch && f.Applied >= epoch {
			t.Errorf("passed Done on %s@%s after its runtime applied the rollback: %+v", route, from, f)
		}
	}
	if int64(passed) != st.Completed || int64(refused) > st.Aborted {
		t.Errorf("%d attempts passed Done and %d were refused there; stats %+v", passed, refused, st)
	}
}
