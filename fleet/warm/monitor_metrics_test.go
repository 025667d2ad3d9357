package warm

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// routeGauges reads a gauge by route from reg.
func routeGauges(tb testing.TB, reg *prometheus.Registry, name string) map[string]float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			route := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" {
					route = l.GetValue()
				}
			}
			out[route] = m.GetGauge().GetValue()
		}
	}
	return out
}

func wantGauges(tb testing.TB, reg *prometheus.Registry, name string, want map[string]float64) {
	tb.Helper()
	got := routeGauges(tb, reg, name)
	if len(got) != len(want) {
		tb.Fatalf("%s: %v, want %v", name, got, want)
	}
	for route, v := range want {
		if g, ok := got[route]; !ok || g != v {
			tb.Fatalf("%s: %v, want %v", name, got, want)
		}
	}
}

// TestMonitorMetrics: the monitor exports each rollback target's warm
// state and warm share by route; routes without a target have no series,
// a route that loses its target loses them, and a Monitor that stops
// running drops them all.
func TestMonitorMetrics(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	f := newFleet(t, cli)
	f.route("chat-70b", "v42", "v41")
	f.route("embed", "e2", "") // no rollback target
	f.policy("chat-70b", `{"warm_quorum":0.5}`)
	agents := f.nodes("chat-70b", []nodeSpec{
		{name: "n1", active: 4, target: 4, agent: warmB(4)},
		{name: "n2", active: 4, target: 4, agent: warmB(4)},
	})
	reg := prometheus.NewRegistry()
	checker := f.checker(func(c *Config) { c.Timeout = 2 * time.Second })
	m, err := NewMonitor(MonitorConfig{Checker: checker, KV: cli, Prefix: f.prefix, Interval: 20 * time.Millisecond,
		Logger: zap.NewNop(), Emit: func(Event) {}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	wantGauges(t, reg, "backflip_rollback_target_warm", map[string]float64{})

	mustTick(t, m)
	wantGauges(t, reg, "backflip_rollback_target_warm", map[string]float64{"chat-70b": 1})
	wantGauges(t, reg, "backflip_rollback_target_warm_ratio", map[string]float64{"chat-70b": 1})

	// Half the GPUs cold: still warm at the route's 0.5 quorum.
	agents["n2"].set(coldB(4))
	mustTick(t, m)
	wantGauges(t, reg, "backflip_rollback_target_warm", map[string]float64{"chat-70b": 1})
	wantGauges(t, reg, "backflip_rollback_target_warm_ratio", map[string]float64{"chat-70b": 0.5})

	// All cold.
	agents["n1"].set(coldB(4))
	mustTick(t, m)
	wantGauges(t, reg, "backflip_rollback_target_warm", map[string]float64{"chat-70b": 0})
	wantGauges(t, reg, "backflip_rollback_target_warm_ratio", map[string]float64{"chat-70b": 0})

	// A second route gets a target; both are reported.
	f.route("embed2", "e2", "e1")
	mustTick(t, m)
	got := routeGauges(t, reg, "backflip_rollback_target_warm")
	routes := make([]string, 0, len(got))
	for r := range got {
		routes = append(routes, r)
	}
	sort.Strings(routes)
	if len(routes) != 2 || routes[0] != "chat-70b" || routes[1] != "embed2" || got["embed2"] != 0 {
		t.Fatalf("backflip_rollback_target_warm %v: want chat-70b and embed2 (no nodes: cold)", got)
	}

	// A route that is gone loses its series.
	if _, err := cli.Delete(testCtx(t), f.store.Keys().Route("embed2")); err != nil {
		t.Fatal(err)
	}
	mustTick(t, m)
	wantGauges(t, reg, "backflip_rollback_target_warm", map[string]float64{"chat-70b": 0})
	wantGauges(t, reg, "backflip_rollback_target_warm_ratio", map[string]float64{"chat-70b": 0})

	// The next leader's Monitor shares the Registerer; when a Monitor's Run
	// ends (leadership lost) the series go.
	m2, err := NewMonitor(MonitorConfig{Checker: checker, KV: cli, Prefix: f.prefix, Interval: 20 * time.Millisecond,
		Logger: zap.NewNop(), Emit: func(Event) {}, Registerer: reg})
	if err != nil {
		t.Fatalf("a second Monitor on the same Registerer: %v", err)
	}
	agents["n1"].set(warmB(4))
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan struct{})
	go func() { defer close(done); m2.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for routeGauges(t, reg, "backflip_rollback_target_warm")["chat-70b"] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the running Monitor never reported chat-70b warm: %v", routeGauges(t, reg, "backflip_rollback_target_warm"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	wantGauges(t, reg, "backflip_rollback_target_warm", map[string]float64{})
	wantGauges(t, reg, "backflip_rollback_target_warm_ratio", map[string]float64{})

	// Without a Registerer there is nothing to register and nothing fails.
	if _, err := NewMonitor(MonitorConfig{Checker: checker, KV: cli, Prefix: f.prefix, Emit: func(Event) {}}); err != nil {
		t.Fatal(err)
	}
	// A Registerer holding another collector of the same name is refused.
	bad := prometheus.NewRegistry()
	bad.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "backflip_rollback_target_warm", Help: "other"}))
	if _, err := NewMonitor(MonitorConfig{Checker: checker, KV: cli, Prefix: f.prefix, Emit: func(Event) {}, Registerer: bad}); err == nil {
		t.Error("a conflicting backflip_rollback_target_warm was accepted")
	}
}
