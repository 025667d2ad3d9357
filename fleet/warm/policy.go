package warm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// maxPolicyBytes bounds a policy document before it is decoded at all.
const maxPolicyBytes = 64 << 10

// Keys builds the etcd keys this package reads and writes under one prefix
// (BACKFLIP_ETCD_PREFIX). Node records are built by fleetapi.Keys and route
// configs by routing.Keyspace.
type Keys struct{ Prefix string }

// Policy is the key of a route's policy document. The route name must have
// been validated.
func (k Keys) Policy(route string) string { return k.Prefix + "/policies/" + route }

// WarmKeeps is the prefix of the warm-keep monitor's per-route state.
func (k Keys) WarmKeeps() string { return k.Prefix + "/warmkeep/" }

// WarmKeep is the key of one route's warm-keep state.
func (k Keys) WarmKeep(route string) string { return k.WarmKeeps() + route }

// Policy is the part of a route's policy document (policies/<route>) that
// warm checks use. Other packages own the other fields (owners, drill).
type Policy struct {
	// WarmQuorum is the share of the active version's GPUs that must be
	// warm on a rollback target, in (0, 1]. Zero means the document does
	// not set it and the default (BACKFLIP_WARM_QUORUM) applies.
	WarmQuorum float64
}

// DecodePolicy decodes the policy document stored at key. The document must
// be one JSON object with nothing after it, at most 64 KiB; warm_quorum, when
// present and not null, must be a number in (0, 1]. Fields other than
// warm_quorum may be present and are not interpreted here. A refused
// document is a *routing.MalformedError naming the key (errors.Is
// routing.ErrMalformed), because a policy that cannot be read must stop a
// rollback check rather than silently fall back to the default quorum.
func DecodePolicy(key string, value []byte) (Policy, error) {
	if len(value) > maxPolicyBytes {
		return Policy{}, &routing.MalformedError{Key: key, Err: fmt.Errorf("policy is %d bytes, at most %d allowed", len(value), maxPolicyBytes)}
	}
	// Only warm_quorum is interpreted; the other fields are kept raw, so a
	// document whose owners or drill part is not even JSON is still refused
	// while their meaning is left to the packages that own them.
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(value))
	if err := dec.Decode(&fields); err != nil {
		return Policy{}, &routing.MalformedError{Key: key, Err: fmt.Errorf("policy is not a JSON object: %v", err)}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Policy{}, &routing.MalformedError{Key: key, Err: errors.New("trailing data after the policy object")}
	}
	if fields == nil {
		// "null" decodes into a nil map without error.
		return Policy{}, &routing.MalformedError{Key: key, Err: errors.New("policy is null, not a JSON object")}
	}
	raw, ok := fields["warm_quorum"]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return Policy{}, nil
	}
	var q float64
	if err := json.Unmarshal(raw, &q); err != nil {
		return Policy{}, &routing.MalformedError{Key: key, Err: fmt.Errorf("warm_quorum must be a number in (0, 1], got %s", clip(string(raw), 40))}
	}
	if err := validQuorum(q); err != nil {
		return Policy{}, &routing.MalformedError{Key: key, Err: fmt.Errorf("warm_quorum: %w", err)}
	}
	return Policy{WarmQuorum: q}, nil
}

func validQuorum(q float64) error {
	// The comparison is written so that NaN fails it too.
	if !(q > 0 && q <= 1) {
		return fmt.Errorf("quorum %v is outside (0, 1]", q)
	}
	return nil
}
