package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/pgtest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const shipTimeout = 60 * time.Second

func TestShipper(t *testing.T) {
	outbox := Keys{Prefix: testPrefix}.Outbox()
	quarantine := Keys{Prefix: testPrefix}.Quarantine()

	t.Run("FlipEventsShippedAndKeysRemoved", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		cli := etcdtest.Start(t).Client(t)
		cfg := pg.NewDatabase(t)
		conn := mustConnect(t, cfg)
		s, reg := newShipper(t, cli, newLazyDB(t, cfg), nil)
		start(t, s, reg)

		rec := newRecorder(t, cli)
		want := map[uuid.UUID]bool{}
		for i := range 5 {
			_, ids := rec.op(ctx, 1+i%3)
			for _, id := range ids {
				want[id] = true
			}
		}
		eventually(t, shipTimeout, "all events shipped and their keys removed", func() (bool, string) {
			rows, _ := rowCounts(t, conn)
			keys := countKeys(t, cli, outbox)
			return rows == len(want) && keys == 0 && s.Backlog() == 0, statef("rows %d/%d, keys %d, backlog %d", rows, len(want), keys, s.Backlog())
		})
		got := map[uuid.UUID]bool{}
		rs, err := conn.Query(ctx, `SELECT event_id FROM audit_events`)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rs, pgx.RowTo[uuid.UUID])
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			got[id] = true
		}
		for id := range want {
			if !got[id] {
				t.Errorf("event %s not in audit_events", id)
			}
		}
		if s.Status() != "audit ✓" {
			t.Errorf("Status() = %q, want %q", s.Status(), "audit ✓")
		}
		if got := metric(t, reg, "backflip_audit_shipped_total"); got != float64(len(want)) {
			t.Errorf("shipped counter = %v, want %d", got, len(want))
		}
	})

	t.Run("PostgresDownEveryEventOnceInOrder", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		srv, err := pgtest.Start(ctx, pgtest.Options{Local: true, Template: func(ctx context.Context, conn *pgx.Conn) error {
			_, err := Migrate(ctx, conn)
			return err
		}})
		if err != nil {
			t.Fatalf("start own postgres: %v", err)
		}
		t.Cleanup(func() {
			if err := srv.Close(); err != nil {
				t.Errorf("close own postgres: %v", err)
			}
		})
		cfg := srv.NewDatabase(t)
		cli := etcdtest.Start(t).Client(t)
		s, reg := newShipper(t, cli, newLazyDB(t, cfg), nil)
		start(t, s, reg)
		eventually(t, shipTimeout, "first outbox read", func() (bool, string) { return s.Backlog() == 0, statef("backlog %d", s.Backlog()) })

		if err := srv.Stop(); err != nil {
			t.Fatalf("stop postgres: %v", err)
		}
		rec := newRecorder(t, cli)
		total := 0
		for i := range 200 {
			_, ids := rec.op(ctx, 1+i%3)
			total += len(ids)
		}
		eventually(t, shipTimeout, "backlog reported while postgres is down", func() (bool, string) {
			g := metric(t, reg, "backflip_audit_backlog")
			return s.Backlog() == total && g == float64(total), statef("backlog %d, gauge %v, want %d", s.Backlog(), g, total)
		})
		if want := statef("audit pending: %d", total); s.Status() != want {
			t.Errorf("Status() = %q, want %q", s.Status(), want)
		}
		if n := countKeys(t, cli, outbox); n != total {
			t.Errorf("outbox holds %d keys while postgres is down, want %d", n, total)
		}

		if err := srv.Restart(ctx); err != nil {
			t.Fatalf("restart postgres: %v", err)
		}
		conn := mustConnect(t, cfg)
		eventually(t, shipTimeout, "every event shipped after restart", func() (bool, string) {
			rows, _ := rowCounts(t, conn)
			keys := countKeys(t, cli, outbox)
			return keys == 0 && s.Backlog() == 0 && rows == total, statef("rows %d/%d, keys %d, backlog %d", rows, total, keys, s.Backlog())
		})
		rows, distinct := rowCounts(t, conn)
		if rows != total || distinct != total {
			t.Errorf("%d rows, %d distinct event ids; want %d of each", rows, distinct, total)
		}
		checkOrderPerOp(t, conn, 200)
	})

	t.Run("KilledBetweenInsertAndDeleteReshipsOnce", func(t *testing.T) {
		t.Parallel()
		cli := etcdtest.Start(t).Client(t)
		cfg := pg.NewDatabase(t)
		conn := mustConnect(t, cfg)
		const total = 250
		prewrite(t, cli, total)

		s1, _ := newShipper(t, cli, newLazyDB(t, cfg), nil)
		ctx, cancel := context.WithCancel(t.Context())
		var inserts atomic.Int32
		s1.afterInsert = func() {
			inserts.Add(1)
			cancel() // the process dies here: rows committed, keys not yet deleted
		}

		if err := s1.Run(ctx); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if inserts.Load() != 1 {
			t.Fatalf("%d inserts before the kill, want 1", inserts.Load())
		}
		rows, _ := rowCounts(t, conn)
		if rows != 100 {
			t.Fatalf("%d rows after the killed batch, want 100", rows)
		}
		if n := countKeys(t, cli, outbox); n != total {
			t.Fatalf("outbox holds %d keys after the kill, want all %d (nothing deleted)", n, total)
		}

		s2, reg2 := newShipper(t, cli, newLazyDB(t, cfg), nil)
		start(t, s2, reg2)
		eventually(t, shipTimeout, "re-shipped after restart", func() (bool, string) {
			rows, _ := rowCounts(t, conn)
			keys := countKeys(t, cli, outbox)
			return keys == 0 && s2.Backlog() == 0, statef("rows %d, keys %d", rows, keys)
		})
		rows, distinct := rowCounts(t, conn)
		if rows != total || distinct != total {
			t.Errorf("%d rows, %d distinct event ids; want %d of each", rows, distinct, total)
		}
	})

	t.Run("TwoShippersNeverDuplicate", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		cli := etcdtest.Start(t).Client(t)
		cfg := pg.NewDatabase(t)
		conn := mustConnect(t, cfg)
		const pre = 600
		prewrite(t, cli, pre)

		var shippers []*running
		for range 2 {
			// Each shipper has its own etcd client, as two bot replicas would.
			c2, err := clientv3.New(clientv3.Config{Endpoints: cli.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c2.Close() })
			s, reg := newShipper(t, c2, newLazyDB(t, cfg), nil)
			shippers = append(shippers, start(t, s, reg))
		}
		rec := newRecorder(t, cli)
		total := pre
		for i := range 100 {
			_, ids := rec.op(ctx, 1+i%3)
			total += len(ids)
		}
		eventually(t, shipTimeout, "everything shipped", func() (bool, string) {
			rows, _ := rowCounts(t, conn)
			keys := countKeys(t, cli, outbox)
			return keys == 0 && rows >= total, statef("rows %d/%d, keys %d", rows, total, keys)
		})
		rows, distinct := rowCounts(t, conn)
		if rows != total || distinct != total {
			t.Errorf("%d rows, %d distinct event ids; want %d of each", rows, distinct, total)
		}
		checkOrderPerOp(t, conn, 100+pre)
		var shipped float64
		for _, r := range shippers {
			shipped += metric(t, r.reg, "backflip_audit_shipped_total")
		}
		if shipped != float64(total) {
			t.Errorf("the shippers deleted %v keys together, want %d (each key once)", shipped, total)
		}
	})

	t.Run("MalformedValuesQuarantined", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		cli := etcdtest.Start(t).Client(t)
		cfg := pg.NewDatabase(t)
		conn := mustConnect(t, cfg)
		core, logs := observer.New(zapcore.ErrorLevel)

		op := uuid.New()
		good := shipEvent(op, 0, time.Now())
		goodJSON, err := good.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var withUnknown map[string]any
		if err := json.Unmarshal(goodJSON, &withUnknown); err != nil {
			t.Fatal(err)
		}
		withUnknown["event_id"] = uuid.NewString()
		withUnknown["surprise"] = 1
		unknownJSON, _ := json.Marshal(withUnknown)
		other := shipEvent(uuid.New(), 0, time.Now())
		otherJSON, _ := other.Encode()
		mismatch := shipEvent(uuid.New(), 0, time.Now())
		mismatchJSON, _ := mismatch.Encode()

		bad := map[string]string{
			outbox + op.String() + "/000001":      `{"event_id": garbage`,
			outbox + op.String() + "/000002":      string(unknownJSON),
			outbox + "not-a-uuid/000000":          string(otherJSON),
			outbox + uuid.NewString() + "/000000": string(mismatchJSON),
			outbox + op.String() + "/7":           string(otherJSON),
		}
		keys := Keys{Prefix: testPrefix}
		rec := newRecorder(t, cli)
		rec.put(ctx, 0, good)
		for k, v := range bad {
			if _, err := cli.Put(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
		goodIDs := []uuid.UUID{good.EventID}
		for range 3 {
			e := shipEvent(uuid.New(), 0, time.Now())
			rec.put(ctx, 0, e)
			goodIDs = append(goodIDs, e.EventID)
		}

		s, reg := newShipper(t, cli, newLazyDB(t, cfg), zap.New(core))
		start(t, s, reg)
		eventually(t, shipTimeout, "good events shipped, bad ones quarantined", func() (bool, string) {
			rows, _ := rowCounts(t, conn)
			n := countKeys(t, cli, outbox)
			q := countKeys(t, cli, quarantine)
			return rows == len(goodIDs) && n == 0 && q == len(bad), statef("rows %d/%d, outbox %d, quarantine %d/%d", rows, len(goodIDs), n, q, len(bad))
		})
		for k, v := range bad {
			qk := keys.Quarantine() + strings.TrimPrefix(k, keys.Outbox())
			resp, err := cli.Get(ctx, qk)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != v {
				t.Errorf("quarantine %s does not hold the raw value %q", qk, v)
			}
		}
		errs := logs.FilterMessage("malformed audit event quarantined").FilterLevelExact(zapcore.ErrorLevel).All()
		if len(errs) != len(bad) {
			t.Errorf("%d error logs for quarantined values, want %d", len(errs), len(bad))
		}
		for _, e := range errs {
			if k, _ := e.ContextMap()["key"].(string); bad[k] == "" {
				t.Errorf("error log names key %q, not one of the malformed ones", k)
			}
		}
		if got := metric(t, reg, "backflip_audit_quarantined_total"); got != float64(len(bad)) {
			t.Errorf("quarantined counter = %v, want %d", got, len(bad))
		}
		if s.Status() != "audit ✓" {
			t.Errorf("Status() = %q after quarantine, want %q", s.Status(), "audit ✓")
		}
	})
}

// checkOrderPerOp checks that every op's rows, by id, have ascending seq
// (carried in details) and occurred_at, and that there are ops of them.
func checkOrderPerOp(t *testing.T, conn *pgx.Conn, ops int) {
	t.Helper()
	rs, err := conn.Query(context.Background(),
		`SELECT op_id, (details->>'seq')::int, occurred_at FROM audit_events ORDER BY op_id, id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	type last struct {
		seq int
		at  time.Time
	}
	seen := map[uuid.UUID]last{}
	for rs.Next() {
		var op uuid.UUID
		var seq int
		var at time.Time
		if err := rs.Scan(&op, &seq, &at); err != nil {
			t.Fatal(err)
		}
		prev, ok := seen[op]
		want := 0
		if ok {
			want = prev.seq + 1
		}
		if seq != want || (ok && !at.After(prev.at)) {
			t.Errorf("op %s: row with seq %d at %v after seq %d at %v; want seq %d, later", op, seq, at, prev.seq, prev.at, want)
		}
		seen[op] = last{seq, at}
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	if len(seen) != ops {
		t.Errorf("rows of %d ops, want %d", len(seen), ops)
	}
}

func statef(format string, args ...any) string { return fmt.Sprintf(format, args...) }
