package commands

// This file is the chat grammar of /rollback and /drill: a tokenizer that
// understands the quotes people actually type in Slack, a parser per slash
// command, and the canonical rendering (String) of every command. The
// contract is in DESIGN.md ("Chat grammar"); the decisions it leaves open are
// written next to the code that makes them.
//
// Two properties hold for every input, and FuzzParse checks them:
//   - anything accepted renders (String) to text that parses back to an equal
//     command, and that rendering is stable;
//   - anything refused is an *Error with code EINVALID, a one-sentence
//     Message and the usage line of the slash command, so the transport can
//     answer "what was wrong" without knowing the grammar.
//
// Names from chat are never trusted: routes pass routing.ValidateRoute and
// versions routing.ValidateVersion before a command carries them.

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// Limits on what the grammar reads. Slack itself caps a slash command's text
// well below maxChatText; the cap is here so a hostile transport or a paste
// cannot make the parser (or the audit row that quotes the command) large.
const (
	maxChatText = 4000
	// maxCronText bounds a drill schedule's cron expression; real ones are
	// under 40 bytes, so 200 only refuses pastes of something else.
	maxCronText = 200
	// grammarClipRunes is how much of an offending token an error message quotes.
	grammarClipRunes = 40
)

// Parse parses a chat command. slash is "/rollback" or "/drill" (the leading
// slash is optional and case does not matter); text is what Slack sends
// after it in the `text` field, already HTML-unescaped. Every error is an
// *Error with code EINVALID and the usage line of that slash command.
func Parse(slash, text string) (Command, error) {
	switch strings.TrimPrefix(strings.ToLower(strings.TrimSpace(slash)), "/") {
	case "rollback":
		return ParseRollback(text)
	case "drill":
		return ParseDrill(text)
	}
	return nil, &Error{
		Code:    EINVALID,
		Message: fmt.Sprintf("unknown slash command %s; backflip answers /rollback and /drill", grammarQuote(slash)),
		Usage:   RollbackUsage + "\n" + DrillUsage,
	}
}

// ParseRollback parses the text after /rollback:
//
//	help
//	status [<route>]
//	history [<route>] [--limit N]
//	<route> [--to <version>] [--now] [--dry-run] [--force-cold] <reason ...>
//
// Flags may come anywhere after the verb or route, also between reason
// words; `--` ends the flags and everything after it is reason text.
func ParseRollback(text string) (Command, error) {
	toks, err := tokenizeChat(text, RollbackUsage)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, invalidRollbackText("missing route: say which route to roll back, e.g. /rollback chat-70b latency spike after v42")
	}
	first := toks[0]
	// A quoted first word is never a verb: `/rollback "status" …` names a
	// route, which ValidateRoute then refuses as reserved. String relies on
	// this to render a command that could only be misread as a verb.
	if !first.quoted {
		switch strings.ToLower(first.text) {
		case "help":
			return parseHelp(toks[1:], false)
		case "status":
			return parseStatus(toks[1:])
		case "history":
			return parseHistory(toks[1:])
		}
	}
	if first.flag {
		return nil, invalidRollbackText("missing route: the route comes first, before any flag such as %s, e.g. /rollback chat-70b --now <reason>",
			grammarQuote(first.text))
	}
	if err := checkRoute(first.text, RollbackUsage); err != nil {
		return nil, err
	}
	const ctx = "/rollback <route>"
	words, fl, err := splitChatArgs(toks[1:], ctx, chatFlagTo|chatFlagNow|chatFlagDryRun|chatFlagForceCold, true, RollbackUsage)
	if err != nil {
		return nil, err
	}
	cmd := RollbackCmd{
		Route:     first.text,
		Now:       fl.seen&chatFlagNow != 0,
		DryRun:    fl.seen&chatFlagDryRun != 0,
		ForceCold: fl.seen&chatFlagForceCold != 0,
	}
	if fl.seen&chatFlagTo != 0 {
		// `--to previous` spells out the default target; the command
		// carries it the same way as no --to at all, so both render alike.
		if !strings.EqualFold(fl.to, routing.PreviousVersion) {
			if err := checkVersion(fl.to); err != nil {
				return nil, err
			}
			cmd.To = fl.to
		}
	}
	// Reason words are joined with single spaces (a quoted word keeps its
	// inner spacing); only the ends are trimmed, so `"  x  "` and `x` are
	// the same reason and the audit never records invisible padding.
	cmd.Reason = strings.TrimSpace(joinTokens(words))
	if cmd.Reason == "" {
		return nil, invalidRollbackText("a reason is required: say why, e.g. /rollback %s latency spike after v42", cmd.Route)
	}
	if len(cmd.Reason) > routing.MaxReasonLen {
		return nil, invalidRollbackText("the reason is %d bytes, at most %d allowed", len(cmd.Reason), routing.MaxReasonLen)
	}
	return cmd, nil
}

// ParseDrill parses the text after /drill:
//
//	help
//	run <route> [--dry-run]
//	schedule <route> "<cron>"
//	cancel <route>
//	skip <route>
//	list
//	history [<route>]
//
// The cron expression of schedule is normally quoted, but people type
// `/drill schedule chat-70b 0 9 * * 1`: unquoted words after the route are
// joined with single spaces into the expression. Only its length and
// charset (printable ASCII) are checked here; the drills package parses it.
func ParseDrill(text string) (Command, error) {
	toks, err := tokenizeChat(text, DrillUsage)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, invalidDrillText("missing drill command: it is one of run, schedule, cancel, skip, list, history, help")
	}
	first := toks[0]
	verb := ""
	if !first.quoted {
		verb = strings.ToLower(first.text)
	}
	args := toks[1:]
	switch verb {
	case "help":
		return parseHelp(args, true)
	case "run":
		words, fl, err := splitChatArgs(args, "/drill run", chatFlagDryRun, false, DrillUsage)
		if err != nil {
			return nil, err
		}
		route, err := oneRoute(words, "/drill run", true, DrillUsage)
		if err != nil {
			return nil, err
		}
		return DrillRunCmd{Route: route, DryRun: fl.seen&chatFlagDryRun != 0}, nil
	case "schedule":
		return parseSchedule(args)
	case "cancel":
		route, err := routeOnly(args, "/drill cancel", true, DrillUsage)
		if err != nil {
			return nil, err
		}
		return DrillCancelCmd{Route: route}, nil
	case "skip":
		route, err := routeOnly(args, "/drill skip", true, DrillUsage)
		if err != nil {
			return nil, err
		}
		return DrillSkipCmd{Route: route}, nil
	case "list":
		words, _, err := splitChatArgs(args, "/drill list", 0, false, DrillUsage)
		if err != nil {
			return nil, err
		}
		if len(words) > 0 {
			return nil, invalidDrillText("/drill list takes no arguments; unexpected %s", grammarQuote(words[0].text))
		}
		return DrillListCmd{}, nil
	case "history":
		route, err := routeOnly(args, "/drill history", false, DrillUsage)
		if err != nil {
			return nil, err
		}
		return DrillHistoryCmd{Route: route}, nil
	}
	return nil, invalidDrillText("unknown /drill command %s: it is one of run, schedule, cancel, skip, list, history, help", grammarQuote(first.text))
}

func parseHelp(args []chatToken, drill bool) (Command, error) {
	ctx, usage := "/rollback help", RollbackUsage
	if drill {
		ctx, usage = "/drill help", DrillUsage
	}
	// Help refuses extra words rather than ignoring them, like every other
	// verb: `/rollback help chat-70b now` was probably meant as something
	// else, and the usage line in the error is the help anyway.
	words, _, err := splitChatArgs(args, ctx, 0, false, usage)
	if err != nil {
		return nil, err
	}
	if len(words) > 0 {
		return nil, grammarInvalidf(usage, "%s takes no arguments; unexpected %s", ctx, grammarQuote(words[0].text))
	}
	return HelpCmd{Drill: drill}, nil
}

func parseStatus(args []chatToken) (Command, error) {
	route, err := routeOnly(args, "/rollback status", false, RollbackUsage)
	if err != nil {
		return nil, err
	}
	return StatusCmd{Route: route}, nil
}

func parseHistory(args []chatToken) (Command, error) {
	const ctx = "/rollback history"
	words, fl, err := splitChatArgs(args, ctx, chatFlagLimit, false, RollbackUsage)
	if err != nil {
		return nil, err
	}
	route, err := oneRoute(words, ctx, false, RollbackUsage)
	if err != nil {
		return nil, err
	}
	cmd := HistoryCmd{Route: route}
	if fl.seen&chatFlagLimit != 0 {
		n, err := strconv.Atoi(fl.limit)
		if err != nil || n < 1 || n > MaxHistoryLimit {
			return nil, invalidRollbackText("--limit must be a whole number from 1 to %d, not %s", MaxHistoryLimit, grammarQuote(fl.limit))
		}
		cmd.Limit = n
	}
	return cmd, nil
}

func parseSchedule(args []chatToken) (Command, error) {
	const ctx = "/drill schedule"
	words, _, err := splitChatArgs(args, ctx, 0, false, DrillUsage)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return nil, invalidDrillText(`%s needs a route and a cron expression, e.g. /drill schedule chat-70b "0 9 * * 1"`, ctx)
	}
	route := words[0].text
	if err := checkRoute(route, DrillUsage); err != nil {
		return nil, err
	}
	cron := strings.TrimSpace(joinTokens(words[1:]))
	if cron == "" {
		return nil, invalidDrillText(`%s needs a cron expression after the route, e.g. /drill schedule %s "0 9 * * 1"`, ctx, route)
	}
	if len(cron) > maxCronText {
		return nil, invalidDrillText("the cron expression is %d bytes, at most %d allowed", len(cron), maxCronText)
	}
	for _, r := range cron {
		if r < 0x20 || r > 0x7e {
			return nil, invalidDrillText("the cron expression %s has the character %q; use printable ASCII only", grammarQuote(cron), r)
		}
	}
	return DrillScheduleCmd{Route: route, Cron: cron}, nil
}

// routeOnly parses the arguments of a verb that takes no flags and one route
// (optional unless required).
func routeOnly(args []chatToken, ctx string, required bool, usage string) (string, error) {
	words, _, err := splitChatArgs(args, ctx, 0, false, usage)
	if err != nil {
		return "", err
	}
	return oneRoute(words, ctx, required, usage)
}

// oneRoute checks that words hold at most one route (exactly one when
// required) and that it is a valid route name.
func oneRoute(words []chatToken, ctx string, required bool, usage string) (string, error) {
	switch {
	case len(words) == 0 && required:
		return "", grammarInvalidf(usage, "%s needs a route, e.g. %s chat-70b", ctx, ctx)
	case len(words) == 0:
		return "", nil
	case len(words) > 1 && required:
		return "", grammarInvalidf(usage, "%s takes only a route; unexpected %s", ctx, grammarQuote(words[1].text))
	case len(words) > 1:
		return "", grammarInvalidf(usage, "%s takes at most one route; unexpected %s", ctx, grammarQuote(words[1].text))
	}
	if err := checkRoute(words[0].text, usage); err != nil {
		return "", err
	}
	return words[0].text, nil
}

// checkRoute refuses what routing.ValidateRoute refuses. The validator
// decides; the message is written here so it reads as an answer to a chat
// command rather than as a storage error.
func checkRoute(name, usage string) error {
	if routing.ValidateRoute(name) == nil {
		return nil
	}
	switch {
	case name == "":
		return grammarInvalidf(usage, "the route name is empty")
	case routing.IsReservedRoute(name):
		return grammarInvalidf(usage, "%s is a reserved word of the chat grammar, not a route name", grammarQuote(name))
	case len(name) > routing.MaxRouteLen:
		return grammarInvalidf(usage, "route name %s is %d bytes, at most %d allowed", grammarQuote(name), len(name), routing.MaxRouteLen)
	}
	return grammarInvalidf(usage, "%s is not a valid route name: use letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
		grammarQuote(name))
}

// checkVersion is checkRoute for the version of --to.
func checkVersion(v string) error {
	if routing.ValidateVersion(v) == nil {
		return nil
	}
	// An empty version never gets here: splitChatArgs refuses `--to ""`
	// as a flag without its value.
	if len(v) > routing.MaxVersionLen {
		return invalidRollbackText("version %s is %d bytes, at most %d allowed", grammarQuote(v), len(v), routing.MaxVersionLen)
	}
	return invalidRollbackText("%s is not a valid version: use letters, digits, '.', '_', '-', ':', '@' and '+', starting and ending with a letter or digit",
		grammarQuote(v))
}

// chatFlag is one flag of the grammar; a set of them is a bit mask.
type chatFlag uint8

const (
	chatFlagTo chatFlag = 1 << iota
	chatFlagNow
	chatFlagDryRun
	chatFlagForceCold
	chatFlagLimit
)

// lookupChatFlag finds a flag by name (with its dashes). Flags match
// case-insensitively, like the verbs, because phones capitalize words.
func lookupChatFlag(name string) (chatFlag, bool) {
	switch strings.ToLower(name) {
	case "--to":
		return chatFlagTo, true
	case "--now":
		return chatFlagNow, true
	case "--dry-run":
		return chatFlagDryRun, true
	case "--force-cold":
		return chatFlagForceCold, true
	case "--limit":
		return chatFlagLimit, true
	}
	return 0, false
}

func (f chatFlag) String() string {
	switch f {
	case chatFlagTo:
		return "--to"
	case chatFlagNow:
		return "--now"
	case chatFlagDryRun:
		return "--dry-run"
	case chatFlagForceCold:
		return "--force-cold"
	case chatFlagLimit:
		return "--limit"
	}
	return "--?"
}

// takesValue reports whether the flag is followed by a value (`--to v41` or
// `--to=v41`); the others are booleans and refuse one.
func (f chatFlag) takesValue() bool { return f == chatFlagTo || f == chatFlagLimit }

// valueName says what a value flag wants, for error messages.
func (f chatFlag) valueName() string {
	if f == chatFlagLimit {
		return "a number"
	}
	return "a version"
}

// owner says which commands a flag belongs to, for the error of a flag
// given to the wrong verb.
func (f chatFlag) owner() string {
	switch f {
	case chatFlagLimit:
		return "/rollback history"
	case chatFlagDryRun:
		return "/rollback <route> and /drill run"
	}
	return "/rollback <route>"
}

// chatFlags is what splitChatArgs found: which flags were given, and the
// values of the value flags.
type chatFlags struct {
	seen  chatFlag
	to    string
	limit string
}

// splitChatArgs separates the words after a verb (or a rollback's route)
// into positional words and flags. Only the flags in allowed are accepted:
// a flag of another verb, an unknown flag, a repeated flag and a value on a
// boolean flag are errors that name it. When terminator is true, a bare `--`
// ends the flags and every later token is a word, dashes or not.
func splitChatArgs(toks []chatToken, ctx string, allowed chatFlag, terminator bool, usage string) ([]chatToken, chatFlags, error) {
	var words []chatToken
	var fl chatFlags
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if !t.flag {
			words = append(words, t)
			continue
		}
		if t.text == "--" {
			if !terminator {
				return nil, fl, grammarInvalidf(usage, `"--" only separates the reason of a /rollback; %s takes no reason`, ctx)
			}
			words = append(words, toks[i+1:]...)
			break
		}
		name, value, hasValue := strings.Cut(t.text, "=")
		f, known := lookupChatFlag(name)
		switch {
		case !known && terminator:
			return nil, fl, grammarInvalidf(usage, "unknown flag %s; to use it in the reason, quote the reason or put it after --", grammarQuote(name))
		case !known:
			return nil, fl, grammarInvalidf(usage, "unknown flag %s for %s", grammarQuote(name), ctx)
		case allowed&f == 0:
			return nil, fl, grammarInvalidf(usage, "flag %s does not apply to %s; it belongs to %s", f, ctx, f.owner())
		case fl.seen&f != 0:
			return nil, fl, grammarInvalidf(usage, "flag %s is given twice", f)
		case !f.takesValue() && hasValue:
			return nil, fl, grammarInvalidf(usage, "flag %s takes no value, but got %s", f, grammarQuote(t.text))
		}
		fl.seen |= f
		if !f.takesValue() {
			continue
		}
		if !hasValue {
			// The value is the next token, unless that is itself a flag:
			// `--to --now` is a forgotten version, not a version "--now".
			if i+1 >= len(toks) || toks[i+1].flag {
				return nil, fl, grammarInvalidf(usage, "flag %s needs %s after it", f, f.valueName())
			}
			i++
			value = toks[i].text
		}
		if value == "" {
			return nil, fl, grammarInvalidf(usage, "flag %s needs %s after it", f, f.valueName())
		}
		if f == chatFlagTo {
			fl.to = value
		} else {
			fl.limit = value
		}
	}
	return words, fl, nil
}

// chatToken is one word of a chat command, quotes removed.
type chatToken struct {
	text string
	// quoted is true when any part of the word was inside quotes. A quoted
	// word is never a verb.
	quoted bool
	// flag is true when the word starts with an unquoted '-' (and is not a
	// lone "-", which is punctuation in a reason). A quoted word is never a
	// flag, which is how a reason such as "-5% accuracy" is written.
	flag bool
}

// Quote and dash characters. Slack on macOS and phones replaces typed
// quotes with typographic ones, and macOS replaces "--" with an em dash, so
// both are read as what the person typed on the keyboard.
const (
	leftDoubleQuote  = '\u201C' // “
	rightDoubleQuote = '\u201D' // ”
	leftSingleQuote  = '\u2018' // ‘
	rightSingleQuote = '\u2019' // ’
	enDash           = '\u2013' // –
	emDash           = '\u2014' // —
)

func isDoubleQuote(r rune) bool {
	return r == '"' || r == leftDoubleQuote || r == rightDoubleQuote
}

func isSingleQuote(r rune) bool {
	return r == '\'' || r == leftSingleQuote || r == rightSingleQuote
}

// isChatSpace reports whether r separates words. Besides ASCII space, tab
// and newline this takes the Unicode spaces (no-break space from option-space
// on a Mac, ideographic space from CJK keyboards), because a person cannot
// see the difference in the message they typed.
func isChatSpace(r rune) bool { return unicode.IsSpace(r) }

// isLineBreak reports whether r is a tab or line break, which the grammar
// reads as a plain space, even inside quotes, so that a reason or cron
// expression is always one line in the audit and in Slack.
func isLineBreak(r rune) bool {
	return r == '\t' || r == '\n' || r == '\u2028' || r == '\u2029'
}

// isBidiControl reports whether r is a Unicode bidirectional embedding,
// override or isolate. They are refused like control characters because
// they make text display in a different order than it reads, so an audit
// line could show a different reason than the one recorded.
func isBidiControl(r rune) bool {
	return (r >= '\u202A' && r <= '\u202E') || (r >= '\u2066' && r <= '\u2069')
}

// checkChatText refuses input the tokenizer should never see: too long, not
// UTF-8, or with characters a person cannot have meant.
func checkChatText(text, usage string) error {
	if len(text) > maxChatText {
		return grammarInvalidf(usage, "the command is %d bytes long, at most %d allowed", len(text), maxChatText)
	}
	if !utf8.ValidString(text) {
		return grammarInvalidf(usage, "the command is not valid UTF-8 text")
	}
	for _, r := range text {
		if isLineBreak(r) {
			continue
		}
		if unicode.IsControl(r) || isBidiControl(r) {
			return grammarInvalidf(usage, "the command contains the invisible character %U, which is not allowed", r)
		}
	}
	return nil
}

// tokenizeChat splits text into words.
//
// Rules, in the order they matter:
//   - Words are separated by whitespace (isChatSpace).
//   - Double quotes (" “ ”) group words anywhere in a word, as in a shell:
//     `--to="v41"` is `--to=v41`. Inside them a backslash escapes a double
//     quote or a backslash; any other backslash is kept as typed, so
//     `"C:\temp"` stays C:\temp.
//   - Single quotes (' ‘ ’) group words only when they open a word (or follow
//     the '=' of `--flag=`), and close only before whitespace or the end. An
//     apostrophe inside a word is kept: `don't` and `don’t` need no quoting,
//     and `'it's broken'` is one word.
//   - Outside quotes a backslash is an ordinary character.
//   - A word starting with an unquoted en or em dash and more text is read
//     as starting with "--" (macOS turns a typed "--" into a dash).
//
// An unterminated quote is an error.
func tokenizeChat(text, usage string) ([]chatToken, error) {
	if err := checkChatText(text, usage); err != nil {
		return nil, err
	}
	rs := []rune(text)
	n := len(rs)
	atWordEnd := func(j int) bool { return j+1 >= n || isChatSpace(rs[j+1]) }
	var toks []chatToken
	i := 0
	for {
		for i < n && isChatSpace(rs[i]) {
			i++
		}
		if i >= n {
			return toks, nil
		}
		var b strings.Builder
		var tok chatToken
		start := i
		firstQuoted := false
		afterEquals := false
		for i < n && !isChatSpace(rs[i]) {
			r := rs[i]
			switch {
			case isDoubleQuote(r):
				open := i
				i++
				closed := false
				for i < n {
					c := rs[i]
					if c == '\\' && i+1 < n && (isDoubleQuote(rs[i+1]) || rs[i+1] == '\\') {
						b.WriteRune(rs[i+1])
						i += 2
						continue
					}
					i++
					if isDoubleQuote(c) {
						closed = true
						break
					}
					if isLineBreak(c) {
						c = ' '
					}
					b.WriteRune(c)
				}
				if !closed {
					return nil, grammarInvalidf(usage, "unterminated quote: %s has no closing quote", grammarQuote(string(rs[open:])))
				}
				if open == start {
					firstQuoted = true
				}
				tok.quoted = true
				afterEquals = false
			case isSingleQuote(r) && (i == start || afterEquals):
				open := i
				i++
				closed := false
				for i < n {
					c := rs[i]
					if isSingleQuote(c) && atWordEnd(i) {
						i++
						closed = true
						break
					}
					i++
					if isLineBreak(c) {
						c = ' '
					}
					b.WriteRune(c)
				}
				if !closed {
					return nil, grammarInvalidf(usage, "unterminated quote: %s has no closing quote", grammarQuote(string(rs[open:])))
				}
				if open == start {
					firstQuoted = true
				}
				tok.quoted = true
				afterEquals = false
			default:
				b.WriteRune(r)
				afterEquals = r == '='
				i++
			}
		}
		tok.text = b.String()
		if !firstQuoted {
			if r, size := utf8.DecodeRuneInString(tok.text); (r == enDash || r == emDash) && size < len(tok.text) {
				tok.text = "--" + tok.text[size:]
			}
			tok.flag = strings.HasPrefix(tok.text, "-") && tok.text != "-"
		}
		toks = append(toks, tok)
	}
}

// joinTokens joins words with single spaces; each keeps its own text, so a
// quoted word keeps its inner spacing.
func joinTokens(toks []chatToken) string {
	var b strings.Builder
	for i, t := range toks {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(t.text)
	}
	return b.String()
}

// grammarInvalidf returns the EINVALID *Error of the grammar.
func grammarInvalidf(usage, format string, args ...any) *Error {
	return &Error{Code: EINVALID, Message: fmt.Sprintf(format, args...), Usage: usage}
}

func invalidRollbackText(format string, args ...any) *Error {
	return grammarInvalidf(RollbackUsage, format, args...)
}

func invalidDrillText(format string, args ...any) *Error {
	return grammarInvalidf(DrillUsage, format, args...)
}

// grammarQuote quotes s for an error message, clipped so a pasted paragraph
// does not become the message.
func grammarQuote(s string) string {
	if utf8.RuneCountInString(s) > grammarClipRunes {
		s = string([]rune(s)[:grammarClipRunes]) + "…"
	}
	return strconv.Quote(s)
}

// Rendering. Every String below produces the canonical text after the
// slash: verb, route, flags in a fixed order, and free text (reason, cron)
// always double-quoted. Names that are not plain words are quoted too, so a
// command built outside the parser with a hostile name renders as text that
// the parser refuses, never as text that means another command.

func (c HelpCmd) String() string { return "help" }

func (c StatusCmd) String() string {
	if c.Route == "" {
		return "status"
	}
	return "status " + renderChatRoute(c.Route)
}

func (c HistoryCmd) String() string {
	s := "history"
	if c.Route != "" {
		s += " " + renderChatRoute(c.Route)
	}
	if c.Limit != 0 {
		s += " --limit " + strconv.Itoa(c.Limit)
	}
	return s
}

func (c RollbackCmd) String() string {
	var b strings.Builder
	b.WriteString(renderChatRoute(c.Route))
	if c.To != "" {
		b.WriteString(" --to ")
		b.WriteString(renderChatWord(c.To))
	}
	if c.Now {
		b.WriteString(" --now")
	}
	if c.DryRun {
		b.WriteString(" --dry-run")
	}
	if c.ForceCold {
		b.WriteString(" --force-cold")
	}
	b.WriteByte(' ')
	b.WriteString(quoteChat(c.Reason))
	return b.String()
}

func (c DrillRunCmd) String() string {
	s := "run " + renderChatRoute(c.Route)
	if c.DryRun {
		s += " --dry-run"
	}
	return s
}

func (c DrillScheduleCmd) String() string {
	return "schedule " + renderChatRoute(c.Route) + " " + quoteChat(c.Cron)
}

func (c DrillCancelCmd) String() string { return "cancel " + renderChatRoute(c.Route) }

func (c DrillSkipCmd) String() string { return "skip " + renderChatRoute(c.Route) }

func (DrillListCmd) String() string { return "list" }

func (c DrillHistoryCmd) String() string {
	if c.Route == "" {
		return "history"
	}
	return "history " + renderChatRoute(c.Route)
}

// renderChatRoute renders a route name: as renderChatWord, and quoted when
// it is a reserved word, which unquoted would read as a verb.
func renderChatRoute(s string) string {
	if routing.IsReservedRoute(s) {
		return quoteChat(s)
	}
	return renderChatWord(s)
}

// renderChatWord renders a name as is when it reads back as the same single
// word (every valid route and version does), and quoted otherwise: empty,
// flag-like, or with spaces, quotes, backslashes or non-ASCII.
func renderChatWord(s string) string {
	if s == "" || s[0] == '-' {
		return quoteChat(s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\'' || c == '\\' {
			return quoteChat(s)
		}
	}
	return s
}

// quoteChat double-quotes s so that tokenizeChat reads it back as one word
// with exactly s as its text: backslashes and every character the tokenizer
// takes as a double quote are escaped.
func quoteChat(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		if r == '\\' || isDoubleQuote(r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}
