package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Row is a stored event: the Event as recorded plus what the database
// added. Optional text columns that are NULL read back as "", and empty
// timings or details ('{}') as nil, so an event reads back as it was
// inserted (jsonb may reformat Details; compare it as JSON).
type Row struct {
	ID int64
	Event
	RecordedAt time.Time
}

// History limits.
const (
	MaxHistoryLimit = 500
)

const rowColumns = `id, event_id, op_id, kind, route, from_version, to_version, actor, actor_name, channel,
    reason, outcome, affected_requests, timings, etcd_revision, details, schema_version, occurred_at, recorded_at`

// History returns the newest events first, of route or of every route when
// route is "". limit is clamped to 1..MaxHistoryLimit. Events that
// happened at the same instant come newest-recorded first.
func History(ctx context.Context, db DBTX, route string, limit int) ([]Row, error) {
	limit = min(max(limit, 1), MaxHistoryLimit)
	var (
		rows pgx.Rows
		err  error
	)
	// Two statements rather than "($1 = '' OR route = $1)", so each uses
	// its index whatever plan is cached.
	if route == "" {
		rows, err = db.Query(ctx, `SELECT `+rowColumns+` FROM audit_events
ORDER BY occurred_at DESC, id DESC LIMIT $1`, limit)
	} else {
		rows, err = db.Query(ctx, `SELECT `+rowColumns+` FROM audit_events WHERE route = $1
ORDER BY occurred_at DESC, id DESC LIMIT $2`, route, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("audit history of %q: %w", route, err)
	}
	out, err := collectRows(rows)
	if err != nil {
		return nil, fmt.Errorf("audit history of %q: %w", route, err)
	}
	return out, nil
}

// Op returns every event of one op in the order they happened; none (and
// no error) when the op has no stored event yet.
func Op(ctx context.Context, db DBTX, opID uuid.UUID) ([]Row, error) {
	rows, err := db.Query(ctx, `SELECT `+rowColumns+` FROM audit_events WHERE op_id = $1
ORDER BY occurred_at, id`, opID.String())
	if err != nil {
		return nil, fmt.Errorf("audit events of op %s: %w", opID, err)
	}
	out, err := collectRows(rows)
	if err != nil {
		return nil, fmt.Errorf("audit events of op %s: %w", opID, err)
	}
	return out, nil
}

func collectRows(rows pgx.Rows) ([]Row, error) {
	return pgx.CollectRows(rows, scanRow)
}

func scanRow(r pgx.CollectableRow) (Row, error) {
	var (
		row                                           Row
		eventID, opID                                 string
		kind                                          string
		from, to, actorName, channel, reason, outcome *string
		affected                                      *int32
		timings, details                              []byte
		revision                                      *int64
		schemaVersion                                 int32
	)
	err := r.Scan(&row.ID, &eventID, &opID, &kind, &row.Route, &from, &to, &row.Actor, &actorName, &channel,
		&reason, &outcome, &affected, &timings, &revision, &details, &schemaVersion, &row.OccurredAt, &row.RecordedAt)
	if err != nil {
		return Row{}, err
	}
	if row.EventID, err = uuid.Parse(eventID); err != nil {
		return Row{}, fmt.Errorf("row %d: event_id: %w", row.ID, err)
	}
	if row.OpID, err = uuid.Parse(opID); err != nil {
		return Row{}, fmt.Errorf("row %d: op_id: %w", row.ID, err)
	}
	row.Kind = Kind(kind)
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	row.FromVersion, row.ToVersion = deref(from), deref(to)
	row.ActorName, row.Channel, row.Reason, row.Outcome = deref(actorName), deref(channel), deref(reason), deref(outcome)
	if affected != nil {
		v := int(*affected)
		row.AffectedRequests = &v
	}
	if revision != nil {
		row.EtcdRevision = *revision
	}
	if len(timings) > 0 && string(timings) != "{}" {
		if err := json.Unmarshal(timings, &row.Timings); err != nil {
			return Row{}, fmt.Errorf("row %d: timings: %w", row.ID, err)
		}
	}
	if len(details) > 0 && string(details) != "{}" {
		row.Details = json.RawMessage(details)
	}
	row.SchemaVersion = int(schemaVersion)
	return row, nil
}

// Percentiles summarise one duration, in milliseconds, over the drills that
// recorded it (N of them).
type Percentiles struct {
	N        int
	P50, P95 float64
}

// DrillStats summarise a route's completed drills, to calibrate them and to
// show on the pre-flight card. Count is 0 (and everything else zero) when
// the route has none.
type DrillStats struct {
	Route   string
	Count   int
	LastRun time.Time // occurred_at of the newest drill.completed
	// Total is timings["total"]; Phases every other timing, by phase name.
	Total  Percentiles
	Phases map[string]Percentiles
}

// DrillStatsOf computes the statistics of route's drill.completed events;
// route "" summarises every route. (It cannot share the name of the type it
// returns.) Percentiles are continuous (linear
// interpolation, as percentile_cont), over the drills that recorded the
// phase.
func DrillStatsOf(ctx context.Context, db DBTX, route string) (DrillStats, error) {
	// Validate allows timings only as numbers, but rows are older than any
	// one build: a non-number is skipped, never a failed query.
	const summary = `SELECT count(*), max(occurred_at),
    count(total), percentile_cont(0.5) WITHIN GROUP (ORDER BY total), percentile_cont(0.95) WITHIN GROUP (ORDER BY total)
FROM (SELECT occurred_at,
        CASE WHEN jsonb_typeof(timings->'total') = 'number' THEN (timings->'total')::float8 END AS total
    FROM audit_events WHERE kind = $1 AND ($2 = '' OR route = $2)) d`
	const phases = `SELECT t.key, count(*),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY t.value::float8), percentile_cont(0.95) WITHIN GROUP (ORDER BY t.value::float8)
FROM audit_events e CROSS JOIN LATERAL jsonb_each(e.timings) t
WHERE e.kind = $1 AND ($2 = '' OR e.route = $2) AND t.key <> 'total' AND jsonb_typeof(t.value) = 'number'
GROUP BY t.key ORDER BY t.key`

	st := DrillStats{Route: route}
	var (
		count, totalN int64
		last          *time.Time
		p50, p95      *float64
	)
	if err := db.QueryRow(ctx, summary, string(KindDrillCompleted), route).Scan(&count, &last, &totalN, &p50, &p95); err != nil {
		return DrillStats{}, fmt.Errorf("drill stats of %q: %w", route, err)
	}
	if count == 0 {
		return st, nil
	}
	st.Count = int(count)
	st.LastRun = *last
	st.Total.N = int(totalN)
	if p50 != nil && p95 != nil {
		st.Total.P50, st.Total.P95 = *p50, *p95
	}
	rows, err := db.Query(ctx, phases, string(KindDrillCompleted), route)
	if err != nil {
		return DrillStats{}, fmt.Errorf("drill phase stats of %q: %w", route, err)
	}
	st.Phases = map[string]Percentiles{}
	var (
		phase string
		n     int64
		q50   float64
		q95   float64
	)
	_, err = pgx.ForEachRow(rows, []any{&phase, &n, &q50, &q95}, func() error {
		st.Phases[phase] = Percentiles{N: int(n), P50: q50, P95: q95}
		return nil
	})
	if err != nil {
		return DrillStats{}, fmt.Errorf("drill phase stats of %q: %w", route, err)
	}
	return st, nil
}
