package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// Limits of what a probe reads from an inference server. The server is
// local but not trusted: a wedged or compromised engine must not be able
// to make the agent allocate without bound or print a novel into a Slack
// message.
const (
	// maxReplyBytes caps every reply body. The largest legitimate one is
	// vLLM's /metrics, a few hundred KiB with many histograms.
	maxReplyBytes = 1 << 20
	// maxHintBytes bounds the excerpt of an error reply quoted in an error.
	maxHintBytes = 120
	// canarySlack is how many budgets the canary is given before it is
	// abandoned: a canary at 1.5× its budget is then reported with its
	// latency ("canary took 1.2s, budget 800ms"), which says far more
	// than a bare timeout, while a dead one still costs a bounded time.
	canarySlack = 2
	// minSideTimeout bounds the side requests (vLLM's /metrics) from
	// below when the budget is tiny.
	minSideTimeout = 500 * time.Millisecond
)

// errTooLarge marks a reply over maxReplyBytes.
var errTooLarge = fmt.Errorf("reply larger than %d MiB", maxReplyBytes>>20)

// httpProbe is what every protocol's prober shares: the server's settings,
// the client and the clock.
type httpProbe struct {
	cfg    ServerConfig
	client *http.Client
	// base is cfg.URL without a trailing slash; endpoint paths are
	// appended to it, so a base path (a path-routing proxy) is kept.
	base string
	// now reads the wall clock (Ollama's expires_at is wall-clock time);
	// tests replace it.
	now func() time.Time
}

// wallNow reads the probe's clock.
func (p *httpProbe) wallNow() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// probeStepError is a failed step of a probe: which endpoint, what was wrong.
// It reads as one short line ("GET /health: 503 Service Unavailable") and
// unwraps to the cause, if any, so callers can still test for
// context.DeadlineExceeded.
type probeStepError struct {
	step string // "GET /health"
	msg  string
	err  error
}

func (e *probeStepError) Error() string { return e.step + ": " + e.msg }
func (e *probeStepError) Unwrap() error { return e.err }

func stepErr(step string, err error, format string, args ...any) *probeStepError {
	return &probeStepError{step: step, msg: fmt.Sprintf(format, args...), err: err}
}

// probeReply is one answered request.
type probeReply struct {
	step   string
	status int
	body   []byte
}

// ok reports a 200.
func (r *probeReply) ok() bool { return r.status == http.StatusOK }

// statusErr describes a non-200 reply, with what the body says if it
// says something short and readable.
func (r *probeReply) statusErr() error {
	msg := fmt.Sprintf("%d %s", r.status, http.StatusText(r.status))
	if h := replyHint(r.body); h != "" {
		msg += ": " + h
	}
	return stepErr(r.step, nil, "%s", msg)
}

// decode reads the reply's JSON into v. Garbage is an error, never a
// panic: encoding/json does not panic on any input.
func (r *probeReply) decode(v any) error {
	if err := json.Unmarshal(r.body, v); err != nil {
		return stepErr(r.step, err, "bad JSON: %s", clipLine(err.Error()))
	}
	return nil
}

// call sends one request and reads at most maxReplyBytes of the reply,
// whatever its status. reqBody, if not nil, is sent as JSON. A transport
// failure, a timeout or an oversized reply is a *probeStepError.
func (p *httpProbe) call(ctx context.Context, method, path string, reqBody any) (*probeReply, error) {
	step := method + " " + path
	var body io.Reader
	if reqBody != nil {
		b, err := json.Marshal(reqBody)
		if err != nil {
			return nil, stepErr(step, err, "encode request: %v", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.base+path, body)
	if err != nil {
		return nil, stepErr(step, err, "%s", clipLine(err.Error()))
	}
	req.Header.Set("Accept", "application/json")
	if reqBody != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, stepErr(step, err, "%s", transportMsg(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes+1))
	if err != nil {
		return nil, stepErr(step, err, "read reply: %s", transportMsg(err))
	}
	if len(data) > maxReplyBytes {
		return nil, stepErr(step, errTooLarge, "%v", errTooLarge)
	}
	return &probeReply{step: step, status: resp.StatusCode, body: data}, nil
}

// transportMsg says in a few words why a request got no reply.
func transportMsg(err error) string {
	var ue *url.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ue) && ue.Timeout():
		return "timed out"
	case errors.As(err, &ue):
		err = ue.Err
	}
	return clipLine(err.Error())
}

// replyHint extracts a short message from an error reply: the "error" or
// "message" field engines put there ({"error": "..."}, vLLM's
// {"object": "error", "message": ...}, OpenAI's {"error": {"message"}}),
// else the start of the body if it is text.
func replyHint(body []byte) string {
	var m struct {
		Error   json.RawMessage `json:"error"`
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(body, &m) == nil {
		var s string
		var nested struct {
			Message string `json:"message"`
		}
		switch {
		case json.Unmarshal(m.Error, &s) == nil && s != "":
			return clipLine(s)
		case json.Unmarshal(m.Message, &s) == nil && s != "":
			return clipLine(s)
		case json.Unmarshal(m.Error, &nested) == nil && nested.Message != "":
			return clipLine(nested.Message)
		}
		return ""
	}
	return clipLine(string(body))
}

// clipLine makes s one printable line of at most maxHintBytes, so that what a
// server says cannot break a log line or a Slack message.
func clipLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxHintBytes {
		cut := maxHintBytes
		for cut > 0 && !utf8RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// canary runs one canary inference under its own deadline — canarySlack
// budgets, or ctx's deadline if that comes first — and judges its latency.
// The latency is returned even when the canary failed: how long a failure
// took is part of the diagnosis.
func (p *httpProbe) canary(ctx context.Context, step string, run func(ctx context.Context) error) (time.Duration, error) {
	budget := time.Duration(p.cfg.Budget)
	cctx, cancel := context.WithTimeout(ctx, canarySlack*budget)
	defer cancel()
	start := time.Now()
	err := run(cctx)
	took := time.Since(start)
	switch {
	case err != nil && cctx.Err() != nil && ctx.Err() == nil:
		// The canary's own deadline, not the probe's: it is slow, not
		// necessarily dead, and the budget is what it is judged against.
		return took, stepErr(step, err, "canary took over %s, budget %s", roundDuration(took), budget)
	case err != nil:
		return took, err
	case took > budget:
		return took, stepErr(step, nil, "canary took %s, budget %s", roundDuration(took), budget)
	}
	return took, nil
}

// sideTimeout bounds an optional request (one whose failure does not make
// a server cold) so that it cannot eat the probe's whole deadline.
func (p *httpProbe) sideTimeout() time.Duration {
	return max(time.Duration(p.cfg.Budget), minSideTimeout)
}

// roundDuration rounds a duration for people: "2.1s", "812ms", "95µs".
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}

// probeVerdict collects a probe's findings; finish turns them into an
// Observation that keeps the invariant "Err is nil exactly when Warm".
// health is the readiness step of the engines with a /health endpoint
// (vLLM/SGLang, TGI): it sets Ready, and reports false when the server did
// not answer at all, since the other endpoints would only repeat that.
func (p *httpProbe) health(ctx context.Context, v *probeVerdict) (answered bool) {
	r, err := p.call(ctx, http.MethodGet, "/health", nil)
	if err != nil {
		v.fail(err)
		return false
	}
	v.obs.Ready = r.ok()
	if !v.obs.Ready {
		v.fail(r.statusErr())
	}
	return true
}

type probeVerdict struct {
	obs      Observation
	problems probeProblems
}

func (v *probeVerdict) fail(err error) { v.problems = append(v.problems, err) }

// finish sets Warm from loaded, ready and the canary, and Err from the
// problems found. ranCanary is false when the canary was skipped (the
// server not ready or the model not loaded): skipped is never warm.
func (v *probeVerdict) finish(ranCanary bool) Observation {
	o := v.obs
	o.Warm = ranCanary && o.Loaded && o.Ready && len(v.problems) == 0
	switch {
	case o.Warm:
		o.Err = nil
	case len(v.problems) > 0:
		o.Err = v.problems
	default:
		// Unreachable by construction; never report cold without a reason.
		o.Err = errors.New("not warm: no canary ran")
	}
	return o
}

// probeProblems is every reason a probe found, as one line joined by "; ".
// Unwrap lets errors.Is see each of them.
type probeProblems []error

func (ps probeProblems) Error() string {
	s := make([]string, len(ps))
	for i, e := range ps {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (ps probeProblems) Unwrap() []error { return ps }
