package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/sim"
)

// Probe settings for the tests against the simulators. The budget is
// generous so that a loaded CI machine does not turn Warm cold; the slow
// canary sits between the budget and the canary's own deadline
// (canarySlack budgets), so it is reported with its latency.
const (
	probeTestBudget  = 500 * time.Millisecond
	probeTestSlow    = 750 * time.Millisecond
	probeTestTimeout = 600 * time.Millisecond // the hung probe's deadline
)

// probeKind is one protocol with the names its simulator and probe use.
type probeKind struct {
	kind, model, version string
}

func probeKinds() []probeKind {
	return []probeKind{
		{KindOpenAI, "acme/chat-7b", ""},
		{KindKServeV2, "acme/chat-7b", "3"},
		{KindTGI, "acme/chat-7b", "0123456789abcdef"},
		{KindOllama, "acme-chat", "0123abcd"},
	}
}

// probeSim starts a simulator behind a loopback listener and returns it
// with a prober for it.
func probeSim(t *testing.T, k probeKind) (*sim.Server, Prober) {
	t.Helper()
	s, err := sim.New(k.kind, k.model, k.version)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		s.Close() // release hung requests, or ts.Close waits for them
		ts.Close()
	})
	return s, probeFor(t, k, ts.URL)
}

func probeCfg(k probeKind, url string) ServerConfig {
	return ServerConfig{
		Kind: k.kind, URL: url, Route: "chat", Version: "v1",
		Model: k.model, ModelVersion: k.version, GPUs: 1,
		CanaryPrompt: "Say OK.", Budget: Duration(probeTestBudget),
	}
}

func probeFor(t *testing.T, k probeKind, url string) Prober {
	t.Helper()
	p, err := NewProber(probeCfg(k, url), &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runProbe probes with a deadline and checks the invariants every
// observation must keep.
func runProbe(t *testing.T, p Prober, timeout time.Duration) (Observation, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	obs := p.Probe(ctx)
	took := time.Since(start)
	if (obs.Err == nil) != obs.Warm {
		t.Fatalf("Err must be nil exactly when Warm: warm=%v err=%v", obs.Warm, obs.Err)
	}
	if obs.Warm && (!obs.Loaded || !obs.Ready) {
		t.Fatalf("warm but loaded=%v ready=%v", obs.Loaded, obs.Ready)
	}
	if obs.Err != nil {
		if msg := obs.Err.Error(); strings.ContainsAny(msg, "\r\n") || len(msg) > 600 {
			t.Fatalf("error is not one short line: %q", msg)
		}
	}
	return obs, took
}

func wantErr(t *testing.T, obs Observation, parts ...string) {
	t.Helper()
	if obs.Err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(obs.Err.Error(), p) {
			t.Fatalf("error %q does not contain %q", obs.Err, p)
		}
	}
}

// Every kind against every simulated behaviour. The key case is
// InferenceDead: health and listing say yes, the canary says no, and the
// verdict must be cold.
func TestProbeAgainstSimulators(t *testing.T) {
	for _, k := range probeKinds() {
		t.Run(k.kind, func(t *testing.T) {
			t.Parallel()
			t.Run("Warm", func(t *testing.T) {
				t.Parallel()
				s, p := probeSim(t, k)
				s.SetInFlight(5)
				obs, _ := runProbe(t, p, 5*time.Second)
				if !obs.Warm || obs.CanaryLatency <= 0 {
					t.Fatalf("not warm: %+v", obs)
				}
				if k.kind == KindOpenAI {
					if obs.InFlight == nil || *obs.InFlight != 5 {
						t.Fatalf("in-flight %v, want 5", obs.InFlight)
					}
				} else if obs.InFlight != nil {
					t.Fatalf("in-flight %d from a server that exposes none", *obs.InFlight)
				}
				if n := s.CanaryRequests(); n != 1 {
					t.Fatalf("%d canaries, want 1", n)
				}
			})
			t.Run("Loading", func(t *testing.T) {
				t.Parallel()
				s, p := probeSim(t, k)
				s.Set(sim.Loading)
				obs, _ := runProbe(t, p, 5*time.Second)
				if obs.Warm {
					t.Fatal("warm while loading")
				}
				switch k.kind {
				case KindOllama:
					// No readiness state: the model is just not resident yet.
					if !obs.Ready || obs.Loaded {
						t.Fatalf("ready=%v loaded=%v", obs.Ready, obs.Loaded)
					}
					wantErr(t, obs, "GET /api/ps", "not resident")
				case KindTGI:
					// /info is static configuration; /health decides.
					if obs.Ready {
						t.Fatal("ready while loading")
					}
					wantErr(t, obs, "GET /health: 503", "unhealthy")
				default:
					if obs.Ready || obs.Loaded {
						t.Fatalf("ready=%v loaded=%v", obs.Ready, obs.Loaded)
					}
				}
				if n := s.CanaryRequests(); n != 0 {
					t.Fatalf("%d canaries sent to a loading server", n)
				}
			})
			t.Run("Unloaded", func(t *testing.T) {
				t.Parallel()
				s, p := probeSim(t, k)
				s.Set(sim.Unloaded)
				obs, _ := runProbe(t, p, 5*time.Second)
				if obs.Loaded || obs.Warm {
					t.Fatalf("loaded=%v warm=%v for an absent model", obs.Loaded, obs.Warm)
				}
				if k.kind != KindKServeV2 {
					wantErr(t, obs, k.model)
				}
				// Above all for Ollama: a generate would load the model.
				if n := s.CanaryRequests(); n != 0 {
					t.Fatalf("%d canaries sent for an absent model", n)
				}
			})
			t.Run("InferenceDead", func(t *testing.T) {
				t.Parallel()
				s, p := probeSim(t, k)
				s.Set(sim.InferenceDead)
				obs, _ := runProbe(t, p, 5*time.Second)
				if !obs.Loaded || !obs.Ready {
					t.Fatalf("loaded=%v ready=%v: health and listing are fine", obs.Loaded, obs.Ready)
				}
				if obs.Warm {
					t.Fatal("warm while inference is dead")
				}
				wantErr(t, obs, "POST /")
				if n := s.CanaryRequests(); n != 1 {
					t.Fatalf("%d canaries, want 1", n)
				}
			})
			t.Run("SlowBeyondBudget", func(t *testing.T) {
				t.Parallel()
				s, p := probeSim(t, k)
				s.Set(sim.Slow)
				s.SetDelay(probeTestSlow)
				obs, _ := runProbe(t, p, 5*time.Second)
				if !obs.Loaded || !obs.Ready || obs.Warm {
					t.Fatalf("loaded=%v ready=%v warm=%v", obs.Loaded, obs.Ready, obs.Warm)
				}
				if obs.CanaryLatency < probeTestSlow {
					t.Fatalf("canary latency %v, want at least %v", obs.CanaryLatency, probeTestSlow)
				}
				wantErr(t, obs, "canary took", "budget 500ms")
			})
			t.Run("Hang", func(t *testing.T) {
				t.Parallel()
				s, p := probeSim(t, k)
				s.Set(sim.Hang)
				obs, took := runProbe(t, p, probeTestTimeout)
				if obs.Warm || obs.Ready || obs.Loaded {
					t.Fatalf("%+v from a hung server", obs)
				}
				// Generous: only "returns about when its context ends" matters.
				if took > probeTestTimeout+2*time.Second {
					t.Fatalf("probe took %v with a %v deadline", took, probeTestTimeout)
				}
				wantErr(t, obs, "timed out")
				if !errors.Is(obs.Err, context.DeadlineExceeded) {
					t.Fatalf("error %v does not wrap the deadline", obs.Err)
				}
			})
		})
	}
}

// A canary that never answers is abandoned at canarySlack budgets even
// when the probe's own deadline is far away.
func TestProbeCanaryAbandonedAtSlack(t *testing.T) {
	t.Parallel()
	k := probeKinds()[0]
	s, p := probeSim(t, k)
	s.Set(sim.Slow)
	s.SetDelay(time.Hour)
	obs, took := runProbe(t, p, 30*time.Second)
	if obs.Warm || !obs.Loaded || !obs.Ready {
		t.Fatalf("%+v", obs)
	}
	wantErr(t, obs, "POST /v1/completions: canary took over", "budget 500ms")
	if took > 10*time.Second {
		t.Fatalf("probe took %v; the canary should give up after %d budgets", took, canarySlack)
	}
}

// A server that is not there at all.
func TestProbeConnectionRefused(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close()
	for _, k := range probeKinds() {
		obs, _ := runProbe(t, probeFor(t, k, url), 5*time.Second)
		if obs.Ready || obs.Warm {
			t.Fatalf("%s: %+v", k.kind, obs)
		}
		wantErr(t, obs, "GET /", "refused")
	}
}

// probeRaw serves body with status 200 on every path.
func probeRaw(t *testing.T, body []byte) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

// Garbage and wrongly typed JSON is an error naming the endpoint, never a
// panic and never warm.
func TestProbeGarbageReplies(t *testing.T) {
	bodies := []string{
		`{garbage`, `null`, `[]`, `"text"`, `42`, ``, "\x00\xff\xfe",
		`{"data": "x", "models": 7, "choices": {}, "outputs": null, "model_id": 3, "inputs": "BYTES"}`,
		`{"data": [{"id": 1}], "models": [{"name": ["x"]}], "generated_text": 5, "done": "yes"}`,
		`{"inputs": [{"name": "in", "datatype": "BYTES", "shape": [-1]}], "outputs": []}`,
	}
	for _, k := range probeKinds() {
		for _, b := range bodies {
			obs, _ := runProbe(t, probeFor(t, k, probeRaw(t, []byte(b))), 5*time.Second)
			if obs.Warm {
				t.Fatalf("%s warm on %q", k.kind, b)
			}
		}
	}
	obs, _ := runProbe(t, probeFor(t, probeKinds()[0], probeRaw(t, []byte(`{garbage`))), 5*time.Second)
	wantErr(t, obs, "GET /v1/models: bad JSON")
}

// A reply over the cap is refused, not read into memory.
func TestProbeHugeReply(t *testing.T) {
	t.Parallel()
	huge := []byte(`{"data":[{"id":"` + strings.Repeat("x", 2*maxReplyBytes) + `"}]}`)
	for _, k := range probeKinds() {
		obs, _ := runProbe(t, probeFor(t, k, probeRaw(t, huge)), 5*time.Second)
		if obs.Warm || obs.Loaded {
			t.Fatalf("%s: %+v", k.kind, obs)
		}
		wantErr(t, obs, "reply larger than")
	}
}

// FuzzProbeReplies feeds arbitrary bodies to every prober: whatever the
// server says, a probe returns a consistent observation.
func FuzzProbeReplies(f *testing.F) {
	for _, kind := range []string{sim.KindOpenAI, sim.KindKServeV2, sim.KindTGI, sim.KindOllama} {
		for _, name := range []string{"models.json", "completion.json", "model_metadata.json", "infer_response.json", "info.json", "generate.json", "ps.json"} {
			if b, err := sim.Testdata(kind, name); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte(`{"models":[{"name":"acme-chat","size_vram":1,"expires_at":"9999-01-01T00:00:00Z","digest":"0123abcd"}],"done":true,"response":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		url := probeRaw(t, body)
		for _, k := range probeKinds() {
			runProbe(t, probeFor(t, k, url), 5*time.Second)
		}
	})
}

// The server's running-request count is optional: without /metrics the
// server is still warm, with no count.
func TestProbeOpenAIWithoutMetrics(t *testing.T) {
	k := probeKinds()[0]
	s, err := sim.New(k.kind, k.model, "")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			http.NotFound(w, r)
			return
		}
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	obs, _ := runProbe(t, probeFor(t, k, ts.URL), 5*time.Second)
	if !obs.Warm || obs.InFlight != nil {
		t.Fatalf("%+v", obs)
	}
}

// A model found by root (the weights it was loaded from) is sent the
// completion under its served name.
func TestProbeOpenAIMatchesRoot(t *testing.T) {
	s, err := sim.New(KindOpenAI, "chat", "")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"chat","object":"model","root":"/models/llama-v42"}]}`))
			return
		}
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	obs, _ := runProbe(t, probeFor(t, probeKind{KindOpenAI, "/models/llama-v42", ""}, ts.URL), 5*time.Second)
	if !obs.Warm {
		t.Fatalf("%+v", obs)
	}
	var req struct{ Model string }
	if err := json.Unmarshal(s.LastCanary(), &req); err != nil || req.Model != "chat" {
		t.Fatalf("canary %s", s.LastCanary())
	}
}

func TestProbeParseRunning(t *testing.T) {
	cases := []struct {
		name, text string
		want       int // -1: nil
	}{
		{"Captured", "# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} 8.0\n", 8},
		{"SumOverEngines", "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3\nvllm:num_requests_running{engine=\"1\",model_name=\"m\"} 4.0\n", 7},
		{"NoLabels", "vllm:num_requests_running 2\n", 2},
		{"WithTimestamp", "vllm:num_requests_running{model_name=\"m\"} 5 1712345678000\n", 5},
		{"BraceInLabel", "vllm:num_requests_running{model_name=\"a}b\\\"c\"} 6\n", 6},
		{"IgnoresLookalikes", "vllm:num_requests_running_total 9\nvllm:num_requests_waiting{model_name=\"m\"} 9\nvllm:num_requests_running{model_name=\"m\"} 1\n", 1},
		{"Absent", "vllm:num_requests_waiting 3\n", -1},
		{"Empty", "", -1},
		{"NaN", "vllm:num_requests_running NaN\n", -1},
		{"Negative", "vllm:num_requests_running -1\n", -1},
		{"Garbage", "vllm:num_requests_running{model_name=\"m\" 5\nvllm:num_requests_running{} x\n", -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := parseRunning([]byte(c.text))
			switch {
			case c.want < 0 && got != nil:
				t.Fatalf("got %d, want nil", *got)
			case c.want >= 0 && (got == nil || *got != c.want):
				t.Fatalf("got %v, want %d", got, c.want)
			}
		})
	}
}

// The kserve-v2 canary names the input the model's metadata declares,
// on the configured version's path.
func TestProbeKServeRequest(t *testing.T) {
	k := probeKinds()[1]
	s, p := probeSim(t, k)
	obs, _ := runProbe(t, p, 5*time.Second)
	if !obs.Warm {
		t.Fatalf("%+v", obs)
	}
	want := `{"id":"backflip-canary","inputs":[{"name":"input0","datatype":"BYTES","shape":[1],"data":["Say OK."]}]}`
	if got := string(s.LastCanary()); got != want {
		t.Fatalf("canary request\n got %s\nwant %s", got, want)
	}
	// Another version is not loaded.
	k.version = "2"
	obs, _ = runProbe(t, probeFor(t, k, probeURL(t, s)), 5*time.Second)
	if obs.Loaded || obs.Warm {
		t.Fatalf("version 2: %+v", obs)
	}
	wantErr(t, obs, "/v2/models/acme%2Fchat-7b/versions/2/ready", "model not ready")
}

// Server readiness covers every model on the server; one still loading
// must not make a ready model cold.
func TestProbeKServeModelReadinessDecides(t *testing.T) {
	k := probeKinds()[1]
	s, err := sim.New(k.kind, k.model, k.version)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/health/ready" {
			w.WriteHeader(http.StatusBadRequest) // another model is loading
			return
		}
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	obs, _ := runProbe(t, probeFor(t, k, ts.URL), 5*time.Second)
	if !obs.Warm {
		t.Fatalf("%+v", obs)
	}
}

func TestProbeKServeNoBytesInput(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/models/m" {
			_, _ = w.Write([]byte(`{"name":"m","platform":"onnx_onnxv1","inputs":[{"name":"x","datatype":"FP32","shape":[1,3]}],"outputs":[]}`))
		}
	}))
	t.Cleanup(ts.Close)
	obs, _ := runProbe(t, probeFor(t, probeKind{KindKServeV2, "m", ""}, ts.URL), 5*time.Second)
	if !obs.Loaded || !obs.Ready || obs.Warm {
		t.Fatalf("%+v", obs)
	}
	wantErr(t, obs, "GET /v2/models/m: model has no BYTES input")
}

func TestProbeTGIChecksSHA(t *testing.T) {
	k := probeKinds()[2]
	s, _ := probeSim(t, k)
	k.version = "fedcba"
	obs, _ := runProbe(t, probeFor(t, k, probeURL(t, s)), 5*time.Second)
	if obs.Loaded || obs.Warm {
		t.Fatalf("%+v", obs)
	}
	wantErr(t, obs, "GET /info: model_sha", "fedcba")
	if s.CanaryRequests() != 0 {
		t.Fatal("canary sent to the wrong weights")
	}
}

// probeURL serves an already created simulator once more, for a second
// prober with other settings.
func probeURL(t *testing.T, s *sim.Server) string {
	t.Helper()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts.URL
}

// Residency is judged from /api/ps as Ollama reports it: in VRAM, not
// expired, the expected digest; the canary never runs otherwise, and it
// never carries keep_alive.
func TestProbeOllamaResidency(t *testing.T) {
	captured, err := sim.Testdata(KindOllama, "ps.json")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2024, 6, 4, 14, 30, 0, 0, time.FixedZone("PDT", -7*3600))
	cases := []struct {
		name, model, version string
		edit                 func(m map[string]any)
		now                  time.Time
		want                 []string // error parts; nil: warm
	}{
		{name: "Captured", model: "mistral", version: "2ae6f6dd", now: now},
		{name: "ExplicitTag", model: "mistral:latest", now: now},
		{name: "SHAPrefix", model: "mistral", version: "sha256:2AE6F6DD", now: now},
		{name: "OtherTag", model: "mistral:7b", now: now, want: []string{`model "mistral:7b" not resident`, `"mistral:latest"`}},
		{name: "Expired", model: "mistral", now: now.Add(time.Hour), want: []string{"keep-alive expired at 2024-06-04T14:38:31-07:00"}},
		// Expiring before the canary could finish: a generate arriving
		// after the expiry would load the model again, so none is sent.
		{name: "ExpiresDuringCanary", model: "mistral", now: time.Date(2024, 6, 4, 14, 38, 31, 737530000, time.FixedZone("PDT", -7*3600)), // 100 ms left
			want: []string{"keep-alive ends at", "canary not sent"}},
		{name: "CPUOnly", model: "mistral", now: now, edit: func(m map[string]any) { m["size_vram"] = 0 }, want: []string{"not in GPU memory (size_vram 0)"}},
		{name: "OtherDigest", model: "mistral", version: "ffff", now: now, want: []string{"has digest 2ae6f6dd7a3d, want ffff"}},
		{name: "BadExpiry", model: "mistral", now: now, edit: func(m map[string]any) { m["expires_at"] = "soon" }, want: []string{`bad expires_at "soon"`}},
		{name: "ByModelField", model: "mistral", now: now, edit: func(m map[string]any) { m["name"] = "alias" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ps struct{ Models []map[string]any }
			if err := json.Unmarshal(captured, &ps); err != nil {
				t.Fatal(err)
			}
			if c.edit != nil {
				c.edit(ps.Models[0])
			}
			psBody, _ := json.Marshal(ps)
			var mu sync.Mutex
			var generated []byte
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/api/ps":
					_, _ = w.Write(psBody)
				case "/api/generate":
					b, _ := io.ReadAll(r.Body)
					mu.Lock()
					generated = b
					mu.Unlock()
					b, _ = sim.Testdata(KindOllama, "generate.json")
					_, _ = w.Write(b)
				}
			}))
			t.Cleanup(ts.Close)
			p, err := NewProber(probeCfg(probeKind{KindOllama, c.model, c.version}, ts.URL), nil)
			if err != nil {
				t.Fatal(err)
			}
			p.(*ollamaProber).now = func() time.Time { return c.now }
			obs, _ := runProbe(t, p, 5*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if c.want == nil {
				if !obs.Warm {
					t.Fatalf("not warm: %v", obs.Err)
				}
				var req map[string]any
				if err := json.Unmarshal(generated, &req); err != nil {
					t.Fatalf("canary %q: %v", generated, err)
				}
				if _, ok := req["keep_alive"]; ok || req["stream"] != false || req["model"] != c.model {
					t.Fatalf("canary request %s", generated)
				}
				if opts, _ := req["options"].(map[string]any); opts["num_predict"] != 1.0 {
					t.Fatalf("canary request %s", generated)
				}
				return
			}
			if obs.Loaded || obs.Warm || !obs.Ready {
				t.Fatalf("%+v", obs)
			}
			wantErr(t, obs, append([]string{"GET /api/ps: "}, c.want...)...)
			if generated != nil {
				t.Fatalf("canary sent for a model that is not resident: %s", generated)
			}
		})
	}
}

func TestProbeNewProberRefuses(t *testing.T) {
	good := probeCfg(probeKinds()[0], "http://127.0.0.1:8000")
	cases := map[string]struct {
		edit func(c *ServerConfig)
		want string
	}{
		"Kind":        {func(c *ServerConfig) { c.Kind = "triton" }, `kind: must be openai, kserve-v2, tgi or ollama, got "triton"`},
		"NoURL":       {func(c *ServerConfig) { c.URL = "" }, "url: want an http(s) URL"},
		"Scheme":      {func(c *ServerConfig) { c.URL = "ftp://h" }, "url: want an http(s) URL"},
		"Credentials": {func(c *ServerConfig) { c.URL = "http://u:p@h" }, "url: must not hold credentials"},
		"Query":       {func(c *ServerConfig) { c.URL = "http://h/?a=1" }, "url: must have no query"},
		"Model":       {func(c *ServerConfig) { c.Model = " " }, "model: required"},
		"Prompt":      {func(c *ServerConfig) { c.CanaryPrompt = "" }, "canary_prompt: required"},
		"Budget":      {func(c *ServerConfig) { c.Budget = 0 }, "budget: must be positive"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := good
			c.edit(&cfg)
			if _, err := NewProber(cfg, nil); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
	for _, k := range probeKinds() {
		cfg := probeCfg(k, "https://gpu-1.example.com:8443/engine/")
		p, err := NewProber(cfg, nil)
		if err != nil {
			t.Fatalf("%s: %v", k.kind, err)
		}
		var base string
		switch p := p.(type) {
		case *openAIProber:
			base = p.base
		case *kserveProber:
			base = p.base
		case *tgiProber:
			base = p.base
		case *ollamaProber:
			base = p.base
		}
		if base != "https://gpu-1.example.com:8443/engine" {
			t.Fatalf("%s: base %q", k.kind, base)
		}
	}
}

// FuzzProbeParseRunning: any exposition text gives nil or a count, never a
// panic or a negative number.
func FuzzProbeParseRunning(f *testing.F) {
	if b, err := sim.Testdata(KindOpenAI, "metrics.txt"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("vllm:num_requests_running{a=\"}\\\"\"} 1e3 5\n"))
	f.Add([]byte("vllm:num_requests_running{"))
	f.Fuzz(func(t *testing.T, text []byte) {
		if n := parseRunning(text); n != nil && *n < 0 {
			t.Fatalf("negative count %d", *n)
		}
	})
}

func TestProbeErrorText(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain", "plain"},
		{"two\nlines\r\n\there", "two lines here"},
		{"\x1b[31mred\x1b[0m", "[31mred [0m"},
		{strings.Repeat("é", 100), strings.Repeat("é", 60) + "…"},
	}
	for _, c := range cases {
		if got := clipLine(c.in); got != c.want {
			t.Errorf("clipLine(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	for body, want := range map[string]string{
		`{"error":"unhealthy","error_type":"healthcheck"}`:           "unhealthy",
		`{"object":"error","message":"The model x does not exist."}`: "The model x does not exist.",
		`{"error":{"message":"nested"}}`:                             "nested",
		`{"detail":"x"}`:                                             "",
		`Service Unavailable`:                                        "Service Unavailable",
	} {
		if got := replyHint([]byte(body)); got != want {
			t.Errorf("replyHint(%s) = %q, want %q", body, got, want)
		}
	}
	for d, want := range map[time.Duration]string{
		2140 * time.Millisecond:   "2.1s",
		812345 * time.Microsecond: "812ms",
		95400 * time.Nanosecond:   "95µs",
	} {
		if got := roundDuration(d).String(); got != want {
			t.Errorf("roundDuration(%v) = %s, want %s", d, got, want)
		}
	}
}
