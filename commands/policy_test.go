package commands

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/backflip-dev/backflip/fleet/routing"
)

func TestDecodeOwners(t *testing.T) {
	const key = "/backflip/policies/chat-70b"
	hundred := make([]string, MaxOwners)
	for i := range hundred {
		hundred[i] = fmt.Sprintf(`"U%03d"`, i)
	}
	for _, tc := range []struct {
		name   string
		doc    string
		owners []string
		err    string // substring of the error; "" means accepted
	}{
		{name: "Full", doc: `{"warm_quorum":0.75,"owners":["U0123ABCD","S0999"],"drill":{"cron":"0 3 * * 1"}}`, owners: []string{"U0123ABCD", "S0999"}},
		{name: "EnterpriseUser", doc: `{"owners":["W012AB"]}`, owners: []string{"W012AB"}},
		{name: "AbsentMeansNoNarrowing", doc: `{"warm_quorum":0.5}`},
		{name: "NullMeansNoNarrowing", doc: `{"owners":null}`},
		{name: "EmptyMeansNoNarrowing", doc: `{"owners":[]}`, owners: []string{}},
		{name: "EmptyObject", doc: `{}`},
		{name: "Whitespace", doc: " {\n \"owners\" : [ \"U1\" ] }\n", owners: []string{"U1"}},
		{name: "EscapedStillChecked", doc: `{"owners":["\u0055\u0031"]}`, owners: []string{"U1"}},
		{name: "DuplicatesDropped", doc: `{"owners":["U1","S2","U1"]}`, owners: []string{"U1", "S2"}},
		{name: "OtherFieldsLeftToOthers", doc: `{"owners":["U1"],"future":{"x":[1,2,{"y":null}]}}`, owners: []string{"U1"}},
		{name: "HundredOwners", doc: `{"owners":[` + strings.Join(hundred, ",") + `]}`, owners: hundredIDs()},
		{name: "LongestID", doc: `{"owners":["U` + strings.Repeat("A", 31) + `"]}`, owners: []string{"U" + strings.Repeat("A", 31)}},

		{name: "TooManyOwners", doc: `{"owners":[` + strings.Join(hundred, ",") + `,"U999"]}`, err: "101 entries, at most 100"},
		{name: "IDTooLong", doc: `{"owners":["U` + strings.Repeat("A", 32) + `"]}`, err: "not a Slack user or user-group ID"},
		{name: "IDTooShort", doc: `{"owners":["U"]}`, err: `owners[0] "U"`},
		{name: "EmptyID", doc: `{"owners":[""]}`, err: "not a Slack user or user-group ID"},
		{name: "LowerCaseID", doc: `{"owners":["u0123"]}`, err: "not a Slack user or user-group ID"},
		{name: "MentionSyntax", doc: `{"owners":["<@U0123>"]}`, err: "not a Slack user or user-group ID"},
		{name: "SpaceInID", doc: `{"owners":["U01 23"]}`, err: "not a Slack user or user-group ID"},
		{name: "NULByte", doc: `{"owners":["U01\u0000"]}`, err: "not a Slack user or user-group ID"},
		{name: "NonASCII", doc: `{"owners":["U0１"]}`, err: "not a Slack user or user-group ID"},
		{name: "NullElement", doc: `{"owners":["U1",null]}`, err: "owners[1] must be a string, got null"},
		{name: "NumberElement", doc: `{"owners":[12345]}`, err: "owners[0] must be a string"},
		{name: "NestedArray", doc: `{"owners":[["U1"]]}`, err: "owners[0] must be a string"},
		{name: "OwnersString", doc: `{"owners":"U1"}`, err: "owners must be an array"},
		{name: "OwnersObject", doc: `{"owners":{"U1":true}}`, err: "owners must be an array"},
		{name: "OwnersFalse", doc: `{"owners":false}`, err: "owners must be an array"},
		{name: "DuplicateOwnersField", doc: `{"owners":["U1"],"owners":null}`, err: `more than one "owners" field`},
		{name: "CaseVariantField", doc: `{"Owners":["U1"]}`, err: `the field is spelled "owners"`},
		{name: "CaseVariantAfterReal", doc: `{"owners":["U1"],"OWNERS":[]}`, err: `the field is spelled "owners"`},
		{name: "NotJSON", doc: `owners=U1`, err: "not a JSON object"},
		{name: "Empty", doc: ``, err: "not a JSON object"},
		{name: "Null", doc: `null`, err: "not a JSON object but null"},
		{name: "Array", doc: `["U1"]`, err: "not a JSON object but an array"},
		{name: "String", doc: `"U1"`, err: "not a JSON object"},
		{name: "Truncated", doc: `{"owners":["U1"]`, err: "not a JSON object"},
		{name: "TruncatedString", doc: `{"owners":["U1`, err: "owners"},
		{name: "BrokenOtherField", doc: `{"drill":{,"owners":["U1"]}`, err: `policy field "drill"`},
		{name: "Trailing", doc: `{"owners":["U1"]} {}`, err: "trailing data"},
		{name: "TrailingGarbage", doc: `{"owners":["U1"]}x`, err: "trailing data"},
		{name: "TooBig", doc: `{"owners":["U1"],"pad":"` + strings.Repeat("x", maxPolicyBytes) + `"}`, err: "at most 65536 allowed"},
		{name: "DeepNesting", doc: `{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, err: `policy field "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			owners, err := DecodeOwners(key, []byte(tc.doc))
			if tc.err == "" {
				if err != nil {
					t.Fatalf("DecodeOwners: %v", err)
				}
				if !slices.Equal(owners, tc.owners) || (owners == nil) != (tc.owners == nil) {
					t.Fatalf("owners = %#v; want %#v", owners, tc.owners)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted as %#v", owners)
			}
			var me *routing.MalformedError
			if !errors.As(err, &me) || me.Key != key || !errors.Is(err, routing.ErrMalformed) {
				t.Fatalf("err = %#v; want a *routing.MalformedError for %s", err, key)
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v; want it to contain %q", err, tc.err)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error is %d bytes long; a hostile value must be clipped: %.100s…", len(err.Error()), err)
			}
		})
	}
}

func hundredIDs() []string {
	ids := make([]string, MaxOwners)
	for i := range ids {
		ids[i] = fmt.Sprintf("U%03d", i)
	}
	return ids
}

// FuzzDecodeOwners: a policy document is operator input stored in etcd;
// decoding it must never panic, every refusal must be a malformed-value
// error naming the key, and every accepted owner must have the shape of a
// Slack ID (so it can be neither markup in a reply nor anything but an ID
// in a comparison).
func FuzzDecodeOwners(f *testing.F) {
	for _, s := range []string{
		`{"warm_quorum":0.75,"owners":["U1","S2"],"drill":{"cron":"0 3 * * 1"}}`,
		`{}`, `null`, `{"owners":null}`, `{"owners":[]}`, `{"owners":["U1",null]}`,
		`{"owners":["U1"],"owners":[]}`, `{"Owners":["U1"]}`, `{"owners":"U1"}`,
		`{"owners":["\u0055\u0031"]}`, `{"owners":["U1"]} x`, `[`, `{"owners":[1e400]}`,
	} {
		f.Add([]byte(s))
	}
	const key = "/p/policies/r"
	// The pattern is the contract's, checked independently of isSlackID so
	// the fuzz target does not test the code with itself.
	idPattern := regexp.MustCompile(`^[A-Z0-9]{2,32}$`)
	f.Fuzz(func(t *testing.T, doc []byte) {
		owners, err := DecodeOwners(key, doc)
		if err != nil {
			var me *routing.MalformedError
			if !errors.As(err, &me) || me.Key != key {
				t.Fatalf("err = %#v; want a *routing.MalformedError for %s", err, key)
			}
			if owners != nil {
				t.Fatalf("owners %q returned with error %v", owners, err)
			}
			return
		}
		if len(owners) > MaxOwners {
			t.Fatalf("%d owners accepted, at most %d allowed", len(owners), MaxOwners)
		}
		seen := map[string]bool{}
		for _, o := range owners {
			if !idPattern.MatchString(o) {
				t.Fatalf("accepted owner %q does not match ^[A-Z0-9]{2,32}$", o)
			}
			if seen[o] {
				t.Fatalf("owner %q returned twice", o)
			}
			seen[o] = true
		}
	})
}
