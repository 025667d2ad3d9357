package agent

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// TestMain fails the package if a probe, registration, server or client
// goroutine outlives its test.
func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

// scriptedProber is a Prober whose observation the test sets. With a gate
// set, each probe waits for the gate to close (or its context to end, which
// it then reports, as a real prober does).
type scriptedProber struct {
	mu   sync.Mutex
	obs  Observation
	gate chan struct{}

	calls atomic.Int64
}

func (p *scriptedProber) Probe(ctx context.Context) Observation {
	p.calls.Add(1)
	p.mu.Lock()
	obs, gate := p.obs, p.gate
	p.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Observation{Err: ctx.Err()}
		}
	}
	return obs
}

func (p *scriptedProber) set(obs Observation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.obs = obs
}

// hold makes the next probes wait until the returned function is called.
func (p *scriptedProber) hold() (release func()) {
	gate := make(chan struct{})
	p.mu.Lock()
	p.gate = gate
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			p.gate = nil
			p.mu.Unlock()
			close(gate)
		})
	}
}

func warmObs(latency time.Duration) Observation {
	n := 3
	return Observation{Loaded: true, Ready: true, Warm: true, CanaryLatency: latency, InFlight: &n}
}

// fakeClock is a settable clock for observation times and ages.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func testServer(kind, route, version string, gpus int) ServerConfig {
	return ServerConfig{
		Kind: kind, URL: "http://127.0.0.1:8000", Route: route, Version: version,
		Model: "m", GPUs: gpus, CanaryPrompt: "Say OK.", Budget: Duration(time.Second),
	}
}

// testAgent is an agent over scripted probers, one per server, keyed by
// route@version.
type testAgent struct {
	*Agent
	probers map[string]*scriptedProber
	clock   *fakeClock
}

func (ta *testAgent) prober(route, version string) *scriptedProber {
	return ta.probers[route+"@"+version]
}

// newTestAgent builds an agent whose probers answer warm until told
// otherwise, probing once at start and then only on request (the interval is
// an hour), so tests decide when probes happen.
func newTestAgent(tb testing.TB, servers ...ServerConfig) *testAgent {
	tb.Helper()
	if len(servers) == 0 {
		servers = []ServerConfig{
			testServer(KindOpenAI, "chat-70b", "v42", 4),
			testServer(KindTGI, "chat-70b", "v41", 4),
			testServer(KindOllama, "embed-small", "v7", 1),
		}
	}
	ta := &testAgent{probers: map[string]*scriptedProber{}, clock: newFakeClock()}
	for _, s := range servers {
		p := &scriptedProber{}
		p.set(warmObs(20 * time.Millisecond))
		ta.probers[s.Route+"@"+s.Version] = p
	}
	a, err := New(Config{
		Node:     "gpu-node-1",
		Servers:  servers,
		Interval: time.Hour,
		NewProber: func(sc ServerConfig) (Prober, error) {
			return ta.probers[sc.Route+"@"+sc.Version], nil
		},
		Logger: testLogger(tb),
		Now:    ta.clock.Now,
	})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ta.Agent = a
	return ta
}

// run runs the agent until the test ends, and waits for every server's
// first probe.
func (ta *testAgent) run(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ta.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	waitFor(tb, "first probes", func() bool {
		for _, s := range ta.Status().Versions {
			if s.Error == "not probed yet" {
				return false
			}
		}
		return true
	})
}

// testLogger logs to the test, and not after it ended.
func testLogger(tb testing.TB) *zap.Logger {
	return zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel))
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
