package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DBTX is what the store and the queries need from Postgres: a *pgx.Conn,
// a *pgxpool.Pool or a pgx.Tx all satisfy it.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var (
	_ DBTX = (*pgx.Conn)(nil)
	_ DBTX = (pgx.Tx)(nil)
)

// insertEvents inserts every event in one statement, whatever their number:
// the columns travel as arrays and are unnested in the given order (WITH
// ORDINALITY … ORDER BY), so ids follow that order. An event whose event_id
// is already stored is skipped (ON CONFLICT DO NOTHING): shipping twice
// never makes two rows. Optional text columns store "" as NULL, an absent
// etcd revision (0) as NULL, and absent timings or details as '{}'.
const insertEvents = `
INSERT INTO audit_events (event_id, op_id, kind, route, from_version, to_version, actor, actor_name,
    channel, reason, outcome, affected_requests, timings, etcd_revision, details, schema_version, occurred_at)
SELECT u.event_id, u.op_id, u.kind, u.route, NULLIF(u.from_version, ''), NULLIF(u.to_version, ''), u.actor,
    NULLIF(u.actor_name, ''), NULLIF(u.channel, ''), NULLIF(u.reason, ''), NULLIF(u.outcome, ''),
    u.affected_requests, COALESCE(u.timings::jsonb, '{}'::jsonb), NULLIF(u.etcd_revision, 0),
    COALESCE(u.details::jsonb, '{}'::jsonb), u.schema_version, u.occurred_at
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
    $9::text[], $10::text[], $11::text[], $12::int[], $13::text[], $14::bigint[], $15::text[], $16::int[],
    $17::timestamptz[])
    WITH ORDINALITY AS u(event_id, op_id, kind, route, from_version, to_version, actor, actor_name,
        channel, reason, outcome, affected_requests, timings, etcd_revision, details, schema_version,
        occurred_at, ord)
ORDER BY u.ord
ON CONFLICT (event_id) DO NOTHING`

// InsertEvents stores events in the given order, in one statement, and
// returns how many rows it added: events already stored (same event_id) are
// skipped, so inserting the same events again adds nothing and is not an
// error. Every event is validated first; if one is invalid nothing is
// inserted and the error wraps ErrInvalid and names its index.
func InsertEvents(ctx context.Context, db DBTX, events []Event) (inserted int, err error) {
	if len(events) == 0 {
		return 0, nil
	}
	n := len(events)
	var (
		eventIDs   = make([]string, n)
		opIDs      = make([]string, n)
		kinds      = make([]string, n)
		routes     = make([]string, n)
		froms      = make([]string, n)
		tos        = make([]string, n)
		actors     = make([]string, n)
		actorNames = make([]string, n)
		channels   = make([]string, n)
		reasons    = make([]string, n)
		outcomes   = make([]string, n)
		affected   = make([]*int32, n)
		timings    = make([]*string, n)
		revisions  = make([]int64, n)
		details    = make([]*string, n)
		versions   = make([]int32, n)
		occurred   = make([]time.Time, n)
	)
	for i := range events {
		e := &events[i]
		if err := e.Validate(); err != nil {
			return 0, fmt.Errorf("event %d (%s): %w", i, e.EventID, err)
		}
		eventIDs[i], opIDs[i] = e.EventID.String(), e.OpID.String()
		kinds[i], routes[i] = string(e.Kind), e.Route
		froms[i], tos[i] = e.FromVersion, e.ToVersion
		actors[i], actorNames[i], channels[i] = e.Actor, e.ActorName, e.Channel
		reasons[i], outcomes[i] = e.Reason, e.Outcome
		if e.AffectedRequests != nil {
			if *e.AffectedRequests > 1<<31-1 {
				return 0, fmt.Errorf("event %d (%s): %w: affected_requests %d does not fit an int column", i, e.EventID, ErrInvalid, *e.AffectedRequests)
			}
			v := int32(*e.AffectedRequests)
			affected[i] = &v
		}
		if len(e.Timings) > 0 {
			b, err := json.Marshal(e.Timings)
			if err != nil {
				return 0, fmt.Errorf("event %d (%s): %w: timings: %v", i, e.EventID, ErrInvalid, err)
			}
			s := string(b)
			timings[i] = &s
		}
		if len(e.Details) > 0 {
			s := string(e.Details)
			details[i] = &s
		}
		revisions[i] = e.EtcdRevision
		versions[i] = int32(e.SchemaVersion)
		occurred[i] = e.OccurredAt
	}
	tag, err := db.Exec(ctx, insertEvents, eventIDs, opIDs, kinds, routes, froms, tos, actors, actorNames,
		channels, reasons, outcomes, affected, timings, revisions, details, versions, occurred)
	if err != nil {
		return 0, fmt.Errorf("insert %d audit events: %w", n, err)
	}
	return int(tag.RowsAffected()), nil
}
