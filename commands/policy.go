package commands

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// Limits on a route's policy document (policies/<route>) as far as owners
// go. The size cap is the one every reader of the document applies (see
// fleet/warm), so no reader decodes more than another would accept.
const (
	maxPolicyBytes = 64 << 10
	// MaxOwners bounds the owners of one route: more than that is a
	// mistake (a whole directory pasted in), not a policy, and every
	// refusal message lists them.
	MaxOwners = 100
	// minIDLen and maxIDLen bound a Slack user or user-group ID.
	minIDLen = 2
	maxIDLen = 32
)

// DecodeOwners returns the owners of a route from its policy document, the
// value stored at key. The document must be one JSON object, at most 64 KiB,
// with nothing after it. Its "owners" field, when present and not null, must
// be an array of at most MaxOwners Slack IDs (^[A-Z0-9]{2,32}$: U… and W…
// users, S… user groups). A missing, null or empty owners field returns no
// owners, which means the route's owners do not narrow who may act.
// Duplicates are dropped; the order is kept.
//
// Fields other than owners (warm_quorum, drill) belong to other packages and
// are not interpreted, but they must be well-formed JSON. Anything refused is
// a *routing.MalformedError naming the key, so that the caller can fail
// closed and tell the operator which key to fix.
//
// Two things are refused that a lenient reader would let through, because
// each could silently widen who may act: a second "owners" field (JSON
// decoders disagree on which one wins) and a field whose name differs from
// "owners" only in case (Go's struct decoding would take it, a map lookup
// would not).
func DecodeOwners(key string, value []byte) ([]string, error) {
	malformed := func(format string, args ...any) error {
		return &routing.MalformedError{Key: key, Err: fmt.Errorf(format, args...)}
	}
	if len(value) > maxPolicyBytes {
		return nil, malformed("policy is %d bytes, at most %d allowed", len(value), maxPolicyBytes)
	}
	raw, found, err := ownersField(value)
	if err != nil {
		return nil, &routing.MalformedError{Key: key, Err: err}
	}
	if !found || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var entries []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &entries) != nil {
		return nil, malformed("owners must be an array of Slack user or user-group IDs, got %s", Clip(string(raw), 40))
	}
	if len(entries) > MaxOwners {
		return nil, malformed("owners has %d entries, at most %d allowed", len(entries), MaxOwners)
	}
	owners := make([]string, 0, len(entries))
	seen := make(map[string]bool, len(entries))
	for i, e := range entries {
		// A null element would unmarshal into "" without error; requiring
		// the string's opening quote refuses it and every other non-string.
		var id string
		if e[0] != '"' || json.Unmarshal(e, &id) != nil {
			return nil, malformed("owners[%d] must be a string, got %s", i, Clip(string(e), 40))
		}
		if !isSlackID(id) {
			return nil, malformed("owners[%d] %q is not a Slack user or user-group ID (2 to 32 capital letters and digits, such as U0123ABCD or S0123ABCD)", i, Clip(id, 40))
		}
		if !seen[id] {
			seen[id] = true
			owners = append(owners, id)
		}
	}
	return owners, nil
}

// ownersField returns the raw value of the top-level "owners" field of the
// policy object in value, walking the object token by token so that
// duplicate and case-variant field names are seen (a decode into a map
// would hide them).
func ownersField(value []byte) (raw json.RawMessage, found bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(value))
	tok, err := dec.Token()
	if err != nil {
		return nil, false, fmt.Errorf("policy is not a JSON object: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, false, fmt.Errorf("policy is not a JSON object but %s", jsonKind(tok))
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false, fmt.Errorf("policy is not a JSON object: %v", err)
		}
		// Inside an object the decoder only yields strings as names.
		name, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false, fmt.Errorf("policy field %q: %v", Clip(name, 40), err)
		}
		switch {
		case name == "owners":
			if found {
				return nil, false, errors.New(`policy has more than one "owners" field`)
			}
			raw, found = v, true
		case strings.EqualFold(name, "owners"):
			return nil, false, fmt.Errorf(`policy field %q: the field is spelled "owners"`, Clip(name, 40))
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, false, fmt.Errorf("policy is not a JSON object: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false, errors.New("trailing data after the policy object")
	}
	return raw, found, nil
}

// jsonKind names the kind of JSON value that starts with tok, for an error
// message that should not repeat a hostile value.
func jsonKind(tok json.Token) string {
	switch tok.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64, json.Number:
		return "a number"
	case string:
		return "a string"
	}
	return "an array"
}

// isSlackID reports whether id has the shape of a Slack user or user-group
// ID: 2 to 32 capital letters and digits.
func isSlackID(id string) bool {
	if len(id) < minIDLen || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// isGroupID reports whether id names a Slack user group (S…) rather than a
// user, the only kind of owner whose members are looked up.
func isGroupID(id string) bool { return strings.HasPrefix(id, "S") && isSlackID(id) }
