package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Receiver is the reference receiver of the abort signal, for a runtime
// that speaks the HTTP protocol instead of using the SDK: mount it at
// AbortPath on the instance URL it registers by heartbeat. It refuses
// unsigned, forged, stale and replayed requests (401, no detail) and bodies
// over MaxBodyBytes (413), decodes the signal strictly, calls Abort and
// answers {"inflight","aborted"}.
type Receiver struct {
	// Secret is RUNTIME_SECRET.
	Secret []byte
	// Abort aborts the requests running on signal.From for signal.Route at
	// their next checkpoint and returns how many were in flight on it and
	// how many it aborted. backflip retries a signal whose reply was lost,
	// so Abort must be idempotent per signal.Op.
	Abort func(ctx context.Context, signal AbortSignal) (inflight, aborted int)
	// Replay remembers accepted signals; NewReceiver makes one.
	Replay *ReplayCache
	Logger *zap.Logger
	Now    func() time.Time
}

// NewReceiver returns a Receiver with a replay cache, a no-op logger and
// the wall clock.
func NewReceiver(secret []byte, abort func(ctx context.Context, signal AbortSignal) (inflight, aborted int)) *Receiver {
	return &Receiver{Secret: secret, Abort: abort, Replay: NewReplayCache(0), Logger: zap.NewNop(), Now: time.Now}
}

func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, ok := readVerified(w, r, rc.Secret, rc.Now(), rc.Replay, rc.Logger)
	if !ok {
		return
	}
	var sig AbortSignal
	if err := Decode(body, &sig); err != nil {
		rc.Logger.Warn("bad abort signal", zap.Error(err))
		http.Error(w, "invalid abort signal", http.StatusBadRequest)
		return
	}
	inflight, aborted := rc.Abort(r.Context(), sig)
	reply := AbortReply{InFlight: inflight, Aborted: aborted}
	if err := reply.Validate(); err != nil {
		rc.Logger.Error("abort callback returned inconsistent counts", zap.Error(err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(reply)
}

// BotClient signs and POSTs a runtime's heartbeats and ack reports to the
// bot. The zero HTTPClient and Now mean http.DefaultClient and time.Now.
type BotClient struct {
	// BotURL is the bot's base URL, e.g. "https://backflip.internal".
	BotURL     string
	Secret     []byte
	HTTPClient *http.Client
	Now        func() time.Time
	// MaxAttempts bounds the attempts of one call (default 8); ctx bounds
	// them too.
	MaxAttempts int

	// mu guards last: the timestamp and signature of the last request, so
	// that sending the identical body again within the same second does not
	// look like a replay to the bot.
	mu   sync.Mutex
	last struct {
		ts  int64
		sig string
	}
}

// ErrNoAck is returned by ReportAcks when the bot holds no acknowledgement
// for the op and instance even after retries.
var ErrNoAck = errors.New("bot has no acknowledgement for this op and instance")

// Heartbeat registers or refreshes rec at the bot (POST
// /v1/runtime/heartbeat).
func Heartbeat(ctx context.Context, botURL string, secret []byte, rec InstanceRecord) error {
	return (&BotClient{BotURL: botURL, Secret: secret}).Heartbeat(ctx, rec)
}

// ReportAcks reports the re-issued count of an op to the bot (POST
// /v1/runtime/acks).
func ReportAcks(ctx context.Context, botURL string, secret []byte, rep AckReport) error {
	return (&BotClient{BotURL: botURL, Secret: secret}).ReportAcks(ctx, rep)
}

// Heartbeat registers or refreshes rec at the bot.
func (c *BotClient) Heartbeat(ctx context.Context, rec InstanceRecord) error {
	if err := rec.Validate(); err != nil {
		return err
	}
	return c.send(ctx, HeartbeatPath, rec, false)
}

// ReportAcks reports rep to the bot. The bot answers 404 until it has
// written the instance's acknowledgement (just after the instance answered
// the signal), so a 404 is retried like an unavailable bot.
func (c *BotClient) ReportAcks(ctx context.Context, rep AckReport) error {
	if err := rep.Validate(); err != nil {
		return err
	}
	return c.send(ctx, AcksPath, rep, true)
}

func (c *BotClient) send(ctx context.Context, path string, v any, retry404 bool) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	hc, now := c.HTTPClient, c.Now
	if hc == nil {
		hc = http.DefaultClient
	}
	if now == nil {
		now = time.Now
	}
	maxAttempts := c.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = 8
	}
	url := strings.TrimSuffix(c.BotURL, "/") + path
	attempts := 0
	err = retry(ctx, func(ctx context.Context, ts int64) error {
		attempts++
		err := c.post(ctx, hc, url, ts, body)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrNoAck) && !retry404 {
			return errPermanent{fmt.Errorf("status 404")}
		}
		if attempts >= maxAttempts {
			return errPermanent{err}
		}
		return err
	}, now)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	return nil
}

// stamp signs body at ts, or at the next second if this client just sent
// the same body at ts.
func (c *BotClient) stamp(ts int64, body []byte) (int64, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts < c.last.ts {
		ts = c.last.ts
	}
	sig := Sign(c.Secret, ts, body)
	if ts == c.last.ts && sig == c.last.sig {
		ts++
		sig = Sign(c.Secret, ts, body)
	}
	c.last.ts, c.last.sig = ts, sig
	return ts, sig
}

func (c *BotClient) post(ctx context.Context, hc *http.Client, url string, ts int64, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return errPermanent{err}
	}
	req.Header.Set("Content-Type", "application/json")
	ts, sig := c.stamp(ts, body)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, sig)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxBodyBytes))
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return ErrNoAck
	}
	return statusError(resp.StatusCode)
}
