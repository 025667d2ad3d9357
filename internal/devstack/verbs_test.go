package devstack

import (
	"strings"
	"testing"

	"github.com/backflip-dev/backflip/commands"
)

// The stack itself is driven end to end through `backflip dev` by
// cmd/backflip's tests; these cover the small parsers of the dev-only
// verbs.

func TestSplitVerb(t *testing.T) {
	for _, tc := range []struct {
		name, line, verb, rest string
	}{
		{"Empty", "", "", ""},
		{"VerbOnly", "status", "status", ""},
		{"Slash", "/rollback chat-70b latency spike", "/rollback", "chat-70b latency spike"},
		{"TabsAndSpaces", "rollback\t  chat-70b  --now  x ", "rollback", "chat-70b  --now  x"},
		{"UnicodeSpace", "status\u00a0chat-70b", "status", "chat-70b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verb, rest := splitVerb(tc.line)
			if verb != tc.verb || rest != tc.rest {
				t.Fatalf("splitVerb(%q) = %q, %q; want %q, %q", tc.line, verb, rest, tc.verb, tc.rest)
			}
		})
	}
}

func TestParsePromote(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want commands.PromoteRequest
		err  string
	}{
		{"RouteVersionReason", "chat-70b v43 new weights", commands.PromoteRequest{Route: "chat-70b", Version: "v43", Reason: "new weights"}, ""},
		{"NoReason", "chat-70b v43", commands.PromoteRequest{Route: "chat-70b", Version: "v43"}, ""},
		{"FlagsAnywhere", "chat-70b --dry-run v43 --force-cold why not",
			commands.PromoteRequest{Route: "chat-70b", Version: "v43", Reason: "why not", ForceCold: true, DryRun: true}, ""},
		{"MissingVersion", "chat-70b", commands.PromoteRequest{}, "needs a route and the version"},
		{"Nothing", "", commands.PromoteRequest{}, "needs a route and the version"},
		{"UnknownFlag", "chat-70b v43 --now", commands.PromoteRequest{}, `unknown flag "--now"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePromote(tc.text)
			if tc.err != "" {
				if commands.ErrorCode(err) != commands.EINVALID || !strings.Contains(commands.ErrorMessage(err), tc.err) {
					t.Fatalf("parsePromote(%q) error %v; want EINVALID with %q", tc.text, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parsePromote(%q) = %+v, %v; want %+v", tc.text, got, err, tc.want)
			}
		})
	}
}

// FuzzParsePromote checks that whatever is typed after promote is either
// refused as bad input or read into a request that names a route and a
// version and carries no flag in its reason.
func FuzzParsePromote(f *testing.F) {
	for _, s := range []string{"chat-70b v43 new weights", "--force-cold", "a b --dry-run c", "", "x --", "\u00a0x\ty z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		req, err := parsePromote(text)
		if err != nil {
			if commands.ErrorCode(err) != commands.EINVALID {
				t.Fatalf("parsePromote(%q): %v is not EINVALID", text, err)
			}
			return
		}
		if req.Route == "" || req.Version == "" {
			t.Fatalf("parsePromote(%q) accepted %+v without a route and version", text, req)
		}
		for _, w := range strings.Fields(req.Reason) {
			if strings.HasPrefix(w, "--") {
				t.Fatalf("parsePromote(%q) kept the flag %q in the reason", text, w)
			}
		}
	})
}
