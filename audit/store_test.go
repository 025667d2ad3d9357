package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// allKinds lists every kind of the contract; the round-trip test covers each.
var allKinds = []Kind{
	KindRollback, KindPromote, KindRollbackRefused, KindRollbackFailed, KindOpRecovered, KindOpAbandoned,
	KindDrillScheduled, KindDrillCompleted, KindDrillFailed, KindDrillSkipped, KindDrillSuperseded, KindColdTarget,
}

var baseTime = time.Date(2025, 3, 14, 9, 26, 53, 589793000, time.UTC)

// testEvent is a valid event of op at baseTime + at.
func testEvent(op uuid.UUID, kind Kind, route string, at time.Duration) Event {
	return Event{
		EventID:       uuid.New(),
		OpID:          op,
		Kind:          kind,
		Route:         route,
		Actor:         "slack:U123",
		SchemaVersion: SchemaVersion,
		OccurredAt:    baseTime.Add(at),
	}
}

func countRows(tb testing.TB, db DBTX) int {
	tb.Helper()
	var n int
	if err := db.QueryRow(tb.Context(), "SELECT count(*) FROM audit_events").Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// sameEvent compares an event with what was read back: Details as JSON
// (jsonb reformats it), times as instants.
func sameEvent(tb testing.TB, got, want Event) {
	tb.Helper()
	if !got.OccurredAt.Equal(want.OccurredAt) {
		tb.Errorf("event %s: occurred_at %v, want %v", want.Kind, got.OccurredAt, want.OccurredAt)
	}
	if (len(got.Details) == 0) != (len(want.Details) == 0) {
		tb.Errorf("event %s: details %s, want %s", want.Kind, got.Details, want.Details)
	} else if len(want.Details) > 0 {
		var g, w any
		if err := json.Unmarshal(got.Details, &g); err != nil {
			tb.Fatal(err)
		}
		if err := json.Unmarshal(want.Details, &w); err != nil {
			tb.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			tb.Errorf("event %s: details %s, want %s", want.Kind, got.Details, want.Details)
		}
	}
	got.OccurredAt, want.OccurredAt = time.Time{}, time.Time{}
	got.Details, want.Details = nil, nil
	if !reflect.DeepEqual(got, want) {
		tb.Errorf("event read back differs:\n got %+v\nwant %+v", got, want)
	}
}

func TestInsertEvents(t *testing.T) {
	t.Run("RoundTripOfEveryKind", func(t *testing.T) {
		t.Parallel()
		conn := mustConnect(t, pg.NewDatabase(t))
		op := uuid.New()
		var events []Event
		for i, k := range allKinds {
			e := testEvent(op, k, "chat-70b", time.Duration(i)*time.Millisecond)
			if i%2 == 0 {
				n := 37 * i
				e.AffectedRequests = &n // 0 for the first: a zero is kept, not NULL
				e.FromVersion, e.ToVersion = "v42", "v41"
				e.ActorName = "Ada Lovelace"
				e.Channel = "C0INC"
				e.Reason = fmt.Sprintf("latency spike #%d — ünïcode", i)
				e.Outcome = "ok"
				e.Timings = map[string]float64{"warm": 180.5, "flip": 2, "routers": 31, "total": 1420.25}
				e.EtcdRevision = 5121 + int64(i)
				e.Details = json.RawMessage(`{"nodes": {"warm": 24, "total": 24}, "lost": [], "note": "x"}`)
			}
			events = append(events, e)
		}
		inserted, err := InsertEvents(t.Context(), conn, events)
		if err != nil || inserted != len(events) {
			t.Fatalf("InsertEvents = %d, %v; want %d", inserted, err, len(events))
		}
		rows, err := Op(t.Context(), conn, op)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(events) {
			t.Fatalf("Op returned %d rows, want %d", len(rows), len(events))
		}
		for i, r := range rows {
			sameEvent(t, r.Event, events[i])
			if r.ID <= 0 || (i > 0 && r.ID <= rows[i-1].ID) {
				t.Errorf("row %d: id %d not increasing", i, r.ID)
			}
			if r.RecordedAt.IsZero() || time.Since(r.RecordedAt) > time.Hour {
				t.Errorf("row %d: recorded_at %v", i, r.RecordedAt)
			}
		}
		if rows[1].AffectedRequests != nil {
			t.Errorf("nil affected_requests read back as %d", *rows[1].AffectedRequests)
		}
		hist, err := History(t.Context(), conn, "", MaxHistoryLimit)
		if err != nil || len(hist) != len(events) {
			t.Fatalf("History = %d rows, %v", len(hist), err)
		}
		for i, r := range hist {
			sameEvent(t, r.Event, events[len(events)-1-i])
		}
		if other, err := Op(t.Context(), conn, uuid.New()); err != nil || len(other) != 0 {
			t.Fatalf("Op of an unknown op = %v, %v; want none", other, err)
		}
	})

	t.Run("DuplicatesMakeOneRow", func(t *testing.T) {
		t.Parallel()
		conn := mustConnect(t, pg.NewDatabase(t))
		op := uuid.New()
		a := testEvent(op, KindRollback, "chat-70b", 0)
		b := testEvent(op, KindRollbackFailed, "chat-70b", time.Second)
		if n, err := InsertEvents(t.Context(), conn, []Event{a, b}); err != nil || n != 2 {
			t.Fatalf("first insert = %d, %v", n, err)
		}
		if n, err := InsertEvents(t.Context(), conn, []Event{a, b}); err != nil || n != 0 {
			t.Fatalf("second insert = %d, %v; want 0, nil", n, err)
		}
		c := testEvent(op, KindOpRecovered, "chat-70b", 2*time.Second)
		if n, err := InsertEvents(t.Context(), conn, []Event{b, c, c}); err != nil || n != 1 {
			t.Fatalf("insert with duplicates inside the batch = %d, %v; want 1, nil", n, err)
		}
		if n := countRows(t, conn); n != 3 {
			t.Fatalf("%d rows, want 3", n)
		}
	})

	t.Run("InvalidEventInsertsNothing", func(t *testing.T) {
		t.Parallel()
		conn := mustConnect(t, pg.NewDatabase(t))
		good := testEvent(uuid.New(), KindPromote, "chat-70b", 0)
		bad := testEvent(uuid.New(), "model.exploded", "chat-70b", 0)
		_, err := InsertEvents(t.Context(), conn, []Event{good, bad})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "event 1") {
			t.Fatalf("InsertEvents = %v, want ErrInvalid naming event 1", err)
		}
		if n := countRows(t, conn); n != 0 {
			t.Fatalf("%d rows, want 0", n)
		}
		if n, err := InsertEvents(t.Context(), conn, nil); n != 0 || err != nil {
			t.Fatalf("empty insert = %d, %v", n, err)
		}
	})

	t.Run("LargeBatchKeepsOrder", func(t *testing.T) {
		t.Parallel()
		conn := mustConnect(t, pg.NewDatabase(t))
		op := uuid.New()
		// More rows than a VALUES list could carry in 65535 parameters.
		events := make([]Event, 5000)
		for i := range events {
			events[i] = testEvent(op, KindDrillScheduled, "chat-70b", 0) // same instant: order only by id
		}
		if n, err := InsertEvents(t.Context(), conn, events); err != nil || n != len(events) {
			t.Fatalf("InsertEvents = %d, %v", n, err)
		}
		rows, err := Op(t.Context(), conn, op)
		if err != nil || len(rows) != len(events) {
			t.Fatalf("Op = %d rows, %v", len(rows), err)
		}
		for i, r := range rows {
			if r.EventID != events[i].EventID {
				t.Fatalf("row %d is event %s, want %s: insertion order lost", i, r.EventID, events[i].EventID)
			}
		}
	})
}

// newRuntimeLogin creates a login role that is a member of backflip_runtime
// and returns a configuration connecting as it to the database of cfg.
// Roles are cluster-wide, so the name is unique and the role is dropped
// when tb ends (after any connection made with the result is closed).
func newRuntimeLogin(tb testing.TB, cfg *pgx.ConnConfig) *pgx.ConnConfig {
	tb.Helper()
	admin := mustConnect(tb, pg.ConnConfig())
	name := "bf_rt_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:16]
	password := strings.ReplaceAll(uuid.NewString(), "-", "")
	ident := pgx.Identifier{name}.Sanitize()
	// Utility statements take no parameters; the password is hex, so
	// quoting it as a literal is safe.
	if _, err := admin.Exec(tb.Context(), "CREATE ROLE "+ident+" WITH LOGIN PASSWORD '"+password+"' IN ROLE backflip_runtime"); err != nil {
		tb.Fatalf("create runtime login: %v", err)
	}
	tb.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+ident); err != nil {
			tb.Errorf("drop role %s: %v", name, err)
		}
	})
	rt := cfg.Copy()
	rt.User, rt.Password = name, password
	return rt
}

func TestAppendOnly(t *testing.T) {
	changes := []struct{ name, sql string }{
		{"Update", "UPDATE audit_events SET reason = 'rewritten'"},
		{"Delete", "DELETE FROM audit_events"},
		{"Truncate", "TRUNCATE audit_events"},
	}

	t.Run("OwnerRefused", func(t *testing.T) {
		t.Parallel()
		conn := mustConnect(t, pg.NewDatabase(t))
		if _, err := InsertEvents(t.Context(), conn, []Event{testEvent(uuid.New(), KindRollback, "chat-70b", 0)}); err != nil {
			t.Fatal(err)
		}
		for _, c := range changes {
			t.Run(c.name, func(t *testing.T) {
				_, err := conn.Exec(t.Context(), c.sql)
				if err == nil || !strings.Contains(err.Error(), "audit_events is append-only: "+strings.ToUpper(c.name)+" refused") {
					t.Fatalf("%s = %v, want the append-only refusal", c.sql, err)
				}
			})
		}
		if n := countRows(t, conn); n != 1 {
			t.Fatalf("%d rows, want 1", n)
		}
	})

	t.Run("RuntimeRoleInsertsAndReadsOnly", func(t *testing.T) {
		t.Parallel()
		cfg := pg.NewDatabase(t)
		owner := mustConnect(t, cfg)
		rt := mustConnect(t, newRuntimeLogin(t, cfg))

		op := uuid.New()
		if n, err := InsertEvents(t.Context(), rt, []Event{testEvent(op, KindRollback, "chat-70b", 0)}); err != nil || n != 1 {
			t.Fatalf("runtime insert = %d, %v", n, err)
		}
		if rows, err := History(t.Context(), rt, "chat-70b", 10); err != nil || len(rows) != 1 {
			t.Fatalf("runtime history = %d rows, %v", len(rows), err)
		}
		if _, err := DrillStatsOf(t.Context(), rt, "chat-70b"); err != nil {
			t.Fatalf("runtime drill stats: %v", err)
		}
		refused := append([]struct{ name, sql string }{}, changes...)
		refused = append(refused,
			struct{ name, sql string }{"DisableTriggers", "ALTER TABLE audit_events DISABLE TRIGGER ALL"},
			struct{ name, sql string }{"AlterTable", "ALTER TABLE audit_events ADD COLUMN sneaky text"},
			struct{ name, sql string }{"DropTable", "DROP TABLE audit_events"},
			struct{ name, sql string }{"CreateIndex", "CREATE INDEX sneaky ON audit_events (actor)"},
			struct{ name, sql string }{"CreateTrigger", "CREATE TRIGGER sneaky BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change()"},
			struct{ name, sql string }{"ReadMigrations", "SELECT * FROM schema_migrations"},
			struct{ name, sql string }{"ResetSequence", "SELECT setval('audit_events_id_seq', 1)"},
		)
		for _, c := range refused {
			t.Run(c.name, func(t *testing.T) {
				_, err := rt.Exec(t.Context(), c.sql)
				if code := pgCode(err); code != "42501" { // insufficient_privilege
					t.Fatalf("%s as runtime = %v (SQLSTATE %q), want permission denied", c.sql, err, code)
				}
			})
		}
		if n := countRows(t, owner); n != 1 {
			t.Fatalf("%d rows, want 1", n)
		}
		var triggers int
		if err := owner.QueryRow(t.Context(), `SELECT count(*) FROM pg_trigger
WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal AND tgenabled = 'O'`).Scan(&triggers); err != nil || triggers != 2 {
			t.Fatalf("%d enabled triggers, %v; want 2", triggers, err)
		}
	})
}
