package bot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

// TerminalPrompt is what an interactive Terminal shows when it waits for a
// line, and what a non-interactive one prints in front of each line it
// echoes, so that a piped session reads as the transcript of a typed one.
const TerminalPrompt = "backflip> "

// maxTerminalLine bounds one line of input; a longer line is refused, not
// cut, since a cut reason or route name would run something else than
// what was typed.
const maxTerminalLine = 4096

// Terminal is the terminal chat adapter of `backflip dev`, like hubot's
// shell adapter: the person at the terminal types what they would type in
// Slack, the Handler (the Bot) answers exactly as it answers Slack, and
// every message it posts is printed as PlainText. It is a Poster for the
// Bot, and it reads the person's lines in Run.
//
// A terminal has no buttons, so it remembers the last pre-flight card it
// printed: typing `confirm` or `cancel` clicks that card's button, with
// the value and message ts Slack would send back.
//
// Every message gets a ts of its own ("<start unix>.000001",
// "<start unix>.000002", …). An Update of a message is printed as the
// lines that changed since it was last printed when it is the same message
// growing (its Key is unchanged: a live progress message reads as a list
// of phases), and in full when it becomes another one (a card turning into
// progress, progress into the final report). Replies in a thread are
// indented under the message; what only one person would see in Slack
// (ephemeral messages, response_url answers) starts with "(only you)".
//
// The exported fields are read by Run: set them before calling it.
type Terminal struct {
	// Interactive says a person types at a terminal: Run shows the prompt
	// and answers asynchronously, as Slack does. Otherwise (a pipe, a
	// file) Run echoes each line after the prompt and waits for the
	// answer to a line before it reads the next one, so that a script's
	// output reads like the conversation it would be in Slack, in order.
	Interactive bool
	// Wait, when set, waits for the background work the Handler started so
	// far (Bot.Wait). Run calls it after each line when not Interactive,
	// and before it returns, so that a piped script sees the final report
	// of a rollback it started before the program exits.
	Wait func()
	// Help is printed after the Handler's answer to `help`: what else this
	// terminal understands (the verbs Run passes to its extra function).
	Help string
	// Logger receives a Handler's panics. Nil means no logging.
	Logger *zap.Logger

	user, userName         string
	channelID, channelName string

	// mu guards what follows and keeps each print whole: the Bot posts
	// from its own goroutines while Run prints the replies.
	mu       sync.Mutex
	out      io.Writer
	epoch    int64
	seq      int
	messages map[string]*printed
	card     *openCard
	// atPrompt says the prompt is the last thing printed, so a message that
	// arrives while the person is at it is printed in its place and
	// followed by the prompt again.
	atPrompt bool

	// gate keeps deliveries of other transports (see Shared) from starting
	// background work while Wait waits: a Wait that counts the work started
	// so far, as Bot.Wait's sync.WaitGroup does, must not see work start
	// while it waits.
	gate sync.RWMutex
}

var _ Poster = (*Terminal)(nil)

// printed is what the terminal last printed of a message.
type printed struct {
	thread string
	key    string
	lines  []string
}

// openCard is the last pre-flight card printed, until one of its buttons
// is clicked or the Bot replaces it with a message without buttons.
type openCard struct {
	channel, ts string
	confirm     string // the confirm button's value
	cancel      string // the cancel button's value
	route       string // for what the terminal says about it; "" if unreadable
}

// NewTerminal returns a terminal that prints to out and speaks as user
// (userName) in channelID (channelName).
func NewTerminal(out io.Writer, user, userName, channelID, channelName string) *Terminal {
	return &Terminal{
		out: out, user: user, userName: userName, channelID: channelID, channelName: channelName,
		// A ts is unique across runs too: an op recovered after a restart
		// names the message of the run that started it.
		epoch:    time.Now().Unix(),
		messages: map[string]*printed{},
	}
}

// Post prints msg and returns its new ts.
func (t *Terminal) Post(_ context.Context, channel, threadTS string, msg Message) (string, error) {
	lines := messageLines(msg)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	ts := fmt.Sprintf("%d.%06d", t.epoch, t.seq)
	t.messages[ts] = &printed{thread: threadTS, key: msg.Key, lines: lines}
	t.noteCard(channel, ts, msg)
	t.print(t.frame(channel, threadTS, "", lines))
	return ts, nil
}

// Update prints what changed in the message ts: only the lines that are
// new when it is the same message growing, all of it otherwise.
func (t *Terminal) Update(_ context.Context, channel, ts string, msg Message) error {
	lines := messageLines(msg)
	t.mu.Lock()
	defer t.mu.Unlock()
	prev, known := t.messages[ts]
	show := lines
	thread := ""
	if known {
		thread = prev.thread
		if msg.Key != "" && msg.Key == prev.key {
			show = newLines(prev.lines, lines)
		}
	}
	t.messages[ts] = &printed{thread: thread, key: msg.Key, lines: lines}
	t.noteCard(channel, ts, msg)
	if len(show) > 0 {
		t.print(t.frame(channel, thread, "", show))
	}
	return nil
}

// Ephemeral prints msg as seen by user alone.
func (t *Terminal) Ephemeral(_ context.Context, channel, user string, msg Message) error {
	who := "(only you) "
	if user != t.user {
		who = "(only " + user + ") "
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.print(t.frame(channel, "", who, messageLines(msg)))
	return nil
}

// Respond prints an answer sent through a response_url: seen by the
// requester alone unless inChannel. The terminal has no message to
// replace, so replaceOriginal prints it like any answer.
func (t *Terminal) Respond(_ context.Context, _ string, msg Message, inChannel, _ bool) error {
	who := "(only you) "
	if inChannel {
		who = ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.print(t.frame("", "", who, messageLines(msg)))
	return nil
}

// Write prints p whole among the messages; it is where the output of the
// terminal's other verbs (Run's extra function) goes.
func (t *Terminal) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.print(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// Shared wraps h for another transport delivering to the same Handler
// while this terminal runs (the loopback Slack endpoint of `backflip dev`):
// its deliveries wait while Run waits for the Handler's background work.
func (t *Terminal) Shared(h Handler) Handler {
	return sharedHandler{t: t, h: h}
}

type sharedHandler struct {
	t *Terminal
	h Handler
}

func (s sharedHandler) Slash(ctx context.Context, cmd SlashCommand) *Reply {
	s.t.gate.RLock()
	defer s.t.gate.RUnlock()
	return s.h.Slash(ctx, cmd)
}

func (s sharedHandler) Action(ctx context.Context, act Action) *Reply {
	s.t.gate.RLock()
	defer s.t.gate.RUnlock()
	return s.h.Action(ctx, act)
}

// inputLine is one line read by Run, or the reason reading stopped.
type inputLine struct {
	text    string
	tooLong bool
	err     error
}

// Run reads lines from in until it ends, extra asks to quit, or ctx is
// done, and delivers them to h as Slack would:
//
//   - `/rollback …` and `rollback …`, `/drill …` and `drill …` are slash
//     commands; so are `status …`, `history …` and `help`, short for
//     `/rollback status …` and so on;
//   - `confirm` and `cancel` click the buttons of the last pre-flight card;
//   - any other line goes to extra (nil: none), which reports whether it
//     knew the line and whether the person asked to quit.
//
// The acknowledgement of a command is printed at once; what the Handler
// posts later is printed as it arrives (see Terminal). At the end of the
// input Run waits for the Handler's work (Wait) before it returns.
func (t *Terminal) Run(ctx context.Context, in io.Reader, h Handler, extra func(ctx context.Context, line string) (handled, quit bool)) error {
	rctx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	lines := make(chan inputLine)
	go readLines(rctx, in, lines)
	for {
		t.prompt()
		var l inputLine
		select {
		case <-ctx.Done():
			// Interrupted at the prompt: end its line.
			t.endPrompt(true)
			t.close()
			return nil
		case l = <-lines:
		}
		// The person's terminal echoed the newline of what they typed.
		t.endPrompt(false)
		if l.err != nil {
			t.settle()
			t.close()
			if errors.Is(l.err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read commands: %w", l.err)
		}
		quit := t.line(ctx, h, extra, l)
		if quit || !t.Interactive {
			t.settle()
		}
		if quit {
			t.close()
			return nil
		}
	}
}

// readLines sends in's lines to lines, then the error that ended them
// (io.EOF at the end), until ctx is done.
func readLines(ctx context.Context, in io.Reader, lines chan<- inputLine) {
	send := func(l inputLine) bool {
		select {
		case lines <- l:
			return true
		case <-ctx.Done():
			return false
		}
	}
	r := bufio.NewReaderSize(in, maxTerminalLine)
	for {
		var line []byte
		tooLong := false
		for {
			frag, more, err := r.ReadLine()
			if err != nil {
				// A last line that filled the buffer exactly ends here.
				if (len(line) > 0 || tooLong) && !send(inputLine{text: string(line), tooLong: tooLong}) {
					return
				}
				send(inputLine{err: err})
				return
			}
			if !tooLong && len(line)+len(frag) <= maxTerminalLine {
				line = append(line, frag...)
			} else {
				tooLong, line = true, nil
			}
			if !more {
				break
			}
		}
		if !send(inputLine{text: string(line), tooLong: tooLong}) {
			return
		}
	}
}

// line runs one line of input. It reports whether the person asked to
// quit.
func (t *Terminal) line(ctx context.Context, h Handler, extra func(context.Context, string) (bool, bool), l inputLine) (quit bool) {
	text := strings.TrimSpace(l.text)
	if l.tooLong {
		if !t.Interactive {
			t.printf("%s…", TerminalPrompt)
		}
		t.printf("that line is longer than %d bytes; it was ignored", maxTerminalLine)
		return false
	}
	if !t.Interactive && text != "" {
		t.printf("%s%s", TerminalPrompt, text)
	}
	if text == "" {
		return false
	}
	verb, rest := splitVerb(text)
	switch strings.ToLower(verb) {
	case "/rollback", "rollback":
		t.slash(ctx, h, "/rollback", rest)
	case "/drill", "drill":
		t.slash(ctx, h, "/drill", rest)
	case "status", "history", "help":
		t.slash(ctx, h, "/rollback", strings.ToLower(verb)+" "+rest)
	case "confirm":
		t.click(ctx, h, ActionConfirm, "confirm", rest)
	case "cancel":
		t.click(ctx, h, ActionCancel, "cancel", rest)
	default:
		if extra != nil {
			if handled, quit := extra(ctx, text); handled {
				return quit
			}
		}
		t.printf("unknown command %q: type help for the commands", clipInput(verb, 40))
	}
	return false
}

// slash delivers a slash command and prints its acknowledgement.
func (t *Terminal) slash(ctx context.Context, h Handler, command, text string) {
	text = strings.TrimSpace(text)
	cmd := SlashCommand{
		Command: command, Text: text,
		UserID: t.user, UserName: t.userName, ChannelID: t.channelID, ChannelName: t.channelName,
		TriggerID: "terminal-" + uuid.NewString(),
		Received:  time.Now(),
	}
	t.reply(callSlash(ctx, h, cmd, t.log()))
	if command == "/rollback" && isHelp(text) {
		t.printf("%s", terminalHelp)
		if t.Help != "" {
			t.printf("%s", t.Help)
		}
	}
}

// terminalHelp follows the chat's help: what differs from Slack here.
const terminalHelp = `at this terminal:
  confirm | cancel      click the buttons of the last pre-flight card
  the leading slash is optional: rollback …, drill …, status, history and help work as typed`

// isHelp reports whether the text of a /rollback asks for its help.
func isHelp(text string) bool {
	verb, _ := splitVerb(text)
	return strings.EqualFold(verb, "help")
}

// click delivers a click on the open card's button.
func (t *Terminal) click(ctx context.Context, h Handler, actionID, word, rest string) {
	if rest != "" {
		t.printf("%s takes no arguments: it acts on the last pre-flight card", word)
		return
	}
	t.mu.Lock()
	c := t.card
	if c != nil && ((actionID == ActionConfirm && c.confirm == "") || (actionID == ActionCancel && c.cancel == "")) {
		c = nil
	}
	if c != nil {
		// A card is clicked once from here: a second `confirm` must not
		// look like a second chance while the first one runs.
		t.card = nil
	}
	t.mu.Unlock()
	if c == nil {
		t.printf("nothing to %s: no pre-flight card is open (/rollback <route> <reason> shows one)", word)
		return
	}
	act := Action{
		ActionID: actionID, Value: c.confirm,
		UserID: t.user, UserName: t.userName, ChannelID: c.channel,
		MessageTS: c.ts, TriggerID: "terminal-" + uuid.NewString(), Received: time.Now(),
	}
	if actionID == ActionCancel {
		act.Value = c.cancel
	}
	if c.channel == t.channelID {
		act.ChannelName = t.channelName
	}
	t.reply(callAction(ctx, h, act, t.log()))
}

// reply prints a Handler's acknowledgement.
func (t *Terminal) reply(r *Reply) {
	if r == nil {
		return
	}
	who := "(only you) "
	if r.InChannel {
		who = ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.print(t.frame("", "", who, messageLines(r.Message)))
}

// settle waits for the Handler's background work, keeping the other
// transports' deliveries out meanwhile (see gate).
func (t *Terminal) settle() {
	if t.Wait == nil {
		return
	}
	t.gate.Lock()
	defer t.gate.Unlock()
	t.Wait()
}

// close says, as the session ends, that a card was left open: nobody can
// click it once the terminal is gone.
func (t *Terminal) close() {
	t.mu.Lock()
	c := t.card
	t.card = nil
	t.mu.Unlock()
	if c == nil {
		return
	}
	if c.route != "" {
		t.printf("the pre-flight card for %s was not confirmed; nothing changed", c.route)
		return
	}
	t.printf("the last pre-flight card was not confirmed; nothing changed")
}

// noteCard remembers msg as the open card when it has backflip's buttons,
// and forgets the open card when its message was replaced by one without
// them (confirmed, cancelled, expired). t.mu is held.
func (t *Terminal) noteCard(channel, ts string, msg Message) {
	c := cardOf(msg)
	switch {
	case c != nil:
		c.channel, c.ts = channel, ts
		t.card = c
	case t.card != nil && t.card.ts == ts:
		t.card = nil
	}
}

// cardOf reads the buttons of a pre-flight card from msg as they would be
// posted, or returns nil when msg has no confirm button.
func cardOf(msg Message) *openCard {
	blocks, err := wireBlocks(msg)
	if err != nil {
		return nil
	}
	var c openCard
	for _, b := range blocks {
		if b.Type != "actions" {
			continue
		}
		for _, e := range b.Elements {
			switch e.ActionID {
			case ActionConfirm:
				c.confirm = e.Value
			case ActionCancel:
				c.cancel = e.Value
			}
		}
	}
	if c.confirm == "" {
		return nil
	}
	if card, err := DecodeCard(c.confirm); err == nil {
		c.route = card.Route
	}
	return &c
}

// frame lays out a message's lines: indented under its thread, after a
// "[#channel]" tag when it is not the terminal's channel, after who (the
// "(only you)" of a private answer). t.mu is held.
func (t *Terminal) frame(channel, thread, who string, lines []string) string {
	head := who
	if channel != "" && channel != t.channelID {
		head = "[#" + channel + "] " + head
	}
	indent := ""
	if thread != "" {
		indent = "    "
	}
	var b strings.Builder
	for i, l := range lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(indent)
		if i == 0 {
			b.WriteString(head)
		}
		b.WriteString(l)
	}
	return b.String()
}

// print writes text and a newline. A message that arrives while the prompt
// waits for the person takes the prompt's line (a carriage return and an
// ANSI erase-line: the prompt is only shown on a terminal) and shows the
// prompt again after it, so that live progress does not leave a trail of
// empty prompts. t.mu is held.
func (t *Terminal) print(text string) {
	if t.atPrompt {
		fmt.Fprint(t.out, eraseLine)
	}
	fmt.Fprintln(t.out, text)
	if t.atPrompt {
		fmt.Fprint(t.out, TerminalPrompt)
	}
}

// eraseLine moves to the start of the line and clears it.
const eraseLine = "\r\x1b[K"

// printf prints one of the terminal's own lines.
func (t *Terminal) printf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.print(fmt.Sprintf(format, args...))
}

// prompt shows the prompt when a person types.
func (t *Terminal) prompt() {
	if !t.Interactive {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprint(t.out, TerminalPrompt)
	t.atPrompt = true
}

// endPrompt notes that the prompt no longer waits, ending its line when
// newline says so.
func (t *Terminal) endPrompt(newline bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if newline && t.atPrompt {
		fmt.Fprint(t.out, "\n")
	}
	t.atPrompt = false
}

func (t *Terminal) log() *zap.Logger {
	if t.Logger == nil {
		return zap.NewNop()
	}
	return t.Logger
}

// messageLines is msg as PlainText, one line each.
func messageLines(msg Message) []string {
	return strings.Split(PlainText(msg), "\n")
}

// newLines is the lines of next that are not among prev's.
func newLines(prev, next []string) []string {
	seen := make(map[string]bool, len(prev))
	for _, l := range prev {
		seen[l] = true
	}
	var out []string
	for _, l := range next {
		if !seen[l] {
			out = append(out, l)
		}
	}
	return out
}

// splitVerb cuts line at its first space into the verb and the rest.
func splitVerb(line string) (verb, rest string) {
	i := strings.IndexFunc(line, unicode.IsSpace)
	if i < 0 {
		return line, ""
	}
	return line[:i], strings.TrimSpace(line[i:])
}

// clipInput shortens what a person typed for the terminal's own messages.
func clipInput(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
