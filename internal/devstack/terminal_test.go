package devstack

import (
	"strings"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/commands"
)

// The stack itself is driven end to end through `backflip dev` by
// cmd/backflip's tests; these cover the terminal's own small parsers and
// its output.

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

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Minute:                   "10m",
		90 * time.Second:                   "1m30s",
		time.Hour:                          "1h",
		time.Hour + 30*time.Minute:         "1h30m",
		300 * time.Millisecond:             "300ms",
		2*time.Hour + 5*time.Second:        "2h0m5s",
		45 * time.Second:                   "45s",
		time.Minute + 500*time.Millisecond: "1m0.5s",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q; want %q", d, got, want)
		}
	}
}

// TestConsoleNotice checks that a notice arriving while the person is at
// the prompt is printed on its own line and the prompt shown again, and
// that one arriving while a command prints is just a line.
func TestConsoleNotice(t *testing.T) {
	var b strings.Builder
	c := &console{w: &b}
	c.prompt()
	c.notice("recovery: op 1 finished")
	c.printf("status\n")
	c.notice("recovery: op 2 finished")
	want := prompt + "\nrecovery: op 1 finished\n" + prompt + "status\nrecovery: op 2 finished\n"
	if b.String() != want {
		t.Fatalf("console wrote %q; want %q", b.String(), want)
	}
}
