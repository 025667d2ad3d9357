package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/sim"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// Help lists the dev-only verbs Exec runs, for the terminal to show after
// the chat's own help.
const Help = `dev-only commands:
  promote <route> <version> [--force-cold] [--dry-run] [<reason ...>]
                        what a deploy pipeline calls: warm check, flip, routers
  fleet                 the simulated GPU nodes and what each serves
  sim <node|all> <route> <version> <warm|loading|unloaded|inference-dead|slow|hang>
                        make simulated inference servers misbehave
  quit                  stop everything (so do Ctrl-C and the end of input)`

const (
	promoteUsage = "promote <route> <version> [--force-cold] [--dry-run] [<reason ...>]"
	simUsage     = "sim <node|all> <route> <version> <warm|loading|unloaded|inference-dead|slow|hang>"
)

const (
	// readTimeout bounds fleet.
	readTimeout = 30 * time.Second
	// opTimeout bounds a promotion: its phases are bounded by the warm and
	// convergence timeouts, which this exceeds, so it only stops an op
	// that is stuck for another reason.
	opTimeout = 2 * time.Minute
	// simSettle bounds how long sim waits for the agents to report a
	// change: a few of their probe intervals, and the slow behaviour's
	// canary.
	simSettle = 10 * time.Second
)

// Banner is what the stack prints when it is up: what runs, who the person
// at the terminal is, and what to try. endpoints, when not "", describes
// what the caller serves besides (indented lines, as the rest).
func (s *Stack) Banner(endpoints string) string {
	c := s.cfg
	traffic := "no traffic (--rps 0)"
	if c.RPS > 0 {
		traffic = fmt.Sprintf("%d requests/s each, about %s long", c.RPS, trafficSteps*trafficStepDelay)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `backflip dev is running.
  etcd (embedded)     %s   data in %s
  audit (postgres)    %s
  routers             %d simulated routers on the reader library, registered under %s/routers/
  fleet               %d simulated GPU nodes: the real agent probing simulated vLLM, Triton, Ollama
                      and TGI servers; chat-70b v41 is warm, embed-small v6 is not loaded
  runtimes            %d workflow runtimes on the real SDK: %s
  you                 %s in channel #%s, allowed to roll back and promote
`, s.Endpoint(), c.StateDir, s.audit.where, c.Routers, c.Prefix, c.Nodes, c.Runtimes, traffic, s.origin.Actor.ID, devChannel)
	if endpoints != "" {
		b.WriteString(strings.TrimRight(endpoints, "\n") + "\n")
	}
	b.WriteString(`Try:
  /rollback status
  /rollback chat-70b latency spike after v42     (a pre-flight card, then: confirm)
  /rollback embed-small bad embeddings           (refused: v6 is not warm)
  sim all chat-70b v42 inference-dead            (then: /rollback chat-70b --to v42 --now undo)
  help
Ctrl-C or "quit" stops everything.`)
	return b.String()
}

// Exec runs line when it is one of the dev-only verbs (Help), writing its
// answer to w. It reports whether it knew the line and whether the person
// asked to quit. The chat grammar is not among them: the bot answers it.
func (s *Stack) Exec(ctx context.Context, w io.Writer, line string) (handled, quit bool) {
	verb, rest := splitVerb(strings.TrimSpace(line))
	switch strings.ToLower(verb) {
	case "quit", "exit":
		return true, true
	case "promote":
		s.promote(ctx, w, rest)
	case "fleet":
		s.fleetReport(ctx, w, rest)
	case "sim":
		s.sim(ctx, w, rest)
	default:
		return false, false
	}
	return true, false
}

// splitVerb cuts line at its first space into the verb and the rest.
func splitVerb(line string) (verb, rest string) {
	i := strings.IndexFunc(line, unicode.IsSpace)
	if i < 0 {
		return line, ""
	}
	return line[:i], strings.TrimSpace(line[i:])
}

// promote runs `promote <route> <version> [--force-cold] [--dry-run]
// [<reason ...>]`, what a deploy pipeline calls (through backflipctl in
// production; there is no promote in chat). It runs to its end even when
// ctx is cancelled (a Ctrl-C): a promotion that has flipped must finish
// and be audited.
func (s *Stack) promote(ctx context.Context, w io.Writer, rest string) {
	req, err := parsePromote(rest)
	if err != nil {
		printErr(w, err, promoteUsage)
		return
	}
	req.Origin = s.origin
	req.Origin.Received = time.Now()
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	res, err := s.svc.Promote(octx, req, func(p commands.Progress) { printPhase(w, p) })
	if err != nil {
		printErr(w, err, promoteUsage)
		return
	}
	fmt.Fprintf(w, "%s\n", res.Report())
	if res.Outcome == commands.OutcomeDegraded {
		fmt.Fprintf(w, "degraded: %s is on %s, but not everything confirmed in time; see /rollback status %s\n",
			res.Route, res.To, res.Route)
	}
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

// printPhase prints a phase of a promotion as it ends, as backflipctl
// does, so that a slow phase shows where it is.
func printPhase(w io.Writer, p commands.Progress) {
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
	fmt.Fprintf(w, "%s\n", line)
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
// its code, and for bad input the usage line.
func printErr(w io.Writer, err error, usage string) {
	code := commands.ErrorCode(err)
	fmt.Fprintf(w, "%s: %s\n", errorLabel(code), commands.ErrorMessage(err))
	if code == commands.EINVALID && usage != "" {
		fmt.Fprintf(w, "usage: %s\n", usage)
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

// fleetReport prints the registered nodes and what each serves.
func (s *Stack) fleetReport(ctx context.Context, w io.Writer, rest string) {
	if rest != "" {
		fmt.Fprintf(w, "bad input: fleet takes no arguments\n")
		return
	}
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	rep, err := s.svc.Fleet(rctx)
	if err != nil {
		printErr(w, err, "")
		return
	}
	fmt.Fprintf(w, "%s", rep.String())
}

// sim changes how simulated inference servers behave, to see a warm check
// refuse a rollback. It returns once the agents report the change, so that
// the next command — typed, or the next line of a pipe — sees it.
func (s *Stack) sim(ctx context.Context, w io.Writer, rest string) {
	args := strings.Fields(rest)
	if len(args) != 4 {
		fmt.Fprintf(w, "bad input: sim needs a node (or all), a route, a version and a behaviour\nusage: %s\n", simUsage)
		return
	}
	node, route, version := args[0], args[1], args[2]
	b, err := sim.ParseBehavior(args[3])
	if err != nil {
		fmt.Fprintf(w, "bad input: %v\nusage: %s\n", err, simUsage)
		return
	}
	var delay time.Duration
	if b == sim.Slow {
		delay = 2 * time.Second // over the 800 ms canary budget
	}
	if err := s.fleet.SetBehavior(node, route, version, b, delay); err != nil {
		fmt.Fprintf(w, "bad input: %v\n", err)
		return
	}
	n := 1
	if node == simfleet.AllNodes {
		n = len(s.fleet.Nodes())
	}
	fmt.Fprintf(w, "%s %s now %s on %d node(s); %s\n", route, version, b, n, s.waitAgents(ctx, node, route, version, b == sim.Warm))
}

// waitAgents asks the agents, through the warm checker, until the nodes
// changed by sim report the version warm (or not, as wantWarm says), for
// at most simSettle; it says what they report.
func (s *Stack) waitAgents(ctx context.Context, node, route, version string, wantWarm bool) string {
	ctx, cancel := context.WithTimeout(ctx, simSettle)
	defer cancel()
	for {
		rep, err := s.checker.Check(ctx, route, version)
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

// clip shortens what a person typed for an error message.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
