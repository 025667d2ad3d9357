package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const testPrefix = "/backflip"

// lazyDB is a DBTX over one connection that is opened on first use and
// dropped after any error, so it survives Postgres being stopped and
// started. (A *pgxpool.Pool does the same in the bot.)
type lazyDB struct {
	cfg  *pgx.ConnConfig
	mu   sync.Mutex
	conn *pgx.Conn
}

func newLazyDB(tb testing.TB, cfg *pgx.ConnConfig) *lazyDB {
	db := &lazyDB{cfg: cfg}
	tb.Cleanup(db.close)
	return db
}

func (d *lazyDB) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		_ = d.conn.Close(context.Background())
		d.conn = nil
	}
}

func (d *lazyDB) get(ctx context.Context) (*pgx.Conn, error) {
	if d.conn == nil || d.conn.IsClosed() {
		c, err := pgx.ConnectConfig(ctx, d.cfg)
		if err != nil {
			return nil, err
		}
		d.conn = c
	}
	return d.conn, nil
}

func (d *lazyDB) drop() {
	if d.conn != nil {
		_ = d.conn.Close(context.Background())
		d.conn = nil
	}
}

func (d *lazyDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.get(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := c.Exec(ctx, sql, args...)
	if err != nil {
		d.drop()
	}
	return tag, err
}

// Query and QueryRow complete DBTX; the shipper only calls Exec.
func (d *lazyDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.Query(ctx, sql, args...)
}

func (d *lazyDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.get(ctx)
	if err != nil {
		return errRow{err}
	}
	return c.QueryRow(ctx, sql, args...)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

var _ DBTX = (*lazyDB)(nil)

// running is a shipper started by startShipper.
type running struct {
	*Shipper
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop cancels Run and waits for it to return. Only the first call waits.
func (r *running) stop(tb testing.TB) {
	tb.Helper()
	r.once.Do(func() { r.wait(tb) })
}

func (r *running) wait(tb testing.TB) {
	tb.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			tb.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		tb.Fatal("Run did not return within 30 s of its context ending")
	}
}

// newShipper builds a shipper with fast backoff and its own registry.
func newShipper(tb testing.TB, cli *clientv3.Client, db DBTX, log *zap.Logger) (*Shipper, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	if log == nil {
		log = zap.NewNop()
	}
	s, err := NewShipper(ShipperConfig{
		Etcd: cli, Prefix: testPrefix, DB: db, Logger: log,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Registerer: reg,
	})
	if err != nil {
		tb.Fatalf("NewShipper: %v", err)
	}
	return s, reg
}

// start runs s until the test ends (or stop is called).
func start(tb testing.TB, s *Shipper, reg *prometheus.Registry) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Shipper: s, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	tb.Cleanup(func() { r.stop(tb) })
	return r
}

// testEvent is the seq-th event of op; Details carries seq so that tests can
// check the order rows arrived in.
func shipEvent(op uuid.UUID, seq int, at time.Time) Event {
	return Event{
		EventID:       uuid.New(),
		OpID:          op,
		Kind:          KindRollback,
		Route:         "chat-70b",
		FromVersion:   "v42",
		ToVersion:     "v41",
		Actor:         "U0123",
		Reason:        "latency regression",
		Outcome:       "ok",
		Timings:       map[string]float64{"flip": 2, "total": float64(seq)},
		Details:       json.RawMessage(fmt.Sprintf(`{"seq":%d}`, seq)),
		SchemaVersion: SchemaVersion,
		OccurredAt:    at.Add(time.Duration(seq) * time.Millisecond),
	}
}

// recorder writes ops the way the bot does: the first event in the flip's
// transaction, the others after it.
type recorder struct {
	tb    testing.TB
	cli   *clientv3.Client
	store *routing.Store
	keys  Keys
	rev   int64
	flip  bool // the route's active version: false = v41, true = v42
}

func newRecorder(tb testing.TB, cli *clientv3.Client) *recorder {
	return &recorder{tb: tb, cli: cli, store: routing.NewStore(cli, testPrefix, zap.NewNop()), keys: Keys{Prefix: testPrefix}}
}

// op records one op with n events and returns their ids in order.
func (r *recorder) op(ctx context.Context, n int) (uuid.UUID, []uuid.UUID) {
	r.tb.Helper()
	op := uuid.New()
	now := time.Now()
	var ids []uuid.UUID
	first := shipEvent(op, 0, now)
	ids = append(ids, first.EventID)
	outbox, err := OutboxOp(r.keys, 0, first)
	if err != nil {
		r.tb.Fatalf("OutboxOp: %v", err)
	}
	to := "v41"
	if !r.flip {
		to = "v42"
	}
	kind := routing.KindRollback
	if r.rev == 0 {
		kind = routing.KindPromote
	}
	res, err := r.store.Flip(ctx, routing.Change{
		Route: "chat-70b", Kind: kind, To: to, ExpectRev: r.rev, Op: op.String(),
		Reason: "test", Actor: "U0123", Ops: []clientv3.Op{outbox},
	})
	if err != nil {
		r.tb.Fatalf("Flip: %v", err)
	}
	r.rev, r.flip = res.Revision, !r.flip
	for seq := 1; seq < n; seq++ {
		e := shipEvent(op, seq, now)
		ids = append(ids, e.EventID)
		r.put(ctx, seq, e)
	}
	return op, ids
}

// put writes one event into the outbox outside a flip.
func (r *recorder) put(ctx context.Context, seq int, e Event) {
	r.tb.Helper()
	o, err := OutboxOp(r.keys, seq, e)
	if err != nil {
		r.tb.Fatalf("OutboxOp: %v", err)
	}
	if _, err := r.cli.Do(ctx, o); err != nil {
		r.tb.Fatalf("put outbox event: %v", err)
	}
}

// prewrite puts n single-event ops into the outbox in one go per 100.
func prewrite(tb testing.TB, cli *clientv3.Client, n int) {
	tb.Helper()
	keys := Keys{Prefix: testPrefix}
	now := time.Now()
	var ops []clientv3.Op
	flush := func() {
		if len(ops) == 0 {
			return
		}
		if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			tb.Fatalf("prewrite: %v", err)
		}
		ops = ops[:0]
	}
	for i := range n {
		o, err := OutboxOp(keys, 0, shipEvent(uuid.New(), 0, now))
		if err != nil {
			tb.Fatalf("OutboxOp: %v", err)
		}
		ops = append(ops, o)
		if len(ops) == 100 || i == n-1 {
			flush()
		}
	}
}

// outboxCount counts the keys under a prefix of the test keyspace.
func countKeys(tb testing.TB, cli *clientv3.Client, prefix string) int {
	tb.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		tb.Fatalf("count %s: %v", prefix, err)
	}
	return int(resp.Count)
}

// rowCounts returns the number of rows and of distinct event ids.
func rowCounts(tb testing.TB, conn *pgx.Conn) (rows, distinct int) {
	tb.Helper()
	err := conn.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT event_id) FROM audit_events`).Scan(&rows, &distinct)
	if err != nil {
		tb.Fatalf("count rows: %v", err)
	}
	return rows, distinct
}

// eventually polls cond until it holds or timeout passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v; last state: %s", what, timeout, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric returns the value of a gauge or counter from reg.
func metric(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
		}
	}
	tb.Fatalf("metric %s not registered", name)
	return 0
}
