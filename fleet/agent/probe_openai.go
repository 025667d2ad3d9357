package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// openAIProber checks an OpenAI-compatible server (vLLM, SGLang):
//
//   - ready:  GET /health answers 200;
//   - loaded: GET /v1/models lists the model, by id (the served name) or
//     by root (what the weights were loaded from);
//   - warm:   POST /v1/completions with a 1-token completion answers a
//     choice within the budget;
//   - in-flight: vllm:num_requests_running from GET /metrics, summed over
//     its label sets, when the server exposes it.
//
// The engine has no version of its own: model_version is not checked.
type openAIProber struct{ httpProbe }

var _ Prober = (*openAIProber)(nil)

// vllmRunning is the vLLM gauge of requests in model execution batches.
const vllmRunning = "vllm:num_requests_running"

func (p *openAIProber) Probe(ctx context.Context) Observation {
	var v probeVerdict
	if !p.health(ctx, &v) {
		return v.finish(false)
	}

	served, err := p.servedName(ctx)
	if err != nil {
		v.fail(err)
	}
	v.obs.Loaded = served != ""

	ran := false
	if v.obs.Ready && v.obs.Loaded {
		ran = true
		v.obs.CanaryLatency, err = p.canary(ctx, "POST /v1/completions", func(ctx context.Context) error {
			return p.complete(ctx, served)
		})
		if err != nil {
			v.fail(err)
		}
	}
	if ctx.Err() == nil {
		v.obs.InFlight = p.inFlight(ctx)
	}
	return v.finish(ran)
}

// servedName returns the id to send completions to: the entry of
// /v1/models whose id or root is the configured model ("" if none).
func (p *openAIProber) servedName(ctx context.Context) (string, error) {
	r, err := p.call(ctx, http.MethodGet, "/v1/models", nil)
	if err != nil {
		return "", err
	}
	if !r.ok() {
		return "", r.statusErr()
	}
	var list struct {
		Data []struct {
			ID   string `json:"id"`
			Root string `json:"root"`
		} `json:"data"`
	}
	if err := r.decode(&list); err != nil {
		return "", err
	}
	ids := make([]string, 0, len(list.Data))
	for _, m := range list.Data {
		if m.ID == p.cfg.Model {
			return m.ID, nil
		}
		ids = append(ids, m.ID)
	}
	for _, m := range list.Data {
		if m.Root == p.cfg.Model && m.ID != "" {
			return m.ID, nil
		}
	}
	return "", stepErr(r.step, nil, "model %q not listed (serving %s)", p.cfg.Model, listOrNone(ids))
}

// complete runs the 1-token completion. Any choice, even empty text, is an
// answer: the engine ran the model.
func (p *openAIProber) complete(ctx context.Context, model string) error {
	req := struct {
		Model     string `json:"model"`
		Prompt    string `json:"prompt"`
		MaxTokens int    `json:"max_tokens"`
	}{model, p.cfg.CanaryPrompt, 1}
	r, err := p.call(ctx, http.MethodPost, "/v1/completions", req)
	if err != nil {
		return err
	}
	if !r.ok() {
		return r.statusErr()
	}
	var c struct {
		Choices []struct {
			Text *string `json:"text"`
		} `json:"choices"`
	}
	if err := r.decode(&c); err != nil {
		return err
	}
	if len(c.Choices) == 0 || c.Choices[0].Text == nil {
		return stepErr(r.step, nil, "reply has no completion choice")
	}
	return nil
}

// inFlight reads vllm:num_requests_running from /metrics. It is optional:
// any failure (no such endpoint, another engine, garbage) gives nil, never
// a cold verdict, and it gets a bounded slice of the probe's time.
func (p *openAIProber) inFlight(ctx context.Context) *int {
	ctx, cancel := context.WithTimeout(ctx, p.sideTimeout())
	defer cancel()
	r, err := p.call(ctx, http.MethodGet, "/metrics", nil)
	if err != nil || !r.ok() {
		return nil
	}
	return parseRunning(r.body)
}

// parseRunning sums the samples of vllm:num_requests_running in a
// Prometheus text exposition (one per model_name/engine label set). It
// returns nil if there is no valid sample.
func parseRunning(text []byte) *int {
	var sum float64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), maxReplyBytes)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, vllmRunning)
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(rest, "{"):
			end := labelsEnd(rest)
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		case strings.HasPrefix(rest, " "), strings.HasPrefix(rest, "\t"):
		default:
			continue // another metric sharing the prefix, e.g. ..._total
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		f, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e9 {
			continue
		}
		sum += f
		found = true
	}
	if !found || sum > math.MaxInt32 {
		return nil
	}
	n := int(math.Round(sum))
	return &n
}

// labelsEnd returns the index of the '}' closing a label set that starts
// at s[0], skipping quoted label values (which may contain '}'), or -1.
func labelsEnd(s string) int {
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '}':
			return i
		}
	}
	return -1
}

// listOrNone lists names for an error message, shortly.
func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	const show = 5
	q := make([]string, 0, show)
	for i, n := range names {
		if i == show {
			return strings.Join(q, ", ") + fmt.Sprintf(" and %d more", len(names)-show)
		}
		q = append(q, strconv.Quote(clipLine(n)))
	}
	return strings.Join(q, ", ")
}
