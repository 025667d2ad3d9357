package devstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/sim"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

const help = `chat commands, as in Slack (the leading slash is optional):
  /rollback <route> [--to <version>] [--now] [--dry-run] [--force-cold] <reason ...>
                        shows a pre-flight card; --now rolls back at once
  confirm | cancel      act on the last pre-flight card
  /rollback status [<route>]
  /rollback history [<route>] [--limit N]
  /rollback help
dev-only commands:
  promote <route> <version> [--force-cold] [--dry-run] [<reason ...>]
  fleet                 the simulated GPU nodes and what each serves
  sim <node|all> <route> <version> <warm|loading|unloaded|inference-dead|slow|hang>
                        make simulated inference servers misbehave
  help                  this text
  quit                  stop everything (so do Ctrl-C and the end of input)`

const promoteUsage = "promote <route> <version> [--force-cold] [--dry-run] [<reason ...>]"

const (
	// maxLine bounds one terminal line; longer input is refused, not
	// truncated.
	maxLine = 4096
	// readTimeout bounds status, history and fleet.
	readTimeout = 30 * time.Second
	// opTimeout bounds a rollback or promotion: its phases are bounded by
	// the warm, convergence and acknowledgement timeouts, which this
	// exceeds, so it only stops an op that is stuck for another reason.
	opTimeout = 2 * time.Minute
	prompt    = "backflip> "
	// simSettle bounds how long sim waits for the agents to report a
	// change: a few of their probe intervals, and the slow behaviour's
	// canary.
	simSettle = 10 * time.Second
)

// console is the terminal's output. The command loop and the recovery job
// both write to it; it keeps their lines whole and re-prints the prompt
// after a notice that arrived while the person was at it.
type console struct {
	mu       sync.Mutex
	w        io.Writer
	atPrompt bool
}

func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.atPrompt = false
	fmt.Fprintf(c.w, format, args...)
}

func (c *console) prompt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprint(c.w, prompt)
	c.atPrompt = true
}

func (c *console) notice(text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.atPrompt {
		fmt.Fprintf(c.w, "\n%s\n%s", text, prompt)
		return
	}
	fmt.Fprintln(c.w, text)
}

// terminal is one session at the terminal: the stack it drives and the
// pre-flight card waiting for `confirm`, if any. It is used by the command
// loop only.
type terminal struct {
	s       *Stack
	con     *console
	pending *card
}

// card is a pre-flight card printed as text: the rollback its dry run
// showed, ready to run on `confirm` until it expires.
type card struct {
	// req is the rollback to run: guarded by the revision the dry run saw,
	// with the op id and idempotency key minted for the card, as the
	// bot's confirm button carries them.
	req     commands.RollbackRequest
	from    string
	expires time.Time
}

// Serve prints what is running, then reads commands from in until it ends,
// the person types quit, or ctx is done, and answers on the stack's Out.
func (s *Stack) Serve(ctx context.Context, in io.Reader) error {
	t := &terminal{s: s, con: s.con}
	t.banner()
	// A person at a terminal sees what they type; commands from a pipe are
	// echoed, so that the output reads as a transcript.
	echo := !isTerminal(in)
	lines := make(chan string)
	scanErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 0, maxLine), maxLine)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		scanErr <- sc.Err()
	}()
	t.con.prompt()
	for {
		select {
		case <-ctx.Done():
			t.con.printf("\n")
			t.dropPending()
			return nil
		case err := <-scanErr:
			t.con.printf("\n")
			t.dropPending()
			if errors.Is(err, bufio.ErrTooLong) {
				return fmt.Errorf("input line longer than %d bytes", maxLine)
			}
			return err
		case line := <-lines:
			line = strings.TrimSpace(line)
			if echo {
				t.con.printf("%s\n", line)
			}
			if quit := t.exec(ctx, line); quit {
				t.dropPending()
				return nil
			}
			t.con.prompt()
		}
	}
}

func isTerminal(in io.Reader) bool {
	f, ok := in.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (t *terminal) banner() {
	c := t.s.cfg
	traffic := "no traffic (--rps 0)"
	if c.RPS > 0 {
		traffic = fmt.Sprintf("%d requests/s each, about %s long", c.RPS, trafficSteps*trafficStepDelay)
	}
	t.con.printf(`backflip dev is running.
  etcd (embedded)     %s   data in %s
  routers             %d simulated routers on the reader library, registered under %s/routers/
  fleet               %d simulated GPU nodes: the real agent probing simulated vLLM, Triton, Ollama
                      and TGI servers; chat-70b v41 is warm, embed-small v6 is not loaded
  runtimes            %d workflow runtimes on the real SDK: %s
  you                 %s in channel #%s, allowed to roll back and promote
Try:
  /rollback status
  /rollback chat-70b latency spike after v42     (a pre-flight card, then: confirm)
  /rollback embed-small bad embeddings           (refused: v6 is not warm)
  sim all chat-70b v42 inference-dead            (then: /rollback chat-70b --to v42 --now undo)
  help
Ctrl-C or "quit" stops everything.
`, t.s.Endpoint(), c.StateDir, c.Routers, c.Prefix, c.Nodes, c.Runtimes, traffic, t.s.origin.Actor.ID, devChannel)
}

// exec runs one command line. It reports whether the person asked to quit.
func (t *terminal) exec(ctx context.Context, line string) (quit bool) {
	received := time.Now()
	verb, rest := splitVerb(line)
	switch strings.ToLower(verb) {
	case "":
	case "quit", "exit":
		return true
	case "/rollback", "rollback", "/drill", "drill":
		t.chat(ctx, verb, rest, received)
	case "status", "history", "help":
		t.chat(ctx, "/rollback", line, received)
	case "confirm":
		t.confirm(ctx, rest, received)
	case "cancel":
		t.cancel(rest)
	case "promote":
		t.promote(ctx, rest, received)
	case "fleet":
		t.fleet(ctx, rest)
	case "sim":
		t.sim(ctx, rest)
	default:
		t.con.printf("unknown command %q: type help for the commands\n", clip(verb, 40))
	}
	return false
}

// splitVerb cuts line at its first space into the verb and the rest.
func splitVerb(line string) (verb, rest string) {
	i := strings.IndexFunc(line, unicode.IsSpace)
	if i < 0 {
		return line, ""
	}
	return line[:i], strings.TrimSpace(line[i:])
}

// chat runs a command of the chat grammar, parsed as the bot parses it.
func (t *terminal) chat(ctx context.Context, slash, text string, received time.Time) {
	cmd, err := commands.Parse(slash, text)
	if err != nil {
		t.printErr(err, "")
		return
	}
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	switch c := cmd.(type) {
	case commands.HelpCmd:
		t.con.printf("%s\n", help)
	case commands.StatusCmd:
		rep, err := t.s.svc.Status(rctx, t.s.origin, c.Route)
		if err != nil {
			t.printErr(err, "")
			return
		}
		t.con.printf("%s", rep.String())
	case commands.HistoryCmd:
		rep, err := t.s.svc.History(rctx, t.s.origin, c.Route, c.Limit)
		if err != nil {
			t.printErr(err, "")
			return
		}
		t.con.printf("%s", rep.String())
	case commands.RollbackCmd:
		t.rollback(ctx, c, received)
	case commands.DrillCommand:
		t.con.printf("drills are not part of backflip dev yet; /rollback works as usual\n")
	default:
		t.con.printf("%s %s is not supported at this terminal\n", cmd.Slash(), cmd.String())
	}
}

// rollback runs /rollback <route>: a dry run with --dry-run, the rollback
// itself with --now, and otherwise a pre-flight card, as in Slack.
func (t *terminal) rollback(ctx context.Context, c commands.RollbackCmd, received time.Time) {
	req := commands.RollbackRequest{Origin: t.origin(received), Route: c.Route, To: c.To, Reason: c.Reason,
		ForceCold: c.ForceCold, DryRun: c.DryRun}
	if c.DryRun || c.Now {
		t.change(ctx, func(ctx context.Context, progress commands.ProgressFunc) (*commands.Result, error) {
			return t.s.svc.Rollback(ctx, req, progress)
		}, "")
		return
	}
	t.preflight(ctx, req)
}

// preflight shows what a rollback would do — its dry run — and keeps it
// for `confirm`.
func (t *terminal) preflight(ctx context.Context, req commands.RollbackRequest) {
	req.Preflight = true
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	res, err := t.s.svc.Rollback(rctx, req, nil)
	if err != nil {
		t.printErr(err, "")
		return
	}
	if t.pending != nil {
		t.con.printf("(this card replaces the unconfirmed one for %s)\n", t.pending.req.Route)
	}
	// The confirm runs exactly what the card showed: the same target, and
	// only if the route is still at the revision the dry run read; the op
	// id and idempotency key are minted now, as the bot mints them for a
	// card's button, so a confirm that is retried never flips twice.
	op := uuid.NewString()
	run := req
	run.Preflight = false
	run.To = res.To
	run.ExpectRev = res.ExpectRev
	run.Op = op
	run.Origin.IdemKey = "card:" + op
	t.pending = &card{req: run, from: res.From, expires: t.s.cfg.Now().Add(t.s.cfg.CardTTL)}

	t.con.printf("pre-flight: %s\n", res.Report())
	drill := "last drill unknown (backflip dev has no audit database yet)"
	if d := res.LastDrill; d != nil {
		drill = fmt.Sprintf("last drill %s ago (p50 %.1f s)", t.s.cfg.Now().Sub(d.At).Round(time.Second), d.P50.Seconds())
	}
	t.con.printf("  reason %q · %s at rev %d (if it changes before you confirm, nothing is rolled back) · %s\n",
		run.Reason, run.Route, run.ExpectRev, drill)
	if res.ForcedCold {
		t.con.printf("  --force-cold: %s is NOT warm, so this is a cold start, not a rollback (audited as forced)\n", res.To)
	}
	t.con.printf("type `confirm` to roll back (expires in %s) or `cancel`\n", shortDuration(t.s.cfg.CardTTL))
}

// confirm runs the pending card's rollback.
func (t *terminal) confirm(ctx context.Context, rest string, received time.Time) {
	if rest != "" {
		t.con.printf("bad input: confirm takes no arguments\n")
		return
	}
	p := t.pending
	t.pending = nil
	switch {
	case p == nil:
		t.con.printf("nothing to confirm: /rollback <route> <reason> shows a pre-flight card first\n")
		return
	case t.s.cfg.Now().After(p.expires):
		t.con.printf("the pre-flight card for %s expired %s ago (cards are valid for %s); nothing changed. Type the /rollback again for a new card.\n",
			p.req.Route, t.s.cfg.Now().Sub(p.expires).Round(time.Second), shortDuration(t.s.cfg.CardTTL))
		return
	}
	req := p.req
	req.Origin.Received = received
	t.change(ctx, func(ctx context.Context, progress commands.ProgressFunc) (*commands.Result, error) {
		return t.s.svc.Rollback(ctx, req, progress)
	}, "")
}

func (t *terminal) cancel(rest string) {
	if rest != "" {
		t.con.printf("bad input: cancel takes no arguments\n")
		return
	}
	if t.pending == nil {
		t.con.printf("nothing to cancel\n")
		return
	}
	t.con.printf("cancelled: %s stays on %s; nothing changed\n", t.pending.req.Route, t.pending.from)
	t.pending = nil
}

// dropPending says, as the terminal closes, that a card was left
// unconfirmed.
func (t *terminal) dropPending() {
	if t.pending != nil {
		t.con.printf("the pre-flight card for %s was not confirmed; nothing changed\n", t.pending.req.Route)
		t.pending = nil
	}
}

// promote runs `promote <route> <version> [--force-cold] [--dry-run]
// [<reason ...>]`, what a deploy pipeline calls.
func (t *terminal) promote(ctx context.Context, rest string, received time.Time) {
	req, err := parsePromote(rest)
	if err != nil {
		t.printErr(err, promoteUsage)
		return
	}
	req.Origin = t.origin(received)
	t.change(ctx, func(ctx context.Context, progress commands.ProgressFunc) (*commands.Result, error) {
		return t.s.svc.Promote(ctx, req, progress)
	}, promoteUsage)
}

// parsePromote reads the words after promote: the route and version first,
// flags anywhere after them, the other words the reason. Names are checked
// by the use case, as for every transport.
func parsePromote(text string) (commands.PromoteRequest, error) {
	var req commands.PromoteRequest
	var words []string
	for _, w := range strings.Fields(text) {
		switch {
		case w == "--force-cold":
			req.ForceCold = true
		case w == "--dry-run":
			req.DryRun = true
		case strings.HasPrefix(w, "--"):
			return req, commands.Errorf(commands.EINVALID, "unknown flag %q for promote", clip(w, 40))
		case req.Route == "":
			req.Route = w
		case req.Version == "":
			req.Version = w
		default:
			words = append(words, w)
		}
	}
	if req.Version == "" {
		return req, commands.Errorf(commands.EINVALID, "promote needs a route and the version to move it to")
	}
	req.Reason = strings.Join(words, " ")
	return req, nil
}

// change runs a rollback or promotion, printing each phase as it ends and
// then the timing report. It runs to its end even when ctx is cancelled (a
// Ctrl-C): a person who stops the dev stack during a rollback gets the
// rollback finished, as a bot replica that is shut down would.
func (t *terminal) change(ctx context.Context, do func(context.Context, commands.ProgressFunc) (*commands.Result, error), usage string) {
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	res, err := do(octx, t.progress)
	if err != nil {
		t.printErr(err, usage)
		return
	}
	t.con.printf("%s\n", res.Report())
	if res.Outcome == commands.OutcomeDegraded {
		t.con.printf("degraded: %s is on %s, but not everything confirmed in time; see /rollback status %s\n",
			res.Route, res.To, res.Route)
	}
}

// progress prints a phase as it ends, as backflipctl does, so a slow phase
// shows where it is.
func (t *terminal) progress(p commands.Progress) {
	if p.State == commands.StateRunning {
		return
	}
	state, detail := "", p.Detail
	switch p.State {
	case commands.StateFailed:
		state = " FAILED"
		if p.Phase == commands.PhaseResolve || p.Phase == commands.PhaseWarm || p.Phase == commands.PhaseFlip {
			// The op ends here with an error, printed next, which says
			// the same thing.
			detail = ""
		}
	case commands.StateSkipped:
		state = " skipped"
	}
	line := fmt.Sprintf("  %-8s %8s%s", p.Phase, took(p), state)
	if detail != "" {
		line += "  " + detail
	}
	t.con.printf("%s\n", line)
}

func took(p commands.Progress) string {
	if p.State == commands.StateSkipped {
		return "-"
	}
	ms := float64(p.Took.Microseconds()) / 1000
	if ms >= 1000 {
		return fmt.Sprintf("%.2f s", ms/1000)
	}
	return fmt.Sprintf("%.1f ms", ms)
}

// printErr prints what a person may read of err: its message, labelled by
// its code, and for bad input the usage line (usage when given, else the
// one err carries).
func (t *terminal) printErr(err error, usage string) {
	code := commands.ErrorCode(err)
	t.con.printf("%s: %s\n", errorLabel(code), commands.ErrorMessage(err))
	if code != commands.EINVALID {
		return
	}
	if usage == "" {
		usage = commands.ErrorUsage(err)
	}
	if usage != "" {
		t.con.printf("usage: %s\n", strings.ReplaceAll(usage, "\n", "\n       "))
	}
}

func errorLabel(code string) string {
	switch code {
	case commands.EINVALID:
		return "bad input"
	case commands.EUNAUTHORIZED:
		return "not allowed"
	case commands.EREFUSED:
		return "refused"
	case commands.ECONFLICT:
		return "conflict"
	case commands.ENOTFOUND:
		return "not found"
	case commands.EUNAVAILABLE:
		return "unavailable"
	}
	return "error"
}

func (t *terminal) fleet(ctx context.Context, rest string) {
	if rest != "" {
		t.con.printf("bad input: fleet takes no arguments\n")
		return
	}
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	rep, err := t.s.svc.Fleet(rctx)
	if err != nil {
		t.printErr(err, "")
		return
	}
	t.con.printf("%s", rep.String())
}

// sim changes how simulated inference servers behave, to see a warm check
// refuse a rollback. It returns once the agents report the change, so that
// the next command — typed, or the next line of a pipe — sees it.
func (t *terminal) sim(ctx context.Context, rest string) {
	args := strings.Fields(rest)
	if len(args) != 4 {
		t.con.printf("bad input: sim needs a node (or all), a route, a version and a behaviour\nusage: %s\n",
			"sim <node|all> <route> <version> <warm|loading|unloaded|inference-dead|slow|hang>")
		return
	}
	node, route, version := args[0], args[1], args[2]
	b, err := sim.ParseBehavior(args[3])
	if err != nil {
		t.con.printf("bad input: %v\n", err)
		return
	}
	var delay time.Duration
	if b == sim.Slow {
		delay = 2 * time.Second // over the 800 ms canary budget
	}
	if err := t.s.fleet.SetBehavior(node, route, version, b, delay); err != nil {
		t.con.printf("bad input: %v\n", err)
		return
	}
	n := 1
	if node == simfleet.AllNodes {
		n = len(t.s.fleet.Nodes())
	}
	t.con.printf("%s %s now %s on %d node(s); %s\n", route, version, b, n, t.waitAgents(ctx, node, route, version, b == sim.Warm))
}

// waitAgents asks the agents, through the warm checker, until the nodes
// changed by sim report the version warm (or not, as wantWarm says), for
// at most simSettle; it says what they report.
func (t *terminal) waitAgents(ctx context.Context, node, route, version string, wantWarm bool) string {
	ctx, cancel := context.WithTimeout(ctx, simSettle)
	defer cancel()
	for {
		rep, err := t.s.checker.Check(ctx, route, version)
		if err == nil || errors.Is(err, warm.ErrTargetNotWarm) {
			settled := true
			for _, nr := range rep.Nodes {
				if (node == simfleet.AllNodes || nr.Node == node) && (nr.State == warm.StateWarm) != wantWarm {
					settled = false
				}
			}
			if settled {
				return "the agents report " + rep.Summary()
			}
		}
		select {
		case <-ctx.Done():
			return "the agents have not all reported it yet (they probe about every second)"
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// origin is the terminal's origin for a request received at received.
func (t *terminal) origin(received time.Time) commands.Origin {
	o := t.s.origin
	o.Received = received
	return o
}

// shortDuration renders a card's validity the way it is configured: "10m",
// "90s", "1h30m".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// clip shortens what a person typed for an error message.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
