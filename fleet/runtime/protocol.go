package runtime

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/strictjson"
)

// HTTP protocol names of the contract.
const (
	// AbortPath is where backflip POSTs the abort signal on an instance URL.
	AbortPath = "/backflip/v1/abort"
	// HeartbeatPath and AcksPath are the bot's endpoints for runtimes
	// without an etcd client.
	HeartbeatPath = "/v1/runtime/heartbeat"
	AcksPath      = "/v1/runtime/acks"

	HeaderTimestamp = "X-Backflip-Timestamp"
	HeaderSignature = "X-Backflip-Signature"

	// MaxSkew is how far a request's timestamp may be from the receiver's
	// clock, either way.
	MaxSkew = 5 * time.Minute
	// MaxBodyBytes caps every protocol body.
	MaxBodyBytes = 64 << 10
	// MaxInstanceLen bounds an instance id (it becomes part of keys).
	MaxInstanceLen = 128
)

// Errors of the protocol. A receiver answers all of them with 401 and no
// detail; the detail is for its log.
var (
	ErrUnsigned     = errors.New("request not signed")
	ErrBadSignature = errors.New("signature does not match")
	ErrStale        = errors.New("timestamp outside the 5-minute window")
	ErrInvalid      = errors.New("invalid runtime protocol data")
)

// Sign returns the signature header value for body at ts:
// "v1=" + hex(HMAC-SHA256(secret, "v1:" + ts + ":" + body)).
func Sign(secret []byte, ts int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("v1:" + strconv.FormatInt(ts, 10) + ":"))
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// SignRequest sets the timestamp and signature headers of r for body.
func SignRequest(r *http.Request, secret []byte, now time.Time, body []byte) {
	ts := now.Unix()
	r.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	r.Header.Set(HeaderSignature, Sign(secret, ts, body))
}

// Verify checks a request's timestamp and signature headers over body. The
// signature is compared in constant time, and only after the timestamp is
// known to be in the window, so a replay outside the window fails even with
// a valid signature. An empty secret verifies nothing.
func Verify(secret []byte, now time.Time, tsHeader, sigHeader string, body []byte) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: no secret configured", ErrBadSignature)
	}
	if tsHeader == "" || sigHeader == "" {
		return ErrUnsigned
	}
	ts, err := strconv.ParseInt(tsHeader, 10, 64)
	// Only the plain decimal form is accepted (found by FuzzRuntimeSignature):
	// the signature below is computed over FormatInt(ts), so without this
	// "+1764072000" or "01764072000" verified with the signature of
	// "1764072000" although the contract signs the header as sent, and, the
	// ReplayCache keying on the header text, a captured request could be
	// replayed inside the window under such a rewritten timestamp.
	if err != nil || len(tsHeader) > 12 || strconv.FormatInt(ts, 10) != tsHeader {
		return fmt.Errorf("%w: timestamp %q is not unix seconds", ErrStale, truncate(tsHeader, 20))
	}
	skew := now.Sub(time.Unix(ts, 0))
	if skew > MaxSkew || skew < -MaxSkew {
		return fmt.Errorf("%w: %s off", ErrStale, skew.Round(time.Second))
	}
	want := Sign(secret, ts, body)
	if !hmac.Equal([]byte(want), []byte(sigHeader)) {
		return ErrBadSignature
	}
	return nil
}

// ReadSigned reads at most MaxBodyBytes of r's body and verifies it. The
// body is returned only when the signature holds.
func ReadSigned(r *http.Request, secret []byte, now time.Time) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if len(body) > MaxBodyBytes {
		return nil, fmt.Errorf("%w: body larger than %d bytes", ErrInvalid, MaxBodyBytes)
	}
	if err := Verify(secret, now, r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body); err != nil {
		return nil, err
	}
	return body, nil
}

// AbortSignal is the body backflip POSTs to <instance url>/backflip/v1/abort.
type AbortSignal struct {
	Op          string `json:"op"`
	Route       string `json:"route"`
	Epoch       int64  `json:"epoch"`
	ActiveAfter string `json:"active_after"`
	From        string `json:"from"`
}

// Validate checks every name before a receiver acts on it.
func (s *AbortSignal) Validate() error {
	if err := routing.ValidateOpID(s.Op); err != nil {
		return err
	}
	if err := routing.ValidateRoute(s.Route); err != nil {
		return err
	}
	if err := routing.ValidateVersion(s.ActiveAfter); err != nil {
		return fmt.Errorf("active_after: %w", err)
	}
	if err := routing.ValidateVersion(s.From); err != nil {
		return fmt.Errorf("from: %w", err)
	}
	if s.Epoch < 1 {
		return fmt.Errorf("%w: epoch %d", ErrInvalid, s.Epoch)
	}
	if s.From == s.ActiveAfter {
		return fmt.Errorf("%w: from and active_after are both %s", ErrInvalid, s.From)
	}
	return nil
}

// AbortReply is the instance's answer to the signal.
type AbortReply struct {
	InFlight int `json:"inflight"`
	Aborted  int `json:"aborted"`
}

// Validate refuses negative or inconsistent counts.
func (a *AbortReply) Validate() error {
	if a.InFlight < 0 || a.Aborted < 0 || a.Aborted > a.InFlight {
		return fmt.Errorf("%w: inflight %d, aborted %d", ErrInvalid, a.InFlight, a.Aborted)
	}
	return nil
}

// AckReport is what a runtime POSTs to the bot's /v1/runtime/acks once the
// aborted requests are re-issued.
type AckReport struct {
	Op       string `json:"op"`
	Instance string `json:"instance"`
	Reissued int    `json:"reissued"`
}

// Validate checks the names and count.
func (a *AckReport) Validate() error {
	if err := routing.ValidateOpID(a.Op); err != nil {
		return err
	}
	if err := ValidateInstance(a.Instance); err != nil {
		return err
	}
	if a.Reissued < 0 {
		return fmt.Errorf("%w: reissued %d", ErrInvalid, a.Reissued)
	}
	return nil
}

// InstanceRecord is what a runtime instance keeps, under a lease, at
// <prefix>/runtime/instances/<id> (directly, or through the bot's heartbeat
// endpoint, which takes the same body).
type InstanceRecord struct {
	ID string `json:"id"`
	// URL is where an HTTP runtime receives the abort signal; empty for
	// runtimes that watch etcd through the SDK.
	URL string `json:"url,omitempty"`
	// InFlight counts running requests by route and version.
	InFlight map[string]map[string]int `json:"inflight"`
}

// Validate checks the id, URL and every count.
func (r *InstanceRecord) Validate() error {
	if err := ValidateInstance(r.ID); err != nil {
		return err
	}
	if r.URL != "" && !strings.HasPrefix(r.URL, "http://") && !strings.HasPrefix(r.URL, "https://") {
		return fmt.Errorf("%w: instance %s: url %q is not http(s)", ErrInvalid, r.ID, truncate(r.URL, 100))
	}
	for route, versions := range r.InFlight {
		if err := routing.ValidateRoute(route); err != nil {
			return fmt.Errorf("instance %s: %w", r.ID, err)
		}
		for version, n := range versions {
			if err := routing.ValidateVersion(version); err != nil {
				return fmt.Errorf("instance %s route %s: %w", r.ID, route, err)
			}
			if n < 0 {
				return fmt.Errorf("%w: instance %s: negative in-flight count", ErrInvalid, r.ID)
			}
		}
	}
	return nil
}

// AckRecord is an instance's acknowledgement of one op, kept (leased, 7
// days) at <prefix>/runtime/acks/<op>/<instance>. Reissued is nil until the
// aborted requests have been re-issued.
type AckRecord struct {
	InFlight   int       `json:"inflight"`
	Aborted    int       `json:"aborted"`
	Reissued   *int      `json:"reissued"`
	AppliedRev int64     `json:"applied_rev"`
	At         time.Time `json:"at"`
}

// Validate refuses counts no acknowledgement can have. Added because
// FuzzAckTotals found WaitAcks adding up whatever a runtime (which may
// write runtime/acks/) stored there, so the rollback's report could say
// "in-flight 0, 1 aborted" or show negative requests.
func (a *AckRecord) Validate() error {
	if a.InFlight < 0 || a.Aborted < 0 || a.Aborted > a.InFlight {
		return fmt.Errorf("%w: inflight %d, aborted %d", ErrInvalid, a.InFlight, a.Aborted)
	}
	if a.Reissued != nil && (*a.Reissued < 0 || *a.Reissued > a.Aborted) {
		return fmt.Errorf("%w: reissued %d, aborted %d", ErrInvalid, *a.Reissued, a.Aborted)
	}
	return nil
}

// ValidateInstance checks an instance id: 1 to 128 bytes of letters,
// digits, '.', '_', '-' and ':'.
func ValidateInstance(id string) error {
	if id == "" || len(id) > MaxInstanceLen {
		return fmt.Errorf("%w: instance id must be 1 to %d bytes", ErrInvalid, MaxInstanceLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || c == ':') {
			return fmt.Errorf("%w: instance id %q: character %q not allowed", ErrInvalid, truncate(id, 40), c)
		}
	}
	return nil
}

// Keys builds the runtime keys under a prefix.
type Keys struct{ Prefix string }

// Instances is the prefix of all instance records.
func (k Keys) Instances() string { return k.Prefix + "/runtime/instances/" }

// Instance is one instance's record key.
func (k Keys) Instance(id string) string { return k.Instances() + id }

// Acks is the prefix of one op's acknowledgements.
func (k Keys) Acks(op string) string { return k.Prefix + "/runtime/acks/" + op + "/" }

// Ack is one instance's acknowledgement key for op.
func (k Keys) Ack(op, id string) string { return k.Acks(op) + id }

// Decode strictly decodes a protocol body or record into v (unknown fields
// and trailing data refused) and validates it when v has a Validate method.
func Decode(data []byte, v interface{ Validate() error }) error {
	if len(data) > MaxBodyBytes {
		return fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxBodyBytes)
	}
	if err := strictjson.Decode(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return v.Validate()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
