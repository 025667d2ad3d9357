package main

import (
	"context"
	"os"
	"strings"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/drills"
)

// drillSubs lists the drill subcommands, as /drill has them.
const drillSubs = "run, schedule, cancel, skip, list, history"

// drillCheck validates `drill <sub> ...` and returns the command that runs
// it through the same DrillService the bot uses.
func (inv *invocation) drillCheck() (command, error) {
	if len(inv.args) == 0 {
		return nil, usagef("drill needs a subcommand: %s", drillSubs)
	}
	sub, rest := inv.args[0], inv.args[1:]
	if inv.dryRun && sub != "run" {
		return nil, usagef("only drill run takes --dry-run")
	}
	if inv.chart != "" && sub != "history" {
		return nil, usagef("only drill history takes --chart")
	}
	one := func() (string, error) {
		if len(rest) != 1 {
			return "", usagef("drill %s takes one route, got %d arguments", sub, len(rest))
		}
		return rest[0], nil
	}
	var cmd commands.DrillCommand
	switch sub {
	case "run":
		route, err := one()
		if err != nil {
			return nil, err
		}
		cmd = commands.DrillRunCmd{Route: route, DryRun: inv.dryRun}
	case "schedule":
		if len(rest) < 2 {
			return nil, usagef(`drill schedule needs a route and a cron expression, e.g. drill schedule chat-70b "0 9 * * 1" (quote it: the shell expands *)`)
		}
		// The expression may come as one quoted argument or as words.
		cmd = commands.DrillScheduleCmd{Route: rest[0], Cron: strings.Join(rest[1:], " ")}
	case "cancel":
		route, err := one()
		if err != nil {
			return nil, err
		}
		cmd = commands.DrillCancelCmd{Route: route}
	case "skip":
		route, err := one()
		if err != nil {
			return nil, err
		}
		cmd = commands.DrillSkipCmd{Route: route}
	case "list":
		if len(rest) > 0 {
			return nil, usagef("drill list takes no arguments, got %q", clip(strings.Join(rest, " "), 40))
		}
		cmd = commands.DrillListCmd{}
	case "history":
		if len(rest) > 1 {
			return nil, usagef("drill history takes at most one route, got %d arguments", len(rest))
		}
		cmd = commands.DrillHistoryCmd{Route: first(rest)}
	default:
		return nil, usagef("unknown drill subcommand %q (want %s)", clip(sub, 40), drillSubs)
	}
	chart := inv.chart
	return func(ctx context.Context, r *runner) (output, error) {
		reply, err := r.svc.Drill(ctx, r.origin, cmd, r.progress)
		out := drillOut{Sub: sub, Text: reply.Text, Result: reply.Result}
		if err != nil {
			if reply.Text == "" && reply.Result == nil {
				return nil, err
			}
			return out, err
		}
		switch {
		case chart != "" && len(reply.Chart) > 0:
			if werr := os.WriteFile(chart, reply.Chart, 0o644); werr != nil {
				return nil, commands.Errorf(commands.EUNAVAILABLE, "the drill history chart could not be written to %s: %v", chart, werr)
			}
			out.ChartFile = chart
		case chart != "":
			out.noChart = "no chart was written to " + chart + ": no completed drill has a timing to plot yet"
		}
		return out, nil
	}, nil
}

// drillOut is a drill command's answer.
type drillOut struct {
	Sub  string `json:"subcommand"`
	Text string `json:"text"`
	// Result is a drill run's rollback and return.
	Result *commands.DrillResult `json:"result,omitempty"`
	// ChartFile is where --chart wrote the history PNG.
	ChartFile string `json:"chart_file,omitempty"`
	noChart   string
}

func (o drillOut) text() string {
	if o.ChartFile != "" {
		return o.Text + "\nchart: " + o.ChartFile
	}
	return o.Text
}

func (o drillOut) value() any { return o }

// exit is 0 for a drill that completed (or a dry run), 1 for one that
// failed (a cold rollback target, a verification that failed) and 3 for
// one superseded by a real change during its hold.
func (o drillOut) exit() (int, string) {
	if o.Result == nil {
		return exitOK, o.noChart
	}
	switch o.Result.Outcome {
	case drills.RunFailed:
		return exitFailed, ""
	case drills.RunSuperseded:
		return exitRefused, "the drill was superseded by a real change to the route; nothing was flipped back"
	case drills.RunRefused:
		return exitRefused, ""
	}
	if o.Result.Regression != "" {
		return exitOK, "regression: " + o.Result.Regression
	}
	return exitOK, ""
}
