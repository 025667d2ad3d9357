package devstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/sim"
	"github.com/backflip-dev/backflip/internal/simfleet"
	"github.com/google/uuid"
)

const usage = `commands:
  status [<route>]                                  routes, versions, epochs and router convergence
  promote <route> <version> [--expect-rev N] <reason ...>
  rollback <route> [--to <version>] [--force-cold] [--expect-rev N] <reason ...>
  sim <node|all> <route> <version> <warm|loading|unloaded|inference-dead|slow|hang>
                                                    make simulated inference servers misbehave
  help                                              this text
  quit                                              stop everything`

// maxLine bounds one terminal line; longer input is refused, not truncated.
const maxLine = 4096

// Serve reads commands from in until it ends or ctx is done, and answers on out.
func (s *Stack) Serve(ctx context.Context, in io.Reader, out io.Writer) error {
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
	prompt := func() { fmt.Fprint(out, "backflip> ") }
	prompt()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out)
			return nil
		case err := <-scanErr:
			fmt.Fprintln(out)
			if errors.Is(err, bufio.ErrTooLong) {
				return fmt.Errorf("input line longer than %d bytes", maxLine)
			}
			return err
		case line := <-lines:
			if quit := s.exec(ctx, strings.TrimSpace(line), out); quit {
				return nil
			}
			prompt()
		}
	}
}

// exec runs one command line. It reports whether the user asked to quit.
func (s *Stack) exec(ctx context.Context, line string, out io.Writer) bool {
	args := strings.Fields(line)
	if len(args) == 0 {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var err error
	switch args[0] {
	case "quit", "exit":
		return true
	case "help", "?":
		fmt.Fprintln(out, usage)
	case "status":
		err = s.status(cctx, args[1:], out)
	case "promote":
		err = s.change(cctx, routing.KindPromote, args[1:], out)
	case "rollback":
		err = s.change(cctx, routing.KindRollback, args[1:], out)
	case "sim":
		err = s.simCmd(args[1:], out)
	default:
		err = fmt.Errorf("unknown command %q", args[0])
	}
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		var bad badInput
		if errors.As(err, &bad) || strings.HasPrefix(err.Error(), "unknown command") {
			fmt.Fprintln(out, usage)
		}
	}
	return false
}

type badInput struct{ msg string }

func (b badInput) Error() string { return b.msg }

func (s *Stack) status(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 1 {
		return badInput{"status takes at most one route"}
	}
	entries, malformed, rev, err := s.store.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tACTIVE\tPREVIOUS\tEPOCH\tLAST CHANGE\tBY\tROUTERS")
	shown := 0
	for _, e := range entries {
		c := e.Config
		if len(args) == 1 && c.Route != args[0] {
			continue
		}
		shown++
		conv := s.fleet.Converged(c.Route, c.Epoch)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s %s ago\t%s\t%d/%d\n", c.Route, c.Active, dash(c.Previous), c.Epoch,
			c.Kind, s.cfg.Now().Sub(c.At).Round(time.Second), c.Actor, conv.Applied, conv.Routers)
	}
	tw.Flush()
	if len(args) == 1 && shown == 0 {
		return fmt.Errorf("route %q not found", args[0])
	}
	for _, m := range malformed {
		fmt.Fprintf(out, "warning: %v\n", m)
	}
	fmt.Fprintf(out, "etcd %s at revision %d\n", s.etcd.Endpoint(), rev)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// change parses and runs promote or rollback.
func (s *Stack) change(ctx context.Context, kind routing.Kind, args []string, out io.Writer) error {
	var route, to string
	var expect int64
	var words []string
	forceCold := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--force-cold" && kind == routing.KindRollback:
			forceCold = true
		case a == "--to" || a == "--expect-rev":
			if i+1 >= len(args) {
				return badInput{a + " needs a value"}
			}
			i++
			if a == "--to" {
				if kind == routing.KindPromote {
					return badInput{"promote takes the version as its second word, not --to"}
				}
				to = args[i]
			} else {
				n, err := strconv.ParseInt(args[i], 10, 64)
				if err != nil || n <= 0 {
					return badInput{fmt.Sprintf("--expect-rev wants a positive revision, got %q", args[i])}
				}
				expect = n
			}
		case strings.HasPrefix(a, "--"):
			return badInput{fmt.Sprintf("unknown flag %s", a)}
		case route == "":
			route = a
		case kind == routing.KindPromote && to == "":
			to = a
		default:
			words = append(words, a)
		}
	}
	if route == "" {
		return badInput{fmt.Sprintf("%s needs a route", kind)}
	}
	if err := routing.ValidateRoute(route); err != nil {
		return badInput{err.Error()}
	}
	if kind == routing.KindPromote && to == "" {
		return badInput{"promote needs a version"}
	}
	reason := strings.Join(words, " ")
	if reason == "" {
		return badInput{"a reason is required"}
	}
	if to != "" {
		if err := routing.ValidateVersion(to); err != nil {
			return badInput{err.Error()}
		}
	}

	start := time.Now()
	cur, err := s.store.Get(ctx, route)
	if err != nil {
		return err
	}
	var seen *routing.Entry
	if expect == 0 || expect == cur.ModRevision {
		// At the terminal the operator sees the route as it is now; the
		// flip then needs no second read.
		expect, seen = cur.ModRevision, &cur
	}
	if kind == routing.KindRollback && to == "" {
		if cur.Config.Kind == routing.KindRollback {
			return fmt.Errorf("%s was rolled back from %s by %s %s ago; to undo, use --to %s",
				route, cur.Config.From, cur.Config.Actor, s.cfg.Now().Sub(cur.Config.At).Round(time.Second), cur.Config.From)
		}
		if cur.Config.Previous == "" {
			return fmt.Errorf("%s has no previous version to roll back to", route)
		}
		to = cur.Config.Previous
	}
	// A rollback is only a routing change if its target is warm; a
	// promotion is a deployment step and is not checked here.
	warmNote := "warm check skipped (--force-cold)"
	if kind == routing.KindRollback && !forceCold {
		rep, err := s.checker.Check(ctx, route, to)
		if err != nil {
			if errors.Is(err, warm.ErrTargetNotWarm) {
				return fmt.Errorf("refused: %s\n(after fixing the target, roll back again; --force-cold overrides)", rep.String())
			}
			return fmt.Errorf("warm check: %w", err)
		}
		warmNote = fmt.Sprintf("warm %s (%s)", ms(rep.Duration), rep.Summary())
	}
	flipStart := time.Now()
	res, err := s.store.Flip(ctx, routing.Change{Route: route, Kind: kind, To: to, ExpectRev: expect, Seen: seen,
		Op: uuid.NewString(), Reason: reason, Actor: s.cfg.Actor})
	if err != nil {
		return err
	}
	flipDone := time.Now()
	// The routers get 5 s; the flip has landed whatever they do.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conv := s.fleet.WaitConverged(wctx, route, res.Config.Epoch)
	cancel()
	routers := "timed out"
	if !conv.Last.IsZero() {
		routers = ms(conv.Last.Sub(flipStart))
	}
	verb, phases := "promoted", ""
	if kind == routing.KindRollback {
		verb, phases = "rolled back", warmNote+" · "
	}
	fmt.Fprintf(out, "%s %s %s → %s in %s · %sflip %s (rev %d) · routers %s (%d/%d)\n",
		route, verb, res.Config.From, res.Config.Active, ms(time.Since(start)), phases, ms(flipDone.Sub(flipStart)),
		res.Revision, routers, conv.Applied, conv.Routers)
	return nil
}

// simCmd changes how simulated inference servers behave, to see a warm
// check refuse a rollback.
func (s *Stack) simCmd(args []string, out io.Writer) error {
	if len(args) != 4 {
		return badInput{"sim needs a node (or all), a route, a version and a behaviour"}
	}
	b, err := sim.ParseBehavior(args[3])
	if err != nil {
		return badInput{err.Error()}
	}
	var delay time.Duration
	if b == sim.Slow {
		delay = 2 * time.Second // over the 800 ms canary budget
	}
	if err := s.fleet.SetBehavior(args[0], args[1], args[2], b, delay); err != nil {
		return err
	}
	n := 1
	if args[0] == simfleet.AllNodes {
		n = len(s.fleet.Nodes())
	}
	fmt.Fprintf(out, "%s %s now %s on %d node(s); agents notice within about a second\n", args[1], args[2], b, n)
	return nil
}
