package drills

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/commands"
)

// Service implements commands.DrillService: the /drill verbs (and
// backflipctl drill) over the schedule store and the drill runner, plus the
// scheduler job the elected replica runs.
type Service struct {
	cfg    Config
	store  *Store
	runner *Runner
	log    *zap.Logger
}

var _ commands.DrillService = (*Service)(nil)

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	runner, err := NewRunner(cfg)
	if err != nil {
		return nil, err
	}
	return &Service{
		cfg:    cfg,
		store:  NewStore(cfg.Etcd, cfg.Prefix, cfg.Logger.Named("drill-schedules"), cfg.Now),
		runner: runner,
		log:    cfg.Logger,
	}, nil
}

// Drill runs one /drill command. Authorization was done by commands.
func (s *Service) Drill(ctx context.Context, origin commands.Origin, cmd commands.DrillCommand, progress commands.ProgressFunc) (commands.DrillReply, error) {
	switch c := cmd.(type) {
	case commands.DrillScheduleCmd:
		next, err := s.store.Put(ctx, c.Route, Schedule{Cron: c.Cron, CreatedBy: origin.Actor.ID, CreatedAt: s.cfg.Now().UTC()})
		if err != nil {
			return commands.DrillReply{}, err
		}
		text := fmt.Sprintf("Drills of %s scheduled (%s). Next: %s.", c.Route, c.Cron, listTimes(next))
		if s.cfg.AnnounceChannel != "" {
			text += " Each is announced in <#" + s.cfg.AnnounceChannel + "> 24 h and 15 min ahead; `/drill skip " + c.Route + "` postpones one."
		}
		return commands.DrillReply{Text: text}, nil
	case commands.DrillCancelCmd:
		if err := s.store.Delete(ctx, c.Route); err != nil {
			return commands.DrillReply{}, err
		}
		return commands.DrillReply{Text: fmt.Sprintf("Drills of %s cancelled; no more will run until scheduled again.", c.Route)}, nil
	case commands.DrillSkipCmd:
		skipped, err := s.store.SkipNext(ctx, c.Route, origin.Actor.ID)
		if err != nil {
			return commands.DrillReply{}, err
		}
		return commands.DrillReply{Text: fmt.Sprintf("The drill of %s due %s will not run; the schedule stays.", c.Route, fmtTime(skipped))}, nil
	case commands.DrillListCmd:
		listed, err := s.store.List(ctx)
		if err != nil {
			return commands.DrillReply{}, err
		}
		if len(listed) == 0 {
			return commands.DrillReply{Text: "No drills are scheduled. `/drill schedule <route> \"0 9 * * 1\"` drills a route every Monday at 09:00 UTC."}, nil
		}
		var b strings.Builder
		for _, l := range listed {
			if l.Err != "" {
				fmt.Fprintf(&b, "%s: unreadable schedule (%s)\n", l.Route, l.Err)
				continue
			}
			fmt.Fprintf(&b, "%s: %s · next %s\n", l.Route, l.Schedule.Cron, listTimes(l.Next))
		}
		return commands.DrillReply{Text: strings.TrimSuffix(b.String(), "\n")}, nil
	case commands.DrillRunCmd:
		out, err := s.runner.Run(ctx, origin, c.Route, c.DryRun, progress)
		if err != nil && out.Rollback == nil {
			// Nothing flipped: a refusal (which may itself be a finding,
			// e.g. a cold rollback target) or a drill that could not start.
			text := out.Text()
			if text == "" {
				return commands.DrillReply{}, err
			}
			return commands.DrillReply{Text: text, Result: out.DrillResult()}, err
		}
		return commands.DrillReply{Text: out.Text(), Result: out.DrillResult()}, nil
	case commands.DrillHistoryCmd:
		text, png, err := s.runner.History(ctx, c.Route)
		if err != nil {
			return commands.DrillReply{}, err
		}
		return commands.DrillReply{Text: text, Chart: png}, nil
	}
	return commands.DrillReply{}, commands.Errorf(commands.EINVALID, "unknown drill command")
}

// Scheduler returns the scheduler job: it runs each due drill through the
// runner as backflip itself and announces the outcome.
func (s *Service) Scheduler(tick time.Duration) (*Scheduler, error) {
	origin := commands.Origin{Actor: commands.Actor{ID: "system:drill-scheduler", Name: "scheduled drill"}, Transport: commands.TransportSystem}
	return NewScheduler(SchedulerConfig{
		Store: s.store, Etcd: s.cfg.Etcd, Prefix: s.cfg.Prefix, Owner: s.cfg.Owner,
		Announcer: s.cfg.Announcer, AnnounceChannel: s.cfg.AnnounceChannel, Late: s.cfg.Late, Tick: tick, VerifyWindow: s.cfg.VerifyWindow,
		Logger: s.log.Named("drill-scheduler"), Now: s.cfg.Now,
		Run: func(ctx context.Context, route string, scheduled time.Time) error {
			out, err := s.runner.Run(ctx, origin, route, false, nil)
			if s.cfg.Announcer != nil && s.cfg.AnnounceChannel != "" {
				text := fmt.Sprintf("Scheduled drill of %s (due %s): %s", route, fmtTime(scheduled), out.Text())
				if err != nil && out.Text() == "" {
					text = fmt.Sprintf("Scheduled drill of %s (due %s) did not run: %s", route, fmtTime(scheduled), commands.ErrorMessage(err))
				}
				if aerr := s.cfg.Announcer.Announce(ctx, s.cfg.AnnounceChannel, text); aerr != nil {
					s.log.Warn("drill outcome not announced", zap.String("route", route), zap.Error(aerr))
				}
			}
			if err == nil && out.State != RunCompleted {
				err = errors.New(out.State + ": " + out.Detail)
			}
			return err
		},
	})
}

func listTimes(ts []time.Time) string {
	var s []string
	for _, t := range ts {
		s = append(s, fmtTime(t))
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "(none)"
	}
	return t.Format("Mon 2 Jan 15:04 MST")
}
