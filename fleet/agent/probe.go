package agent

import (
	"context"
	"fmt"
	"time"
)

// Probe kinds: the inference-server protocols the agent can check.
const (
	KindOpenAI   = "openai"    // vLLM, SGLang: OpenAI-compatible
	KindKServeV2 = "kserve-v2" // Triton, KServe v2 inference protocol
	KindTGI      = "tgi"       // Hugging Face text-generation-inference
	KindOllama   = "ollama"
)

// ServerConfig is one local inference server serving one version of one
// route, as listed in the agent's config file (BACKFLIP_AGENT_CONFIG).
type ServerConfig struct {
	// Kind is the protocol: openai, kserve-v2, tgi or ollama.
	Kind string `json:"kind"`
	// URL is the server's base URL, e.g. http://127.0.0.1:8000.
	URL string `json:"url"`
	// Route and Version are backflip's names.
	Route   string `json:"route"`
	Version string `json:"version"`
	// Model is the name the engine knows the model by (OpenAI model id,
	// KServe model name, TGI model_id, Ollama model name).
	Model string `json:"model"`
	// ModelVersion is the engine's own version of the model where it has
	// one: the KServe/Triton model version; optional elsewhere (TGI
	// model_sha, Ollama digest prefix) to pin the exact weights.
	ModelVersion string `json:"model_version,omitempty"`
	// GPUs is how many GPUs this server uses for the version.
	GPUs int `json:"gpus"`
	// CanaryPrompt is the prompt of the 1-token canary inference.
	CanaryPrompt string `json:"canary_prompt"`
	// Budget is the canary's latency budget; slower is not warm.
	Budget Duration `json:"budget"`
}

// Duration is a time.Duration written as "1.5s" in JSON.
type Duration time.Duration

// Observation is the result of one probe of one server.
type Observation struct {
	// Loaded: the expected model (and version, where checked) is loaded and,
	// where the engine reports it, resident in GPU memory.
	Loaded bool
	// Ready: the engine's readiness endpoint said ready.
	Ready bool
	// Warm: loaded, ready and the canary answered within budget.
	Warm bool
	// CanaryLatency is how long the canary took (zero if not run).
	CanaryLatency time.Duration
	// InFlight is the engine's count of running requests, where exposed.
	InFlight *int
	// Err says what was wrong when not warm.
	Err error
}

// Prober checks one inference server. Probe must honour ctx's deadline and
// never panic on a bad reply.
type Prober interface {
	Probe(ctx context.Context) Observation
}

// MarshalJSON writes the duration as a string such as "1.5s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// UnmarshalJSON reads a duration string such as "800ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("duration must be a string such as \"800ms\", got %s", b)
	}
	v, err := time.ParseDuration(string(b[1 : len(b)-1]))
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}
