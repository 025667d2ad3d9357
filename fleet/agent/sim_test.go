package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/internal/sim"
)

// simServer starts a simulated inference server of kind until the test
// ends, and returns it with the agent's config for it.
func simServer(tb testing.TB, kind, route, version, model, modelVersion string, gpus int) (*sim.Server, ServerConfig) {
	tb.Helper()
	s, err := sim.New(kind, model, modelVersion)
	if err != nil {
		tb.Fatalf("sim.New(%s): %v", kind, err)
	}
	ts := httptest.NewServer(s)
	// Close releases hung requests first, so that ts.Close can return.
	tb.Cleanup(ts.Close)
	tb.Cleanup(s.Close)
	return s, ServerConfig{
		Kind: kind, URL: ts.URL, Route: route, Version: version, Model: model, ModelVersion: modelVersion,
		GPUs: gpus, CanaryPrompt: "Reply with the single word OK.", Budget: Duration(500 * time.Millisecond),
	}
}

// TestAgentAgainstSimulators runs the real agent, with the real probers,
// against a simulated server of every kind, and reads it through its HTTP
// API as the bot does.
func TestAgentAgainstSimulators(t *testing.T) {
	t.Parallel()
	openai, c1 := simServer(t, sim.KindOpenAI, "chat-70b", "v42", "meta-llama/Llama-3.1-70B-Instruct", "", 4)
	kserve, c2 := simServer(t, sim.KindKServeV2, "chat-70b", "v41", "llama-70b", "41", 4)
	tgi, c3 := simServer(t, sim.KindTGI, "summarize", "s1", "mistralai/Mistral-7B-Instruct-v0.3", "", 1)
	ollama, c4 := simServer(t, sim.KindOllama, "embed-small", "v7", "nomic-embed-text:v1.5", "", 1)

	client := NewHTTPClient()
	t.Cleanup(client.CloseIdleConnections)
	a, err := New(Config{
		Node:         "gpu-node-1",
		Servers:      []ServerConfig{c1, c2, c3, c4},
		Interval:     time.Hour, // probes at start, then only when asked
		FreshTimeout: time.Second,
		HTTPClient:   client,
		Logger:       testLogger(t),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ta := &testAgent{Agent: a}
	ta.run(t)
	h := a.Handler(testToken)
	warm := func(route, version string, fresh bool) fleetapi.WarmReply {
		t.Helper()
		q := "/v1/warm?route=" + route + "&version=" + version
		if fresh {
			q += "&fresh=1"
		}
		w := do(t, h, http.MethodGet, q, "Bearer "+testToken)
		r, err := fleetapi.DecodeWarmReply(w.Body, "gpu-node-1", route, version)
		if err != nil || w.Code != http.StatusOK {
			t.Fatalf("GET %s: %d: %v", q, w.Code, err)
		}
		return r
	}

	w := do(t, h, http.MethodGet, "/v1/status", "Bearer "+testToken)
	st, err := fleetapi.DecodeStatusReply(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.Versions {
		if !v.Served || !v.Loaded || !v.Ready || !v.Warm || v.Error != "" || v.CanaryMS <= 0 {
			t.Errorf("%s %s@%s not warm at start: %+v", v.Kind, v.Route, v.Version, v)
		}
	}

	// Health 200 but inference dead is cold, and says why.
	openai.Set(sim.InferenceDead)
	if r := warm("chat-70b", "v42", false); !r.Warm {
		t.Fatalf("cached state changed without a probe: %+v", r)
	}
	if r := warm("chat-70b", "v42", true); r.Warm || !r.Ready || r.Error == "" {
		t.Fatalf("openai inference dead: %+v", r)
	}

	// A model unloaded from a healthy server is not loaded.
	kserve.Set(sim.Unloaded)
	if r := warm("chat-70b", "v41", true); r.Warm || r.Loaded {
		t.Fatalf("kserve unloaded: %+v", r)
	}

	// A cold start is not warm.
	ollama.Set(sim.Loading)
	if r := warm("embed-small", "v7", true); r.Warm {
		t.Fatalf("ollama loading: %+v", r)
	}

	// A hung server: the fresh request answers by its timeout with the
	// cached observation, marked and not warm; the probe itself then times
	// out and the cached state turns cold too.
	tgi.Set(sim.Hang)
	start := time.Now()
	r := warm("summarize", "s1", true)
	if r.Warm || !r.Loaded || !strings.HasPrefix(r.Error, "fresh probe did not finish within 1s") {
		t.Fatalf("tgi hung, fresh: %+v", r)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("fresh request on a hung server took %v", took)
	}
	waitFor(t, "the hung probe to time out", func() bool { return !a.State("summarize", "s1").Warm })

	// Back to warm.
	openai.Set(sim.Warm)
	if r := warm("chat-70b", "v42", true); !r.Warm || r.InFlight == nil {
		t.Fatalf("openai warm again: %+v", r)
	}
	if got := gauge(t, a, "backflip_agent_warm", "chat-70b", "v42"); got != 1 {
		t.Fatalf("warm gauge %v", got)
	}
	if got := gauge(t, a, "backflip_agent_probe_errors_total", "tgi", "summarize", "s1"); got != 1 {
		t.Fatalf("tgi probe errors %v, want 1", got)
	}
}
