package agent

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/strictjson"
)

// Limits and defaults of the agent's config file.
const (
	// MaxConfigBytes caps the config file; a real one is a few KiB.
	MaxConfigBytes = 1 << 20
	// MaxServers bounds the inference servers one node may list.
	MaxServers = 256
	// MaxCanaryPromptBytes bounds a canary prompt: the canary is a 1-token
	// liveness check, not a benchmark, and a long prompt makes it slow.
	MaxCanaryPromptBytes = 1000
	// MaxModelLen bounds the engine's model name and model version.
	MaxModelLen = 256
	// MaxBudget bounds a canary's latency budget. A 1-token answer slower
	// than this is not what anyone means by warm, and the budget sets the
	// probe's timeout.
	MaxBudget = time.Minute

	// DefaultProbeInterval is how often each server is probed when the
	// file does not say.
	DefaultProbeInterval = 5 * time.Second
	// MinProbeInterval and MaxProbeInterval bound probe_interval. Faster
	// than the minimum spends GPU time on canaries; slower than the
	// maximum makes every cached answer older than the bot accepts
	// (BACKFLIP_WARM_MAX_AGE, 15 s by default).
	MinProbeInterval = 100 * time.Millisecond
	MaxProbeInterval = 10 * time.Minute

	// DefaultFreshTimeout is how long a fresh=1 request waits for its
	// probe when the file does not say: under the bot's default
	// BACKFLIP_WARM_TIMEOUT (2 s), so the bot still gets an answer (the
	// cached one, marked) when the probe is slow.
	DefaultFreshTimeout = 1500 * time.Millisecond
	// MaxFreshTimeout bounds fresh_timeout.
	MaxFreshTimeout = 30 * time.Second
)

// FileConfig is the agent's config file (BACKFLIP_AGENT_CONFIG), JSON:
//
//	{
//	  "advertise_url": "https://gpu-node-17.dc1.example.com:9090",
//	  "probe_interval": "5s",
//	  "fresh_timeout": "1.5s",
//	  "servers": [
//	    {"kind": "openai", "url": "http://127.0.0.1:8000", "route": "chat-70b",
//	     "version": "v42", "model": "meta-llama/Llama-3.1-70B-Instruct", "gpus": 4,
//	     "canary_prompt": "Say OK.", "budget": "800ms"}
//	  ]
//	}
//
// Unknown fields are refused, so a misspelt setting is an error rather
// than a silent default.
type FileConfig struct {
	// AdvertiseURL is where the bot reaches this agent: the URL registered
	// in etcd. Required: a listen address such as ":9090" says nothing
	// about the name or scheme the bot must use.
	AdvertiseURL string `json:"advertise_url"`
	// ProbeInterval is how often each server is probed (default 5s).
	ProbeInterval Duration `json:"probe_interval,omitempty"`
	// FreshTimeout bounds how long a fresh=1 request waits (default 1.5s).
	FreshTimeout Duration `json:"fresh_timeout,omitempty"`
	// Servers are the node's local inference servers, one per
	// (route, version).
	Servers []ServerConfig `json:"servers"`
}

// LoadConfig reads, strictly decodes and validates the agent's config file.
// Defaults are applied to the optional fields left out.
func LoadConfig(path string) (*FileConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	defer f.Close()
	c, err := ParseConfig(f)
	if err != nil {
		return nil, fmt.Errorf("agent config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig is LoadConfig on a reader: at most MaxConfigBytes, one JSON
// object, no unknown fields, every field validated.
func ParseConfig(r io.Reader) (*FileConfig, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxConfigBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("file is larger than %d bytes", MaxConfigBytes)
	}
	var c FileConfig
	if err := strictjson.Decode(data, &c); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.defaults()
	return &c, nil
}

func (c *FileConfig) defaults() {
	if c.ProbeInterval == 0 {
		c.ProbeInterval = Duration(DefaultProbeInterval)
	}
	if c.FreshTimeout == 0 {
		c.FreshTimeout = Duration(DefaultFreshTimeout)
	}
}

// Validate checks every field. All problems are reported, joined by "; ",
// each naming its field, e.g. "servers[2].gpus: must be 1 to 1024, got 0".
func (c *FileConfig) Validate() error {
	var p fieldErrors
	if err := validateURL(c.AdvertiseURL, false); err != nil {
		p.add("advertise_url", "%v", err)
	}
	if d := time.Duration(c.ProbeInterval); d != 0 && (d < MinProbeInterval || d > MaxProbeInterval) {
		p.add("probe_interval", "must be %v to %v, got %v", MinProbeInterval, MaxProbeInterval, d)
	}
	if d := time.Duration(c.FreshTimeout); d < 0 || d > MaxFreshTimeout {
		p.add("fresh_timeout", "must be greater than 0 and at most %v, got %v", MaxFreshTimeout, d)
	}
	validateServers(&p, c.Servers)
	return p.err()
}

// validateServers checks the list and each server in it: 1 to MaxServers
// servers, each valid, no (route, version) twice.
func validateServers(p *fieldErrors, servers []ServerConfig) {
	switch n := len(servers); {
	case n == 0:
		p.add("servers", "at least one inference server is required")
	case n > MaxServers:
		p.add("servers", "at most %d servers, got %d", MaxServers, n)
	}
	seen := make(map[versionKey]int, len(servers))
	for i := range servers {
		s := &servers[i]
		s.validate(p, fmt.Sprintf("servers[%d]", i))
		k := versionKey{s.Route, s.Version}
		if j, dup := seen[k]; dup {
			p.add(fmt.Sprintf("servers[%d]", i), "route %q version %q is already served by servers[%d]", s.Route, s.Version, j)
		} else {
			seen[k] = i
		}
	}
}

// Validate checks one server's settings; the errors name the field.
func (s *ServerConfig) Validate() error {
	var p fieldErrors
	s.validate(&p, "server")
	return p.err()
}

func (s *ServerConfig) validate(p *fieldErrors, at string) {
	switch s.Kind {
	case KindOpenAI, KindKServeV2, KindTGI, KindOllama:
	default:
		p.add(at+".kind", "must be one of %s, %s, %s, %s, got %q", KindOpenAI, KindKServeV2, KindTGI, KindOllama, s.Kind)
	}
	if err := validateURL(s.URL, true); err != nil {
		p.add(at+".url", "%v", err)
	}
	if err := routing.ValidateRoute(s.Route); err != nil {
		p.add(at+".route", "%v", err)
	}
	if err := routing.ValidateVersion(s.Version); err != nil {
		p.add(at+".version", "%v", err)
	}
	if err := validateText(s.Model, MaxModelLen, true); err != nil {
		p.add(at+".model", "%v", err)
	}
	if err := validateText(s.ModelVersion, MaxModelLen, false); err != nil {
		p.add(at+".model_version", "%v", err)
	}
	if s.GPUs < 1 || s.GPUs > fleetapi.MaxGPUs {
		p.add(at+".gpus", "must be 1 to %d, got %d", fleetapi.MaxGPUs, s.GPUs)
	}
	switch n := len(s.CanaryPrompt); {
	case n == 0:
		p.add(at+".canary_prompt", "required (the prompt of the 1-token canary inference)")
	case n > MaxCanaryPromptBytes:
		p.add(at+".canary_prompt", "at most %d bytes, got %d", MaxCanaryPromptBytes, n)
	case !utf8.ValidString(s.CanaryPrompt):
		p.add(at+".canary_prompt", "must be valid UTF-8")
	}
	if b := time.Duration(s.Budget); b <= 0 || b > MaxBudget {
		p.add(at+".budget", "must be greater than 0 and at most %v, got %v", MaxBudget, b)
	}
}

// validateURL accepts an http(s) URL with a host and no credentials, query
// or fragment. A path is allowed for a server behind a path-routing proxy
// (basePath), not for the agent's own URL.
func validateURL(s string, basePath bool) error {
	if s == "" {
		return errors.New("required (an http or https URL)")
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL: %q", s)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme must be http or https, got %q", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("must have a host, got %q", s)
	case u.User != nil:
		// The URL would end up in logs and, for the agent, in etcd.
		return errors.New("must not hold credentials (user:password@)")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("must have no query or fragment, got %q", s)
	case !basePath && u.Path != "" && u.Path != "/":
		return fmt.Errorf("must have no path (the agent serves /v1/... at its root), got %q", s)
	}
	return nil
}

func validateText(s string, maxLen int, required bool) error {
	switch {
	case s == "" && required:
		return errors.New("required")
	case len(s) > maxLen:
		return fmt.Errorf("at most %d bytes, got %d", maxLen, len(s))
	case !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return fmt.Errorf("must be printable UTF-8, got %q", s)
	}
	return nil
}

// fieldErrors collects field errors into one error.
type fieldErrors []string

func (p *fieldErrors) add(field, format string, args ...any) {
	*p = append(*p, field+": "+fmt.Sprintf(format, args...))
}

func (p fieldErrors) err() error {
	if len(p) == 0 {
		return nil
	}
	return &ConfigError{Problems: p}
}

// ConfigError is an invalid config file: every problem found, each
// starting with the field it is about ("servers[1].budget: …").
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string { return strings.Join(e.Problems, "; ") }

// versionKey identifies one served version on the node.
type versionKey struct{ route, version string }
