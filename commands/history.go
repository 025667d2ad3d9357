package commands

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/routing"
)

// HistoryItem is one audit event of a history.
type HistoryItem struct {
	audit.Event
	// Row is the event's audit_events id once it is in Postgres (0 while
	// it is pending).
	Row int64 `json:"row,omitempty"`
	// Pending is true while the event waits in the etcd outbox for the
	// shipper to move it to Postgres.
	Pending bool `json:"pending"`
}

// HistoryReport is what `history` answers.
type HistoryReport struct {
	// Route is the route asked about; "" means every route.
	Route string `json:"route"`
	// Items are the newest events first.
	Items []HistoryItem `json:"items"`
	// AuditError says which source could not be read and so what is
	// missing from Items ("" when both were read).
	AuditError string `json:"audit_error,omitempty"`
	// Malformed counts outbox values that could not be decoded and were
	// left out (the shipper quarantines them).
	Malformed int `json:"malformed,omitempty"`
}

// History returns the newest audit events of route (every route when route
// is ""), at most limit of them (0 means DefaultHistoryLimit, at most
// MaxHistoryLimit): the events stored in Postgres and those still waiting in
// the etcd outbox, merged newest first. An event in both (shipped between
// the two reads) is shown once, as its Postgres row.
//
// With one of the two sources down it answers from the other and says so in
// AuditError; with both down it fails with EUNAVAILABLE.
func (s *Service) History(ctx context.Context, o Origin, route string, limit int) (HistoryReport, error) {
	if route != "" {
		if err := routing.ValidateRoute(route); err != nil {
			return HistoryReport{}, Errorf(EINVALID, "%s", invalidText(err))
		}
	}
	switch {
	case limit == 0:
		limit = DefaultHistoryLimit
	case limit < 0 || limit > MaxHistoryLimit:
		return HistoryReport{}, Errorf(EINVALID, "--limit must be between 1 and %d, got %d", MaxHistoryLimit, limit)
	}
	rep := HistoryReport{Route: route, Items: []HistoryItem{}}

	// The outbox is read before Postgres, never after: an event the shipper
	// moves between the two reads is then in the second (Postgres) if it is
	// gone from the first. Read the other way round, it could be in neither.
	pending, malformed, etcdErr := s.outboxEvents(ctx, route)
	rep.Malformed = malformed
	rows, dbErr := s.auditRows(ctx, route, limit)

	switch {
	case etcdErr != nil && dbErr != nil:
		return HistoryReport{}, unavailable(etcdErr, "audit history unavailable: the audit database could not be read (%s) and etcd could not be read (%s)",
			causeText(dbErr), causeText(etcdErr))
	case dbErr != nil:
		rep.AuditError = "audit database unavailable; showing only events not yet shipped (" + causeText(dbErr) + ")"
	case etcdErr != nil:
		rep.AuditError = "etcd could not be read; events not yet shipped to the audit database are missing (" + causeText(etcdErr) + ")"
	}

	shipped := make(map[uuid.UUID]bool, len(rows))
	for _, r := range rows {
		shipped[r.EventID] = true
		rep.Items = append(rep.Items, HistoryItem{Event: r.Event, Row: r.ID})
	}
	for _, e := range pending {
		if !shipped[e.EventID] {
			rep.Items = append(rep.Items, HistoryItem{Event: e, Pending: true})
		}
	}
	slices.SortStableFunc(rep.Items, func(a, b HistoryItem) int {
		if c := b.OccurredAt.Compare(a.OccurredAt); c != 0 {
			return c
		}
		// At the same instant: pending events were recorded last, and
		// rows newest-recorded first, as audit.History orders them.
		if a.Pending != b.Pending {
			if a.Pending {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.Row, a.Row)
	})
	if len(rep.Items) > limit {
		rep.Items = rep.Items[:limit]
	}
	s.log.Debug("history", zap.String("actor", o.Actor.ID), zap.String("route", route), zap.Int("limit", limit),
		zap.Int("rows", len(rows)), zap.Int("pending", len(pending)), zap.Int("malformed", malformed))
	return rep, nil
}

// auditRows reads the stored events, or says why it could not.
func (s *Service) auditRows(ctx context.Context, route string, limit int) ([]audit.Row, error) {
	if s.cfg.DB == nil {
		return nil, fmt.Errorf("none is configured")
	}
	ctx, cancel := sourceContext(ctx)
	defer cancel()
	rows, err := audit.History(ctx, s.cfg.DB, route, limit)
	if err != nil {
		s.log.Warn("history: audit database unavailable", zap.Error(err))
	}
	return rows, err
}

// outboxEvents reads the events waiting in the etcd outbox, of route or of
// every route. Values that cannot be decoded are counted, not returned.
func (s *Service) outboxEvents(ctx context.Context, route string) ([]audit.Event, int, error) {
	ctx, cancel := sourceContext(ctx)
	defer cancel()
	resp, err := s.etcd.Get(ctx, s.audit.Outbox(), clientv3.WithPrefix())
	if err != nil {
		s.log.Warn("history: etcd outbox unavailable", zap.Error(err))
		return nil, 0, err
	}
	var (
		events    []audit.Event
		malformed int
	)
	for _, kv := range resp.Kvs {
		e, err := audit.DecodeEvent(kv.Value)
		if err != nil {
			malformed++
			s.log.Debug("history: malformed outbox event", zap.ByteString("key", kv.Key), zap.Error(err))
			continue
		}
		if route == "" || e.Route == route {
			events = append(events, e)
		}
	}
	return events, malformed, nil
}

// sourceTimeout bounds the read of one source of a read-only answer
// (history's outbox and audit rows, status's drill statistics).
const sourceTimeout = 5 * time.Second

// sourceContext bounds the read of one of several independent sources by
// sourceTimeout and by half of the time ctx has left, so a source that
// hangs (a partitioned etcd, a Postgres that accepts connections but never
// answers) cannot use up the whole budget and hide what the other source
// has.
func sourceContext(ctx context.Context) (context.Context, context.CancelFunc) {
	budget := sourceTimeout
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(dl)/2)
	}
	return context.WithTimeout(ctx, budget)
}

// String renders the history for a person at a terminal, one event a line,
// newest first, e.g.
//
//	2025-06-01 14:03:07 UTC  model.rollback  chat-70b v42 → v41  completed  by cli:ana@ops-1  "latency spike"  row 1234
//
// Free text (reasons, actors) is cleaned of control characters and clipped.
func (h *HistoryReport) String() string {
	var b strings.Builder
	if h.AuditError != "" {
		fmt.Fprintf(&b, "note: %s\n", plainText(h.AuditError, 400))
	}
	if h.Malformed > 0 {
		fmt.Fprintf(&b, "note: %d malformed event(s) in the etcd outbox were left out\n", h.Malformed)
	}
	if len(h.Items) == 0 {
		if h.Route != "" {
			fmt.Fprintf(&b, "no audit events for %s\n", h.Route)
		} else {
			b.WriteString("no audit events\n")
		}
		return b.String()
	}
	for _, it := range h.Items {
		it.write(&b)
	}
	return b.String()
}

func (it *HistoryItem) write(b *strings.Builder) {
	fmt.Fprintf(b, "%s  %s  %s", it.OccurredAt.UTC().Format(time.DateTime+" MST"), it.Kind, it.Route)
	switch {
	case it.FromVersion != "" && it.ToVersion != "":
		fmt.Fprintf(b, " %s → %s", it.FromVersion, it.ToVersion)
	case it.ToVersion != "":
		fmt.Fprintf(b, " → %s", it.ToVersion)
	case it.FromVersion != "":
		fmt.Fprintf(b, " from %s", it.FromVersion)
	}
	if it.Outcome != "" {
		fmt.Fprintf(b, "  %s", plainText(it.Outcome, 40))
	}
	actor := plainText(it.Actor, 80)
	if it.ActorName != "" && it.ActorName != it.Actor {
		actor = plainText(it.ActorName, 60) + " (" + actor + ")"
	}
	fmt.Fprintf(b, "  by %s", actor)
	if it.Reason != "" {
		fmt.Fprintf(b, "  %q", plainText(it.Reason, 120))
	}
	if total, ok := it.Timings["total"]; ok {
		fmt.Fprintf(b, "  %s", millis(msDuration(total)))
	}
	if it.Pending {
		b.WriteString("  pending (in the etcd outbox)\n")
	} else {
		fmt.Fprintf(b, "  row %d\n", it.Row)
	}
}
