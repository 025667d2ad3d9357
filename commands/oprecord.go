package commands

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/strictjson"
)

// Op phases recorded in the op record. An op record is written three times
// at most: when the op starts (before its warm check), in the flip
// transaction, and when it ends. That is all recovery needs: an op that
// never reached "flipped" never changed the route (the flip transaction
// writes the route and the phase together), and one that did needs only
// its after-flip phases finished.
const (
	OpPhaseStarted = "started"
	OpPhaseFlipped = "flipped"
	OpPhaseDone    = "done"
)

// OpRecord is the value at <prefix>/ops/<op>: the contract's fields plus
// what recovery needs to finish an op on another replica.
type OpRecord struct {
	Kind    routing.Kind       `json:"kind"`
	Route   string             `json:"route"`
	From    string             `json:"from"`
	To      string             `json:"to"`
	Phase   string             `json:"phase"`
	Timings map[string]float64 `json:"timings"`
	Actor   string             `json:"actor"`
	Reason  string             `json:"reason"`
	Channel string             `json:"channel"`
	TS      string             `json:"ts"`
	Idem    string             `json:"idem"`
	// Owner is the running replica's lease id (hex); recovery claims the
	// op only when that lease is gone.
	Owner   string `json:"owner"`
	Outcome string `json:"outcome"`

	ActorName string `json:"actor_name,omitempty"`
	// ExpectRev is the route revision the flip was guarded on.
	ExpectRev int64 `json:"expect_rev,omitempty"`
	// Rev is the flip's revision, recorded when the op is claimed or
	// finished (until then the op key's ModRevision is the flip revision,
	// as both are written by the same transaction).
	Rev   int64 `json:"rev,omitempty"`
	Epoch int64 `json:"epoch,omitempty"`
	// ForcedCold records a --force-cold flip to a target found not warm.
	ForcedCold bool      `json:"forced_cold,omitempty"`
	Started    time.Time `json:"started"`
	// Report is the final timing report, so a retried request can answer
	// with the first one's words.
	Report string `json:"report,omitempty"`
	// Detail says why an op was refused or failed, for the same reason.
	Detail string `json:"detail,omitempty"`
}

// maxOpRecord bounds a stored op record before it is decoded.
const maxOpRecord = 64 << 10

// Validate checks the invariants of a stored op record.
func (r *OpRecord) Validate() error {
	if !r.Kind.Valid() {
		return fmt.Errorf("kind %q is not a route change kind", r.Kind)
	}
	if err := routing.ValidateRoute(r.Route); err != nil {
		return err
	}
	if r.To != "" {
		if err := routing.ValidateVersion(r.To); err != nil {
			return fmt.Errorf("to: %w", err)
		}
	}
	if r.From != "" {
		if err := routing.ValidateVersion(r.From); err != nil {
			return fmt.Errorf("from: %w", err)
		}
	}
	switch r.Phase {
	case OpPhaseStarted, OpPhaseFlipped, OpPhaseDone:
	default:
		return fmt.Errorf("phase %q is not started, flipped or done", r.Phase)
	}
	if r.Phase == OpPhaseDone && r.Outcome == "" {
		return fmt.Errorf("a done op has no outcome")
	}
	if r.Phase != OpPhaseDone && r.Outcome != "" {
		return fmt.Errorf("an op in phase %s has outcome %q", r.Phase, r.Outcome)
	}
	if r.Phase != OpPhaseStarted && r.To == "" {
		return fmt.Errorf("a flipped op has no target")
	}
	if _, err := r.OwnerLease(); err != nil {
		return err
	}
	if r.Idem != "" {
		if err := validateIdemKey(r.Idem); err != nil {
			return err
		}
	}
	return nil
}

// OwnerLease parses Owner.
func (r *OpRecord) OwnerLease() (clientv3.LeaseID, error) {
	id, err := strconv.ParseInt(r.Owner, 16, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("owner %q is not a lease id", r.Owner)
	}
	return clientv3.LeaseID(id), nil
}

func (r *OpRecord) encode() (string, error) {
	if err := r.Validate(); err != nil {
		return "", fmt.Errorf("op record: %w", err)
	}
	b, err := json.Marshal(r)
	return string(b), err
}

// DecodeOpRecord strictly decodes the op record stored at key.
func DecodeOpRecord(key string, value []byte) (OpRecord, error) {
	var r OpRecord
	if len(value) > maxOpRecord {
		return r, &routing.MalformedError{Key: key, Err: fmt.Errorf("value is %d bytes, at most %d allowed", len(value), maxOpRecord)}
	}
	if err := strictjson.Decode(value, &r); err != nil {
		return OpRecord{}, &routing.MalformedError{Key: key, Err: err}
	}
	if err := r.Validate(); err != nil {
		return OpRecord{}, &routing.MalformedError{Key: key, Err: err}
	}
	return r, nil
}

func leaseHex(id clientv3.LeaseID) string { return strconv.FormatInt(int64(id), 16) }

// validateIdemKey accepts 1 to 128 characters of letters, digits and
// '.', '_', ':', '-': keys come from chat transports (trigger ids, event
// ids, minted uuids) and become part of an etcd key.
func validateIdemKey(k string) error {
	if k == "" || len(k) > 128 {
		return Errorf(EINVALID, "idempotency key must be 1 to 128 characters")
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return Errorf(EINVALID, "idempotency key has a character %q that is not allowed", c)
		}
	}
	return nil
}

// timingsMS converts phase timings to the milliseconds of the contract.
func timingsMS(ts []PhaseTiming, total time.Duration) map[string]float64 {
	m := make(map[string]float64, len(ts)+1)
	for _, t := range ts {
		m[string(t.Phase)] = ms(t.Took)
	}
	m["total"] = ms(total)
	return m
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}
