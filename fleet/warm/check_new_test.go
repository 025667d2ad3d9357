package warm

import (
	"errors"
	"strings"
	"testing"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// TestCheckNew warm-checks the first version of a route that has no routing
// config yet: the version's own registered GPUs are the baseline.
func TestCheckNew(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	const route, version = "chat-8b", "v1"
	// serve registers the version on a node whose agent answers b.
	serve := func(f *fleet, node string, gpus int, b behaviour) {
		a := startAgent(t, node, b)
		f.node(node, a.url(), map[string]map[string]int{route: {version: gpus}})
	}

	t.Run("WarmNodesAccepted", func(t *testing.T) {
		f := newFleet(t, cli)
		serve(f, "n1", 4, warmB(4))
		serve(f, "n2", 2, warmB(2))
		rep, err := f.checker(nil).CheckNew(testCtx(t), route, version)
		if err != nil {
			t.Fatalf("CheckNew: %v\n%s", err, rep.String())
		}
		if !rep.Warm || rep.Active != "" || rep.ActiveNodes != 0 || rep.ActiveGPUs != 0 ||
			rep.Baseline != BaselineTarget || rep.BaselineGPUs != 6 || rep.NeededGPUs != 6 ||
			rep.WarmGPUs != 6 || rep.QuorumFrom != "default" || rep.Reason != "" {
			t.Errorf("report %+v", rep)
		}
	})

	t.Run("ColdNodeRefused", func(t *testing.T) {
		f := newFleet(t, cli)
		serve(f, "n1", 4, warmB(4))
		serve(f, "n2", 4, coldB(4))
		rep, err := f.checker(nil).CheckNew(testCtx(t), route, version)
		var nw *NotWarmError
		if !errors.Is(err, ErrTargetNotWarm) || !errors.As(err, &nw) {
			t.Fatalf("err = %v (%T), want a *NotWarmError\n%s", err, err, rep.String())
		}
		if rep.Warm || rep.NeededGPUs != 8 || rep.WarmGPUs != 4 || rep.Baseline != BaselineTarget {
			t.Errorf("report %+v", rep)
		}
		if !strings.Contains(err.Error(), "n2") {
			t.Errorf("refusal %q does not name the cold node n2", err)
		}
	})

	t.Run("PolicyQuorumApplies", func(t *testing.T) {
		f := newFleet(t, cli)
		serve(f, "n1", 4, warmB(4))
		serve(f, "n2", 4, coldB(4))
		f.policy(route, `{"warm_quorum":0.5}`)
		rep, err := f.checker(nil).CheckNew(testCtx(t), route, version)
		if err != nil {
			t.Fatalf("CheckNew: %v", err)
		}
		if rep.QuorumFrom != "policy" || rep.NeededGPUs != 4 {
			t.Errorf("report %+v", rep)
		}
	})

	t.Run("NoNodeRefused", func(t *testing.T) {
		f := newFleet(t, cli)
		// Another route's node: a record, but not of this version.
		a := startAgent(t, "other", warmB(8))
		f.node("other", a.url(), map[string]map[string]int{"chat-70b": {"v42": 8}})
		rep, err := f.checker(nil).CheckNew(testCtx(t), route, version)
		if !errors.Is(err, ErrTargetNotWarm) {
			t.Fatalf("err = %v, want ErrTargetNotWarm", err)
		}
		want := "no node registers chat-8b@v1 (1 node records; the route has no active version yet)"
		if rep.Reason != want {
			t.Errorf("reason %q, want %q", rep.Reason, want)
		}
		if strings.Contains(err.Error(), "active  ") || strings.Contains(rep.Reason, "serving active") {
			t.Errorf("refusal speaks of an active version the route does not have: %q", err)
		}
	})

	t.Run("ExistingRouteIsCheck", func(t *testing.T) {
		f := newFleet(t, cli)
		f.route(route, "v0", "")
		a := startAgent(t, "n1", warmB(4))
		f.node("n1", a.url(), map[string]map[string]int{route: {"v0": 8, version: 4}})
		c := f.checker(nil)
		got, gotErr := c.CheckNew(testCtx(t), route, version)
		want, wantErr := c.Check(testCtx(t), route, version)
		if (gotErr == nil) != (wantErr == nil) || got.Active != "v0" || got.Active != want.Active ||
			got.ActiveGPUs != want.ActiveGPUs || got.Baseline != want.Baseline || got.NeededGPUs != want.NeededGPUs ||
			got.Warm != want.Warm || got.Reason != want.Reason {
			t.Errorf("CheckNew %+v (%v)\nCheck    %+v (%v)", got, gotErr, want, wantErr)
		}
		// The route's 8 active GPUs are the baseline, not the target's 4.
		if got.Baseline != BaselineActive || got.NeededGPUs != 8 || !errors.Is(gotErr, ErrTargetNotWarm) {
			t.Errorf("existing route judged as new: %+v", got)
		}
	})

	t.Run("CheckStillRequiresTheRoute", func(t *testing.T) {
		f := newFleet(t, cli)
		serve(f, "n1", 4, warmB(4))
		if _, err := f.checker(nil).Check(testCtx(t), route, version); !errors.Is(err, routing.ErrNotFound) {
			t.Fatalf("Check of a missing route: %v, want routing.ErrNotFound", err)
		}
	})

	t.Run("MalformedRouteIsAnError", func(t *testing.T) {
		f := newFleet(t, cli)
		serve(f, "n1", 4, warmB(4))
		f.put(routing.Keyspace{Prefix: f.prefix}.Route(route), `{"route":"chat-8b"`)
		if _, err := f.checker(nil).CheckNew(testCtx(t), route, version); !errors.Is(err, routing.ErrMalformed) {
			t.Fatalf("CheckNew over a malformed route: %v, want routing.ErrMalformed", err)
		}
	})

	t.Run("BadNamesRefused", func(t *testing.T) {
		f := newFleet(t, cli)
		c := f.checker(nil)
		if _, err := c.CheckNew(testCtx(t), "no/slash", version); !errors.Is(err, routing.ErrInvalid) {
			t.Errorf("bad route: %v", err)
		}
		if _, err := c.CheckNew(testCtx(t), route, ""); !errors.Is(err, routing.ErrInvalid) {
			t.Errorf("empty version: %v", err)
		}
	})
}
