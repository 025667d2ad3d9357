package commands

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// historyEvent is an audit event of route at the given time.
func historyEvent(kind audit.Kind, route, from, to string, at time.Time) audit.Event {
	ms := 1420.0
	return audit.Event{EventID: uuid.New(), OpID: uuid.New(), Kind: kind, Route: route, FromVersion: from, ToVersion: to,
		Actor: "cli:ana@ops-1", ActorName: "ana", Reason: "latency spike\nafter v42", Outcome: "completed",
		Timings: map[string]float64{"total": ms}, SchemaVersion: audit.SchemaVersion, OccurredAt: at}
}

// queue puts events into the etcd outbox, as a flip does.
func (e *readEnv) queue(t *testing.T, events ...audit.Event) {
	t.Helper()
	for i, ev := range events {
		op, err := audit.OutboxOp(audit.Keys{Prefix: readPrefix}, i, ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Do(testCtx(t), op); err != nil {
			t.Fatal(err)
		}
	}
}

// store inserts events into the audit database, as the shipper does.
func (e *readEnv) store(t *testing.T, events ...audit.Event) {
	t.Helper()
	if _, err := audit.InsertEvents(testCtx(t), e.db, events); err != nil {
		t.Fatal(err)
	}
}

// seedHistory stores three events, queues two more (one of them also
// stored: shipped, but its outbox key not yet deleted) and one malformed
// value. It returns the events in the order History must list them.
func seedHistory(t *testing.T, e *readEnv) []audit.Event {
	t.Helper()
	base := e.now.Add(-time.Hour)
	promote := historyEvent(audit.KindPromote, "chat-70b", "v41", "v42", base)
	embed := historyEvent(audit.KindPromote, "embed-small", "v6", "v7", base.Add(time.Minute))
	rollback := historyEvent(audit.KindRollback, "chat-70b", "v42", "v41", base.Add(2*time.Minute))
	refused := historyEvent(audit.KindRollbackRefused, "chat-70b", "v41", "v40", base.Add(3*time.Minute))
	refused.Outcome = "refused"
	refused.Timings = nil
	drill := historyEvent(audit.KindDrillCompleted, "chat-70b", "", "", base.Add(4*time.Minute))
	if e.db != nil {
		e.store(t, promote, embed, rollback)
	}
	e.queue(t, rollback, refused, drill)
	e.put(t, audit.Keys{Prefix: readPrefix}.Outbox()+uuid.NewString()+"/000000", `{"event_id":"not a uuid"}`)
	return []audit.Event{drill, refused, rollback, embed, promote}
}

func TestHistoryMergesDatabaseAndOutbox(t *testing.T) {
	e := newReadEnv(t, readOpts{warm: seededWarm()})
	want := seedHistory(t, e)

	rep, err := e.svc.History(testCtx(t), Origin{}, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.AuditError != "" || rep.Malformed != 1 || len(rep.Items) != len(want) {
		t.Fatalf("report: error %q, malformed %d, %d items", rep.AuditError, rep.Malformed, len(rep.Items))
	}
	for i, it := range rep.Items {
		if it.EventID != want[i].EventID {
			t.Errorf("item %d is %s %s at %s, want %s", i, it.Kind, it.Route, it.OccurredAt, want[i].Kind)
		}
		// The rollback is in both places: its row wins.
		shipped := i >= 2
		if it.Pending == shipped || (it.Row > 0) != shipped {
			t.Errorf("item %d (%s): pending %v, row %d", i, it.Kind, it.Pending, it.Row)
		}
	}

	t.Run("Route", func(t *testing.T) {
		rep, err := e.svc.History(testCtx(t), Origin{}, "embed-small", 0)
		if err != nil || len(rep.Items) != 1 || rep.Items[0].EventID != want[3].EventID || rep.Route != "embed-small" {
			t.Fatalf("%+v %v", rep, err)
		}
	})
	t.Run("Limit", func(t *testing.T) {
		rep, err := e.svc.History(testCtx(t), Origin{}, "chat-70b", 2)
		if err != nil || len(rep.Items) != 2 || rep.Items[0].EventID != want[0].EventID || rep.Items[1].EventID != want[1].EventID {
			t.Fatalf("%+v %v", rep, err)
		}
	})
	t.Run("Text", func(t *testing.T) {
		text := rep.String()
		for _, line := range []string{
			`2025-06-01 13:04:00 UTC  drill.completed  chat-70b  completed  by ana (cli:ana@ops-1)  "latency spike after v42"  1.42 s  pending (in the etcd outbox)`,
			`2025-06-01 13:03:00 UTC  rollback.refused  chat-70b v41 → v40  refused  by ana (cli:ana@ops-1)  "latency spike after v42"  pending (in the etcd outbox)`,
			`2025-06-01 13:02:00 UTC  model.rollback  chat-70b v42 → v41  completed  by ana (cli:ana@ops-1)  "latency spike after v42"  1.42 s  row `,
			"note: 1 malformed event(s) in the etcd outbox were left out",
		} {
			if !strings.Contains(text, line) {
				t.Errorf("text lacks %q:\n%s", line, text)
			}
		}
	})
	t.Run("JSON", func(t *testing.T) {
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		var shape struct {
			Items []struct {
				EventID string `json:"event_id"`
				Kind    string `json:"kind"`
				Row     int64  `json:"row"`
				Pending bool   `json:"pending"`
			} `json:"items"`
		}
		if err := json.Unmarshal(b, &shape); err != nil || len(shape.Items) != 5 || shape.Items[0].EventID != want[0].EventID.String() ||
			!shape.Items[0].Pending || shape.Items[2].Row == 0 || shape.Items[2].Kind != "model.rollback" {
			t.Fatalf("JSON shape: %s (%v)", b, err)
		}
	})
}

// TestHistoryDatabaseDown: without Postgres the history is what waits in
// the outbox, and says so.
func TestHistoryDatabaseDown(t *testing.T) {
	pool, err := audit.Connect(testCtx(t), "postgres://backflip@127.0.0.1:1/audit?connect_timeout=2&sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for name, o := range map[string]readOpts{
		"NotConfigured": {warm: seededWarm(), noDB: true},
		"Unreachable":   {warm: seededWarm(), db: pool},
	} {
		t.Run(name, func(t *testing.T) {
			e := newReadEnv(t, o)
			seedHistory(t, e)
			rep, err := e.svc.History(testCtx(t), Origin{}, "chat-70b", 0)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(rep.AuditError, "audit database unavailable; showing only events not yet shipped") {
				t.Errorf("audit error %q", rep.AuditError)
			}
			if len(rep.Items) != 3 {
				t.Fatalf("items: %+v", rep.Items)
			}
			for _, it := range rep.Items {
				if !it.Pending || it.Row != 0 {
					t.Errorf("%s: pending %v row %d", it.Kind, it.Pending, it.Row)
				}
			}
			if !strings.HasPrefix(rep.String(), "note: audit database unavailable; showing only events not yet shipped") {
				t.Errorf("text:\n%s", rep.String())
			}
		})
	}
}

// TestHistoryEtcdDown: with etcd unreachable the stored events are shown
// and the report says the unshipped ones are missing; with Postgres down
// too there is no history to show.
func TestHistoryEtcdDown(t *testing.T) {
	pool, err := audit.Connect(testCtx(t), "postgres://backflip@127.0.0.1:1/audit?connect_timeout=2&sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// etcdDown returns a readEnv whose etcd stops answering once seeded.
	etcdDown := func(t *testing.T, o readOpts) *readEnv {
		srv := etcdtest.Start(t)
		proxy := etcdtest.NewProxy(t, srv.Endpoint())
		o.cli = proxy.Client(t)
		e := newReadEnv(t, o)
		seedHistory(t, e)
		proxy.Blackhole()
		// Cleanups run last first: etcd answers again before the session
		// revokes its lease.
		t.Cleanup(proxy.Unblackhole)
		return e
	}

	t.Run("DatabaseUp", func(t *testing.T) {
		e := etcdDown(t, readOpts{warm: seededWarm()})
		// The outbox read may use half of the time left, so Postgres is
		// still asked in time.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		rep, err := e.svc.History(ctx, Origin{}, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(rep.AuditError, "etcd could not be read; events not yet shipped to the audit database are missing") {
			t.Errorf("audit error %q", rep.AuditError)
		}
		if len(rep.Items) != 3 {
			t.Fatalf("items: %+v", rep.Items)
		}
		for _, it := range rep.Items {
			if it.Pending || it.Row == 0 {
				t.Errorf("%s: pending %v row %d", it.Kind, it.Pending, it.Row)
			}
		}
	})
	t.Run("DatabaseDown", func(t *testing.T) {
		e := etcdDown(t, readOpts{warm: seededWarm(), db: pool})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := e.svc.History(ctx, Origin{}, "", 0)
		if ErrorCode(err) != EUNAVAILABLE || !strings.Contains(ErrorMessage(err), "the audit database could not be read") ||
			!strings.Contains(ErrorMessage(err), "etcd could not be read") {
			t.Fatalf("%v (%s)", err, ErrorCode(err))
		}
	})
}

func TestHistoryInvalid(t *testing.T) {
	e := newReadEnv(t, readOpts{warm: seededWarm(), noDB: true})
	for _, tc := range []struct {
		name  string
		route string
		limit int
	}{
		{"NegativeLimit", "", -1},
		{"LimitTooHigh", "chat-70b", MaxHistoryLimit + 1},
		{"BadRoute", "../etc", 0},
		{"ReservedRoute", "history", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.History(testCtx(t), Origin{}, tc.route, tc.limit)
			if ErrorCode(err) != EINVALID {
				t.Fatalf("%v (%s)", err, ErrorCode(err))
			}
		})
	}
}
