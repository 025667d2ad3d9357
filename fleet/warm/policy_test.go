package warm

import (
	"errors"
	"strings"
	"testing"

	"github.com/backflip-dev/backflip/fleet/routing"
)

func TestDecodePolicy(t *testing.T) {
	const key = "/backflip/policies/chat-70b"
	for _, tc := range []struct {
		name   string
		doc    string
		quorum float64
		err    string // substring of the error; "" means accepted
	}{
		{name: "Full", doc: `{"warm_quorum":0.75,"owners":["U1","S2"],"drill":{"cron":"0 3 * * 1","announce":["24h"]}}`, quorum: 0.75},
		{name: "QuorumOne", doc: `{"warm_quorum":1}`, quorum: 1},
		{name: "NoQuorum", doc: `{"owners":["U1"]}`},
		{name: "NullQuorum", doc: `{"warm_quorum":null}`},
		{name: "Empty", doc: `{}`},
		{name: "UnknownFieldsLeftToOthers", doc: `{"warm_quorum":0.5,"future":{"x":1}}`, quorum: 0.5},
		{name: "Whitespace", doc: " {\"warm_quorum\": 0.9}\n", quorum: 0.9},
		{name: "QuorumZero", doc: `{"warm_quorum":0}`, err: "warm_quorum: quorum 0 is outside (0, 1]"},
		{name: "QuorumNegative", doc: `{"warm_quorum":-0.5}`, err: "outside (0, 1]"},
		{name: "QuorumAboveOne", doc: `{"warm_quorum":1.01}`, err: "outside (0, 1]"},
		{name: "QuorumString", doc: `{"warm_quorum":"0.75"}`, err: `warm_quorum must be a number in (0, 1], got "0.75"`},
		{name: "QuorumHuge", doc: `{"warm_quorum":1e400}`, err: "warm_quorum must be a number"},
		{name: "NotJSON", doc: `warm_quorum=0.75`, err: "not a JSON object"},
		{name: "Truncated", doc: `{"warm_quorum":0.75`, err: "not a JSON object"},
		{name: "Array", doc: `[0.75]`, err: "not a JSON object"},
		{name: "Null", doc: `null`, err: "policy is null"},
		{name: "Trailing", doc: `{"warm_quorum":0.75} {}`, err: "trailing data"},
		{name: "BrokenOtherField", doc: `{"warm_quorum":0.75,"owners":[}`, err: "not a JSON object"},
		{name: "TooBig", doc: `{"owners":["` + strings.Repeat("U", maxPolicyBytes) + `"]}`, err: "at most 65536 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := DecodePolicy(key, []byte(tc.doc))
			if tc.err == "" {
				if err != nil || p.WarmQuorum != tc.quorum {
					t.Fatalf("DecodePolicy = %+v, %v; want quorum %v", p, err, tc.quorum)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted as %+v", p)
			}
			if !errors.Is(err, routing.ErrMalformed) || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v; want a malformed error naming %s and containing %q", err, key, tc.err)
			}
		})
	}
}

// FuzzDecodePolicy: a policy document is operator input; decoding it must
// never panic, and an accepted quorum is always in (0, 1] or unset.
func FuzzDecodePolicy(f *testing.F) {
	for _, s := range []string{`{"warm_quorum":0.75,"owners":["U1"],"drill":{"cron":"0 3 * * 1"}}`, `{}`, `null`,
		`{"warm_quorum":null}`, `{"warm_quorum":1e-300}`, `[`, `{"warm_quorum":0.5}x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := DecodePolicy("/p/policies/r", doc)
		if err != nil {
			if p != (Policy{}) {
				t.Fatalf("error %v with a non-zero policy %+v", err, p)
			}
			return
		}
		if p.WarmQuorum != 0 && validQuorum(p.WarmQuorum) != nil {
			t.Fatalf("accepted quorum %v", p.WarmQuorum)
		}
	})
}
