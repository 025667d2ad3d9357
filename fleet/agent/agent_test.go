package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
)

func TestCachedState(t *testing.T) {
	ta := newTestAgent(t)
	ta.prober("embed-small", "v7").set(Observation{Loaded: true, Ready: false, Err: errors.New("engine loading")})
	ta.run(t)

	got := ta.State("chat-70b", "v42")
	if !got.Served || !got.Loaded || !got.Ready || !got.Warm || got.GPUs != 4 || got.Kind != KindOpenAI ||
		got.CanaryMS != 20 || got.InFlight == nil || *got.InFlight != 3 || got.Error != "" {
		t.Fatalf("warm version: %+v", got)
	}
	if got.ObservedAt != ta.clock.Now() || got.AgeMS != 0 {
		t.Fatalf("observed at %v age %d, want %v and 0", got.ObservedAt, got.AgeMS, ta.clock.Now())
	}

	// The age is computed when asked, from the cached observation time.
	ta.clock.Advance(2500 * time.Millisecond)
	if got := ta.State("chat-70b", "v42"); got.AgeMS != 2500 || !got.Warm {
		t.Fatalf("after 2.5 s: age %d warm %t, want 2500 true", got.AgeMS, got.Warm)
	}

	cold := ta.State("embed-small", "v7")
	if cold.Warm || !cold.Loaded || cold.Ready || cold.Error != "engine loading" || cold.GPUs != 1 {
		t.Fatalf("cold version: %+v", cold)
	}

	if s := ta.State("chat-70b", "v40"); s.Served || s.Warm || s.GPUs != 0 || s.Route != "chat-70b" || s.Version != "v40" {
		t.Fatalf("version not served here: %+v", s)
	}

	st := ta.Status()
	if st.Node != "gpu-node-1" || !st.At.Equal(ta.clock.Now()) || len(st.Versions) != 3 {
		t.Fatalf("status: %+v", st)
	}
	var order []string
	for _, v := range st.Versions {
		order = append(order, v.Route+"@"+v.Version)
		if v.AgeMS != 2500 {
			t.Errorf("%s@%s age %d, want 2500", v.Route, v.Version, v.AgeMS)
		}
	}
	if got, want := strings.Join(order, " "), "chat-70b@v41 chat-70b@v42 embed-small@v7"; got != want {
		t.Fatalf("status order %q, want %q", got, want)
	}

	// Only one probe each so far: the state above was all cached.
	for key, p := range ta.probers {
		if n := p.calls.Load(); n != 1 {
			t.Errorf("%s probed %d times, want 1", key, n)
		}
	}
}

func TestFreshProbes(t *testing.T) {
	ta := newTestAgent(t)
	ta.run(t)
	p := ta.prober("chat-70b", "v42")
	ctx := context.Background()

	p.set(Observation{Loaded: true, Ready: true, Err: errors.New("canary: 500 Internal Server Error")})
	if got := ta.Warm(ctx, "chat-70b", "v42", false); !got.Warm {
		t.Fatalf("cached state changed without a probe: %+v", got)
	}
	ta.clock.Advance(time.Second)
	got := ta.Warm(ctx, "chat-70b", "v42", true)
	if got.Warm || got.Error != "canary: 500 Internal Server Error" || got.AgeMS != 0 || !got.ObservedAt.Equal(ta.clock.Now()) {
		t.Fatalf("fresh: %+v", got)
	}
	if n := p.calls.Load(); n != 2 {
		t.Fatalf("probes: %d, want 2", n)
	}
	// The fresh result is now the cached one.
	if got := ta.State("chat-70b", "v42"); got.Warm || got.Error == "" {
		t.Fatalf("cache after fresh: %+v", got)
	}
	// A fresh request for a version not served probes nothing.
	if got := ta.Warm(ctx, "chat-70b", "v1", true); got.Served {
		t.Fatalf("unserved: %+v", got)
	}
}

func TestConcurrentFreshShareOneProbe(t *testing.T) {
	ta := newTestAgent(t)
	ta.freshTimeout = time.Minute // no request may give up before all have joined
	ta.run(t)
	p := ta.prober("chat-70b", "v42")
	p.set(warmObs(40 * time.Millisecond))
	release := p.hold()
	defer release()

	const n = 20
	var wg sync.WaitGroup
	results := make([]fleetapi.VersionState, n)
	for i := range n {
		wg.Go(func() { results[i] = ta.Warm(context.Background(), "chat-70b", "v42", true) })
	}
	// Release the probe only once every request has joined it.
	s := ta.byKey[versionKey{"chat-70b", "v42"}]
	waitFor(t, "all fresh requests to join the probe", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.flight != nil && s.flight.joins == n
	})
	release()
	wg.Wait()
	if calls := p.calls.Load(); calls != 2 {
		t.Fatalf("%d concurrent fresh requests caused %d probes after the first, want 1", n, calls-1)
	}
	for i, r := range results {
		if !r.Warm || r.CanaryMS != 40 {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
}

// TestFreshTimeoutReturnsCached: a fresh probe that does not finish in time
// answers with the cached observation, its age and why — but never warm.
func TestFreshTimeoutReturnsCached(t *testing.T) {
	ta := newTestAgent(t)
	ta.freshTimeout = 50 * time.Millisecond
	ta.run(t)
	p := ta.prober("chat-70b", "v42")
	release := p.hold()
	defer release()

	ta.clock.Advance(3 * time.Second)
	got := ta.Warm(context.Background(), "chat-70b", "v42", true)
	if got.Warm || !got.Loaded || !got.Ready || got.AgeMS != 3000 {
		t.Fatalf("want the cached observation, 3 s old, not warm: %+v", got)
	}
	if want := "fresh probe did not finish within 50ms; cached observation from 3s ago"; got.Error != want {
		t.Fatalf("error %q, want %q", got.Error, want)
	}

	// A request that gives up first gets the same, with its reason.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ta.freshTimeout = time.Hour
	if got := ta.Warm(ctx, "chat-70b", "v42", true); !strings.HasPrefix(got.Error, "fresh probe abandoned: context canceled") {
		t.Fatalf("canceled request: %+v", got)
	}
	// Both requests shared the one probe still held.
	release()
	waitFor(t, "the held probe to end", func() bool { return ta.State("chat-70b", "v42").AgeMS == 0 })
	if calls := p.calls.Load(); calls != 2 {
		t.Fatalf("probes: %d, want 2", calls)
	}
}

func TestFreshWhenNotRunning(t *testing.T) {
	ta := newTestAgent(t)
	got := ta.Warm(context.Background(), "chat-70b", "v42", true)
	if got.Warm || got.Error != "fresh probe not run: the agent is not probing; no earlier observation" {
		t.Fatalf("before Run: %+v", got)
	}
	if got := ta.State("chat-70b", "v42"); got.Warm || got.Error != "not probed yet" || !got.ObservedAt.IsZero() {
		t.Fatalf("never probed: %+v", got)
	}
}

func TestRunStopsWithProbeInFlight(t *testing.T) {
	ta := newTestAgent(t)
	p := ta.prober("chat-70b", "v42")
	release := p.hold()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ta.Run(ctx) }()
	waitFor(t, "the probe to start", func() bool { return p.calls.Load() == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	// The probe cut short by the shutdown is not stored as an observation.
	if got := ta.State("chat-70b", "v42"); got.Error != "not probed yet" {
		t.Fatalf("after shutdown: %+v", got)
	}
	if err := ta.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestSanitize(t *testing.T) {
	budget := 500 * time.Millisecond
	neg := -1
	for _, tc := range []struct {
		name   string
		in     Observation
		ctxErr error
		warm   bool
		errHas string
	}{
		{"Warm", warmObs(100 * time.Millisecond), nil, true, ""},
		{"WarmClearsStaleError", Observation{Loaded: true, Ready: true, Warm: true, Err: errors.New("x")}, nil, true, ""},
		{"WarmButNotLoaded", Observation{Ready: true, Warm: true}, nil, false, "without loaded and ready"},
		{"WarmButNotReady", Observation{Loaded: true, Warm: true}, nil, false, "without loaded and ready"},
		{"OverBudget", warmObs(600 * time.Millisecond), nil, false, "over its budget of 500ms"},
		{"ColdWithoutReason", Observation{Loaded: true}, nil, false, "gave no reason"},
		{"TimedOut", Observation{}, context.DeadlineExceeded, false, "did not finish within 2s"},
		{"KeepsReason", Observation{Err: errors.New("model not listed")}, nil, false, "model not listed"},
		{"NegativeInFlightDropped", Observation{Loaded: true, Ready: true, Warm: true, InFlight: &neg}, nil, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sanitize(tc.in, budget, tc.ctxErr, 2*time.Second)
			if got.Warm != tc.warm {
				t.Fatalf("warm %t, want %t (%+v)", got.Warm, tc.warm, got)
			}
			switch {
			case tc.errHas == "" && got.Err != nil:
				t.Fatalf("error %v, want none", got.Err)
			case tc.errHas != "" && (got.Err == nil || !strings.Contains(got.Err.Error(), tc.errHas)):
				t.Fatalf("error %v, want it to contain %q", got.Err, tc.errHas)
			}
			if got.InFlight != nil && *got.InFlight < 0 {
				t.Fatalf("negative in-flight count kept")
			}
		})
	}
}

type panicProber struct{}

func (panicProber) Probe(context.Context) Observation { panic("bad reply") }

func TestPanickingProberIsAnError(t *testing.T) {
	obs := safeProbe(context.Background(), panicProber{})
	if obs.Warm || obs.Err == nil || !strings.Contains(obs.Err.Error(), "panicked: bad reply") {
		t.Fatalf("got %+v", obs)
	}
}

func TestProbeTimeout(t *testing.T) {
	for _, tc := range []struct {
		interval, budget, want time.Duration
	}{
		{5 * time.Second, 800 * time.Millisecond, 4400 * time.Millisecond},
		{5 * time.Second, 2 * time.Second, 5 * time.Second},
		{200 * time.Millisecond, 500 * time.Millisecond, 1500 * time.Millisecond},
		{time.Hour, 10 * time.Second, 32 * time.Second},
	} {
		if got := probeTimeout(tc.interval, tc.budget); got != tc.want {
			t.Errorf("probeTimeout(%v, %v) = %v, want %v", tc.interval, tc.budget, got, tc.want)
		}
	}
}

func TestJitter(t *testing.T) {
	d := 5 * time.Second
	for range 1000 {
		if j := jitter(d); j < 4*time.Second || j > 6*time.Second {
			t.Fatalf("jitter(%v) = %v, outside ±20%%", d, j)
		}
	}
}

func TestTruncate(t *testing.T) {
	s := strings.Repeat("é", 10) // 2 bytes each
	got := truncate(s, 8)
	if len(got) > 8 || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "é") {
		t.Fatalf("truncate = %q", got)
	}
	if truncate("short", 8) != "short" {
		t.Fatal("short string changed")
	}
}

func TestNewRefuses(t *testing.T) {
	good := []ServerConfig{testServer(KindOpenAI, "chat-70b", "v42", 4)}
	noProber := func(ServerConfig) (Prober, error) { return nil, errors.New("unsupported") }
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"NoLogger", Config{Node: "n1", Servers: good}, "Logger is required"},
		{"BadNode", Config{Node: "a/b", Servers: good, Logger: testLogger(t)}, "node name"},
		{"NoServers", Config{Node: "n1", Logger: testLogger(t)}, "servers: at least one"},
		{"BadServer", Config{Node: "n1", Servers: []ServerConfig{testServer("grpc", "r", "v1", 1)}, Logger: testLogger(t)}, "servers[0].kind"},
		{"ProberError", Config{Node: "n1", Servers: good, Logger: testLogger(t), NewProber: noProber}, "servers[0] (openai chat-70b@v42): unsupported"},
		{"NegativeInterval", Config{Node: "n1", Servers: good, Logger: testLogger(t), Interval: -1}, "Interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestRecord(t *testing.T) {
	ta := newTestAgent(t)
	rec := ta.Record("https://gpu-node-1:9090")
	if err := rec.Validate(); err != nil {
		t.Fatal(err)
	}
	if rec.GPUs("chat-70b", "v42") != 4 || rec.GPUs("chat-70b", "v41") != 4 || rec.GPUs("embed-small", "v7") != 1 || len(rec.Serving) != 2 {
		t.Fatalf("record: %+v", rec)
	}
}

func TestMetrics(t *testing.T) {
	ta := newTestAgent(t)
	ta.prober("embed-small", "v7").set(Observation{Err: errors.New("not resident")})
	ta.run(t)

	if got := gauge(t, ta.Agent, "backflip_agent_warm", "chat-70b", "v42"); got != 1 {
		t.Errorf("warm chat-70b v42 = %v, want 1", got)
	}
	if got := gauge(t, ta.Agent, "backflip_agent_warm", "embed-small", "v7"); got != 0 {
		t.Errorf("warm embed-small v7 = %v, want 0", got)
	}
	mfs := gather(t, ta.Agent)
	errs := mfs["backflip_agent_probe_errors_total"]
	if errs == nil || len(errs.Metric) != 1 || errs.Metric[0].GetCounter().GetValue() != 1 {
		t.Errorf("probe errors: %v", errs)
	}
	hist := mfs["backflip_agent_probe_duration_seconds"]
	var count uint64
	for _, m := range hist.GetMetric() {
		count += m.GetHistogram().GetSampleCount()
	}
	if count != 3 {
		t.Errorf("probe duration samples: %d, want 3", count)
	}
	if mfs["go_goroutines"] == nil || mfs["backflip_agent_registered"] == nil {
		t.Errorf("runtime or registration metrics missing")
	}
}

func gather(tb testing.TB, a *Agent) map[string]*dto.MetricFamily {
	tb.Helper()
	mfs, err := a.Registry().Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// gauge reads a gauge, or a counter, by its label values in order.
func gauge(tb testing.TB, a *Agent, name string, labelValues ...string) float64 {
	tb.Helper()
	mf := gather(tb, a)[name]
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(labelValues) {
			continue
		}
		match := true
		for i, l := range m.GetLabel() {
			match = match && l.GetValue() == labelValues[i]
		}
		if match {
			if m.Gauge != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	tb.Fatalf("metric %s%v not found", name, labelValues)
	return 0
}
