package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/backflip-dev/backflip/commands"
)

// runner is what a command runs with.
type runner struct {
	m            Main
	inv          invocation
	svc          *commands.Service
	origin       commands.Origin
	dbConfigured bool
}

// command runs one subcommand and returns its answer. An answer may come
// with an error (a refused rollback still has its warm report).
type command func(ctx context.Context, r *runner) (output, error)

// output is a command's answer.
type output interface {
	// text is the answer for a person.
	text() string
	// value is what --json prints.
	value() any
	// exit is the exit code of an answer that came without an error, and
	// a warning line for stderr ("" for none).
	exit() (int, string)
}

// check validates the positional arguments of inv's command and returns the
// function that runs it.
func (inv *invocation) check() (command, error) {
	switch inv.command {
	case "status":
		if len(inv.args) > 1 {
			return nil, usagef("status takes at most one route, got %d arguments", len(inv.args))
		}
		route := first(inv.args)
		return func(ctx context.Context, r *runner) (output, error) {
			rep, err := r.svc.Status(ctx, r.origin, route)
			if err != nil {
				return nil, err
			}
			return statusOut{&rep}, nil
		}, nil

	case "history":
		if len(inv.args) > 1 {
			return nil, usagef("history takes at most one route, got %d arguments", len(inv.args))
		}
		route, limit := first(inv.args), inv.limit
		return func(ctx context.Context, r *runner) (output, error) {
			rep, err := r.svc.History(ctx, r.origin, route, limit)
			if err != nil {
				return nil, err
			}
			return historyOut{rep: &rep, noDB: !r.dbConfigured}, nil
		}, nil

	case "fleet":
		if len(inv.args) > 0 {
			return nil, usagef("fleet takes no arguments, got %q", strings.Join(inv.args, " "))
		}
		return func(ctx context.Context, r *runner) (output, error) {
			rep, err := r.svc.Fleet(ctx)
			if err != nil {
				return nil, err
			}
			return fleetOut{&rep}, nil
		}, nil

	case "rollback":
		if len(inv.args) == 0 {
			return nil, usagef("rollback needs a route")
		}
		reason, err := inv.reasonFrom(inv.args[1:])
		if err != nil {
			return nil, err
		}
		if reason == "" {
			// Dry runs too: the use case records every rollback request with
			// its reason, and refuses one without.
			return nil, usagef("rollback needs a reason: the words after the route, or --reason \"...\"")
		}
		req := commands.RollbackRequest{Route: inv.args[0], To: inv.to, Reason: reason,
			ForceCold: inv.forceCold, DryRun: inv.dryRun, ExpectRev: inv.expectRev}
		return func(ctx context.Context, r *runner) (output, error) {
			req.Origin = r.origin
			res, err := r.svc.Rollback(ctx, req, r.progress)
			return resultOut(res), err
		}, nil

	case "promote":
		if len(inv.args) < 2 {
			return nil, usagef("promote needs a route and a version")
		}
		reason, err := inv.reasonFrom(inv.args[2:])
		if err != nil {
			return nil, err
		}
		req := commands.PromoteRequest{Route: inv.args[0], Version: inv.args[1], Reason: reason,
			ForceCold: inv.forceCold, DryRun: inv.dryRun, ExpectRev: inv.expectRev}
		return func(ctx context.Context, r *runner) (output, error) {
			req.Origin = r.origin
			res, err := r.svc.Promote(ctx, req, r.progress)
			return resultOut(res), err
		}, nil

	case "drill":
		return inv.drillCheck()
	}
	return nil, usagef("unknown command %q", clip(inv.command, 40))
}

func first(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// progress prints each phase of a rollback or promotion to stderr as it
// ends, so the person at the terminal sees where a slow one is.
func (r *runner) progress(p commands.Progress) {
	if p.State == commands.StateRunning {
		return
	}
	state := ""
	switch p.State {
	case commands.StateFailed:
		state = " FAILED"
	case commands.StateSkipped:
		state = " skipped"
	}
	line := fmt.Sprintf("  %-8s %8s%s", p.Phase, took(p), state)
	if p.Detail != "" {
		line += "  " + p.Detail
	}
	fmt.Fprintln(r.m.Stderr, line)
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

type statusOut struct{ rep *commands.StatusReport }

func (o statusOut) text() string        { return o.rep.String() }
func (o statusOut) value() any          { return o.rep }
func (o statusOut) exit() (int, string) { return exitOK, "" }

type historyOut struct {
	rep  *commands.HistoryReport
	noDB bool
}

func (o historyOut) text() string { return o.rep.String() }
func (o historyOut) value() any   { return o.rep }
func (o historyOut) exit() (int, string) {
	if o.noDB {
		return exitOK, "BACKFLIP_DATABASE_URL is not set: only events not yet shipped from etcd to the audit database are shown"
	}
	return exitOK, ""
}

type fleetOut struct{ rep *commands.FleetReport }

func (o fleetOut) text() string        { return o.rep.String() }
func (o fleetOut) value() any          { return o.rep }
func (o fleetOut) exit() (int, string) { return exitOK, "" }

// changeOut is a rollback's or promotion's result.
type changeOut struct{ res *commands.Result }

// resultOut wraps res, keeping a nil result a nil output (an error with no
// result prints the error alone).
func resultOut(res *commands.Result) output {
	if res == nil {
		return nil
	}
	return changeOut{res}
}

func (o changeOut) text() string { return o.res.Report() }
func (o changeOut) value() any   { return o.res }

func (o changeOut) exit() (int, string) {
	switch o.res.Outcome {
	case commands.OutcomeRefused:
		return exitRefused, ""
	case commands.OutcomeFailed, commands.OutcomeAbandoned:
		return exitFailed, ""
	case commands.OutcomeDegraded:
		return exitOK, degradedWarning(o.res)
	}
	return exitOK, ""
}

// degradedWarning says what did not confirm a flip that landed.
func degradedWarning(r *commands.Result) string {
	var parts []string
	if rr := r.Routers; rr != nil && rr.Converged < rr.Expected {
		parts = append(parts, fmt.Sprintf("%d of %d routers did not confirm (%d lost, %d pending)",
			rr.Expected-rr.Converged, rr.Expected, len(rr.Lost), len(rr.Pending)))
	}
	if in := r.InFlight; in != nil {
		if n := len(in.Missing) + len(in.PendingReissue); n > 0 {
			parts = append(parts, fmt.Sprintf("%d of %d runtimes did not confirm", n, in.Expected))
		}
	}
	what := "not everything confirmed in time"
	if len(parts) > 0 {
		what = strings.Join(parts, "; ")
	}
	return fmt.Sprintf("degraded: %s is on %s, but %s; check with `backflipctl status %s`", r.Route, r.To, what, r.Route)
}
