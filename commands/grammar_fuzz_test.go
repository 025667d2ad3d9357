package commands

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// FuzzParse checks the grammar's contract on arbitrary chat text: Parse never
// panics; what it accepts renders to text that parses back to an equal
// command and renders the same again; every name it accepts passes the
// routing validators; and what it refuses is an EINVALID *Error with a
// message and a usage line for the person who typed it.
func FuzzParse(f *testing.F) {
	for _, tc := range append(rollbackAccepted(), drillAccepted()...) {
		f.Add(tc.slash, tc.text)
	}
	for _, seed := range []struct{ slash, text string }{
		// Realistic commands, as typed and as Slack's clients mangle them.
		{"/rollback", "chat-70b --to v41 --now latency spike after v42"},
		{"/rollback", "chat-70b \u201clatency spike after v42\u201d --now"},
		{"/rollback", "chat-70b \u2014now \u2014to=v41 p99 doubled"},
		{"/rollback", "embed-small --dry-run --force-cold -- --weird reason"},
		{"/rollback", "chat-70b --to=previous 'customer reports garbage'"},
		{"/rollback", "chat-70b it's broken, isn’t it?"},
		{"/rollback", "history chat-70b --limit=50"},
		{"/rollback", "status"},
		{"rollback", "HELP"},
		{"/drill", "schedule chat-70b 0 9 * * 1"},
		{"/drill", `schedule chat-70b "CRON_TZ=UTC 30 2 * * *"`},
		{"/drill", "run chat-70b --dry-run"},
		{"DRILL", "history"},
		// Nasty ones: quotes, escapes, dashes, names that must be refused.
		{"/rollback", `chat-70b "a\"b\\c\"" d`},
		{"/rollback", `chat-70b "\` + "\u201c" + `x\` + "\u201d" + `"`},
		{"/rollback", `chat-70b "unterminated`},
		{"/rollback", "chat-70b 'unterminated"},
		{"/rollback", "chat-70b ''"},
		{"/rollback", `chat-70b ""`},
		{"/rollback", `chat-70b ""--now"" x`},
		{"/rollback", "chat-70b --to='v41' x"},
		{"/rollback", "chat-70b --to=\"v 41\" x"},
		{"/rollback", "chat-70b --to ../../etc/passwd x"},
		{"/rollback", "../etc x"},
		{"/rollback", "a/b x"},
		{"/rollback", `"chat 70b" x`},
		{"/rollback", `"status" x`},
		{"/rollback", "Status x"},
		{"/rollback", "chat-70b --to PREVIOUS --to v1 x"},
		{"/rollback", "chat-70b --now=yes x"},
		{"/rollback", "chat-70b --limit 5 x"},
		{"/rollback", "chat-70b - \u2014 \u2013 x"},
		{"/rollback", "chat-70b \u2014 --"},
		{"/rollback", "chat-70b x\u202ey"},
		{"/rollback", "chat-70b x\x00y"},
		{"/rollback", "chat-70b x\ry"},
		{"/rollback", "chat-70b \xff\xfe"},
		{"/rollback", "chat-70b x\u2028y\u00a0z\u3000w"},
		{"/rollback", "chat-70b \"x\u2028y\""},
		{"/rollback", "chat-70b   \u00a0 "},
		{"/rollback", strings.Repeat("a", 64) + " x"},
		{"/rollback", "chat-70b " + strings.Repeat("\\", 1000)},
		{"/rollback", "chat-70b \"" + strings.Repeat("\u201c", 333) + "\""},
		{"/rollback", "history --limit 0"},
		{"/rollback", "history --limit 99999999999999999999"},
		{"/rollback", "history --limit +5"},
		{"/rollback", "status --"},
		{"/drill", "schedule chat-70b \"\\\"0 9\\\\\""},
		{"/drill", "schedule chat-70b"},
		{"/drill", "schedule chat-70b \u00e9"},
		{"/drill", "run"},
		{"/drill", "\"run\" chat-70b"},
		{"/drill", "list x"},
		{"/deploy", "chat-70b"},
		{"", ""},
	} {
		f.Add(seed.slash, seed.text)
	}
	f.Fuzz(func(t *testing.T, slash, text string) {
		renderFuzz(t, text)
		cmd, err := Parse(slash, text)
		if err != nil {
			if cmd != nil {
				t.Fatalf("Parse(%q, %q) returned both %#v and %v", slash, text, cmd, err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse(%q, %q): error %v (%T) is not a *Error", slash, text, err, err)
			}
			if e.Code != EINVALID || e.Message == "" || e.Usage == "" {
				t.Fatalf("Parse(%q, %q): error %+v, want EINVALID with a message and usage", slash, text, e)
			}
			return
		}
		checkNames(t, cmd)
		assertRoundTrip(t, cmd)
	})
}

// renderFuzz is the rendering half of FuzzParse's contract, driven from
// the other end: the fuzzer's text used directly as a reason and as a cron
// expression. Whatever a quoted reason or cron could hold must survive
// String and Parse unchanged, whatever quotes, backslashes or dashes it has.
func renderFuzz(t *testing.T, text string) {
	t.Helper()
	s := strings.TrimSpace(text)
	if s == "" || !utf8.ValidString(s) {
		return
	}
	for _, r := range s {
		// The tokenizer refuses these or reads them as spaces, so no parsed
		// reason holds them.
		if unicode.IsControl(r) || isBidiControl(r) || isLineBreak(r) {
			return
		}
	}
	if len(s) <= routing.MaxReasonLen {
		assertRoundTrip(t, RollbackCmd{Route: "chat-70b", To: "v41", Now: true, Reason: s})
	}
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			return
		}
	}
	if len(s) <= maxCronText {
		assertRoundTrip(t, DrillScheduleCmd{Route: "chat-70b", Cron: s})
	}
}

// checkNames fails when an accepted command carries a name the routing
// validators refuse: the grammar must never be the way around them.
func checkNames(t *testing.T, cmd Command) {
	t.Helper()
	route, optional := "", true
	switch c := cmd.(type) {
	case HelpCmd, DrillListCmd:
		return
	case StatusCmd:
		route = c.Route
	case HistoryCmd:
		route = c.Route
		if c.Limit < 0 || c.Limit > MaxHistoryLimit {
			t.Fatalf("limit %d out of range in %#v", c.Limit, c)
		}
	case DrillHistoryCmd:
		route = c.Route
	case RollbackCmd:
		route, optional = c.Route, false
		if c.To != "" {
			if err := routing.ValidateVersion(c.To); err != nil {
				t.Fatalf("accepted version %q: %v", c.To, err)
			}
		}
		if strings.TrimSpace(c.Reason) == "" || len(c.Reason) > routing.MaxReasonLen {
			t.Fatalf("accepted reason %q", c.Reason)
		}
	case DrillRunCmd:
		route, optional = c.Route, false
	case DrillScheduleCmd:
		route, optional = c.Route, false
		if c.Cron == "" || len(c.Cron) > maxCronText {
			t.Fatalf("accepted cron %q", c.Cron)
		}
	case DrillCancelCmd:
		route, optional = c.Route, false
	case DrillSkipCmd:
		route, optional = c.Route, false
	default:
		t.Fatalf("Parse returned an unknown command type %T", cmd)
	}
	if route == "" && optional {
		return
	}
	if err := routing.ValidateRoute(route); err != nil {
		t.Fatalf("accepted route %q in %#v: %v", route, cmd, err)
	}
}
