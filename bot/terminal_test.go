package bot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/commands"
)

// Identity of the person at the terminal in these tests.
const (
	termUser        = "dev:ada"
	termUserName    = "ada"
	termChannel     = "dev"
	termChannelName = "dev"
)

// termBuffer is the terminal's output, read by the test while the
// terminal and the fake handler's goroutines write it.
type termBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *termBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *termBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the output holds want, failing the test after 30 s
// (far beyond what a loaded machine needs: nothing here is timed).
func (s *termBuffer) waitFor(tb testing.TB, want string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.String(), want) {
		if time.Now().After(deadline) {
			tb.Fatalf("the terminal never printed %q:\n%s", want, s.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// termHandler is a fake Handler: it records what the terminal delivers
// and answers as its fields say. When onSlash is set it runs in the
// background, like the Bot's work, tracked by wg (the terminal's Wait).
type termHandler struct {
	mu      sync.Mutex
	slashes []SlashCommand
	actions []Action
	reply   *Reply
	onSlash func(ctx context.Context, cmd SlashCommand)
	wg      sync.WaitGroup
}

func (h *termHandler) Slash(ctx context.Context, cmd SlashCommand) *Reply {
	h.mu.Lock()
	h.slashes = append(h.slashes, cmd)
	h.mu.Unlock()
	if h.onSlash != nil {
		h.wg.Go(func() { h.onSlash(context.WithoutCancel(ctx), cmd) })
	}
	return h.reply
}

func (h *termHandler) Action(_ context.Context, act Action) *Reply {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.actions = append(h.actions, act)
	return nil
}

func (h *termHandler) recorded() ([]SlashCommand, []Action) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]SlashCommand(nil), h.slashes...), append([]Action(nil), h.actions...)
}

func newTestTerminal() (*Terminal, *termBuffer) {
	out := &termBuffer{}
	return NewTerminal(out, termUser, termUserName, termChannel, termChannelName), out
}

// runScript runs a terminal over script (a pipe's worth of lines) to its
// end, with h's background work as its Wait.
func runScript(t *testing.T, h *termHandler, script string, extra func(context.Context, string) (bool, bool)) (*Terminal, string) {
	t.Helper()
	term, out := newTestTerminal()
	term.Wait = h.wg.Wait
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := term.Run(ctx, strings.NewReader(script), h, extra); err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	return term, out.String()
}

func TestTerminalLinesAreSlashCommands(t *testing.T) {
	for _, tc := range []struct {
		name, line, command, text string
	}{
		{"Rollback", "/rollback chat-70b bad deploy", "/rollback", "chat-70b bad deploy"},
		{"RollbackWithoutSlash", "rollback chat-70b --now bad deploy", "/rollback", "chat-70b --now bad deploy"},
		{"Drill", "/drill run chat-70b --dry-run", "/drill", "run chat-70b --dry-run"},
		{"DrillWithoutSlash", "drill list", "/drill", "list"},
		{"Status", "status", "/rollback", "status"},
		{"StatusOfRoute", "status chat-70b", "/rollback", "status chat-70b"},
		{"History", "history chat-70b --limit 5", "/rollback", "history chat-70b --limit 5"},
		{"Help", "help", "/rollback", "help"},
		{"UpperCaseVerb", "STATUS chat-70b", "/rollback", "status chat-70b"},
		{"Spaces", "  /rollback \t status   chat-70b  ", "/rollback", "status   chat-70b"},
		{"QuotesKept", `/rollback chat-70b "bad <deploy> & more"`, "/rollback", `chat-70b "bad <deploy> & more"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &termHandler{}
			before := time.Now()
			_, out := runScript(t, h, tc.line+"\n", nil)
			slashes, actions := h.recorded()
			if len(slashes) != 1 || len(actions) != 0 {
				t.Fatalf("delivered %d commands and %d actions; want one command\n%s", len(slashes), len(actions), out)
			}
			got := slashes[0]
			if got.Command != tc.command || got.Text != tc.text {
				t.Errorf("command %q text %q; want %q %q", got.Command, got.Text, tc.command, tc.text)
			}
			if got.UserID != termUser || got.UserName != termUserName || got.ChannelID != termChannel || got.ChannelName != termChannelName {
				t.Errorf("command from %q (%q) in %q (%q); want the terminal's person and channel", got.UserID, got.UserName, got.ChannelID, got.ChannelName)
			}
			if got.TriggerID == "" || got.Received.Before(before) || got.Received.After(time.Now()) || got.ResponseURL != "" {
				t.Errorf("trigger %q received %v response_url %q; want a trigger id, the time it was read and no response_url", got.TriggerID, got.Received, got.ResponseURL)
			}
			if !strings.HasPrefix(out, TerminalPrompt+strings.TrimSpace(tc.line)+"\n") {
				t.Errorf("a piped line is not echoed after the prompt:\n%s", out)
			}
		})
	}
}

func TestTerminalTriggerIDsAreUnique(t *testing.T) {
	h := &termHandler{}
	runScript(t, h, "status\nstatus\nhelp\n", nil)
	slashes, _ := h.recorded()
	seen := map[string]bool{}
	for _, s := range slashes {
		if seen[s.TriggerID] {
			t.Fatalf("trigger id %q used twice", s.TriggerID)
		}
		seen[s.TriggerID] = true
	}
}

func TestTerminalReplies(t *testing.T) {
	t.Run("Ephemeral", func(t *testing.T) {
		h := &termHandler{reply: &Reply{Message: Message{Text: "Checking *chat-70b* before rolling back…"}}}
		_, out := runScript(t, h, "rollback chat-70b x\n", nil)
		if !strings.Contains(out, "\n(only you) Checking chat-70b before rolling back…\n") {
			t.Fatalf("an ephemeral acknowledgement reads:\n%s", out)
		}
	})
	t.Run("InChannel", func(t *testing.T) {
		h := &termHandler{reply: &Reply{InChannel: true, Message: Message{Text: "for everyone"}}}
		_, out := runScript(t, h, "status\n", nil)
		if !strings.Contains(out, "\nfor everyone\n") || strings.Contains(out, "(only you)") {
			t.Fatalf("an in-channel acknowledgement reads:\n%s", out)
		}
	})
	t.Run("Blocks", func(t *testing.T) {
		h := &termHandler{reply: &Reply{Message: ErrorReply(commands.Errorf(commands.EREFUSED, "chat-70b is <not> warm"))}}
		_, out := runScript(t, h, "rollback chat-70b x\n", nil)
		if !strings.Contains(out, "(only you) ⛔ Refused: chat-70b is <not> warm") {
			t.Fatalf("an error reply is not rendered as plain text:\n%s", out)
		}
	})
	t.Run("HelpAdditions", func(t *testing.T) {
		h := &termHandler{reply: &Reply{Message: HelpMessage(false)}}
		term, out := newTestTerminal()
		term.Help = "dev-only commands: sim, promote"
		if err := term.Run(context.Background(), strings.NewReader("help\n/rollback help\nstatus\n"), h, nil); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out.String(), "dev-only commands: sim, promote"); n != 2 {
			t.Fatalf("the terminal's help follows %d of the 2 helps:\n%s", n, out.String())
		}
		if !strings.Contains(out.String(), "/rollback: roll a model back") {
			t.Fatalf("the bot's help is missing:\n%s", out.String())
		}
	})
	t.Run("HandlerPanics", func(t *testing.T) {
		h := &termHandler{onSlash: nil}
		term, out := newTestTerminal()
		if err := term.Run(context.Background(), strings.NewReader("status\n"), panickyHandler{h}, nil); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "Sorry, backflip failed to handle this") {
			t.Fatalf("a panic is not answered:\n%s", out.String())
		}
	})
}

type panickyHandler struct{ *termHandler }

func (panickyHandler) Slash(context.Context, SlashCommand) *Reply { panic("boom") }

// postCard is an onSlash that posts a pre-flight card for the route the
// command names, as the Bot does after its dry run.
func postCard(term **Terminal, ts *[]string, mu *sync.Mutex) func(ctx context.Context, cmd SlashCommand) {
	return func(ctx context.Context, cmd SlashCommand) {
		route, _ := splitVerb(cmd.Text)
		card := fixtureCard("bad deploy", false)
		card.Route = route
		got, err := (*term).Post(ctx, cmd.ChannelID, "", CardMessage(dryRun(), card, time.Now()))
		if err != nil {
			panic(err)
		}
		mu.Lock()
		*ts = append(*ts, got)
		mu.Unlock()
	}
}

func TestTerminalConfirmAndCancel(t *testing.T) {
	var term *Terminal
	var tss []string
	var mu sync.Mutex
	h := &termHandler{onSlash: postCard(&term, &tss, &mu)}
	term, outBuf := newTestTerminal()
	term.Wait = h.wg.Wait
	script := strings.Join([]string{
		"confirm",
		"cancel",
		"/rollback chat-70b bad deploy",
		"confirm now",
		"confirm",
		"confirm",
		"/rollback embed-small bad embeddings",
		"cancel",
		"cancel",
		"/rollback chat-70b again",
	}, "\n") + "\n"
	before := time.Now()
	if err := term.Run(context.Background(), strings.NewReader(script), h, nil); err != nil {
		t.Fatal(err)
	}
	out := outBuf.String()
	slashes, actions := h.recorded()
	if len(slashes) != 3 || len(actions) != 2 || len(tss) != 3 {
		t.Fatalf("delivered %d commands and %d actions (%d cards); want 3 and 2\n%s", len(slashes), len(actions), len(tss), out)
	}
	for i, want := range []struct {
		id, route, ts string
	}{{ActionConfirm, "chat-70b", tss[0]}, {ActionCancel, "embed-small", tss[1]}} {
		a := actions[i]
		card, err := DecodeCard(a.Value)
		if err != nil {
			t.Fatalf("action %d carries %q: %v", i, a.Value, err)
		}
		if a.ActionID != want.id || card.Route != want.route || a.MessageTS != want.ts {
			t.Errorf("action %d: %s on %s at ts %s; want %s on %s at %s", i, a.ActionID, card.Route, a.MessageTS, want.id, want.route, want.ts)
		}
		if a.UserID != termUser || a.UserName != termUserName || a.ChannelID != termChannel || a.ChannelName != termChannelName ||
			a.TriggerID == "" || a.Received.Before(before) {
			t.Errorf("action %d: %+v lacks the terminal's person, channel, a trigger or the time it was typed", i, a)
		}
	}
	for _, want := range []string{
		TerminalPrompt + "confirm\nnothing to confirm: no pre-flight card is open",
		TerminalPrompt + "cancel\nnothing to cancel: no pre-flight card is open",
		TerminalPrompt + "confirm now\nconfirm takes no arguments",
		// A card is clicked once: the second confirm finds none.
		TerminalPrompt + "confirm\nnothing to confirm",
		"[Confirm] [Cancel]",
		// The last card was left open when the input ended.
		"the pre-flight card for chat-70b was not confirmed; nothing changed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "nothing to confirm") != 2 || strings.Count(out, "nothing to cancel") != 2 {
		t.Errorf("confirm and cancel without a card:\n%s", out)
	}
}

// TestTerminalCardClosedByUpdate checks that a card the Bot replaced with a
// message without buttons (expired, cancelled in Slack, confirmed by
// someone else) can no longer be confirmed from the terminal, and that a
// card in another channel is clicked there.
func TestTerminalCardClosedByUpdate(t *testing.T) {
	ctx := context.Background()
	term, out := newTestTerminal()
	card := fixtureCard("bad deploy", false)
	ts, _ := term.Post(ctx, "C0INC", "", CardMessage(dryRun(), card, time.Now()))
	if !strings.Contains(out.String(), "[#C0INC] Roll back chat-70b") {
		t.Errorf("a message in another channel is not tagged with it:\n%s", out.String())
	}
	h := &termHandler{}
	if err := term.Run(ctx, strings.NewReader("confirm\n"), h, nil); err != nil {
		t.Fatal(err)
	}
	if _, acts := h.recorded(); len(acts) != 1 || acts[0].ChannelID != "C0INC" || acts[0].ChannelName != "" || acts[0].MessageTS != ts {
		t.Fatalf("the click on a card in C0INC is %+v", acts)
	}

	ts, _ = term.Post(ctx, termChannel, "", CardMessage(dryRun(), card, time.Now()))
	_ = term.Update(ctx, termChannel, ts, CardClosedMessage(card, "This card expired; nothing was changed."))
	h = &termHandler{}
	if err := term.Run(ctx, strings.NewReader("confirm\n"), h, nil); err != nil {
		t.Fatal(err)
	}
	if _, acts := h.recorded(); len(acts) != 0 || !strings.HasSuffix(out.String(), "nothing to confirm: no pre-flight card is open (/rollback <route> <reason> shows one)\n") {
		t.Fatalf("a closed card was clicked (%d):\n%s", len(acts), out.String())
	}
}

func TestTerminalUpdatePrintsWhatChanged(t *testing.T) {
	ctx := context.Background()
	term, out := newTestTerminal()
	view := fixtureProgress()
	view.Phases = view.Phases[:1]
	view.Phases[0].State = commands.StateRunning
	ts, err := term.Post(ctx, termChannel, "", ProgressMessage(view))
	if err != nil {
		t.Fatal(err)
	}
	first := out.String()
	if first != PlainText(ProgressMessage(view))+"\n" {
		t.Fatalf("a new message is not printed in full:\n%s", first)
	}

	// The progress grows: only the new and changed phase lines print.
	grown := fixtureProgress()
	_ = term.Update(ctx, termChannel, ts, ProgressMessage(grown))
	added := strings.TrimPrefix(out.String(), first)
	lines := strings.Split(strings.TrimSuffix(added, "\n"), "\n")
	if len(lines) != len(grown.Phases) {
		t.Errorf("the update printed %d lines; want one per phase (%d):\n%s", len(lines), len(grown.Phases), added)
	}
	for _, l := range lines {
		if strings.Contains(l, "Rolling back") || strings.HasPrefix(l, "op ") {
			t.Errorf("the update printed an unchanged line %q", l)
		}
	}

	// The same update again prints nothing.
	before := out.String()
	_ = term.Update(ctx, termChannel, ts, ProgressMessage(grown))
	if out.String() != before {
		t.Errorf("an unchanged update printed %q", strings.TrimPrefix(out.String(), before))
	}

	// The report replaces the progress: it prints in full, its context
	// line included although the progress had the same one.
	res := completedRollback()
	res.Op = view.Op
	_ = term.Update(ctx, termChannel, ts, ReportMessage(res))
	report := strings.TrimPrefix(out.String(), before)
	if report != PlainText(ReportMessage(res))+"\n" {
		t.Errorf("the report printed\n%s\nwant it in full:\n%s", report, PlainText(ReportMessage(res)))
	}

	// The audit summary is a reply in the report's thread: indented.
	before = out.String()
	if _, err := term.Post(ctx, termChannel, ts, AuditSummaryMessage(res, 0)); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(out.String(), before), "\n"), "\n") {
		if !strings.HasPrefix(l, "    ") {
			t.Errorf("a thread reply's line %q is not indented", l)
		}
	}
}

func TestTerminalTSIncreases(t *testing.T) {
	ctx := context.Background()
	term, _ := newTestTerminal()
	var prev string
	for i := 0; i < 3; i++ {
		ts, err := term.Post(ctx, termChannel, "", Message{Text: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if ts <= prev || !strings.HasSuffix(ts, fmt.Sprintf(".%06d", i+1)) {
			t.Fatalf("ts %q after %q", ts, prev)
		}
		prev = ts
	}
}

func TestTerminalPrivateAnswers(t *testing.T) {
	ctx := context.Background()
	term, out := newTestTerminal()
	_ = term.Ephemeral(ctx, termChannel, termUser, Message{Text: "for you\nand more"})
	_ = term.Ephemeral(ctx, termChannel, "U0BOB", Message{Text: "for bob"})
	_ = term.Respond(ctx, "https://hooks.example/1", Message{Text: "through the url"}, false, false)
	_ = term.Respond(ctx, "https://hooks.example/1", Message{Text: "to the channel"}, true, false)
	want := "(only you) for you\nand more\n(only U0BOB) for bob\n(only you) through the url\nto the channel\n"
	if out.String() != want {
		t.Fatalf("private answers read\n%q\nwant\n%q", out.String(), want)
	}
}

// TestTerminalPipeWaitsForEachAnswer feeds lines through a pipe and checks
// that each line's answer, posted in the background as the Bot posts it,
// is printed before the next line is read: a script reads in order.
func TestTerminalPipeWaitsForEachAnswer(t *testing.T) {
	var term *Terminal
	release := make(chan struct{})
	h := &termHandler{}
	h.onSlash = func(ctx context.Context, cmd SlashCommand) {
		if cmd.Text == "status slow" {
			<-release
		}
		_, _ = term.Post(ctx, cmd.ChannelID, "", Message{Text: "answer to " + cmd.Text})
	}
	term, out := newTestTerminal()
	term.Wait = h.wg.Wait
	in, typist := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- term.Run(context.Background(), in, h, nil) }()

	if _, err := io.WriteString(typist, "status slow\nstatus fast\n"); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, TerminalPrompt+"status slow\n")
	// The second line is in the pipe, but the first one's answer has not
	// come: it must not be read yet.
	if slashes, _ := h.recorded(); len(slashes) != 1 {
		t.Fatalf("read %d lines before the first one was answered", len(slashes))
	}
	close(release)
	out.waitFor(t, "answer to status fast")
	if err := typist.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := TerminalPrompt + "status slow\nanswer to status slow\n" + TerminalPrompt + "status fast\nanswer to status fast\n"
	if out.String() != want {
		t.Fatalf("the transcript reads\n%s\nwant\n%s", out.String(), want)
	}
}

// TestTerminalWaitsAtEOF checks that Run returns only after the work the
// last line started has printed its report.
func TestTerminalWaitsAtEOF(t *testing.T) {
	var term *Terminal
	h := &termHandler{}
	h.onSlash = func(ctx context.Context, cmd SlashCommand) {
		time.Sleep(20 * time.Millisecond)
		_, _ = term.Post(ctx, cmd.ChannelID, "", Message{Text: "final report"})
	}
	term, out := newTestTerminal()
	term.Interactive = true // no wait after each line: only the one at the end
	term.Wait = h.wg.Wait
	if err := term.Run(context.Background(), strings.NewReader("rollback chat-70b --now x"), h, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "final report") {
		t.Fatalf("Run returned before the report:\n%s", out.String())
	}
}

func TestTerminalExtraVerbs(t *testing.T) {
	var seen []string
	extra := func(_ context.Context, line string) (bool, bool) {
		seen = append(seen, line)
		switch line {
		case "quit":
			return true, true
		case "sim all chat-70b v42 slow":
			return true, false
		}
		return false, false
	}
	h := &termHandler{}
	_, out := runScript(t, h, "sim all chat-70b v42 slow\nfrobnicate now\n\n   \nquit\nstatus\n", extra)
	if len(seen) != 3 || seen[0] != "sim all chat-70b v42 slow" || seen[1] != "frobnicate now" || seen[2] != "quit" {
		t.Errorf("extra saw %q", seen)
	}
	if !strings.Contains(out, `unknown command "frobnicate": type help for the commands`) {
		t.Errorf("an unknown verb is not explained:\n%s", out)
	}
	if slashes, _ := h.recorded(); len(slashes) != 0 {
		t.Errorf("the status after quit was delivered")
	}
	if strings.Contains(out, TerminalPrompt+"\n") {
		t.Errorf("empty lines are echoed:\n%s", out)
	}
}

func TestTerminalLongLine(t *testing.T) {
	h := &termHandler{}
	_, out := runScript(t, h, "rollback chat-70b "+strings.Repeat("x", 2*maxTerminalLine)+"\nstatus\n", nil)
	if !strings.Contains(out, "longer than 4096 bytes; it was ignored") {
		t.Errorf("a long line is not refused:\n%.300s", out)
	}
	if slashes, _ := h.recorded(); len(slashes) != 1 || slashes[0].Text != "status" {
		t.Errorf("after a long line the terminal delivered %+v; want the next line", slashes)
	}
}

// TestTerminalInteractive checks the prompt: shown before each line, not
// followed by an echo, and moved below a message that arrives while the
// person is at it.
func TestTerminalInteractive(t *testing.T) {
	term, out := newTestTerminal()
	term.Interactive = true
	in, typist := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- term.Run(ctx, in, &termHandler{}, nil) }()
	out.waitFor(t, TerminalPrompt)
	if _, err := term.Post(ctx, termChannel, "", Message{Text: "recovery: op 1 finished"}); err != nil {
		t.Fatal(err)
	}
	if want := TerminalPrompt + eraseLine + "recovery: op 1 finished\n" + TerminalPrompt; out.String() != want {
		t.Fatalf("a message at the prompt reads %q; want %q", out.String(), want)
	}
	if _, err := io.WriteString(typist, "status\n"); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "finished\n"+TerminalPrompt+TerminalPrompt)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = typist.Close()
	if strings.Contains(out.String(), "status") {
		t.Fatalf("an interactive line was echoed:\n%s", out.String())
	}
}

// TestTerminalSharedWaitsForSettle checks that another transport's
// delivery waits while the terminal waits for background work, so that
// new work never starts under a Wait.
func TestTerminalSharedWaitsForSettle(t *testing.T) {
	term, _ := newTestTerminal()
	h := &termHandler{}
	waiting, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	// Run waits after the line and again at the end of the input.
	term.Wait = func() {
		once.Do(func() { close(waiting) })
		<-release
	}
	done := make(chan error, 1)
	go func() { done <- term.Run(context.Background(), strings.NewReader("status\n"), h, nil) }()
	<-waiting
	delivered := make(chan struct{})
	go func() {
		term.Shared(h).Slash(context.Background(), SlashCommand{Command: "/rollback", Text: "status", UserID: "U0BOB"})
		close(delivered)
	}()
	select {
	case <-delivered:
		t.Fatal("a shared delivery ran while the terminal waited")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-delivered
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if slashes, _ := h.recorded(); len(slashes) != 2 {
		t.Fatalf("delivered %d commands; want 2", len(slashes))
	}
}

// FuzzTerminalLine checks that whatever line is typed, the terminal
// delivers at most one command, to /rollback or /drill, with text that is
// what followed the verb, and never panics.
func FuzzTerminalLine(f *testing.F) {
	for _, s := range []string{"/rollback chat-70b x", "status", "confirm", "cancel x", "drill", "", "\u00a0help", "rollback\t\tx", "\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		// One line: what a newline separates is another command.
		line = strings.ReplaceAll(line, "\n", " ")
		h := &termHandler{}
		term := NewTerminal(io.Discard, termUser, termUserName, termChannel, termChannelName)
		if err := term.Run(context.Background(), strings.NewReader(line), h, nil); err != nil {
			t.Fatal(err)
		}
		slashes, actions := h.recorded()
		if len(actions) != 0 || len(slashes) > 1 {
			t.Fatalf("%q delivered %d commands and %d actions", line, len(slashes), len(actions))
		}
		for _, s := range slashes {
			if s.Command != "/rollback" && s.Command != "/drill" {
				t.Fatalf("%q delivered %q", line, s.Command)
			}
			if strings.Contains(s.Text, "\n") || s.Text != strings.TrimSpace(s.Text) {
				t.Fatalf("%q delivered text %q", line, s.Text)
			}
		}
	})
}

// TestTerminalLastLineFillsTheBuffer checks that a last line without a
// newline is delivered, also when it is exactly as long as a line may be.
func TestTerminalLastLineFillsTheBuffer(t *testing.T) {
	text := "chat-70b " + strings.Repeat("x", maxTerminalLine-len("rollback chat-70b "))
	h := &termHandler{}
	runScript(t, h, "rollback "+text, nil)
	if slashes, _ := h.recorded(); len(slashes) != 1 || slashes[0].Text != text {
		t.Fatalf("a last line of %d bytes delivered %d commands", maxTerminalLine, len(slashes))
	}
}
