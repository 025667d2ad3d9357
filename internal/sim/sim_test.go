package sim_test

import (
	"bytes"
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

	"go.uber.org/goleak"

	"github.com/backflip-dev/backflip/internal/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testModel   = "acme/chat-7b"
	testVersion = "3"
	// ollamaModel has no tag, to exercise Ollama's ":latest" resolution.
	ollamaModel  = "acme-chat"
	ollamaDigest = "0123abcd"
)

// kindSpec says, per protocol, where to look and what "listed" means.
type kindSpec struct {
	kind, model, version string
	// health is the readiness endpoint (ollama has none: /api/ps answers).
	health string
	// list is where the model shows up (or not).
	list   string
	listed func(t *testing.T, body []byte) bool
	// canary is the inference endpoint and a request body for it.
	canary     string
	canaryBody string
}

func specs() []kindSpec {
	return []kindSpec{
		{
			kind: sim.KindOpenAI, model: testModel,
			health: "/health", list: "/v1/models",
			listed: func(t *testing.T, b []byte) bool {
				var r struct{ Data []struct{ ID, Root string } }
				mustJSON(t, b, &r)
				for _, d := range r.Data {
					if d.ID == testModel && d.Root == testModel {
						return true
					}
				}
				return false
			},
			canary:     "/v1/completions",
			canaryBody: `{"model":"` + testModel + `","prompt":"Hi","max_tokens":1}`,
		},
		{
			kind: sim.KindKServeV2, model: testModel, version: testVersion,
			health: "/v2/health/ready", list: "/v2/models/acme%2Fchat-7b/versions/3/ready",
			listed:     func(t *testing.T, b []byte) bool { return true }, // status decides
			canary:     "/v2/models/acme%2Fchat-7b/versions/3/infer",
			canaryBody: `{"id":"c1","inputs":[{"name":"input0","shape":[1],"datatype":"BYTES","data":["Hi"]}]}`,
		},
		{
			kind: sim.KindTGI, model: testModel, version: "abc123",
			health: "/health", list: "/info",
			listed: func(t *testing.T, b []byte) bool {
				var r struct {
					ModelID  string `json:"model_id"`
					ModelSHA string `json:"model_sha"`
				}
				mustJSON(t, b, &r)
				return r.ModelID == testModel && r.ModelSHA == "abc123"
			},
			canary:     "/generate",
			canaryBody: `{"inputs":"Hi","parameters":{"max_new_tokens":1}}`,
		},
		{
			kind: sim.KindOllama, model: ollamaModel, version: ollamaDigest,
			health: "/api/ps", list: "/api/ps",
			listed: func(t *testing.T, b []byte) bool {
				var r struct {
					Models []struct {
						Name, Model, Digest string
						SizeVRAM            int64     `json:"size_vram"`
						ExpiresAt           time.Time `json:"expires_at"`
					}
				}
				mustJSON(t, b, &r)
				for _, m := range r.Models {
					if m.Name == ollamaModel && m.Model == ollamaModel && strings.HasPrefix(m.Digest, ollamaDigest) &&
						len(m.Digest) == 64 && m.SizeVRAM > 0 && m.ExpiresAt.After(time.Now()) {
						return true
					}
				}
				return false
			},
			canary:     "/api/generate",
			canaryBody: `{"model":"` + ollamaModel + `:latest","prompt":"Hi","stream":false,"options":{"num_predict":1}}`,
		},
	}
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("reply is not the expected JSON: %v\n%s", err, b)
	}
}

// start runs s behind a real loopback listener and releases hung requests
// before closing it.
func start(t *testing.T, kind, model, version string) (*sim.Server, string) {
	t.Helper()
	s, err := sim.New(kind, model, version)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		s.Close()
		ts.Close()
	})
	return s, ts.URL
}

type reply struct {
	code int
	body []byte
	took time.Duration
}

func do(t *testing.T, method, url, body string) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := send(ctx, method, url, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

func send(ctx context.Context, method, url, body string) (reply, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return reply{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, body: b, took: time.Since(start)}, err
}

func TestSimBehaviors(t *testing.T) {
	for _, k := range specs() {
		t.Run(k.kind, func(t *testing.T) {
			t.Run("Warm", func(t *testing.T) {
				s, url := start(t, k.kind, k.model, k.version)
				if r := do(t, "GET", url+k.health, ""); r.code != 200 {
					t.Fatalf("health %d, want 200", r.code)
				}
				if r := do(t, "GET", url+k.list, ""); r.code != 200 || !k.listed(t, r.body) {
					t.Fatalf("model not listed: %d %s", r.code, r.body)
				}
				r := do(t, "POST", url+k.canary, k.canaryBody)
				if r.code != 200 {
					t.Fatalf("canary %d, want 200: %s", r.code, r.body)
				}
				var v map[string]any
				mustJSON(t, r.body, &v)
				if got := s.CanaryRequests(); got != 1 {
					t.Errorf("CanaryRequests = %d, want 1", got)
				}
				if !bytes.Equal(s.LastCanary(), []byte(k.canaryBody)) {
					t.Errorf("LastCanary = %s", s.LastCanary())
				}
				if s.Requests() != 3 {
					t.Errorf("Requests = %d, want 3", s.Requests())
				}
			})
			t.Run("Loading", func(t *testing.T) {
				s, url := start(t, k.kind, k.model, k.version)
				s.Set(sim.Loading)
				h := do(t, "GET", url+k.health, "")
				l := do(t, "GET", url+k.list, "")
				if k.kind == sim.KindOllama {
					// Ollama has no readiness state: a loading model is simply
					// not in /api/ps yet.
					if h.code != 200 || k.listed(t, l.body) {
						t.Fatalf("ps %d, listed %v", h.code, k.listed(t, l.body))
					}
				} else if h.code == 200 {
					t.Fatalf("health 200 while loading")
				}
				if k.kind == sim.KindOpenAI && k.listed(t, l.body) {
					t.Fatalf("model listed while loading: %s", l.body)
				}
				if k.kind == sim.KindKServeV2 && l.code == 200 {
					t.Fatalf("model ready while loading")
				}
				if r := do(t, "POST", url+k.canary, k.canaryBody); r.code != http.StatusServiceUnavailable {
					t.Fatalf("canary %d while loading, want 503: %s", r.code, r.body)
				}
			})
			t.Run("Unloaded", func(t *testing.T) {
				s, url := start(t, k.kind, k.model, k.version)
				s.Set(sim.Unloaded)
				if r := do(t, "GET", url+k.health, ""); r.code != 200 {
					t.Fatalf("health %d, want 200 (server up)", r.code)
				}
				r := do(t, "GET", url+k.list, "")
				if (k.kind == sim.KindKServeV2 && r.code == 200) || (k.kind != sim.KindKServeV2 && k.listed(t, r.body)) {
					t.Fatalf("model present while unloaded: %d %s", r.code, r.body)
				}
			})
			t.Run("InferenceDead", func(t *testing.T) {
				s, url := start(t, k.kind, k.model, k.version)
				s.Set(sim.InferenceDead)
				if r := do(t, "GET", url+k.health, ""); r.code != 200 {
					t.Fatalf("health %d, want 200", r.code)
				}
				if r := do(t, "GET", url+k.list, ""); r.code != 200 || !k.listed(t, r.body) {
					t.Fatalf("model not listed: %d %s", r.code, r.body)
				}
				r := do(t, "POST", url+k.canary, k.canaryBody)
				if r.code < 400 {
					t.Fatalf("canary %d, want an error", r.code)
				}
				var e map[string]any
				mustJSON(t, r.body, &e)
			})
			t.Run("Slow", func(t *testing.T) {
				s, url := start(t, k.kind, k.model, k.version)
				s.Set(sim.Slow)
				// Only the canary is slow: with an hour's delay, health still
				// answers within do's deadline. (An upper bound on its
				// latency would be a timed assertion, flaky on a loaded
				// machine; the hour makes the check independent of speed.)
				s.SetDelay(time.Hour)
				if r := do(t, "GET", url+k.health, ""); r.code != 200 {
					t.Fatalf("health %d: only the canary is slow", r.code)
				}
				s.SetDelay(150 * time.Millisecond)
				r := do(t, "POST", url+k.canary, k.canaryBody)
				if r.code != 200 || r.took < 150*time.Millisecond {
					t.Fatalf("canary %d in %v, want 200 after at least 150ms", r.code, r.took)
				}
			})
			t.Run("Hang", func(t *testing.T) {
				s, url := start(t, k.kind, k.model, k.version)
				s.Set(sim.Hang)
				for _, p := range []string{k.health, k.list} {
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					_, err := send(ctx, "GET", url+p, "")
					cancel()
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("GET %s: %v, want a timeout", p, err)
					}
				}
			})
		})
	}
}

// A request held by Hang ends when the simulator is closed, even if its
// client never gives up, so test servers close without waiting forever.
func TestSimCloseReleasesHungRequests(t *testing.T) {
	s, url := start(t, sim.KindTGI, testModel, "")
	s.Set(sim.Hang)
	done := make(chan error, 1)
	go func() {
		_, err := send(context.Background(), "GET", url+"/health", "")
		done <- err
	}()
	// Wait until the request is being held.
	for s.Requests() == 0 {
		time.Sleep(time.Millisecond)
	}
	s.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a hung request got a reply after Close; want the connection dropped")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release the hung request")
	}
	// Later requests are dropped at once.
	if _, err := send(context.Background(), "GET", url+"/health", ""); err == nil {
		t.Fatal("request after Close got a reply")
	}
}

func TestSimSlowCanaryReleasedByClient(t *testing.T) {
	s, url := start(t, sim.KindOpenAI, testModel, "")
	s.Set(sim.Slow)
	s.SetDelay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := send(ctx, "POST", url+"/v1/completions", `{"model":"`+testModel+`","prompt":"x"}`); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout", err)
	}
}

func TestSimOpenAIMetricsInFlight(t *testing.T) {
	s, url := start(t, sim.KindOpenAI, testModel, "")
	s.SetInFlight(37)
	r := do(t, "GET", url+"/metrics", "")
	want := `vllm:num_requests_running{model_name="` + testModel + `"} 37.0`
	if r.code != 200 || !strings.Contains(string(r.body), want+"\n") {
		t.Fatalf("metrics lack %q:\n%s", want, r.body)
	}
	if strings.Contains(string(r.body), "Llama-3.1-8B") {
		t.Fatalf("captured model name left in:\n%s", r.body)
	}
}

func TestSimOpenAIWrongModel(t *testing.T) {
	_, url := start(t, sim.KindOpenAI, testModel, "")
	r := do(t, "POST", url+"/v1/completions", `{"model":"other","prompt":"x","max_tokens":1}`)
	var e struct {
		Object, Message, Type string
		Code                  int
	}
	mustJSON(t, r.body, &e)
	if r.code != 404 || e.Object != "error" || e.Code != 404 || !strings.Contains(e.Message, "other") {
		t.Fatalf("got %d %s", r.code, r.body)
	}
}

func TestSimKServeChecksRequest(t *testing.T) {
	_, url := start(t, sim.KindKServeV2, testModel, testVersion)
	for name, body := range map[string]string{
		"WrongInputName": `{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["Hi"]}]}`,
		"NotBytes":       `{"inputs":[{"name":"input0","shape":[1],"datatype":"FP32","data":[1]}]}`,
		"NoInputs":       `{"inputs":[]}`,
		"Garbage":        `{"inputs":`,
	} {
		t.Run(name, func(t *testing.T) {
			if r := do(t, "POST", url+"/v2/models/acme%2Fchat-7b/versions/3/infer", body); r.code != 400 {
				t.Fatalf("code %d, want 400: %s", r.code, r.body)
			}
		})
	}
	// Another version of the model is not loaded.
	if r := do(t, "GET", url+"/v2/models/acme%2Fchat-7b/versions/2/ready", ""); r.code != 400 {
		t.Fatalf("version 2 ready: %d, want 400", r.code)
	}
	r := do(t, "GET", url+"/v2/models/acme%2Fchat-7b/versions/3", "")
	var md struct {
		Name     string
		Versions []string
		Inputs   []struct{ Name, Datatype string }
	}
	mustJSON(t, r.body, &md)
	if md.Name != testModel || len(md.Versions) != 1 || md.Versions[0] != testVersion || len(md.Inputs) != 1 || md.Inputs[0].Datatype != "BYTES" {
		t.Fatalf("metadata %s", r.body)
	}
	r = do(t, "POST", url+"/v2/models/acme%2Fchat-7b/versions/3/infer", `{"id":"c9","inputs":[{"name":"input0","shape":[1],"datatype":"BYTES","data":["Hi"]}]}`)
	var inf struct {
		ModelName    string `json:"model_name"`
		ModelVersion string `json:"model_version"`
		ID           string
		Outputs      []struct{ Data []string }
	}
	mustJSON(t, r.body, &inf)
	if inf.ModelName != testModel || inf.ModelVersion != testVersion || inf.ID != "c9" || len(inf.Outputs) != 1 {
		t.Fatalf("infer %s", r.body)
	}
}

func TestSimOllamaWantsNonStreaming(t *testing.T) {
	_, url := start(t, sim.KindOllama, ollamaModel, "")
	if r := do(t, "POST", url+"/api/generate", `{"model":"`+ollamaModel+`","prompt":"x"}`); r.code != 400 {
		t.Fatalf("streaming request: %d, want 400", r.code)
	}
	if r := do(t, "POST", url+"/api/generate", `{"model":"other","prompt":"x","stream":false}`); r.code != 404 {
		t.Fatalf("unknown model: %d, want 404", r.code)
	}
	r := do(t, "POST", url+"/api/generate", `{"model":"`+ollamaModel+`","prompt":"x","stream":false}`)
	var g struct {
		Model    string
		Response string
		Done     bool
	}
	mustJSON(t, r.body, &g)
	if r.code != 200 || !g.Done || g.Model != ollamaModel {
		t.Fatalf("generate %d %s", r.code, r.body)
	}
	if r := do(t, "GET", url+"/", ""); string(r.body) != "Ollama is running" {
		t.Fatalf("root %q", r.body)
	}
}

// Behaviours switched while requests run are safe (run with -race).
func TestSimConcurrentSwitching(t *testing.T) {
	s, url := start(t, sim.KindOpenAI, testModel, "")
	s.SetDelay(time.Millisecond)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				_, _ = send(ctx, "POST", url+"/v1/completions", `{"model":"`+testModel+`","prompt":"x"}`)
				_, _ = send(ctx, "GET", url+"/metrics", "")
				cancel()
			}
		}()
	}
	for i := 0; i < 200; i++ {
		s.Set(sim.Behavior(i % 6))
		s.SetInFlight(i)
		s.SetDelay(time.Duration(i%3) * time.Millisecond)
	}
	close(stop)
	wg.Wait()
}

func TestSimNew(t *testing.T) {
	if _, err := sim.New("triton", testModel, ""); err == nil || !strings.Contains(err.Error(), "kserve-v2") {
		t.Fatalf("unknown kind: %v", err)
	}
	if _, err := sim.New(sim.KindTGI, "", ""); err == nil {
		t.Fatal("empty model accepted")
	}
	for b := sim.Warm; b <= sim.Hang; b++ {
		got, err := sim.ParseBehavior(b.String())
		if err != nil || got != b {
			t.Fatalf("ParseBehavior(%q) = %v, %v", b, got, err)
		}
	}
	if _, err := sim.ParseBehavior("cold"); err == nil {
		t.Fatal("unknown behaviour accepted")
	}
	if got := sim.Behavior(42).String(); got != "Behavior(42)" {
		t.Fatalf("String = %q", got)
	}
}

// Every capture is valid, and Testdata hands out copies.
func TestSimTestdata(t *testing.T) {
	for kind, files := range map[string][]string{
		sim.KindOpenAI:   {"models.json", "completion.json", "error.json"},
		sim.KindKServeV2: {"infer_request.json", "infer_response.json", "model_metadata.json", "error.json"},
		sim.KindTGI:      {"info.json", "generate.json", "health_error.json", "generate_error.json"},
		sim.KindOllama:   {"ps.json", "generate.json", "error.json"},
	} {
		for _, f := range files {
			b, err := sim.Testdata(kind, f)
			if err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Errorf("%s/%s: %v", kind, f, err)
			}
			b[0] = 'X'
			again, _ := sim.Testdata(kind, f)
			if again[0] == 'X' {
				t.Fatalf("%s/%s: Testdata returned shared bytes", kind, f)
			}
		}
	}
	if _, err := sim.Testdata(sim.KindOpenAI, "nope.json"); err == nil {
		t.Fatal("missing file found")
	}
}
