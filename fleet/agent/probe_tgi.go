package agent

import (
	"context"
	"net/http"
)

// tgiProber checks Hugging Face text-generation-inference:
//
//   - ready:  GET /health answers 200;
//   - loaded: GET /info names the model (model_id) and, when model_version
//     is set, the exact weights (model_sha);
//   - warm:   POST /generate with max_new_tokens 1 answers generated_text
//     within the budget.
type tgiProber struct{ httpProbe }

var _ Prober = (*tgiProber)(nil)

func (p *tgiProber) Probe(ctx context.Context) Observation {
	var v probeVerdict
	if !p.health(ctx, &v) {
		return v.finish(false)
	}
	if err := p.info(ctx); err != nil {
		v.fail(err)
	} else {
		v.obs.Loaded = true
	}
	if !v.obs.Ready || !v.obs.Loaded {
		return v.finish(false)
	}
	lat, err := p.canary(ctx, "POST /generate", p.generate)
	v.obs.CanaryLatency = lat
	if err != nil {
		v.fail(err)
	}
	return v.finish(true)
}

// info checks that /info names the expected model (and sha).
func (p *tgiProber) info(ctx context.Context) error {
	r, err := p.call(ctx, http.MethodGet, "/info", nil)
	if err != nil {
		return err
	}
	if !r.ok() {
		return r.statusErr()
	}
	var info struct {
		ModelID  string  `json:"model_id"`
		ModelSHA *string `json:"model_sha"`
	}
	if err := r.decode(&info); err != nil {
		return err
	}
	if info.ModelID != p.cfg.Model {
		return stepErr(r.step, nil, "serving model %q, want %q", clipLine(info.ModelID), p.cfg.Model)
	}
	if want := p.cfg.ModelVersion; want != "" {
		if info.ModelSHA == nil {
			return stepErr(r.step, nil, "no model_sha reported, want %q", want)
		}
		if *info.ModelSHA != want {
			return stepErr(r.step, nil, "model_sha %q, want %q", clipLine(*info.ModelSHA), want)
		}
	}
	return nil
}

func (p *tgiProber) generate(ctx context.Context) error {
	type params struct {
		MaxNewTokens int `json:"max_new_tokens"`
	}
	req := struct {
		Inputs     string `json:"inputs"`
		Parameters params `json:"parameters"`
	}{p.cfg.CanaryPrompt, params{MaxNewTokens: 1}}
	r, err := p.call(ctx, http.MethodPost, "/generate", req)
	if err != nil {
		return err
	}
	if !r.ok() {
		return r.statusErr()
	}
	var g struct {
		GeneratedText *string `json:"generated_text"`
	}
	if err := r.decode(&g); err != nil {
		return err
	}
	if g.GeneratedText == nil {
		return stepErr(r.step, nil, "reply has no generated_text")
	}
	return nil
}
