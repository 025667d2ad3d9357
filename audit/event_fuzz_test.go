package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// FuzzDecodeEvent feeds arbitrary values of audit/outbox/<op>/<seq> to the
// shipper's decoding (DecodeEvent plus the key checks of Shipper.decode),
// to Postgres and to the shipper itself:
//   - a refused value is an ErrInvalid error (the shipper quarantines it);
//   - an accepted value passes Validate; when Postgres stores it, the row
//     reads back with the same text, timings and details, and when
//     Postgres refuses it, it is for its data (SQLSTATE class 22), not
//     for anything else;
//   - when Postgres refuses it, shipping an outbox that holds the value
//     and, after it, a good event stores the good event and moves the
//     value to the quarantine: the shipper inserts batches, and one value
//     Postgres refuses must not hold up the events after it;
//   - an accepted event encodes (Encode) to a value that decodes to the
//     same event, unless its encoding outgrows MaxValue (encoding/json
//     escapes <, > and & six-fold).
//
// With an empty value, the value is a template with text in its reason and
// a timing's name and details as its details: the free-text parts of an
// event, where odd characters come from.
//
// The direct insert runs in a transaction that is rolled back
// (audit_events is append-only); the shipper's inserts are committed to a
// database of their own.
func FuzzDecodeEvent(f *testing.F) {
	ge := goodEvent()
	good, err := ge.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, "", "")
	for _, s := range []string{
		// As the bot writes them.
		`{"event_id":"6f1c2a4e-8b3d-4c5e-9f7a-1b2c3d4e5f60","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e11","kind":"model.rollback","route":"chat-70b","from_version":"v42","to_version":"v41","actor":"U2147483697","actor_name":"steve","channel":"C2147483705","reason":"latency spike after v42","outcome":"completed","affected_requests":37,"timings":{"resolve":0.8,"warm":180.2,"flip":2.1,"routers":31,"inflight":1100,"total":1420.5},"etcd_revision":5121,"details":{"routers":{"expected":200,"converged":200,"lost":[]},"forced_cold":false},"schema_version":1,"occurred_at":"2026-11-25T10:00:01.420123456Z"}`,
		`{"event_id":"6f1c2a4e-8b3d-4c5e-9f7a-1b2c3d4e5f61","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e12","kind":"drill.scheduled","route":"chat-70b","actor":"U1","reason":"drill schedule \"0 9 * * 1\"","outcome":"scheduled","details":{"cron":"0 9 * * 1","zone":"UTC","announce":["24h","15m"],"next":["2026-11-30T09:00:00Z"]},"schema_version":1,"occurred_at":"2026-11-25T10:00:00Z"}`,
		`{"event_id":"6f1c2a4e-8b3d-4c5e-9f7a-1b2c3d4e5f62","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e13","kind":"rollback.refused","route":"chat-70b","actor":"cli:alice@ops-1","reason":"it's <b>bold</b> & \u201cquoted\u201d","outcome":"refused","schema_version":1,"occurred_at":"2026-11-25T10:00:00+01:00"}`,
		// Hostile: wrong shapes and values at the edges of what is allowed.
		`{"event_id":"6f1c2a4e-8b3d-4c5e-9f7a-1b2c3d4e5f63","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e14","kind":"model.promote","route":"chat-70b","actor":"U1","affected_requests":2147483648,"schema_version":1,"occurred_at":"2026-11-25T10:00:00Z"}`,
		`{"event_id":"6f1c2a4e-8b3d-4c5e-9f7a-1b2c3d4e5f64","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e15","kind":"model.promote","route":"chat-70b","actor":"U1","timings":{"warm":1.7976931348623157e308},"schema_version":1,"occurred_at":"9999-12-31T23:59:59.999999999Z"}`,
		`{"event_id":"6f1c2a4e-8b3d-4c5e-9f7a-1b2c3d4e5f65","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e16","kind":"model.promote","route":"chat-70b","actor":"U1","details":[1,"two",{"3":null}],"schema_version":1,"occurred_at":"0001-01-01T00:00:01Z"}`,
		`{"event_id":"6f1c2a4e-8b3d-4c5e-9f7a-1b2c3d4e5f66","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e17","kind":"model.promote","route":"chat-70b","actor":"U1","details":"text","schema_version":1,"occurred_at":"2026-11-25T10:00:00Z"}`,
		`{"event_id":"00000000-0000-0000-0000-000000000000","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e17","kind":"model.promote","route":"chat-70b","actor":"U1","schema_version":1,"occurred_at":"2026-11-25T10:00:00Z"}`,
		`{"event_id":"6f1c2a4e-8b3d-4c5e-9f7a-1b2c3d4e5f67","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e18","kind":"model.promote","route":"chat-70b","actor":"U1","schema_version":2,"occurred_at":"2026-11-25T10:00:00Z"}`,
		`{"event_id":"6f1c2a4e-8b3d-4c5e-9f7a-1b2c3d4e5f68","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e19","kind":"model.promote","route":"chat-70b","actor":"U1","schema_version":1,"occurred_at":"2026-11-25T10:00:00Z","x":1}`,
		`{"event_id":"6f1c2a4e8b3d4c5e9f7a1b2c3d4e5f69","op_id":"{0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e20}","kind":"model.promote","route":"chat-70b","actor":"U1","schema_version":1,"occurred_at":"2026-11-25T10:00:00Z"}`,
		`null`, `{}`, `[]`,
	} {
		f.Add([]byte(s), "", "")
	}
	// Free text as people and peers write it: tabs and bells, links in
	// Slack's markup, typographic quotes, accents, an emoji (in details as
	// a surrogate pair), large numbers.
	for _, s := range [][2]string{
		{`latency spike after v42`, `{"routers":{"expected":200,"converged":198,"lost":["router-7f9c"],"pending":["router-00aa"]}}`},
		{`p99\tdoubled \u0007 after v42, see <https://grafana/d/x|dashboard> & \u201cINC-1234\u201d`, `{"warm":"24/24 nodes, 96/96 GPUs","detail":"Caf\u00e9 \ud83d\ude80 \u0001"}`},
		{`Zoë 🚀 «rollback»`, `["Café", 1e308, -0.0, true, null]`},
	} {
		f.Add([]byte{}, s[0], s[1])
	}
	const template = `{"event_id":"6f1c2a4e-8b3d-4c5e-9f7a-1b2c3d4e5f71","op_id":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e22","kind":"model.rollback","route":"chat-70b","from_version":"v42","to_version":"v41","actor":"U1","reason":"%[1]s","timings":{"warm %[1]s":1},"details":%[2]s,"schema_version":1,"occurred_at":"2026-11-25T10:00:00Z"}`

	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, pg.NewDatabase(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = conn.Close(context.Background()) })
	shipDB, err := pgx.ConnectConfig(ctx, pg.NewDatabase(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = shipDB.Close(context.Background()) })
	cli := etcdtest.Start(f).Client(f)
	keys := Keys{Prefix: "/backflip"}
	s := &Shipper{keys: keys}
	var run atomic.Int64
	f.Fuzz(func(t *testing.T, value []byte, text, details string) {
		if len(value) == 0 {
			if details == "" {
				details = "null"
			}
			value = fmt.Appendf(nil, template, text, details)
		}
		// The key names the value's own op, as the bot's keys do, so that
		// only the value decides.
		op := uuid.MustParse("0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e11")
		if e, err := DecodeEvent(value); err == nil {
			op = e.OpID
		}
		ev, err := s.decode(keys.Event(op, 3), value)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal %v is not ErrInvalid", err)
			}
			return
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("accepted an invalid event %+v: %v", ev, err)
		}

		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		stored, err := InsertEvents(ctx, tx, []Event{ev})
		switch {
		case err == nil && stored == 1:
			readBack(t, tx, ev)
		case err != nil && !refusedData(err):
			t.Fatalf("Postgres refused %q for something else than its data: %v", value, err)
		case err != nil:
			// Through the shipper only then: storing what Postgres stores
			// is the shipper's own tests' business, and this is slow.
			shipThrough(t, cli, shipDB, fmt.Sprintf("/fuzz-%d", run.Add(1)), ev.OpID, value)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}

		enc, err := ev.Encode()
		if err != nil {
			if !strings.Contains(err.Error(), "encoded event is") {
				t.Fatalf("accepted event does not encode: %v", err)
			}
			return
		}
		again, err := DecodeEvent(enc)
		if err != nil {
			t.Fatalf("re-encoded event %s refused: %v", enc, err)
		}
		if !again.OccurredAt.Equal(ev.OccurredAt) || !sameJSONValue(again.Details, ev.Details) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, again)
		}
		again.OccurredAt, again.Details = ev.OccurredAt, ev.Details
		if !reflect.DeepEqual(again, ev) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, again)
		}
	})
}

// readBack checks that the row of ev, just inserted in tx, reads back as ev.
func readBack(t *testing.T, tx pgx.Tx, ev Event) {
	t.Helper()
	rows, err := Op(context.Background(), tx, ev.OpID)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	var got Event
	for _, r := range rows {
		if r.EventID == ev.EventID {
			got = r.Event
		}
	}
	if got.EventID != ev.EventID {
		t.Fatalf("event %s not read back", ev.EventID)
	}
	// Postgres keeps microseconds, and '{}' and no details alike.
	if d := got.OccurredAt.Sub(ev.OccurredAt); d < -time.Microsecond || d > time.Microsecond {
		t.Fatalf("occurred_at %v read back as %v", ev.OccurredAt, got.OccurredAt)
	}
	if !sameJSONValue(got.Details, ev.Details) {
		t.Fatalf("details %s read back as %s", ev.Details, got.Details)
	}
	want := ev
	got.OccurredAt, want.OccurredAt = time.Time{}, time.Time{}
	got.Details, want.Details = nil, nil
	if len(want.Timings) == 0 {
		want.Timings = nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("event read back differs:\n got %+v\nwant %+v", got, want)
	}
}

// shipThrough runs one batch of a Shipper over an outbox (under prefix)
// holding value, which Postgres refuses, under op's key and, after it, a
// good event: the good event must reach Postgres, and value must move to
// the quarantine.
func shipThrough(t *testing.T, cli *clientv3.Client, db *pgx.Conn, prefix string, op uuid.UUID, value []byte) {
	t.Helper()
	ctx := context.Background()
	keys := Keys{Prefix: prefix}
	key := keys.Event(op, 3)
	after := testEvent(uuid.MustParse("ffffffff-ffff-4fff-bfff-ffffffffffff"), KindPromote, "chat-70b", 0)
	afterVal, err := after.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut(key, string(value)), clientv3.OpPut(keys.Event(after.OpID, 0), string(afterVal))).Commit(); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = cli.Delete(ctx, prefix+"/", clientv3.WithPrefix()) }()
	sh, err := NewShipper(ShipperConfig{Etcd: cli, Prefix: prefix, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	pending, _, err := sh.read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.shipBatch(ctx, pending); err != nil {
		t.Fatalf("shipping an outbox holding %q failed, which holds up the events after it: %v", value, err)
	}
	var n int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM audit_events WHERE event_id = $1", after.EventID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the event after %q was not stored (%d rows, %v)", value, n, err)
	}
	if resp, err := cli.Get(ctx, keys.Outbox(), clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("keys left in the outbox: %v %v", resp, err)
	}
	q, err := cli.Get(ctx, keys.Quarantine(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if q.Count != 1 {
		t.Fatalf("%d values quarantined, want 1", q.Count)
	}
}

// sameJSONValue compares two details documents as JSON (an empty object
// and none alike: '{}' reads back as none); numbers compare as float64, as
// jsonb rewrites them (1e2 is stored as 100).
func sameJSONValue(a, b json.RawMessage) bool {
	empty := func(m json.RawMessage) bool {
		var v map[string]any
		return len(m) == 0 || (json.Unmarshal(m, &v) == nil && v != nil && len(v) == 0)
	}
	if empty(a) || empty(b) {
		return empty(a) && empty(b)
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		// Numbers beyond float64 (1e400) are valid JSON and numeric in
		// jsonb, but cannot be compared this way.
		return true
	}
	return reflect.DeepEqual(va, vb)
}
