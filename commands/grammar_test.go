package commands

import (
	"errors"
	"strings"
	"testing"
)

// parseCase is one accepted input of the chat grammar and the command it
// must parse to.
type parseCase struct {
	name  string
	slash string
	text  string
	want  Command
}

// refuseCase is one refused input and words its error message must contain
// (case-insensitive), so a test fails when a message stops saying what was
// wrong.
type refuseCase struct {
	name  string
	slash string
	text  string
	want  []string
}

func rollbackAccepted() []parseCase {
	const r = "/rollback"
	return []parseCase{
		{"UnquotedReason", r, "chat-70b latency spike after v42",
			RollbackCmd{Route: "chat-70b", Reason: "latency spike after v42"}},
		{"UnquotedReasonSpacesCollapsed", r, "  chat-70b   latency \t spike\nafter   v42  ",
			RollbackCmd{Route: "chat-70b", Reason: "latency spike after v42"}},
		{"DoubleQuotedReasonKeepsInnerSpaces", r, `chat-70b "latency  spike   after v42"`,
			RollbackCmd{Route: "chat-70b", Reason: "latency  spike   after v42"}},
		{"SingleQuotedReason", r, `chat-70b 'latency spike'`,
			RollbackCmd{Route: "chat-70b", Reason: "latency spike"}},
		{"QuotedReasonEdgesTrimmed", r, `chat-70b "  latency spike  "`,
			RollbackCmd{Route: "chat-70b", Reason: "latency spike"}},
		{"QuotedAndUnquotedReasonWords", r, `chat-70b "p99  doubled" after v42`,
			RollbackCmd{Route: "chat-70b", Reason: "p99  doubled after v42"}},
		{"EscapedQuoteAndBackslash", r, `chat-70b "said \"no\" to C:\\tmp and C:\x"`,
			RollbackCmd{Route: "chat-70b", Reason: `said "no" to C:\tmp and C:\x`}},
		{"BackslashOutsideQuotesIsLiteral", r, `chat-70b path C:\tmp\ and \\`,
			RollbackCmd{Route: "chat-70b", Reason: `path C:\tmp\ and \\`}},
		{"SmartDoubleQuotes", r, "chat-70b \u201clatency spike after v42\u201d",
			RollbackCmd{Route: "chat-70b", Reason: "latency spike after v42"}},
		{"SmartSingleQuotes", r, "chat-70b \u2018latency spike\u2019",
			RollbackCmd{Route: "chat-70b", Reason: "latency spike"}},
		{"MixedSmartAndASCIIQuotes", r, "chat-70b \u201clatency spike\"",
			RollbackCmd{Route: "chat-70b", Reason: "latency spike"}},
		{"ApostropheInWord", r, "chat-70b don't know why, it’s broken",
			RollbackCmd{Route: "chat-70b", Reason: "don't know why, it’s broken"}},
		{"ApostropheInsideSingleQuotes", r, `chat-70b 'it's broken'`,
			RollbackCmd{Route: "chat-70b", Reason: "it's broken"}},
		{"TabAndNewlineInsideQuotesAreSpaces", r, "chat-70b \"a\tb\nc\"",
			RollbackCmd{Route: "chat-70b", Reason: "a b c"}},
		{"NoBreakSpaceSeparates", r, "chat-70b\u00a0--now\u00a0broken",
			RollbackCmd{Route: "chat-70b", Now: true, Reason: "broken"}},
		{"AllFlagsBeforeReason", r, "chat-70b --to v41 --now --dry-run --force-cold latency spike",
			RollbackCmd{Route: "chat-70b", To: "v41", Now: true, DryRun: true, ForceCold: true, Reason: "latency spike"}},
		{"FlagsAfterReason", r, "chat-70b latency spike --now --to v41",
			RollbackCmd{Route: "chat-70b", To: "v41", Now: true, Reason: "latency spike"}},
		{"FlagsBetweenReasonWords", r, "chat-70b latency --dry-run spike --force-cold after v42",
			RollbackCmd{Route: "chat-70b", DryRun: true, ForceCold: true, Reason: "latency spike after v42"}},
		{"ToWithEquals", r, "chat-70b --to=v41 bad",
			RollbackCmd{Route: "chat-70b", To: "v41", Reason: "bad"}},
		{"ToWithEqualsQuotedValue", r, `chat-70b --to="v41" bad`,
			RollbackCmd{Route: "chat-70b", To: "v41", Reason: "bad"}},
		{"ToWithEqualsSingleQuotedValue", r, `chat-70b --to='v41' bad`,
			RollbackCmd{Route: "chat-70b", To: "v41", Reason: "bad"}},
		{"ToRichVersion", r, "chat-70b --to llama-3.1-70b@sha256:abc+1 bad",
			RollbackCmd{Route: "chat-70b", To: "llama-3.1-70b@sha256:abc+1", Reason: "bad"}},
		{"ToPrevious", r, "chat-70b --to previous bad",
			RollbackCmd{Route: "chat-70b", Reason: "bad"}},
		{"ToPreviousAnyCase", r, "chat-70b --to=PREVIOUS bad",
			RollbackCmd{Route: "chat-70b", Reason: "bad"}},
		{"FlagsCaseInsensitive", r, "chat-70b --NOW --Dry-Run bad",
			RollbackCmd{Route: "chat-70b", Now: true, DryRun: true, Reason: "bad"}},
		{"SmartDashFlags", r, "chat-70b \u2014now \u2013to v41 bad",
			RollbackCmd{Route: "chat-70b", To: "v41", Now: true, Reason: "bad"}},
		{"LoneDashIsAWord", r, "chat-70b latency - p99 \u2014 doubled",
			RollbackCmd{Route: "chat-70b", Reason: "latency - p99 \u2014 doubled"}},
		{"TerminatorMakesFlagsReason", r, "chat-70b --now -- --to v41 was wrong -5%",
			RollbackCmd{Route: "chat-70b", Now: true, Reason: "--to v41 was wrong -5%"}},
		{"SecondTerminatorIsReason", r, "chat-70b -- a -- b",
			RollbackCmd{Route: "chat-70b", Reason: "a -- b"}},
		{"QuotedDashWordIsReason", r, `chat-70b "-5% accuracy" since v42`,
			RollbackCmd{Route: "chat-70b", Reason: "-5% accuracy since v42"}},
		{"QuotedRouteIsARoute", r, `"chat-70b" bad`,
			RollbackCmd{Route: "chat-70b", Reason: "bad"}},
		{"RouteKeepsCase", r, "Chat-70B bad",
			RollbackCmd{Route: "Chat-70B", Reason: "bad"}},
		{"RouteLongestAllowed", r, strings.Repeat("r", 63) + " bad",
			RollbackCmd{Route: strings.Repeat("r", 63), Reason: "bad"}},
		{"ReasonLongestAllowed", r, "chat-70b " + strings.Repeat("x", 1000),
			RollbackCmd{Route: "chat-70b", Reason: strings.Repeat("x", 1000)}},
		{"ReasonUnicode", r, "chat-70b 🔥 latency × 3 — ünïcödé",
			RollbackCmd{Route: "chat-70b", Reason: "🔥 latency × 3 — ünïcödé"}},
		{"ReasonLooksLikeVerb", r, "chat-70b status history help",
			RollbackCmd{Route: "chat-70b", Reason: "status history help"}},

		{"Help", r, "help", HelpCmd{}},
		{"HelpAnyCase", r, "HeLp", HelpCmd{}},
		{"StatusAll", r, "status", StatusCmd{}},
		{"StatusRoute", r, "status chat-70b", StatusCmd{Route: "chat-70b"}},
		{"StatusAnyCase", r, "STATUS chat-70b", StatusCmd{Route: "chat-70b"}},
		{"HistoryAll", r, "history", HistoryCmd{}},
		{"HistoryRoute", r, "history chat-70b", HistoryCmd{Route: "chat-70b"}},
		{"HistoryLimit", r, "history --limit 5", HistoryCmd{Limit: 5}},
		{"HistoryLimitEquals", r, "history --limit=5 chat-70b", HistoryCmd{Route: "chat-70b", Limit: 5}},
		{"HistoryLimitBeforeRoute", r, "history --limit 500 chat-70b", HistoryCmd{Route: "chat-70b", Limit: 500}},
		{"HistoryLimitOne", r, "history chat-70b --limit 1", HistoryCmd{Route: "chat-70b", Limit: 1}},
		{"HistoryLimitDefaultSpelledOut", r, "history --limit 20", HistoryCmd{Limit: 20}},
	}
}

func drillAccepted() []parseCase {
	const d = "/drill"
	return []parseCase{
		{"Help", d, "help", HelpCmd{Drill: true}},
		{"Run", d, "run chat-70b", DrillRunCmd{Route: "chat-70b"}},
		{"RunDryRun", d, "run chat-70b --dry-run", DrillRunCmd{Route: "chat-70b", DryRun: true}},
		{"RunDryRunFirst", d, "RUN --dry-run chat-70b", DrillRunCmd{Route: "chat-70b", DryRun: true}},
		{"ScheduleQuoted", d, `schedule chat-70b "0 9 * * 1"`, DrillScheduleCmd{Route: "chat-70b", Cron: "0 9 * * 1"}},
		{"ScheduleSmartQuoted", d, "schedule chat-70b \u201c0 9 * * 1\u201d", DrillScheduleCmd{Route: "chat-70b", Cron: "0 9 * * 1"}},
		{"ScheduleSingleQuoted", d, "schedule chat-70b '*/15 9-17 * * 1-5'", DrillScheduleCmd{Route: "chat-70b", Cron: "*/15 9-17 * * 1-5"}},
		{"ScheduleUnquotedWordsJoined", d, "schedule chat-70b 0   9 * * 1", DrillScheduleCmd{Route: "chat-70b", Cron: "0 9 * * 1"}},
		{"ScheduleQuotedKeepsInnerSpaces", d, `schedule chat-70b "0  9 * * 1"`, DrillScheduleCmd{Route: "chat-70b", Cron: "0  9 * * 1"}},
		{"ScheduleDescriptor", d, "schedule chat-70b @weekly", DrillScheduleCmd{Route: "chat-70b", Cron: "@weekly"}},
		{"ScheduleTimezone", d, `schedule chat-70b "CRON_TZ=Europe/Paris 0 9 * * 1"`,
			DrillScheduleCmd{Route: "chat-70b", Cron: "CRON_TZ=Europe/Paris 0 9 * * 1"}},
		{"ScheduleLongestCron", d, `schedule chat-70b "` + strings.Repeat("1", 200) + `"`,
			DrillScheduleCmd{Route: "chat-70b", Cron: strings.Repeat("1", 200)}},
		{"Cancel", d, "cancel chat-70b", DrillCancelCmd{Route: "chat-70b"}},
		{"Skip", d, "Skip chat-70b", DrillSkipCmd{Route: "chat-70b"}},
		{"List", d, "list", DrillListCmd{}},
		{"HistoryAll", d, "history", DrillHistoryCmd{}},
		{"HistoryRoute", d, "history chat-70b", DrillHistoryCmd{Route: "chat-70b"}},
	}
}

func TestParseAccepted(t *testing.T) {
	for _, tc := range append(rollbackAccepted(), drillAccepted()...) {
		t.Run(strings.TrimPrefix(tc.slash, "/")+"/"+tc.name, func(t *testing.T) {
			got, err := Parse(tc.slash, tc.text)
			if err != nil {
				t.Fatalf("Parse(%q, %q): %v", tc.slash, tc.text, err)
			}
			if got != tc.want {
				t.Fatalf("Parse(%q, %q) = %#v, want %#v", tc.slash, tc.text, got, tc.want)
			}
			if got.Slash() != tc.slash {
				t.Errorf("Slash() = %q, want %q", got.Slash(), tc.slash)
			}
			assertRoundTrip(t, got)
		})
	}
}

func TestParseRollbackRefused(t *testing.T) {
	const r = "/rollback"
	long := strings.Repeat("r", 64)
	for _, tc := range []refuseCase{
		{"Empty", r, "", []string{"missing route"}},
		{"OnlySpaces", r, " \t\n ", []string{"missing route"}},
		{"NoReason", r, "chat-70b", []string{"reason is required"}},
		{"OnlyFlagsNoReason", r, "chat-70b --now --to v41", []string{"reason is required"}},
		{"EmptyQuotedReason", r, `chat-70b "   "`, []string{"reason is required"}},
		{"EmptyReasonAfterTerminator", r, "chat-70b --", []string{"reason is required"}},
		{"ReasonTooLong", r, "chat-70b " + strings.Repeat("x", 1001), []string{"1001 bytes", "1000"}},
		{"FlagBeforeRoute", r, "--now chat-70b bad", []string{"missing route", `"--now"`}},
		{"TerminatorBeforeRoute", r, "-- chat-70b bad", []string{"missing route"}},
		{"UnknownFlag", r, "chat-70b --fast bad", []string{"unknown flag", `"--fast"`, "quote the reason"}},
		{"UnknownFlagWithValue", r, "chat-70b --mode=fast bad", []string{"unknown flag", `"--mode"`}},
		{"UnknownSingleDashFlag", r, "chat-70b -n bad", []string{"unknown flag", `"-n"`}},
		{"DashWordInReason", r, "chat-70b accuracy -5% since v42", []string{"unknown flag", `"-5%"`}},
		{"SmartDashUnknownFlag", r, "chat-70b \u2014fast bad", []string{"unknown flag", `"--fast"`}},
		{"RepeatedBoolFlag", r, "chat-70b --now bad --now", []string{"--now", "twice"}},
		{"RepeatedValueFlag", r, "chat-70b --to v41 --to=v40 bad", []string{"--to", "twice"}},
		{"RepeatedToWithPrevious", r, "chat-70b --to previous --to v40 bad", []string{"--to", "twice"}},
		{"RepeatedFlagDifferentCase", r, "chat-70b --dry-run --DRY-RUN bad", []string{"--dry-run", "twice"}},
		{"BoolFlagWithValue", r, "chat-70b --now=yes bad", []string{"--now", "takes no value"}},
		{"BoolFlagWithEmptyValue", r, "chat-70b --force-cold= bad", []string{"--force-cold", "takes no value"}},
		{"LimitOnRollback", r, "chat-70b --limit 5 bad", []string{"--limit", "does not apply", "/rollback history"}},
		{"ToWithoutValue", r, "chat-70b bad --to", []string{"--to", "needs a version"}},
		{"ToFollowedByFlag", r, "chat-70b --to --now bad", []string{"--to", "needs a version"}},
		{"ToEmptyEquals", r, "chat-70b --to= bad", []string{"--to", "needs a version"}},
		{"ToEmptyQuoted", r, `chat-70b --to "" bad`, []string{"--to", "needs a version"}},
		{"ToBadVersion", r, "chat-70b --to ../v41 bad", []string{`"../v41"`, "not a valid version"}},
		{"ToVersionWithSlash", r, "chat-70b --to v4/1 bad", []string{`"v4/1"`, "not a valid version"}},
		{"ToVersionWithSpaces", r, `chat-70b --to "v 41" bad`, []string{`"v 41"`, "not a valid version"}},
		{"ToVersionTooLong", r, "chat-70b --to " + strings.Repeat("v", 129) + " bad", []string{"129 bytes", "128"}},
		{"RouteDotDot", r, "../etc bad", []string{`"../etc"`, "not a valid route name"}},
		{"RouteWithSlash", r, "a/b bad", []string{`"a/b"`, "not a valid route name"}},
		{"RouteWithSpacesViaQuotes", r, `"chat 70b" bad`, []string{`"chat 70b"`, "not a valid route name"}},
		{"RouteEmptyQuoted", r, `"" bad`, []string{"route name is empty"}},
		{"RouteTooLong", r, long + " bad", []string{"64 bytes", "63"}},
		{"RouteNonASCII", r, "chät bad", []string{`"chät"`, "not a valid route name"}},
		{"RouteTrailingDash", r, "chat- bad", []string{`"chat-"`, "not a valid route name"}},
		{"QuotedReservedWordIsNoRoute", r, `"status" bad`, []string{`"status"`, "reserved word"}},
		{"ReservedDrillWordIsNoRoute", r, "schedule bad", []string{`"schedule"`, "reserved word"}},
		{"UnterminatedDoubleQuote", r, `chat-70b "latency spike`, []string{"unterminated quote", `latency spike`}},
		{"UnterminatedSmartQuote", r, "chat-70b \u201clatency spike", []string{"unterminated quote"}},
		{"UnterminatedSingleQuote", r, `chat-70b 'latency spike`, []string{"unterminated quote"}},
		{"EscapedClosingQuote", r, `chat-70b "latency\"`, []string{"unterminated quote"}},
		{"ControlCharacter", r, "chat-70b bell\a", []string{"U+0007"}},
		{"CarriageReturn", r, "chat-70b bad\r\n", []string{"U+000D"}},
		{"NULByte", r, "chat-70b bad\x00", []string{"U+0000"}},
		{"C1Control", r, "chat-70b bad\u0085", []string{"U+0085"}},
		{"BidiOverride", r, "chat-70b bad\u202eevil", []string{"U+202E"}},
		{"InvalidUTF8", r, "chat-70b bad\xff", []string{"UTF-8"}},
		{"TooLong", r, "chat-70b " + strings.Repeat("x", 4000), []string{"4009 bytes", "4000"}},

		{"HelpWithArgs", r, "help me", []string{"/rollback help", "no arguments", `"me"`}},
		{"HelpWithFlag", r, "help --now", []string{"--now", "does not apply"}},
		{"StatusTwoRoutes", r, "status a b", []string{"at most one route", `"b"`}},
		{"StatusBadRoute", r, "status a/b", []string{`"a/b"`, "not a valid route name"}},
		{"StatusReservedRoute", r, "status history", []string{`"history"`, "reserved word"}},
		{"StatusWithTo", r, "status chat-70b --to v41", []string{"--to", "does not apply", "/rollback status"}},
		{"StatusWithNow", r, "status --now", []string{"--now", "does not apply"}},
		{"StatusWithUnknownFlag", r, "status --all", []string{"unknown flag", `"--all"`}},
		{"StatusWithTerminator", r, "status -- chat-70b", []string{`"--"`, "reason"}},
		{"HistoryTwoRoutes", r, "history a b", []string{"at most one route", `"b"`}},
		{"HistoryLimitZero", r, "history --limit 0", []string{"--limit", "1 to 500", `"0"`}},
		{"HistoryLimitTooBig", r, "history --limit 501", []string{"--limit", "1 to 500", `"501"`}},
		{"HistoryLimitNegative", r, "history --limit=-1", []string{"--limit", "1 to 500"}},
		{"HistoryLimitNotANumber", r, "history --limit five", []string{"--limit", `"five"`}},
		{"HistoryLimitFraction", r, "history --limit 2.5", []string{"--limit", `"2.5"`}},
		{"HistoryLimitHuge", r, "history --limit 99999999999999999999999", []string{"--limit", "1 to 500"}},
		{"HistoryLimitMissing", r, "history --limit", []string{"--limit", "needs a number"}},
		{"HistoryLimitRepeated", r, "history --limit 1 --limit 2", []string{"--limit", "twice"}},
		{"HistoryWithDryRun", r, "history --dry-run", []string{"--dry-run", "does not apply"}},
	} {
		t.Run(tc.name, func(t *testing.T) { assertRefused(t, tc, RollbackUsage) })
	}
}

func TestParseDrillRefused(t *testing.T) {
	const d = "/drill"
	for _, tc := range []refuseCase{
		{"Empty", d, "", []string{"missing drill command"}},
		{"UnknownVerb", d, "start chat-70b", []string{"unknown /drill command", `"start"`}},
		{"QuotedVerb", d, `"run" chat-70b`, []string{"unknown /drill command", `"run"`}},
		{"RouteWithoutVerb", d, "chat-70b", []string{"unknown /drill command", `"chat-70b"`}},
		{"HelpWithArgs", d, "help run", []string{"/drill help", "no arguments"}},
		{"RunMissingRoute", d, "run", []string{"/drill run needs a route"}},
		{"RunOnlyFlag", d, "run --dry-run", []string{"/drill run needs a route"}},
		{"RunTwoRoutes", d, "run a b", []string{"only a route", `"b"`}},
		{"RunBadRoute", d, "run ../etc", []string{`"../etc"`, "not a valid route name"}},
		{"RunReservedRoute", d, "run list", []string{`"list"`, "reserved word"}},
		{"RunWithNow", d, "run chat-70b --now", []string{"--now", "does not apply", "/drill run"}},
		{"RunDryRunWithValue", d, "run chat-70b --dry-run=true", []string{"--dry-run", "takes no value"}},
		{"RunDryRunTwice", d, "run chat-70b --dry-run --dry-run", []string{"--dry-run", "twice"}},
		{"RunUnknownFlag", d, "run chat-70b --quick", []string{"unknown flag", `"--quick"`, "/drill run"}},
		{"RunTerminator", d, "run chat-70b --", []string{`"--"`}},
		{"ScheduleMissingEverything", d, "schedule", []string{"needs a route and a cron expression"}},
		{"ScheduleMissingCron", d, "schedule chat-70b", []string{"needs a cron expression"}},
		{"ScheduleEmptyCron", d, `schedule chat-70b "  "`, []string{"needs a cron expression"}},
		{"ScheduleBadRoute", d, `schedule a/b "0 9 * * 1"`, []string{`"a/b"`, "not a valid route name"}},
		{"ScheduleCronTooLong", d, `schedule chat-70b "` + strings.Repeat("1", 201) + `"`, []string{"201 bytes", "200"}},
		{"ScheduleCronNonASCII", d, "schedule chat-70b \"0 9 * * lün\"", []string{"cron", "printable ASCII"}},
		{"ScheduleCronNoBreakSpace", d, "schedule chat-70b \"0\u00a09 * * 1\"", []string{"cron", "printable ASCII"}},
		{"ScheduleFlag", d, `schedule chat-70b "0 9 * * 1" --now`, []string{"--now", "does not apply"}},
		{"ScheduleUnterminated", d, `schedule chat-70b "0 9 * * 1`, []string{"unterminated quote"}},
		{"CancelMissingRoute", d, "cancel", []string{"/drill cancel needs a route"}},
		{"CancelTwoRoutes", d, "cancel a b", []string{"only a route"}},
		{"CancelDryRun", d, "cancel chat-70b --dry-run", []string{"--dry-run", "does not apply"}},
		{"SkipMissingRoute", d, "skip", []string{"/drill skip needs a route"}},
		{"SkipBadRoute", d, `skip "a b"`, []string{`"a b"`, "not a valid route name"}},
		{"ListWithArgs", d, "list chat-70b", []string{"no arguments", `"chat-70b"`}},
		{"ListWithFlag", d, "list --limit 5", []string{"--limit", "does not apply"}},
		{"HistoryTwoRoutes", d, "history a b", []string{"at most one route"}},
		{"HistoryLimit", d, "history --limit 5", []string{"--limit", "does not apply", "/drill history"}},
		{"ControlCharacter", d, "list\x1b[31m", []string{"U+001B"}},
		{"TooLong", d, "list " + strings.Repeat(" ", 4000), []string{"4005 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) { assertRefused(t, tc, DrillUsage) })
	}
}

func TestParseSlash(t *testing.T) {
	for _, tc := range []struct {
		name, slash, text string
		want              Command
	}{
		{"Rollback", "/rollback", "status", StatusCmd{}},
		{"RollbackNoSlash", "rollback", "status", StatusCmd{}},
		{"RollbackUpperCase", "/ROLLBACK", "status", StatusCmd{}},
		{"RollbackSpaces", " /Rollback ", "status", StatusCmd{}},
		{"Drill", "/drill", "list", DrillListCmd{}},
		{"DrillNoSlash", "DRILL", "list", DrillListCmd{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.slash, tc.text)
			if err != nil || got != tc.want {
				t.Fatalf("Parse(%q, %q) = %#v, %v; want %#v", tc.slash, tc.text, got, err, tc.want)
			}
		})
	}
	for _, slash := range []string{"", "/", "/deploy", "//rollback", "/roll back", "/rollbacks"} {
		t.Run("Unknown/"+slash, func(t *testing.T) {
			_, err := Parse(slash, "help")
			assertInvalid(t, err)
			if !strings.Contains(ErrorMessage(err), "unknown slash command") {
				t.Errorf("message %q does not say the slash command is unknown", ErrorMessage(err))
			}
			if u := ErrorUsage(err); !strings.Contains(u, RollbackUsage) || !strings.Contains(u, DrillUsage) {
				t.Errorf("usage %q lacks the usage of both slash commands", u)
			}
		})
	}
}

func TestParseErrorMessageClipsTokens(t *testing.T) {
	long := "--" + strings.Repeat("x", 300)
	_, err := ParseRollback("chat-70b " + long + " bad")
	assertInvalid(t, err)
	msg := ErrorMessage(err)
	if strings.Contains(msg, strings.Repeat("x", 60)) || !strings.Contains(msg, "…") {
		t.Errorf("message %q quotes the whole 300-byte token instead of clipping it", msg)
	}
}

func TestRenderCanonical(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  Command
		want string
	}{
		{"RollbackAllFlags", RollbackCmd{Route: "chat-70b", To: "v41", Now: true, DryRun: true, ForceCold: true, Reason: "latency spike after v42"},
			`chat-70b --to v41 --now --dry-run --force-cold "latency spike after v42"`},
		{"RollbackPlain", RollbackCmd{Route: "chat-70b", Reason: "bad"}, `chat-70b "bad"`},
		{"RollbackEscapes", RollbackCmd{Route: "chat-70b", Reason: `say "hi" \ bye`}, `chat-70b "say \"hi\" \\ bye"`},
		{"RollbackEscapesSmartQuotes", RollbackCmd{Route: "chat-70b", Reason: "\u201chi\u201d"}, "chat-70b \"\\\u201chi\\\u201d\""},
		{"RollbackVersionNamedLikeVerb", RollbackCmd{Route: "chat-70b", To: "help", Reason: "x"}, `chat-70b --to help "x"`},
		{"Help", HelpCmd{}, "help"},
		{"DrillHelp", HelpCmd{Drill: true}, "help"},
		{"StatusAll", StatusCmd{}, "status"},
		{"Status", StatusCmd{Route: "chat-70b"}, "status chat-70b"},
		{"HistoryAll", HistoryCmd{}, "history"},
		{"HistoryLimit", HistoryCmd{Limit: 5}, "history --limit 5"},
		{"HistoryRouteLimit", HistoryCmd{Route: "chat-70b", Limit: 5}, "history chat-70b --limit 5"},
		{"DrillRun", DrillRunCmd{Route: "chat-70b", DryRun: true}, "run chat-70b --dry-run"},
		{"DrillSchedule", DrillScheduleCmd{Route: "chat-70b", Cron: "0 9 * * 1"}, `schedule chat-70b "0 9 * * 1"`},
		{"DrillCancel", DrillCancelCmd{Route: "chat-70b"}, "cancel chat-70b"},
		{"DrillSkip", DrillSkipCmd{Route: "chat-70b"}, "skip chat-70b"},
		{"DrillList", DrillListCmd{}, "list"},
		{"DrillHistoryAll", DrillHistoryCmd{}, "history"},
		{"DrillHistory", DrillHistoryCmd{Route: "chat-70b"}, "history chat-70b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cmd.String(); got != tc.want {
				t.Fatalf("String() = %s, want %s", got, tc.want)
			}
			assertRoundTrip(t, tc.cmd)
		})
	}
}

// TestRenderHostileNamesNeverMeanAnotherCommand: a command built outside the
// parser (backflipctl, a test, a bug) with a name the validators refuse must
// render as text the parser refuses, never as text that parses to a
// different command, because the rendering is what the audit shows.
func TestRenderHostileNamesNeverMeanAnotherCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  Command
	}{
		{"RouteWithFlag", RollbackCmd{Route: "x --now", Reason: "r"}},
		{"RouteNamedStatus", RollbackCmd{Route: "status", Reason: "chat-70b"}},
		{"RouteNamedHelp", RollbackCmd{Route: "HELP", Reason: "r"}},
		{"RouteIsFlag", RollbackCmd{Route: "--now", Reason: "r"}},
		{"RouteEmpty", RollbackCmd{Route: "", Reason: "r"}},
		{"VersionWithFlag", RollbackCmd{Route: "chat-70b", To: "v41 --force-cold", Reason: "r"}},
		{"VersionIsFlag", RollbackCmd{Route: "chat-70b", To: "--force-cold", Reason: "r"}},
		{"VersionWithQuote", RollbackCmd{Route: "chat-70b", To: `v41" --now "`, Reason: "r"}},
		{"StatusRouteIsLimitFlag", HistoryCmd{Route: "--limit", Limit: 3}},
		{"StatusRouteNamedHistory", StatusCmd{Route: "history"}},
		{"DrillRouteWithDryRun", DrillRunCmd{Route: "a --dry-run"}},
		{"DrillCancelRouteWithSpace", DrillCancelCmd{Route: "a b"}},
		{"DrillScheduleRouteWithCron", DrillScheduleCmd{Route: `a "0`, Cron: "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := tc.cmd.String()
			got, err := Parse(tc.cmd.Slash(), text)
			if err == nil {
				t.Fatalf("String() = %s parsed to %#v; want it refused", text, got)
			}
			assertInvalid(t, err)
		})
	}
}

func assertRefused(t *testing.T, tc refuseCase, usage string) {
	t.Helper()
	got, err := Parse(tc.slash, tc.text)
	if err == nil {
		t.Fatalf("Parse(%q, %q) = %#v, want an error", tc.slash, tc.text, got)
	}
	assertInvalid(t, err)
	msg := ErrorMessage(err)
	for _, w := range tc.want {
		if !strings.Contains(strings.ToLower(msg), strings.ToLower(w)) {
			t.Errorf("message %q does not contain %q", msg, w)
		}
	}
	if u := ErrorUsage(err); u != usage {
		t.Errorf("usage = %q, want %q", u, usage)
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("message %q spans lines; it should be one sentence", msg)
	}
}

func assertInvalid(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	if e.Code != EINVALID || e.Message == "" || e.Usage == "" {
		t.Fatalf("error = %+v, want code %q with a message and a usage line", e, EINVALID)
	}
}

// assertRoundTrip checks the contract of Command.String: the rendering
// parses back to an equal command, and renders the same again.
func assertRoundTrip(t testing.TB, c Command) {
	t.Helper()
	text := c.String()
	again, err := Parse(c.Slash(), text)
	if err != nil {
		t.Fatalf("String() = %s does not parse back: %v", text, err)
	}
	if again != c {
		t.Fatalf("String() = %s parses back to %#v, want %#v", text, again, c)
	}
	if s := again.String(); s != text {
		t.Fatalf("rendering is not stable: %s, then %s", text, s)
	}
}
