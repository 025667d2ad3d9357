package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/strictjson"
	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// SchemaVersion is the version of Event this code writes.
const SchemaVersion = 1

// Kind is what an event records.
type Kind string

// The kinds of the contract.
const (
	KindRollback        Kind = "model.rollback"
	KindPromote         Kind = "model.promote"
	KindRollbackRefused Kind = "rollback.refused"
	KindRollbackFailed  Kind = "rollback.failed"
	KindOpRecovered     Kind = "op.recovered"
	KindOpAbandoned     Kind = "op.abandoned"
	KindDrillScheduled  Kind = "drill.scheduled"
	KindDrillCompleted  Kind = "drill.completed"
	KindDrillFailed     Kind = "drill.failed"
	KindDrillSkipped    Kind = "drill.skipped"
	KindDrillSuperseded Kind = "drill.superseded"
	KindColdTarget      Kind = "warmkeep.cold_target"
)

// Valid reports whether k is one of the contract's kinds.
func (k Kind) Valid() bool {
	switch k {
	case KindRollback, KindPromote, KindRollbackRefused, KindRollbackFailed, KindOpRecovered, KindOpAbandoned,
		KindDrillScheduled, KindDrillCompleted, KindDrillFailed, KindDrillSkipped, KindDrillSuperseded, KindColdTarget:
		return true
	}
	return false
}

// Limits on free text, so a pasted reason cannot bloat etcd or the table.
const (
	MaxText    = 2000
	MaxDetails = 16 << 10
	// MaxValue bounds an encoded event in the outbox.
	MaxValue = 64 << 10
)

// Event is one audit event: a row of audit_events, and the JSON value of an
// outbox key. Timings are phase → milliseconds.
type Event struct {
	EventID          uuid.UUID          `json:"event_id"`
	OpID             uuid.UUID          `json:"op_id"`
	Kind             Kind               `json:"kind"`
	Route            string             `json:"route"`
	FromVersion      string             `json:"from_version,omitempty"`
	ToVersion        string             `json:"to_version,omitempty"`
	Actor            string             `json:"actor"`
	ActorName        string             `json:"actor_name,omitempty"`
	Channel          string             `json:"channel,omitempty"`
	Reason           string             `json:"reason,omitempty"`
	Outcome          string             `json:"outcome,omitempty"`
	AffectedRequests *int               `json:"affected_requests,omitempty"`
	Timings          map[string]float64 `json:"timings,omitempty"`
	EtcdRevision     int64              `json:"etcd_revision,omitempty"`
	Details          json.RawMessage    `json:"details,omitempty"`
	SchemaVersion    int                `json:"schema_version"`
	OccurredAt       time.Time          `json:"occurred_at"`
}

// ErrInvalid marks an event that may not be recorded as it is.
var ErrInvalid = errors.New("invalid audit event")

// Validate checks an event before it is written anywhere.
func (e *Event) Validate() error {
	if e.EventID == uuid.Nil || e.OpID == uuid.Nil {
		return fmt.Errorf("%w: event_id and op_id are required", ErrInvalid)
	}
	if !e.Kind.Valid() {
		return fmt.Errorf("%w: kind %q is not one of the contract's kinds", ErrInvalid, e.Kind)
	}
	if err := routing.ValidateRoute(e.Route); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for name, v := range map[string]string{"from_version": e.FromVersion, "to_version": e.ToVersion} {
		if v == "" {
			continue
		}
		if err := routing.ValidateVersion(v); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
		}
	}
	if strings.TrimSpace(e.Actor) == "" {
		return fmt.Errorf("%w: actor is required", ErrInvalid)
	}
	for name, v := range map[string]string{"actor": e.Actor, "actor_name": e.ActorName, "channel": e.Channel, "reason": e.Reason, "outcome": e.Outcome} {
		if len(v) > MaxText {
			return fmt.Errorf("%w: %s is %d bytes, at most %d allowed", ErrInvalid, name, len(v), MaxText)
		}
	}
	if e.AffectedRequests != nil && *e.AffectedRequests < 0 {
		return fmt.Errorf("%w: affected_requests is negative", ErrInvalid)
	}
	for phase, ms := range e.Timings {
		if phase == "" || len(phase) > 64 || ms < 0 || math.IsNaN(ms) || math.IsInf(ms, 0) {
			return fmt.Errorf("%w: timing %q = %v", ErrInvalid, phase, ms)
		}
	}
	if len(e.Details) > MaxDetails {
		return fmt.Errorf("%w: details are %d bytes, at most %d allowed", ErrInvalid, len(e.Details), MaxDetails)
	}
	if len(e.Details) > 0 && !json.Valid(e.Details) {
		return fmt.Errorf("%w: details are not JSON", ErrInvalid)
	}
	if e.SchemaVersion < 1 || e.SchemaVersion > SchemaVersion {
		return fmt.Errorf("%w: schema_version %d (this build reads 1..%d)", ErrInvalid, e.SchemaVersion, SchemaVersion)
	}
	if e.OccurredAt.IsZero() {
		return fmt.Errorf("%w: occurred_at is required", ErrInvalid)
	}
	return nil
}

// Encode validates and encodes the event for the outbox.
func (e *Event) Encode() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxValue {
		return nil, fmt.Errorf("%w: encoded event is %d bytes, at most %d allowed", ErrInvalid, len(b), MaxValue)
	}
	return b, nil
}

// DecodeEvent strictly decodes an outbox value.
func DecodeEvent(value []byte) (Event, error) {
	var e Event
	if len(value) > MaxValue {
		return e, fmt.Errorf("%w: value is %d bytes, at most %d allowed", ErrInvalid, len(value), MaxValue)
	}
	if err := strictjson.Decode(value, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Keys builds the outbox keys under a prefix.
type Keys struct{ Prefix string }

// Outbox is the prefix of every waiting event.
func (k Keys) Outbox() string { return k.Prefix + "/audit/outbox/" }

// Event is the key of op's seq-th event. The sequence is zero-padded so
// keys sort in the order the op's events happened.
func (k Keys) Event(op uuid.UUID, seq int) string {
	return k.Outbox() + op.String() + "/" + fmt.Sprintf("%06d", seq)
}

// Quarantine is where malformed outbox values are moved, so they are kept
// for a person to look at instead of being retried forever or dropped.
func (k Keys) Quarantine() string { return k.Prefix + "/audit/quarantine/" }

// ParseEventKey returns the op and sequence of an outbox key.
func (k Keys) ParseEventKey(key string) (uuid.UUID, int, error) {
	rest, ok := strings.CutPrefix(key, k.Outbox())
	if !ok {
		return uuid.Nil, 0, fmt.Errorf("%w: %s is not an outbox key", ErrInvalid, key)
	}
	opStr, seqStr, ok := strings.Cut(rest, "/")
	if !ok {
		return uuid.Nil, 0, fmt.Errorf("%w: %s has no sequence", ErrInvalid, key)
	}
	op, err := uuid.Parse(opStr)
	if err != nil {
		return uuid.Nil, 0, fmt.Errorf("%w: %s: op is not a uuid", ErrInvalid, key)
	}
	seq, err := strconv.Atoi(seqStr)
	if err != nil || seq < 0 || len(seqStr) != 6 {
		return uuid.Nil, 0, fmt.Errorf("%w: %s: sequence is not six digits", ErrInvalid, key)
	}
	return op, seq, nil
}

// OutboxOp is the etcd operation that puts e into the outbox as its op's
// seq-th event. The flip transaction carries the first one, so no flip
// exists without its audit record and no record without its flip.
func OutboxOp(k Keys, seq int, e Event) (clientv3.Op, error) {
	if seq < 0 || seq > 999999 {
		return clientv3.Op{}, fmt.Errorf("%w: sequence %d outside 0..999999", ErrInvalid, seq)
	}
	b, err := e.Encode()
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(k.Event(e.OpID, seq), string(b)), nil
}
