package bot

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// The renderers below turn what commands answers into Block Kit messages.
// Each is built so that no input can break Slack's limits: every piece of
// text is clipped where it is made, lists stop when the message is full
// and say how much they left out, and ValidateMessage holds for the
// result. Text that may carry outside input (reasons, names, agents' error
// text, anything read back from etcd or Postgres) is escaped for mrkdwn, so
// nobody can post a broadcast or a link through backflip; the only markup
// in a message is backflip's own formatting and <@U…> mentions that
// commands.Actor.Mention wrote for validated Slack user IDs.

// renderBudget is how many characters of block text a renderer fills at
// most: below maxMessageChars, with room for the tail lines ("and N more")
// that are added after a list is cut.
const renderBudget = 10000

// Clips of single free-text fields, in characters after escaping. They keep
// one hostile field from crowding out the rest of a message.
const (
	clipReason = 1200
	clipName   = 64
	clipActor  = 120
	clipDetail = 300
	clipLine   = 600
	// listedNames bounds the names (routers, runtimes, nodes) one list
	// shows before "and N more".
	listedNames = 10
)

// Icons. Shortcodes are what Slack shows as emoji; PlainText maps them to
// the same emoji for the terminal.
const (
	iconDone     = ":white_check_mark:"
	iconWarning  = ":warning:"
	iconRefused  = ":no_entry:"
	iconFailed   = ":x:"
	iconMag      = ":mag:" // a dry run; a route not found
	iconRecycle  = ":recycle:"
	iconInfo     = ":information_source:"
	iconLock     = ":lock:"
	iconConflict = ":twisted_rightwards_arrows:"
	iconMinus    = ":heavy_minus_sign:"
	iconMemo     = ":memo:"
	iconScroll   = ":scroll:"
	iconCold     = ":snowflake:"
	iconHelp     = ":book:"
	iconDrill    = ":fire_engine:"
)

// HelpMessage is the answer to `/rollback help` (drill false) or
// `/drill help`: the grammar's usage lines and a few examples.
func HelpMessage(drill bool) Message {
	var l blockList
	if drill {
		l.header("/drill: rollback drills")
		l.section(iconDrill + " A drill runs a real rollback on the same code path as an incident would: " +
			"flip to the previous version, verify, flip back, time every phase, keep the history and flag regressions. " +
			"Scheduled drills are announced in advance.")
		l.section("*Usage*\n" + codeBlock(strings.ReplaceAll(commands.DrillUsage, " · ", "\n")))
		l.section("*Examples*\n" + strings.Join([]string{
			"• " + escapeMrkdwn("`/drill run chat-70b --dry-run`") + " checks what a drill of chat-70b would do, without flipping anything",
			"• " + escapeMrkdwn("`/drill schedule chat-70b \"0 10 * * TUE\"`") + " drills chat-70b every Tuesday at 10:00",
			"• " + escapeMrkdwn("`/drill history chat-70b`") + " shows past drills, their timings and regressions",
		}, "\n"))
		l.context(escapeMrkdwn("Drills skip a route that had a real rollback or promotion recently. /rollback help shows the rollback commands."))
		return Message{Text: fallback("backflip /drill help: " + escapeMrkdwn(commands.DrillUsage)), Blocks: l.blocks}
	}
	l.header("/rollback: roll a model back")
	l.section(iconHelp + " A rollback is a routing change, never a deployment: the route flips in one etcd transaction " +
		"to a version still warm on the fleet, and requests in flight are aborted and re-issued on it.")
	l.section("*Usage*\n" + codeBlock(strings.ReplaceAll(commands.RollbackUsage, " · ", "\n")))
	l.section("*Examples*\n" + strings.Join([]string{
		"• " + escapeMrkdwn("`/rollback chat-70b latency spike since v42`") + " shows a pre-flight card (target, warm capacity, requests in flight, last drill); nothing changes until someone confirms",
		"• " + escapeMrkdwn("`/rollback chat-70b --to v40 --now \"bad answers after v42\"`") + " rolls back to v40 at once",
		"• " + escapeMrkdwn("`/rollback status chat-70b`") + " shows the active and previous versions, whether the previous one is warm, and the last drill",
	}, "\n"))
	l.context(escapeMrkdwn("A reason is required and is audited. --force-cold rolls back to a target that is not warm. /drill help shows the drill commands."))
	return Message{Text: fallback("backflip /rollback help: " + escapeMrkdwn(strings.ReplaceAll(commands.RollbackUsage, "\n", " · "))), Blocks: l.blocks}
}

// ErrorReply is the ephemeral answer to a request that was refused or
// malformed: what commands says about it (never an internal error's
// detail), under a prefix that names the kind of failure, with the usage
// line for bad input.
func ErrorReply(err error) Message {
	code := commands.ErrorCode(err)
	prefix := errorPrefix(code)
	msg := commands.ErrorMessage(err)
	if msg == "" {
		msg = "backflip could not complete the request"
	}
	// commands writes its messages for chat: the actors in them are
	// mentions it made with Actor.Mention, kept here; everything else
	// (names, quoted input, agents' error text) is escaped.
	body := escapeKeepMentions(cleanLines(msg))
	var l blockList
	l.section(clipMrkdwn(prefix+":* "+body, maxSectionText))
	if usage := commands.ErrorUsage(err); code == commands.EINVALID && usage != "" {
		l.section("*Usage*\n" + codeBlock(strings.ReplaceAll(usage, " · ", "\n")))
	}
	return Message{Text: fallback(prefixWords(prefix) + ": " + body), Blocks: l.blocks}
}

// errorPrefix is the opening of an error reply (bold is closed by the
// caller, after the colon).
func errorPrefix(code string) string {
	switch code {
	case commands.EREFUSED:
		return iconRefused + " *Refused"
	case commands.EINVALID:
		return iconWarning + " *Bad input"
	case commands.EUNAUTHORIZED:
		return iconLock + " *Not allowed"
	case commands.ECONFLICT:
		return iconConflict + " *Conflict"
	case commands.ENOTFOUND:
		return iconMag + " *Not found"
	}
	return iconFailed + " *Failed"
}

// prefixWords is a prefix without its icon and markup, for fallback text.
func prefixWords(prefix string) string {
	_, words, _ := strings.Cut(prefix, " ")
	return strings.TrimPrefix(words, "*")
}

// CardMessage is the pre-flight card of `/rollback <route>` without --now,
// rendered from the dry run's result: what would happen, who asked and
// why, and the buttons that make it happen. now is when the card is
// rendered (for "expires in").
//
// The buttons carry card.Encode() as their value. A card whose value does
// not fit in a button (a reason made of characters JSON escapes, such as
// '<') is rendered without buttons and says why: it cannot be confirmed,
// and the rollback has to be typed again with --now or a shorter reason.
func CardMessage(res *commands.Result, card Card, now time.Time) Message {
	if res == nil {
		res = &commands.Result{Kind: routing.KindRollback, Route: card.Route, From: card.From, To: card.To}
	}
	requester := commands.Actor{ID: card.By}
	if res.Actor.ID == card.By {
		requester = res.Actor
	}
	reason := card.Reason
	if reason == "" {
		reason = res.Reason
	}
	var l blockList
	l.header(fmt.Sprintf("Roll back %s %s → %s?", card.Route, dashVersion(card.From), card.To))
	l.section("Requested by " + actorMrkdwn(requester) + "\n*Reason:* " + md(reason, clipReason))

	facts := []string{fmt.Sprintf("*Target:* %s (active now: %s)", md(card.To, clipName), md(dashVersion(card.From), clipName))}
	facts = append(facts, "*Warm:* "+cardWarmText(res.Warm, card.ForceCold))
	facts = append(facts, "*In flight:* "+cardInFlightText(res, card.To))
	facts = append(facts, "*Last drill:* "+lastDrillText(res.LastDrill, now))
	facts = append(facts, fmt.Sprintf("*Route revision:* %d (if the route changes before you confirm, the rollback is refused, not re-targeted)", card.Rev))
	l.section(strings.Join(facts, "\n"))
	if w := res.Warm; w != nil && !w.Warm {
		if cold := notWarmList(w, listedNames); cold != "" {
			l.section("*Not warm on:* " + cold)
		}
	}

	value, err := card.Encode()
	expiry := expiryText(card.Expires(), now)
	if err == nil {
		confirmText := fmt.Sprintf("Roll back %s to %s now? In-flight requests will be aborted and re-issued.", card.Route, card.To)
		if card.ForceCold {
			confirmText = fmt.Sprintf("Roll back %s to %s now, although it is not warm (FORCE COLD)? In-flight requests will be aborted and re-issued.", card.Route, card.To)
		}
		confirm := slack.NewConfirmationBlockObject(
			plain(clipPlain(fmt.Sprintf("Roll back %s?", card.Route), maxConfirmTitle)),
			plain(clipPlain(confirmText, maxConfirmText)),
			plain("Roll back now"),
			plain("Go back"),
		).WithStyle(slack.StyleDanger)
		ok := slack.NewButtonBlockElement(ActionConfirm, value, plain("Confirm")).WithStyle(slack.StyleDanger).WithConfirm(confirm)
		cancel := slack.NewButtonBlockElement(ActionCancel, value, plain("Cancel"))
		l.add(slack.NewActionBlock("", ok, cancel), textLen(value)*2)
		l.context(escapeMrkdwn(expiry), "op "+md(card.ID, clipName))
	} else {
		l.section(iconWarning + " This card has no buttons: its reason does not fit in a Slack button. " +
			"Type the rollback again with --now, or with a shorter reason.")
		l.context("op " + md(card.ID, clipName))
	}
	text := fmt.Sprintf("Roll back %s %s → %s? Requested by %s: %s. Confirm or cancel in Slack (%s).",
		md(card.Route, clipName), md(dashVersion(card.From), clipName), md(card.To, clipName),
		actorPlain(requester), md(reason, 500), escapeMrkdwn(expiry))
	return Message{Text: fallback(text), Blocks: l.blocks}
}

// cardWarmText is the card's warm line.
func cardWarmText(w *warm.Report, forceCold bool) string {
	switch {
	case w == nil:
		return "not checked"
	case w.Warm && !forceCold:
		return iconDone + " " + escapeMrkdwn(w.Summary())
	case forceCold:
		return iconWarning + " *FORCE COLD:* " + md(w.Summary()+"; "+w.Decision(), clipDetail)
	}
	return iconRefused + " NOT warm: " + md(w.Summary()+"; "+w.Decision(), clipDetail) +
		"; the rollback will be refused unless --force-cold"
}

// cardInFlightText is the card's in-flight line.
func cardInFlightText(res *commands.Result, to string) string {
	n := res.InFlightBefore
	switch {
	case res.Kind != "" && !res.Kind.Aborts():
		return fmt.Sprintf("%d %s; they finish on the version they started on", n, plural(n, "request", "requests"))
	case n == 0:
		return "no requests in flight"
	}
	return fmt.Sprintf("%d %s will be aborted at their next checkpoint and re-issued on %s",
		n, plural(n, "request", "requests"), md(to, clipName))
}

// lastDrillText is "3 days ago, p50 1.2 s" or "never drilled".
func lastDrillText(d *commands.DrillInfo, now time.Time) string {
	if d == nil || d.Count == 0 {
		return "never drilled"
	}
	return fmt.Sprintf("%s, p50 %.1f s", commands.Ago(now, d.At), d.P50.Seconds())
}

// expiryText is "expires in 10 min (14:13 UTC)".
func expiryText(exp, now time.Time) string {
	d := exp.Sub(now)
	switch {
	case d <= 0:
		return fmt.Sprintf("expired at %s", clock(exp))
	case d < time.Minute:
		return fmt.Sprintf("expires in less than a minute (%s)", clock(exp))
	}
	return fmt.Sprintf("expires in %d min (%s)", int((d+30*time.Second)/time.Minute), clock(exp))
}

// CardClosedMessage replaces a card once it can no longer be acted on
// (cancelled, expired, or its confirmation refused): what it proposed,
// and text saying what became of it. It has no buttons.
func CardClosedMessage(card Card, text string) Message {
	var l blockList
	l.header(fmt.Sprintf("Roll back %s %s → %s", card.Route, dashVersion(card.From), card.To))
	body := escapeKeepMentions(cleanLines(text))
	if strings.TrimSpace(body) == "" {
		body = "This card is closed."
	}
	l.section(clipMrkdwn(body, maxSectionText))
	l.context("requested by "+actorMrkdwn(commands.Actor{ID: card.By}), "reason: "+md(card.Reason, 500), "op "+md(card.ID, clipName))
	return Message{
		Text:   fallback(fmt.Sprintf("Roll back %s %s → %s: %s", card.Route, dashVersion(card.From), card.To, body)),
		Blocks: l.blocks,
	}
}

// ProgressView is what a live progress message shows while an op runs.
type ProgressView struct {
	// Op is the op id.
	Op              string
	Route, From, To string
	Kind            routing.Kind
	Actor           commands.Actor
	Reason          string
	ForcedCold      bool
	// Phases holds the latest report of each phase so far, in phase order.
	Phases  []commands.Progress
	Started time.Time
}

// maxProgressLines bounds the phase lines: there are six phases, so more
// means the caller is appending every report rather than the latest.
const maxProgressLines = 20

// ProgressMessage is the live message of a running op, updated in place
// after each phase and replaced by ReportMessage at the end.
func ProgressMessage(v ProgressView) Message {
	head := fmt.Sprintf("%s %s %s → %s", progressVerb(v.Kind), v.Route, dashVersion(v.From), dashVersion(v.To))
	switch {
	case v.From == "" && v.To == "":
		// Not resolved yet (a --now rollback before its first phase).
		head = fmt.Sprintf("%s %s", progressVerb(v.Kind), v.Route)
	case v.From == "" && v.Kind != routing.KindPromote:
		// The version rolled away from is not known until resolve.
		head = fmt.Sprintf("%s %s to %s", progressVerb(v.Kind), v.Route, v.To)
	}
	icon := "⏳"
	var lines []string
	current := ""
	for i, p := range v.Phases {
		if i == maxProgressLines {
			lines = append(lines, fmt.Sprintf("… and %d more", len(v.Phases)-i))
			break
		}
		line := phaseIcon(p.State) + " " + phaseName(p.Phase)
		switch {
		case p.State == commands.StateRunning:
			line += "…"
			current = phaseName(p.Phase)
		case p.Took > 0 || p.State == commands.StateDone:
			line += " " + fmtDuration(p.Took)
		}
		if p.State == commands.StateFailed {
			icon = "⚠️"
		}
		if p.Detail != "" {
			line += " · " + escapeKeepMentions(cleanLine(p.Detail))
		}
		lines = append(lines, clipMrkdwn(line, clipLine))
	}
	var l blockList
	top := icon + " *" + md(head, 400) + "*"
	if v.ForcedCold {
		top += " · " + iconWarning + " FORCED COLD"
	}
	l.section(top)
	if len(lines) > 0 {
		l.section(strings.Join(lines, "\n"))
	}
	var ctx []string
	if v.Op != "" {
		ctx = append(ctx, "op "+md(v.Op, clipName))
	}
	ctx = append(ctx, "by "+actorMrkdwn(v.Actor))
	if v.Reason != "" {
		ctx = append(ctx, "reason: "+md(v.Reason, 500))
	}
	if !v.Started.IsZero() {
		ctx = append(ctx, "started "+timeOfDay(v.Started))
	}
	l.context(ctx...)
	text := md(head, 400)
	if current != "" {
		text += ": " + current + "…"
	}
	msg := Message{Text: fallback(text), Blocks: l.blocks}
	if v.Op != "" {
		// The key lets the client find this message after a post whose
		// outcome it could not see, instead of posting it twice.
		msg.Key = "op " + v.Op + " progress"
		msg.Text = fallback(text + " (" + msg.Key + ")")
	}
	return msg
}

func progressVerb(k routing.Kind) string {
	switch k {
	case routing.KindPromote:
		return "Promoting"
	case routing.KindDrill:
		return "Drill: rolling back"
	case routing.KindDrillReturn:
		return "Drill: returning"
	}
	return "Rolling back"
}

func phaseIcon(s commands.PhaseState) string {
	switch s {
	case commands.StateRunning:
		return "⏳"
	case commands.StateDone:
		return "✅"
	case commands.StateFailed:
		return "⚠️"
	case commands.StateSkipped:
		return "⏭"
	}
	return "•"
}

// phaseName is a phase as the timing report names it.
func phaseName(p commands.Phase) string {
	if p == commands.PhaseInFlight {
		return "in-flight"
	}
	return md(string(p), 40)
}

// ReportMessage is the final message of an op, which replaces its progress
// message: the contract's timing report with an icon for the outcome, what
// did not confirm when the op is degraded, and who asked and why.
func ReportMessage(res *commands.Result) Message {
	if res == nil {
		return Message{Text: "no result", Blocks: []slack.Block{slack.NewSectionBlock(mrkdwn("no result"), nil, nil)}}
	}
	report := escapeMrkdwn(cleanLine(res.Report()))
	var l blockList
	l.section(clipMrkdwn(outcomeIcon(res.Outcome)+" "+report, maxSectionText))
	if problems := resultProblems(res); len(problems) > 0 {
		l.section(strings.Join(problems, "\n"))
	}
	var ctx []string
	if res.Op != "" {
		ctx = append(ctx, "op "+md(res.Op, clipName))
	}
	ctx = append(ctx, "by "+actorMrkdwn(res.Actor))
	if res.Reason != "" {
		ctx = append(ctx, "reason: "+md(res.Reason, 500))
	}
	if !res.StartedAt.IsZero() {
		ctx = append(ctx, "started "+timeOfDay(res.StartedAt))
	}
	l.context(ctx...)
	key := ""
	if res.Op != "" {
		key = "op " + res.Op + " report"
	}
	return Message{Text: withKey(report, key), Blocks: l.blocks, Key: key}
}

// outcomeIcon is the icon in front of a report.
func outcomeIcon(outcome string) string {
	switch outcome {
	case commands.OutcomeCompleted:
		return iconDone
	case commands.OutcomeDegraded:
		return iconWarning
	case commands.OutcomeRefused:
		return iconRefused
	case commands.OutcomeDryRun:
		return iconMag
	case commands.OutcomeRecovered:
		return iconRecycle
	case commands.OutcomeAbandoned:
		return iconInfo
	}
	return iconFailed
}

// resultProblems lists, one line each, what of an op did not go as it
// should: routers lost or not confirmed, runtime instances that did not
// acknowledge, a target that was not warm. Each list is clipped; the whole
// stays within one section.
func resultProblems(res *commands.Result) []string {
	var out []string
	add := func(label string, names []string) {
		if len(names) > 0 {
			out = append(out, fmt.Sprintf("*%s (%d):* %s", label, len(names), nameList(names, listedNames)))
		}
	}
	if rr := res.Routers; rr != nil {
		if rr.Error != "" {
			out = append(out, "*Routers:* convergence unknown: "+md(rr.Error, clipDetail))
		}
		add("Routers lost before confirming", rr.Lost)
		add("Routers that did not confirm in time", rr.Pending)
	}
	if in := res.InFlight; in != nil {
		add("Runtimes that did not acknowledge", in.Missing)
		add("Runtimes that did not report re-issues", in.PendingReissue)
		add("Runtimes gone before acknowledging", in.Vanished)
		if len(in.DeliveryErrors) > 0 {
			ids := make([]string, 0, len(in.DeliveryErrors))
			for id := range in.DeliveryErrors {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			var parts []string
			for i, id := range ids {
				if i == 3 {
					parts = append(parts, fmt.Sprintf("and %d more", len(ids)-i))
					break
				}
				parts = append(parts, md(id, clipName)+": "+md(in.DeliveryErrors[id], 200))
			}
			out = append(out, fmt.Sprintf("*Signal not delivered (%d):* %s", len(ids), strings.Join(parts, "; ")))
		}
	}
	if w := res.Warm; w != nil && !w.Warm {
		if cold := notWarmList(w, listedNames); cold != "" {
			out = append(out, "*Not warm on:* "+cold)
		}
	}
	// Each line is bounded (ten names of at most 64 characters, three
	// errors of at most 200, ten nodes with reasons of at most 120), but
	// together they can pass a section's limit: the longest give way.
	if len(out) == 0 {
		return nil
	}
	return []string{fitLines(out, maxSectionText)}
}

// AuditSummaryMessage is the reply in the report's thread: the op's audit
// summary (op id, actor, reason, per-phase timings, etcd revision, audit row
// or "pending"). row is the audit_events id once shipped, 0 before.
func AuditSummaryMessage(res *commands.Result, row int64) Message {
	if res == nil {
		return Message{Text: "no result", Blocks: []slack.Block{slack.NewSectionBlock(mrkdwn("no result"), nil, nil)}}
	}
	var lines []string
	for _, line := range strings.Split(res.AuditSummary(row), "\n") {
		lines = append(lines, escapeMrkdwn(cleanLine(line)))
	}
	body := fitLines(lines, maxSectionText-40)
	var l blockList
	l.section(iconMemo + " *Audit summary*\n" + body)
	key := ""
	if res.Op != "" {
		key = "op " + res.Op + " audit"
	}
	return Message{Text: withKey(strings.Join(lines, " · "), key), Blocks: l.blocks, Key: key}
}

// fitLines joins lines with newlines in at most limit characters. When they
// are too long, the longest lines give way first and evenly: every line
// longer than a common cap is clipped to it, so a long reason or agent
// error shrinks before a short line (timings, a node name) is touched.
func fitLines(lines []string, limit int) string {
	total := len(lines) - 1
	longest := 0
	for _, l := range lines {
		total += textLen(l)
		longest = max(longest, textLen(l))
	}
	if total <= limit {
		return strings.Join(lines, "\n")
	}
	// The largest cap at which the lines fit, found by bisection.
	lo, hi := 1, longest
	for lo < hi {
		mid := (lo + hi + 1) / 2
		n := len(lines) - 1
		for _, l := range lines {
			n += min(textLen(l), mid)
		}
		if n <= limit {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = clipMrkdwn(l, lo)
	}
	return clipMrkdwn(strings.Join(out, "\n"), limit)
}

// StatusMessage is the answer to `/rollback status`: one section per route.
// When there are more routes than a message holds, the routes that need
// attention (rollback target not warm, warm check failed) come first and
// the rest are counted at the end.
func StatusMessage(rep commands.StatusReport) Message {
	shared := ""
	if len(rep.Routes) > 1 {
		shared = rep.Routes[0].DrillError
		for _, rs := range rep.Routes[1:] {
			if rs.DrillError != shared {
				shared = ""
				break
			}
		}
	}
	type routeText struct {
		text      string
		attention bool
	}
	texts := make([]routeText, len(rep.Routes))
	attention := 0
	for i := range rep.Routes {
		t, att := routeStatusText(&rep.Routes[i], rep.At, shared == "")
		texts[i] = routeText{t, att}
		if att {
			attention++
		}
	}

	// The tail is rendered first so that the routes leave room for it.
	var tail blockList
	if len(rep.Routes) == 0 && len(rep.Malformed) == 0 {
		tail.section("No routes yet: a route is created by its first promote.")
	}
	if shared != "" {
		tail.context("Last drills unknown: " + md(shared, clipDetail))
	}
	if len(rep.Malformed) > 0 {
		var warn []string
		for i, m := range rep.Malformed {
			if i == 5 {
				warn = append(warn, fmt.Sprintf("• and %d more", len(rep.Malformed)-i))
				break
			}
			warn = append(warn, "• "+md(m, clipDetail))
		}
		tail.section(fmt.Sprintf("%s *Unreadable values (%d)*, left out above:\n%s", iconWarning, len(rep.Malformed), strings.Join(warn, "\n")))
	}
	summary := fmt.Sprintf("%d %s", len(rep.Routes), plural(len(rep.Routes), "route", "routes"))
	if attention > 0 {
		summary += fmt.Sprintf(", %d with a rollback target that is not ready", attention)
	}
	tail.context(escapeMrkdwn(summary), fmt.Sprintf("etcd revision %d", rep.Revision), "read "+timeOfDay(rep.At))
	const moreReserve = 300 // the "and N more routes" line

	total := 0
	for _, t := range texts {
		total += textLen(t.text)
	}
	var l blockList
	if !l.fits(len(texts)+len(tail.blocks)+1, total+tail.chars+moreReserve) {
		slices.SortStableFunc(texts, func(a, b routeText) int {
			switch {
			case a.attention == b.attention:
				return 0
			case a.attention:
				return -1
			}
			return 1
		})
	}
	shown, shownAttention := 0, 0
	for _, t := range texts {
		if !l.fits(1+len(tail.blocks)+1, textLen(t.text)+tail.chars+moreReserve) {
			break
		}
		l.section(t.text)
		shown++
		if t.attention {
			shownAttention++
		}
	}
	if cut := len(texts) - shown; cut > 0 {
		more := fmt.Sprintf("… and %d more %s not shown", cut, plural(cut, "route", "routes"))
		if a := attention - shownAttention; a > 0 {
			more += fmt.Sprintf(" (%d of them not ready)", a)
		} else if attention > 0 {
			more += " (all with a warm rollback target)"
		}
		more += ". /rollback status <route> shows one route; backflipctl status shows them all."
		l.context(escapeMrkdwn(more))
	}
	l.blocks = append(l.blocks, tail.blocks...)
	l.chars += tail.chars

	// The fallback is counts only: the route texts mention actors, and a
	// notification about a status should not ping them.
	text := "backflip status: " + escapeMrkdwn(summary) + fmt.Sprintf(" (etcd revision %d)", rep.Revision)
	if len(rep.Routes) == 1 {
		text = "backflip status of " + md(rep.Routes[0].Route, clipName) + ": " + escapeMrkdwn(summary) + fmt.Sprintf(" (etcd revision %d)", rep.Revision)
	}
	return Message{Text: fallback(text), Blocks: l.blocks}
}

// routeStatusText renders one route for StatusMessage (escaped mrkdwn) and
// says whether its rollback is not ready. drillDetail says whether a drill
// error is explained under the route.
func routeStatusText(rs *commands.RouteStatus, now time.Time, drillDetail bool) (string, bool) {
	c := rs.Config
	var b strings.Builder
	fmt.Fprintf(&b, "*%s* · %s · %s by %s %s · epoch %d · rev %d\n", md(rs.Route, clipName), md(c.Active, clipName),
		md(string(c.Kind), 20), actorIDMrkdwn(c.Actor), commands.Ago(now, c.At), c.Epoch, rs.Revision)

	rd := rs.Readiness
	var detail []string
	attention := false
	switch {
	case rd.Target == "":
		b.WriteString(iconMinus + " no rollback target (no previous version)")
	case rd.Error != "":
		attention = true
		fmt.Fprintf(&b, "%s rollback target %s: warm check failed", iconWarning, md(rd.Target, clipName))
		detail = append(detail, "warm check: "+md(rd.Error, clipDetail))
	case rd.Report != nil && rd.Warm:
		fmt.Fprintf(&b, "%s rollback target %s warm (%s)", iconDone, md(rd.Target, clipName), warmCounts(rd.Report))
	case rd.Report != nil:
		attention = true
		fmt.Fprintf(&b, "%s rollback target %s NOT warm (%s)", iconRefused, md(rd.Target, clipName), warmCounts(rd.Report))
		if rd.Reason != "" {
			detail = append(detail, "not warm: "+md(rd.Reason, clipDetail))
		}
		if cold := notWarmList(rd.Report, 5); cold != "" {
			detail = append(detail, "not warm on: "+cold)
		}
	default:
		fmt.Fprintf(&b, "rollback target %s", md(rd.Target, clipName))
	}

	switch {
	case rs.DrillError != "":
		b.WriteString(" · last drill unknown")
		if drillDetail {
			detail = append(detail, "drills: "+md(rs.DrillError, clipDetail))
		}
	case rs.LastDrill != nil:
		fmt.Fprintf(&b, " · last drill %s (p50 %.1f s)", commands.Ago(now, rs.LastDrill.At), rs.LastDrill.P50.Seconds())
	default:
		b.WriteString(" · never drilled")
	}
	b.WriteString(" · " + inflightText(rs.InFlight))

	// Only after a rollback (or a drill still holding) is a default
	// rollback refused: a drill's return is back where the route was.
	if (c.Kind == routing.KindRollback || c.Kind == routing.KindDrill) && c.From != "" && c.From == c.Previous {
		detail = append(detail, fmt.Sprintf("the last change was a %s from %s: a rollback without --to is refused; --to %s undoes it",
			md(string(c.Kind), 20), md(c.From, clipName), md(c.From, clipName)))
	}
	for _, d := range detail {
		b.WriteString("\n• " + d)
	}
	return clipMrkdwn(b.String(), maxSectionText), attention
}

// warmCounts is "24/24 nodes, 96/96 GPUs".
func warmCounts(r *warm.Report) string {
	return fmt.Sprintf("%d/%d nodes, %d/%d GPUs", r.WarmNodes, r.TargetNodes, r.WarmGPUs, r.TargetGPUs)
}

// inflightText is "37 in flight", with a breakdown by version when more
// than one has requests, largest first.
func inflightText(m map[string]int) string {
	total := 0
	versions := make([]string, 0, len(m))
	for v, n := range m {
		total += n
		versions = append(versions, v)
	}
	if len(versions) < 2 {
		return fmt.Sprintf("%d in flight", total)
	}
	slices.SortFunc(versions, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for i, v := range versions {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("%d more", len(versions)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", md(v, clipName), m[v]))
	}
	return fmt.Sprintf("%d in flight (%s)", total, strings.Join(parts, ", "))
}

// HistoryMessage is the answer to `/rollback history`: one line per audit
// event, newest first, as many as a message holds.
func HistoryMessage(rep commands.HistoryReport) Message {
	title := "*Audit history* (all routes, newest first)"
	if rep.Route != "" {
		title = "*Audit history of " + md(rep.Route, clipName) + "* (newest first)"
	}
	var notes []string
	if rep.AuditError != "" {
		notes = append(notes, iconWarning+" "+md(rep.AuditError, 400))
	}
	if rep.Malformed > 0 {
		notes = append(notes, fmt.Sprintf("%s %d malformed %s in the etcd outbox left out", iconWarning, rep.Malformed, plural(rep.Malformed, "event", "events")))
	}
	pending := 0
	lines := make([]string, len(rep.Items))
	for i := range rep.Items {
		lines[i] = historyLine(&rep.Items[i])
		if rep.Items[i].Pending {
			pending++
		}
	}

	var l blockList
	l.section(iconScroll + " " + title)
	if len(notes) > 0 {
		l.context(notes...)
	}
	if len(lines) == 0 {
		empty := "No audit events yet."
		if rep.Route != "" {
			empty = "No audit events for " + md(rep.Route, clipName) + " yet."
		}
		l.section(empty)
	}
	// Room for the closing context: the count and the pending note.
	shown := l.lines(lines, 1, 400)
	var tail []string
	if shown < len(lines) {
		more := fmt.Sprintf("showing the newest %d of %d events; --limit and a route narrow it, backflipctl history shows them all", shown, len(lines))
		tail = append(tail, escapeMrkdwn(more))
	}
	if pending > 0 {
		tail = append(tail, "pending: still in the etcd outbox, not yet in Postgres")
	}
	if len(tail) > 0 {
		l.context(tail...)
	}
	text := fmt.Sprintf("audit history: %d %s", len(rep.Items), plural(len(rep.Items), "event", "events"))
	if rep.Route != "" {
		text = fmt.Sprintf("audit history of %s: %d %s", md(rep.Route, clipName), len(rep.Items), plural(len(rep.Items), "event", "events"))
	}
	// The fallback names nobody: a notification about a history should not
	// ping everyone in it.
	return Message{Text: fallback(text), Blocks: l.blocks}
}

// historyLine renders one audit event (escaped mrkdwn).
func historyLine(it *commands.HistoryItem) string {
	var b strings.Builder
	b.WriteString(it.OccurredAt.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, " · *%s* %s", md(string(it.Kind), 40), md(it.Route, clipName))
	switch {
	case it.FromVersion != "" && it.ToVersion != "":
		fmt.Fprintf(&b, " %s → %s", md(it.FromVersion, clipName), md(it.ToVersion, clipName))
	case it.ToVersion != "":
		fmt.Fprintf(&b, " → %s", md(it.ToVersion, clipName))
	case it.FromVersion != "":
		fmt.Fprintf(&b, " from %s", md(it.FromVersion, clipName))
	}
	if it.Outcome != "" {
		b.WriteString(" · " + md(it.Outcome, 40))
	}
	b.WriteString(" · " + actorIDMrkdwn(it.Actor))
	if it.ActorName != "" && it.ActorName != it.Actor && !isMention(commands.Actor{ID: it.Actor}.Mention()) {
		b.WriteString(" (" + md(it.ActorName, clipName) + ")")
	}
	if it.Reason != "" {
		b.WriteString(" · “" + md(it.Reason, 160) + "”")
	}
	if total, ok := it.Timings["total"]; ok {
		b.WriteString(" · " + fmtDuration(time.Duration(total*float64(time.Millisecond))))
	}
	if it.Pending {
		b.WriteString(" · pending")
	}
	return clipMrkdwn(b.String(), clipLine)
}

// NoticeMessage tells the op's channel what recovery did with an op whose
// bot replica stopped: finished it after its flip, or closed it as
// abandoned before.
func NoticeMessage(n commands.Notice) Message {
	icon := iconInfo
	if n.Outcome == commands.OutcomeRecovered {
		icon = iconRecycle
	}
	body := escapeKeepMentions(cleanLines(n.Text))
	if strings.TrimSpace(body) == "" {
		body = fmt.Sprintf("op %s of %s was %s by recovery", md(n.Op, clipName), md(n.Route, clipName), md(n.Outcome, 40))
	}
	var l blockList
	l.section(clipMrkdwn(icon+" "+body, maxSectionText))
	if n.Result != nil {
		if problems := resultProblems(n.Result); len(problems) > 0 {
			l.section(strings.Join(problems, "\n"))
		}
	}
	l.context("op "+md(n.Op, clipName), "finished by op recovery on another backflip replica")
	return Message{Text: fallback(body), Blocks: l.blocks}
}

// WarmKeepMessage is the OPS_CHANNEL alert of the warm-keep monitor: a
// route's rollback target went cold (or is warm again), with the nodes that
// are not warm listed one per line.
func WarmKeepMessage(ev warm.Event) Message {
	icon := iconCold
	if ev.State == warm.EventWarmAgain {
		icon = iconDone
	}
	// Event.Text is plain text that quotes agents' error text: escaped
	// whole, it can carry no markup.
	text := escapeMrkdwn(cleanLine(ev.Text()))
	var l blockList
	l.section(clipMrkdwn(icon+" "+text, maxSectionText))
	if ev.State != warm.EventWarmAgain {
		cold := ev.Report.NotWarm()
		var lines []string
		for i, n := range cold {
			if i == 20 {
				lines = append(lines, fmt.Sprintf("• and %d more", len(cold)-i))
				break
			}
			line := fmt.Sprintf("• %s · %s · %d %s", md(n.Node, clipName), md(string(n.State), 20), n.GPUs, plural(n.GPUs, "GPU", "GPUs"))
			if n.Reason != "" {
				line += " · " + md(n.Reason, 200)
			}
			lines = append(lines, line)
		}
		if len(lines) > 0 {
			l.section(fitLines(append([]string{fmt.Sprintf("*Not warm (%d):*", len(cold))}, lines...), maxSectionText))
		}
	}
	ctx := []string{"route " + md(ev.Route, clipName), "active " + md(dashVersion(ev.Active), clipName)}
	if !ev.At.IsZero() {
		ctx = append(ctx, "checked "+timeOfDay(ev.At))
	}
	if n := len(ev.Report.Malformed); n > 0 {
		ctx = append(ctx, fmt.Sprintf("%d unreadable node %s", n, plural(n, "record", "records")))
	}
	l.context(ctx...)
	return Message{Text: fallback(text), Blocks: l.blocks}
}

// DrillReplyMessage renders a /drill command's answer: its text, a section
// per run of lines, cut (and saying so) when it is longer than a message
// holds.
func DrillReplyMessage(r commands.DrillReply) Message {
	text := strings.TrimSpace(cleanLines(r.Text))
	if text == "" {
		text = "done"
	}
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, " ")
		if line == "" {
			// Slack collapses nothing, but an empty line in a section
			// reads as a paragraph break; keep one.
			line = " "
		}
		lines = append(lines, escapeKeepMentions(line))
	}
	var l blockList
	shown := l.lines(lines, 1, 200)
	if shown < len(lines) {
		l.context(escapeMrkdwn(fmt.Sprintf("… %d more lines not shown; backflipctl drill shows the whole answer", len(lines)-shown)))
	}
	return Message{Text: fallback(escapeKeepMentions(strings.ReplaceAll(text, "\n", " "))), Blocks: l.blocks}
}

// blockList collects a message's blocks and counts their text, so that a
// renderer of lists can keep adding items until the message is full.
type blockList struct {
	blocks []slack.Block
	chars  int
}

// fits reports whether blocks more blocks holding chars more characters
// still fit in the message.
func (l *blockList) fits(blocks, chars int) bool {
	return len(l.blocks)+blocks <= maxBlocks && l.chars+chars <= renderBudget
}

func (l *blockList) add(b slack.Block, chars int) {
	l.blocks = append(l.blocks, b)
	l.chars += chars
}

// header adds a header: plain text, so it needs no escaping, but it only
// ever holds validated names and backflip's own words.
func (l *blockList) header(text string) {
	t := clipPlain(cleanLine(text), maxHeaderText)
	l.add(slack.NewHeaderBlock(plain(t)), textLen(t))
}

// section adds a section of escaped mrkdwn.
func (l *blockList) section(text string) {
	text = clipMrkdwn(text, maxSectionText)
	if strings.TrimSpace(text) == "" {
		text = "(empty)"
	}
	l.add(slack.NewSectionBlock(mrkdwn(text), nil, nil), textLen(text))
}

// context adds a context line of escaped mrkdwn elements.
func (l *blockList) context(texts ...string) {
	var elems []slack.MixedElement
	n := 0
	for _, t := range texts {
		if strings.TrimSpace(t) == "" || len(elems) == maxContextElements {
			continue
		}
		t = clipMrkdwn(t, maxContextText)
		elems = append(elems, mrkdwn(t))
		n += textLen(t)
	}
	if len(elems) > 0 {
		l.add(slack.NewContextBlock("", elems...), n)
	}
}

// lines adds lines (escaped mrkdwn) packed into as few sections as hold
// them, while reserveBlocks blocks and reserveChars characters stay free
// for what follows. It returns how many lines it added: the first ones.
func (l *blockList) lines(lines []string, reserveBlocks, reserveChars int) int {
	shown := 0
	var cur []string
	curLen := 0
	flush := func() {
		if len(cur) > 0 {
			l.section(strings.Join(cur, "\n"))
			cur, curLen = nil, 0
		}
	}
	for _, line := range lines {
		line = clipMrkdwn(line, maxSectionText)
		n := textLen(line)
		if len(cur) > 0 && curLen+1+n <= maxSectionText {
			if !l.fits(1+reserveBlocks, curLen+1+n+reserveChars) {
				break
			}
			cur = append(cur, line)
			curLen += 1 + n
			shown++
			continue
		}
		flush()
		if !l.fits(1+reserveBlocks, n+reserveChars) {
			break
		}
		cur, curLen = []string{line}, n
		shown++
	}
	flush()
	return shown
}

// mrkdwn is a mrkdwn text object. Verbatim stops Slack from turning bare
// URLs, #channel names and @names in the text into links or mentions; the
// explicit <@U…> mentions backflip writes still work.
func mrkdwn(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, s, false, true)
}

// plain is a plain_text object; Slack shows it as it is, emoji shortcodes
// aside.
func plain(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, s, true, false)
}

// codeBlock is text in a preformatted block, escaped (Slack parses < and &
// inside code blocks too).
func codeBlock(s string) string {
	return "```" + escapeMrkdwn(cleanLines(s)) + "```"
}

// md makes one line of outside text safe mrkdwn of at most max characters:
// control characters become spaces, &, < and > become entities, and a cut
// is marked with "…".
func md(s string, max int) string {
	return clipMrkdwn(escapeMrkdwn(cleanLine(s)), max)
}

// cleanLine makes outside text one line: control and bidirectional-control
// characters (newlines included) become spaces, invalid UTF-8 becomes
// U+FFFD.
func cleanLine(s string) string {
	return cleanText(s, false)
}

// cleanLines is cleanLine that keeps newlines.
func cleanLines(s string) string {
	return cleanText(s, true)
}

func cleanText(s string, keepNewlines bool) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' && keepNewlines:
			return r
		case r == '\u2060':
			// The word joiner is how escaping defuses @here; text that
			// already holds one is not trusted to place it.
			return -1
		case unicode.IsControl(r), unicode.Is(unicode.Bidi_Control, r):
			return ' '
		}
		return r
	}, s)
}

// escapeMrkdwn escapes &, < and > (Slack's three control characters), so
// text can be neither a link nor a mention nor a broadcast, and puts an
// invisible word joiner after the @ of @here, @channel and @everyone, so
// that a client posting with link_names does not turn them into
// broadcasts either.
func escapeMrkdwn(s string) string {
	var b strings.Builder
	b.Grow(len(s) + len(s)/8)
	for i := 0; i < len(s); i++ {
		writeEscaped(&b, s, i)
	}
	return b.String()
}

// escapeKeepMentions is escapeMrkdwn except for user mentions written
// exactly as commands.Actor.Mention writes them (<@U0123ABCD>), which stay
// mentions. It is for text commands composes for chat (error messages,
// recovery notices), whose actors are such mentions.
func escapeKeepMentions(s string) string {
	var b strings.Builder
	b.Grow(len(s) + len(s)/8)
	for i := 0; i < len(s); i++ {
		if s[i] == '<' {
			if n := mentionLen(s[i:]); n > 0 {
				b.WriteString(s[i : i+n])
				i += n - 1
				continue
			}
		}
		writeEscaped(&b, s, i)
	}
	return b.String()
}

// writeEscaped writes the byte s[i], escaped.
func writeEscaped(b *strings.Builder, s string, i int) {
	switch c := s[i]; c {
	case '&':
		b.WriteString("&amp;")
	case '<':
		b.WriteString("&lt;")
	case '>':
		b.WriteString("&gt;")
	case '@':
		b.WriteByte(c)
		rest := s[i+1:]
		for _, w := range [...]string{"here", "channel", "everyone"} {
			if len(rest) >= len(w) && strings.EqualFold(rest[:len(w)], w) {
				b.WriteString("\u2060")
				break
			}
		}
	default:
		b.WriteByte(c)
	}
}

// isMention reports whether s is exactly one user mention.
func isMention(s string) bool {
	return s != "" && mentionLen(s) == len(s)
}

// clipMrkdwn cuts escaped mrkdwn to at most max characters, marking the
// cut with "…". It never cuts inside an entity or a mention, which would
// leave a stray & or < (and text that is no longer escaped).
func clipMrkdwn(s string, max int) string {
	if textLen(s) <= max {
		return s
	}
	budget := max - 1
	n, cut := 0, 0
	for i := 0; i < len(s); {
		j := i + tokenLen(s[i:])
		w := textLen(s[i:j])
		if n+w > budget {
			break
		}
		n += w
		i = j
		cut = i
	}
	return s[:cut] + "…"
}

// tokenLen is the length of the unit s starts with: an entity, a mention,
// or one character.
func tokenLen(s string) int {
	if n := entityLen(s); n > 0 {
		return n
	}
	if n := mentionLen(s); n > 0 {
		return n
	}
	_, n := utf8.DecodeRuneInString(s)
	return n
}

// clipPlain cuts plain text to at most max characters, marking the cut.
func clipPlain(s string, max int) string {
	if textLen(s) <= max {
		return s
	}
	n := 0
	for i, r := range s {
		w := textLen(string(r))
		if n+w > max-1 {
			return s[:i] + "…"
		}
		n += w
	}
	return s
}

// fallback is a message's top-level text: Slack shows it in notifications
// and where blocks cannot be shown. It is escaped mrkdwn like the blocks
// (Slack parses it the same way), clipped, and never empty.
func fallback(s string) string {
	s = clipMrkdwn(strings.TrimSpace(s), maxFallbackText)
	if s == "" {
		return "backflip"
	}
	return s
}

// withKey is fallback text that ends with "(key)", clipped before the key
// so that the key is always whole in it.
func withKey(s, key string) string {
	if key == "" {
		return fallback(s)
	}
	suffix := " (" + key + ")"
	return clipMrkdwn(strings.TrimSpace(s), maxFallbackText-textLen(suffix)) + suffix
}

// actorMrkdwn names an actor in mrkdwn: a mention for a Slack user ID (as
// commands.Actor.Mention decides), the escaped name and ID otherwise.
func actorMrkdwn(a commands.Actor) string {
	if m := a.Mention(); isMention(m) {
		return m
	}
	if a.ID == "" && a.Name == "" {
		return "unknown"
	}
	return md(a.String(), clipActor)
}

// actorIDMrkdwn is actorMrkdwn for a bare actor ID.
func actorIDMrkdwn(id string) string {
	return actorMrkdwn(commands.Actor{ID: id})
}

// actorPlain names an actor without a mention, for fallback text: a
// notification should not ping the person it is about.
func actorPlain(a commands.Actor) string {
	if a.ID == "" && a.Name == "" {
		return "unknown"
	}
	return md(a.String(), clipActor)
}

// nameList is up to max names (escaped, clipped), then "and N more".
func nameList(names []string, max int) string {
	var parts []string
	for i, n := range names {
		if i == max {
			parts = append(parts, fmt.Sprintf("and %d more", len(names)-i))
			break
		}
		parts = append(parts, md(n, clipName))
	}
	return strings.Join(parts, ", ")
}

// notWarmList names up to max nodes that are not warm, with state and
// reason: "gpu-07 cold (canary 2.1s over 800ms budget), … and 3 more".
func notWarmList(r *warm.Report, max int) string {
	cold := r.NotWarm()
	var parts []string
	for i, n := range cold {
		if i == max {
			parts = append(parts, fmt.Sprintf("and %d more", len(cold)-i))
			break
		}
		part := md(n.Node, clipName) + " " + md(string(n.State), 20)
		if n.Reason != "" {
			part += " (" + md(n.Reason, 120) + ")"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}

// dashVersion is a version, or "(new)" for none (a route's first promote).
func dashVersion(v string) string {
	if v == "" {
		return "(new)"
	}
	return v
}

// fmtDuration formats a phase duration as the timing report does: "2.0 ms",
// "180 ms", "1.42 s".
func fmtDuration(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// clock is "14:13 UTC".
func clock(t time.Time) string { return t.UTC().Format("15:04 UTC") }

// timeOfDay is "14:13:07 UTC".
func timeOfDay(t time.Time) string { return t.UTC().Format("15:04:05 UTC") }

// firstLine is s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
