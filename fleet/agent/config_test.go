package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// validConfig is a config with one server of each kind; cases mutate it.
func validConfig() map[string]any {
	server := func(kind, route, version string) map[string]any {
		return map[string]any{
			"kind": kind, "url": "http://127.0.0.1:8000", "route": route, "version": version,
			"model": "meta-llama/Llama-3.1-70B-Instruct", "gpus": 4,
			"canary_prompt": "Say OK.", "budget": "800ms",
		}
	}
	kserve := server(KindKServeV2, "chat-70b", "v41")
	kserve["model_version"] = "3"
	return map[string]any{
		"advertise_url":  "https://gpu-node-17.dc1.example.com:9090",
		"probe_interval": "5s",
		"servers": []any{
			server(KindOpenAI, "chat-70b", "v42"),
			kserve,
			server(KindTGI, "summarize", "2024-06-01"),
			server(KindOllama, "embed-small", "v7"),
		},
	}
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig(strings.NewReader(mustJSON(t, validConfig())))
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if len(c.Servers) != 4 || c.Servers[1].ModelVersion != "3" || time.Duration(c.Servers[0].Budget) != 800*time.Millisecond ||
		time.Duration(c.ProbeInterval) != 5*time.Second || time.Duration(c.FreshTimeout) != DefaultFreshTimeout {
		t.Fatalf("parsed: %+v", c)
	}

	minimal := validConfig()
	delete(minimal, "probe_interval")
	c, err = ParseConfig(strings.NewReader(mustJSON(t, minimal)))
	if err != nil || time.Duration(c.ProbeInterval) != DefaultProbeInterval {
		t.Fatalf("defaults: %+v %v", c, err)
	}
}

func TestParseConfigRefuses(t *testing.T) {
	srv := func(c map[string]any, i int) map[string]any { return c["servers"].([]any)[i].(map[string]any) }
	for _, tc := range []struct {
		name   string
		mutate func(c map[string]any)
		raw    string // used instead of the mutated config when set
		want   string // the field named in the error, or a fragment of it
	}{
		{name: "NotJSON", raw: `servers: []`, want: "decode"},
		{name: "Trailing", raw: mustJSON(t, validConfig()) + `{}`, want: "trailing data"},
		{name: "TooBig", raw: `{"advertise_url":"` + strings.Repeat("x", MaxConfigBytes) + `"}`, want: "larger than"},
		{name: "UnknownTopField", mutate: func(c map[string]any) { c["probe_intervall"] = "5s" }, want: `unknown field "probe_intervall"`},
		{name: "UnknownServerField", mutate: func(c map[string]any) { srv(c, 0)["gpu"] = 4 }, want: `unknown field "gpu"`},
		{name: "NoAdvertiseURL", mutate: func(c map[string]any) { delete(c, "advertise_url") }, want: "advertise_url: required"},
		{name: "AdvertiseURLWithPath", mutate: func(c map[string]any) { c["advertise_url"] = "https://n1:9090/agent" }, want: "advertise_url: must have no path"},
		{name: "AdvertiseURLNotHTTP", mutate: func(c map[string]any) { c["advertise_url"] = "grpc://n1:9090" }, want: "advertise_url: scheme"},
		{name: "IntervalTooShort", mutate: func(c map[string]any) { c["probe_interval"] = "10ms" }, want: "probe_interval: must be 100ms to 10m0s"},
		{name: "IntervalNotDuration", mutate: func(c map[string]any) { c["probe_interval"] = 5 }, want: "duration must be a string"},
		{name: "FreshTimeoutNegative", mutate: func(c map[string]any) { c["fresh_timeout"] = "-1s" }, want: "fresh_timeout"},
		{name: "NoServers", mutate: func(c map[string]any) { c["servers"] = []any{} }, want: "servers: at least one"},
		{name: "BadKind", mutate: func(c map[string]any) { srv(c, 2)["kind"] = "triton" }, want: "servers[2].kind: must be one of openai, kserve-v2, tgi, ollama"},
		{name: "URLMissing", mutate: func(c map[string]any) { delete(srv(c, 0), "url") }, want: "servers[0].url: required"},
		{name: "URLNotHTTP", mutate: func(c map[string]any) { srv(c, 0)["url"] = "ftp://127.0.0.1:8000" }, want: "servers[0].url: scheme"},
		{name: "URLNoHost", mutate: func(c map[string]any) { srv(c, 0)["url"] = "http:///v1" }, want: "servers[0].url: must have a host"},
		{name: "URLCredentials", mutate: func(c map[string]any) { srv(c, 0)["url"] = "http://u:p@127.0.0.1:8000" }, want: "servers[0].url: must not hold credentials"},
		{name: "URLQuery", mutate: func(c map[string]any) { srv(c, 0)["url"] = "http://127.0.0.1:8000/?a=1" }, want: "servers[0].url: must have no query"},
		{name: "BadRoute", mutate: func(c map[string]any) { srv(c, 1)["route"] = "chat/70b" }, want: "servers[1].route"},
		{name: "ReservedRoute", mutate: func(c map[string]any) { srv(c, 1)["route"] = "status" }, want: "servers[1].route"},
		{name: "BadVersion", mutate: func(c map[string]any) { srv(c, 3)["version"] = "v 7" }, want: "servers[3].version"},
		{name: "ReservedVersion", mutate: func(c map[string]any) { srv(c, 3)["version"] = "previous" }, want: "servers[3].version"},
		{name: "NoModel", mutate: func(c map[string]any) { srv(c, 0)["model"] = "" }, want: "servers[0].model: required"},
		{name: "ModelControlChar", mutate: func(c map[string]any) { srv(c, 0)["model"] = "a\nb" }, want: "servers[0].model: must be printable"},
		{name: "ModelVersionTooLong", mutate: func(c map[string]any) { srv(c, 1)["model_version"] = strings.Repeat("9", MaxModelLen+1) }, want: "servers[1].model_version"},
		{name: "ZeroGPUs", mutate: func(c map[string]any) { srv(c, 0)["gpus"] = 0 }, want: "servers[0].gpus: must be 1 to 1024, got 0"},
		{name: "TooManyGPUs", mutate: func(c map[string]any) { srv(c, 0)["gpus"] = 1025 }, want: "servers[0].gpus"},
		{name: "FractionalGPUs", mutate: func(c map[string]any) { srv(c, 0)["gpus"] = 1.5 }, want: "decode"},
		{name: "NoBudget", mutate: func(c map[string]any) { delete(srv(c, 0), "budget") }, want: "servers[0].budget: must be greater than 0"},
		{name: "NegativeBudget", mutate: func(c map[string]any) { srv(c, 0)["budget"] = "-1s" }, want: "servers[0].budget"},
		{name: "HugeBudget", mutate: func(c map[string]any) { srv(c, 0)["budget"] = "2m" }, want: "servers[0].budget"},
		{name: "BudgetNotDuration", mutate: func(c map[string]any) { srv(c, 0)["budget"] = "fast" }, want: "duration"},
		{name: "NoCanaryPrompt", mutate: func(c map[string]any) { delete(srv(c, 2), "canary_prompt") }, want: "servers[2].canary_prompt: required"},
		{name: "LongCanaryPrompt", mutate: func(c map[string]any) { srv(c, 2)["canary_prompt"] = strings.Repeat("a", 1001) }, want: "servers[2].canary_prompt: at most 1000 bytes"},
		{name: "DuplicateVersion", mutate: func(c map[string]any) {
			srv(c, 3)["route"], srv(c, 3)["version"] = "chat-70b", "v42"
		}, want: `servers[3]: route "chat-70b" version "v42" is already served by servers[0]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if raw == "" {
				c := validConfig()
				tc.mutate(c)
				raw = mustJSON(t, c)
			}
			_, err := ParseConfig(strings.NewReader(raw))
			if err == nil {
				t.Fatalf("accepted: %s", raw[:min(len(raw), 300)])
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestConfigErrorListsEveryProblem(t *testing.T) {
	c := validConfig()
	s0 := c["servers"].([]any)[0].(map[string]any)
	s0["gpus"], s0["budget"] = 0, "0s"
	_, err := ParseConfig(strings.NewReader(mustJSON(t, c)))
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("want a ConfigError with 2 problems, got %v", err)
	}
}

func TestLoadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(path, []byte(mustJSON(t, validConfig())), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	_, err := LoadConfig(filepath.Join(t.TempDir(), "missing.json"))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestExampleConfig keeps the shipped example valid.
func TestExampleConfig(t *testing.T) {
	c, err := LoadConfig("../../configs/agent.example.json")
	if err != nil {
		t.Fatalf("configs/agent.example.json: %v", err)
	}
	kinds := map[string]bool{}
	for _, s := range c.Servers {
		kinds[s.Kind] = true
	}
	if len(kinds) != 4 {
		t.Fatalf("the example should show every kind, has %v", kinds)
	}
}

// TestShippedConfigs loads every configs/agent*.json with the agent's own
// loader and builds its probers, so no example in configs/ can rot. The
// per-engine files must each show one node serving two versions of one
// route on one engine, every server on a port of its own.
func TestShippedConfigs(t *testing.T) {
	paths, err := filepath.Glob("../../configs/agent*.json")
	if err != nil {
		t.Fatal(err)
	}
	engines := map[string]string{ // file → the kind it shows
		"agent.vllm.json":   KindOpenAI,
		"agent.triton.json": KindKServeV2,
		"agent.tgi.json":    KindTGI,
		"agent.ollama.json": KindOllama,
	}
	found := map[string]bool{}
	for _, path := range paths {
		name := filepath.Base(path)
		found[name] = true
		t.Run(name, func(t *testing.T) {
			c, err := LoadConfig(path)
			if err != nil {
				t.Fatalf("configs/%s: %v", name, err)
			}
			urls := map[string]int{}
			for i, s := range c.Servers {
				if _, err := NewProber(s, nil); err != nil {
					t.Errorf("servers[%d]: %v", i, err)
				}
				if j, dup := urls[s.URL]; dup {
					t.Errorf("servers[%d] and servers[%d] share %s: each server needs a port of its own", j, i, s.URL)
				}
				urls[s.URL] = i
			}
			kind, ok := engines[name]
			if !ok {
				return
			}
			versions := map[string]map[string]bool{}
			for i, s := range c.Servers {
				if s.Kind != kind {
					t.Errorf("servers[%d].kind is %q; configs/%s shows %s only", i, s.Kind, name, kind)
				}
				if versions[s.Route] == nil {
					versions[s.Route] = map[string]bool{}
				}
				versions[s.Route][s.Version] = true
			}
			if len(versions) != 1 {
				t.Errorf("configs/%s should serve one route, serves %d", name, len(versions))
			}
			for route, vs := range versions {
				if len(vs) != 2 {
					t.Errorf("configs/%s should serve two versions of %s (active and rollback target), serves %d", name, route, len(vs))
				}
			}
		})
	}
	if !found["agent.example.json"] {
		t.Error("configs/agent.example.json is missing")
	}
	for name := range engines {
		if !found[name] {
			t.Errorf("configs/%s is missing", name)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(mustJSON(f, validConfig())))
	f.Add([]byte(`{"servers":[{"kind":"openai","budget":"1s"}]}`))
	f.Add([]byte(`{"advertise_url":"http://x","servers":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(bytes.NewReader(data))
		if err != nil {
			return
		}
		// What is accepted must be valid and survive a round trip.
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		again, err := ParseConfig(strings.NewReader(mustJSON(t, c)))
		if err != nil {
			t.Fatalf("round trip refused: %v", err)
		}
		if len(again.Servers) != len(c.Servers) {
			t.Fatalf("round trip changed the servers")
		}
	})
}
