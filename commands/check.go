package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// Authorize decides whether o may run verb on route, the same decision the
// use cases make, and audits a refusal (rollback.refused) as they do. A
// transport calls it before it shows anything in a channel (a --now
// rollback's progress message, a card being confirmed or cancelled), so a
// person who may not act gets a private refusal and the channel sees
// nothing. It returns nil when allowed, an *Error otherwise.
func (s *Service) Authorize(ctx context.Context, o Origin, verb Verb, route string) error {
	dec, err := s.auth.Authorize(ctx, o, verb, route)
	if err != nil {
		return err
	}
	if dec.Allowed {
		return nil
	}
	kind := routing.KindRollback
	if verb == VerbPromote {
		kind = routing.KindPromote
	}
	op := &op{s: s, id: uuid.NewString(), kind: kind, origin: o, start: time.Now()}
	op.res = &Result{Op: op.id, Kind: kind, Route: route, Actor: o.Actor, Channel: o.Channel, StartedAt: s.now()}
	if routing.ValidateRoute(route) != nil || !verb.Acts() {
		return &Error{Code: EUNAUTHORIZED, Message: dec.Message}
	}
	_, rerr := op.refuse(ctx, &Error{Code: EUNAUTHORIZED, Message: dec.Message})
	return rerr
}

// SetDrills sets the DrillService when it is built after the Service (the
// drills package needs the Service for its flips). Call it once, before
// the Service answers requests.
func (s *Service) SetDrills(d DrillService) { s.cfg.Drills = d }

// Drill authorizes a /drill command and runs it through the configured
// DrillService.
func (s *Service) Drill(ctx context.Context, o Origin, cmd DrillCommand, progress ProgressFunc) (DrillReply, error) {
	route := ""
	switch c := cmd.(type) {
	case DrillRunCmd:
		route = c.Route
	case DrillScheduleCmd:
		route = c.Route
	case DrillCancelCmd:
		route = c.Route
	case DrillSkipCmd:
		route = c.Route
	}
	if cmd.Verb().Acts() {
		dec, err := s.auth.Authorize(ctx, o, cmd.Verb(), route)
		if err != nil {
			return DrillReply{}, err
		}
		if !dec.Allowed {
			return DrillReply{}, &Error{Code: EUNAUTHORIZED, Message: dec.Message}
		}
	}
	if s.cfg.Drills == nil {
		return DrillReply{}, Errorf(EUNAVAILABLE, "drills are not set up on this backflip; /rollback works as usual")
	}
	return s.cfg.Drills.Drill(ctx, o, cmd, progress)
}

// AuditRow returns the audit_events id of an event once the shipper has
// stored it: 0 while it is still queued in etcd (or when there is no
// database). It waits up to wait for the row.
func (s *Service) AuditRow(ctx context.Context, eventID string, wait time.Duration) (int64, error) {
	if s.cfg.DB == nil || eventID == "" {
		return 0, nil
	}
	id, err := uuid.Parse(eventID)
	if err != nil {
		return 0, fmt.Errorf("event id %q: %w", eventID, err)
	}
	deadline := time.Now().Add(wait)
	for {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		var row int64
		err := s.cfg.DB.QueryRow(qctx, `SELECT id FROM audit_events WHERE event_id = $1`, id).Scan(&row)
		cancel()
		switch {
		case err == nil:
			return row, nil
		case !errors.Is(err, pgx.ErrNoRows):
			return 0, fmt.Errorf("audit row of %s: %s", eventID, strings.TrimSpace(err.Error()))
		}
		if time.Now().Add(100 * time.Millisecond).After(deadline) {
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
