package agent

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// ollamaProber checks an Ollama server:
//
//   - ready:  GET /api/ps answers (Ollama has no readiness endpoint; a
//     server that lists its running models is serving);
//   - loaded: /api/ps lists the model by name (or model), with a digest
//     starting with model_version when that is set, resident in GPU memory
//     (size_vram > 0) and not about to be unloaded (expires_at after the
//     canary's deadline, canarySlack budgets from now);
//   - warm:   POST /api/generate, not streamed, num_predict 1, answers
//     done with a response within the budget.
//
// The canary runs only for a resident model: Ollama answers a generate
// for any pulled model by loading it, so probing a cold one would warm it
// up — the probe must observe residency, not cause it. For the same
// reason the request carries no keep_alive: a request with one would
// overwrite the session duration the model was loaded with. Without one,
// Ollama keeps that session duration but, as for any request, restarts
// the expiry timer when the canary ends (expires_at = end + session
// duration). A model probed every interval therefore does not reach an
// idle expiry while the agent probes it: a known limit of judging an
// Ollama model warm by a canary.
type ollamaProber struct{ httpProbe }

var _ Prober = (*ollamaProber)(nil)

func (p *ollamaProber) Probe(ctx context.Context) Observation {
	var v probeVerdict
	r, err := p.call(ctx, http.MethodGet, "/api/ps", nil)
	if err != nil {
		v.fail(err)
		return v.finish(false)
	}
	if !r.ok() {
		v.fail(r.statusErr())
		return v.finish(false)
	}
	var ps struct {
		Models []ollamaRunning `json:"models"`
	}
	if err := r.decode(&ps); err != nil {
		v.fail(err)
		return v.finish(false)
	}
	v.obs.Ready = true
	if err := p.resident(r.step, ps.Models); err != nil {
		v.fail(err)
		return v.finish(false)
	}
	v.obs.Loaded = true
	v.obs.CanaryLatency, err = p.canary(ctx, "POST /api/generate", p.generate)
	if err != nil {
		v.fail(err)
	}
	return v.finish(true)
}

// ollamaRunning is one entry of /api/ps.
type ollamaRunning struct {
	Name      string `json:"name"`
	Model     string `json:"model"`
	Digest    string `json:"digest"`
	SizeVRAM  int64  `json:"size_vram"`
	ExpiresAt string `json:"expires_at"`
}

// resident finds the configured model among the running ones and checks
// it is the expected weights, in VRAM, and not expired. Of several
// entries by that name, one that passes is enough; otherwise the first
// one's problem is reported.
func (p *ollamaProber) resident(step string, running []ollamaRunning) error {
	var first error
	names := make([]string, 0, len(running))
	for _, m := range running {
		names = append(names, m.Name)
		if !ollamaSameModel(m.Name, p.cfg.Model) && !ollamaSameModel(m.Model, p.cfg.Model) {
			continue
		}
		err := p.checkResident(step, m)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	return stepErr(step, nil, "model %q not resident (running: %s)", p.cfg.Model, listOrNone(names))
}

func (p *ollamaProber) checkResident(step string, m ollamaRunning) error {
	if want := strings.TrimPrefix(p.cfg.ModelVersion, "sha256:"); want != "" {
		got := strings.TrimPrefix(m.Digest, "sha256:")
		if !strings.HasPrefix(strings.ToLower(got), strings.ToLower(want)) {
			return stepErr(step, nil, "model %q has digest %.12s, want %s…", p.cfg.Model, clipLine(got), want)
		}
	}
	if m.SizeVRAM <= 0 {
		return stepErr(step, nil, "model %q is not in GPU memory (size_vram %d)", p.cfg.Model, m.SizeVRAM)
	}
	exp, err := time.Parse(time.RFC3339Nano, m.ExpiresAt)
	if err != nil {
		return stepErr(step, err, "model %q: bad expires_at %q", p.cfg.Model, clipLine(m.ExpiresAt))
	}
	now := p.wallNow()
	if !exp.After(now) {
		return stepErr(step, nil, "model %q keep-alive expired at %s", p.cfg.Model, exp.Format(time.RFC3339))
	}
	// A canary that reaches Ollama after the model expired would load it
	// again: the probe would cause the residency it is meant to observe.
	// So a model whose keep-alive ends before the canary's own deadline is
	// not probed, and not warm: it is about to leave GPU memory anyway.
	if window := canarySlack * time.Duration(p.cfg.Budget); exp.Before(now.Add(window)) {
		return stepErr(step, nil, "model %q keep-alive ends at %s, within the canary's %s; canary not sent (it would reload the model)",
			p.cfg.Model, exp.Format(time.RFC3339Nano), window)
	}
	return nil
}

// ollamaSameModel compares model names as Ollama resolves them: a name
// without a tag means ":latest".
func ollamaSameModel(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	return ollamaFullName(a) == ollamaFullName(b)
}

func ollamaFullName(n string) string {
	// The tag follows the last ':' after the last '/', so a registry port
	// ("host:5000/ns/model") is not taken for a tag.
	if i := strings.LastIndexByte(n, ':'); i < 0 || strings.Contains(n[i:], "/") {
		return n + ":latest"
	}
	return n
}

// generate runs the 1-token canary: no streaming, num_predict 1, and no
// keep_alive (see ollamaProber).
func (p *ollamaProber) generate(ctx context.Context) error {
	type options struct {
		NumPredict int `json:"num_predict"`
	}
	req := struct {
		Model   string  `json:"model"`
		Prompt  string  `json:"prompt"`
		Stream  bool    `json:"stream"`
		Options options `json:"options"`
	}{p.cfg.Model, p.cfg.CanaryPrompt, false, options{NumPredict: 1}}
	r, err := p.call(ctx, http.MethodPost, "/api/generate", req)
	if err != nil {
		return err
	}
	if !r.ok() {
		return r.statusErr()
	}
	var g struct {
		Response *string `json:"response"`
		Done     bool    `json:"done"`
		Error    string  `json:"error"`
	}
	if err := r.decode(&g); err != nil {
		return err
	}
	switch {
	case g.Error != "":
		return stepErr(r.step, nil, "%s", clipLine(g.Error))
	case !g.Done || g.Response == nil:
		return stepErr(r.step, nil, "reply not done or without a response")
	}
	return nil
}
