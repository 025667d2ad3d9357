package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is the part of the etcd client the Shipper needs.
type Etcd interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
	Txn(ctx context.Context) clientv3.Txn
	Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan
}

var _ Etcd = (*clientv3.Client)(nil)

// ShipperConfig configures a Shipper. Etcd and DB are required.
type ShipperConfig struct {
	Etcd Etcd
	// Prefix is the etcd prefix (BACKFLIP_ETCD_PREFIX) the outbox lives under.
	Prefix string
	// DB is where events go, typically a *pgxpool.Pool. Postgres may be
	// down, at start or at any time: a pool connects lazily and every
	// failure is retried with backoff while the events wait in etcd.
	DB     DBTX
	Logger *zap.Logger
	// Now returns the current time. Can be replaced in tests.
	Now func() time.Time
	// BatchSize is the most events one insert carries (default 100; at
	// most 100, so that the guarded deletes fit etcd's default limit of
	// 128 operations per transaction).
	BatchSize int
	// MinBackoff and MaxBackoff bound the capped exponential backoff after
	// a failed insert or etcd call (defaults 100ms and 10s).
	MinBackoff, MaxBackoff time.Duration
	// Registerer, if set, receives the shipper's metrics.
	Registerer prometheus.Registerer
}

// insertTimeout bounds one insert, so that a hung Postgres connection is
// retried instead of stopping the shipper.
const insertTimeout = 30 * time.Second

// maxBatch keeps a batch's guarded deletes (one nested transaction each)
// under etcd's default --max-txn-ops of 128.
const maxBatch = 100

// Shipper moves audit events from the etcd outbox to Postgres. Run it as
// one of the bot's singleton jobs; its correctness does not depend on that:
// the insert is idempotent (event_id is unique) and each outbox key is
// deleted only if it still holds the value that was shipped, so two
// shippers at once never make two rows or lose a rewritten key.
type Shipper struct {
	etcd       Etcd
	keys       Keys
	db         DBTX
	log        *zap.Logger
	now        func() time.Time
	batch      int
	minBackoff time.Duration
	maxBackoff time.Duration

	// backlog is the number of outbox keys waiting, -1 before the first read.
	backlog     atomic.Int64
	backlogG    prometheus.Gauge
	shipped     prometheus.Counter
	quarantined prometheus.Counter
	failures    prometheus.Counter
	lag         prometheus.Histogram

	// afterInsert, if set, runs after a batch's insert committed and before
	// its keys are deleted. Tests use it to kill the shipper in that window.
	afterInsert func()
}

// NewShipper validates cfg and returns a Shipper. It does not connect to
// anything; Run does.
func NewShipper(cfg ShipperConfig) (*Shipper, error) {
	if cfg.Etcd == nil {
		return nil, errors.New("audit shipper: Etcd is required")
	}
	if cfg.DB == nil {
		return nil, errors.New("audit shipper: DB is required")
	}
	if cfg.BatchSize < 0 || cfg.BatchSize > maxBatch {
		return nil, fmt.Errorf("audit shipper: BatchSize %d outside 1..%d", cfg.BatchSize, maxBatch)
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = maxBatch
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("audit shipper: MaxBackoff %v is below MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Shipper{
		etcd:       cfg.Etcd,
		keys:       Keys{Prefix: cfg.Prefix},
		db:         cfg.DB,
		log:        cfg.Logger.Named("audit-shipper"),
		now:        cfg.Now,
		batch:      cfg.BatchSize,
		minBackoff: cfg.MinBackoff,
		maxBackoff: cfg.MaxBackoff,
		backlogG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backflip_audit_backlog",
			Help: "Audit events waiting in the etcd outbox to be shipped to Postgres.",
		}),
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backflip_audit_shipped_total",
			Help: "Audit events shipped to Postgres and removed from the outbox.",
		}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backflip_audit_quarantined_total",
			Help: "Malformed outbox values moved to the audit quarantine.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backflip_audit_ship_failures_total",
			Help: "Failed attempts to ship a batch (Postgres or etcd unavailable); each is retried.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "backflip_audit_ship_lag_seconds",
			Help:    "Time from an audit event's occurred_at to its insert into Postgres.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 10),
		}),
	}
	s.backlog.Store(-1)
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.backlogG, s.shipped, s.quarantined, s.failures, s.lag} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("audit shipper: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Backlog is the number of events waiting in the outbox as this shipper
// last saw it, or -1 before it has read the outbox.
func (s *Shipper) Backlog() int { return int(s.backlog.Load()) }

// Status is a one-line summary for chat: "audit ✓" when nothing waits,
// "audit pending: 3" otherwise.
func (s *Shipper) Status() string {
	switch n := s.Backlog(); {
	case n < 0:
		return "audit pending: ?"
	case n == 0:
		return "audit ✓"
	default:
		return "audit pending: " + strconv.Itoa(n)
	}
}

// entry is one outbox key as last seen.
type entry struct {
	value []byte
	rev   int64 // ModRevision
}

// Run ships until ctx ends, then returns nil. Failures of etcd or Postgres
// are logged and retried with backoff; they never end Run.
func (s *Shipper) Run(ctx context.Context) error {
	bo := backoff{min: s.minBackoff, max: s.maxBackoff}
	for ctx.Err() == nil {
		err := s.follow(ctx, &bo)
		if ctx.Err() != nil {
			break
		}
		s.failures.Inc()
		d := bo.next()
		s.log.Warn("audit outbox read failed; retrying", zap.Error(err), zap.Duration("backoff", d))
		if !sleep(ctx, d) {
			break
		}
	}
	return nil
}

// follow reads the outbox, then watches it and ships, until the watch fails
// (compaction, lost leader, etcd unreachable) or ctx ends. The caller then
// reads the outbox again.
func (s *Shipper) follow(ctx context.Context, bo *backoff) error {
	pending, rev, err := s.read(ctx)
	if err != nil {
		return err
	}
	s.setBacklog(len(pending))

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.etcd.Watch(wctx, s.keys.Outbox(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))

	var retry <-chan time.Time // set while waiting out a backoff
	for {
		if retry == nil && len(pending) > 0 {
			if err := s.shipBatch(ctx, pending); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.failures.Inc()
				d := bo.next()
				s.log.Warn("audit shipping failed; events stay in etcd", zap.Error(err),
					zap.Int("backlog", len(pending)), zap.Duration("backoff", d))
				retry = time.After(d)
			} else {
				bo.reset()
			}
			s.setBacklog(len(pending))
			// Take in what the watch has before the next batch.
		}
		if retry == nil && len(pending) > 0 {
			select {
			case wr, ok := <-wch:
				if err := apply(pending, wr, ok); err != nil {
					return err
				}
				s.setBacklog(len(pending))
			default:
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-retry:
			retry = nil
		case wr, ok := <-wch:
			if err := apply(pending, wr, ok); err != nil {
				return err
			}
			s.setBacklog(len(pending))
		}
	}
}

// apply folds one watch response into pending.
func apply(pending map[string]entry, wr clientv3.WatchResponse, ok bool) error {
	if !ok {
		return errors.New("outbox watch closed")
	}
	if wr.CompactRevision != 0 {
		return fmt.Errorf("outbox watch compacted at revision %d", wr.CompactRevision)
	}
	if err := wr.Err(); err != nil {
		return fmt.Errorf("outbox watch: %w", err)
	}
	for _, ev := range wr.Events {
		k := string(ev.Kv.Key)
		if ev.Type == clientv3.EventTypeDelete {
			delete(pending, k)
			continue
		}
		pending[k] = entry{value: ev.Kv.Value, rev: ev.Kv.ModRevision}
	}
	return nil
}

// readPage bounds one range read of the outbox.
const readPage = 1000

// read returns every outbox key at one revision, paging so that a large
// backlog (Postgres down for a long time) does not make one huge response.
func (s *Shipper) read(ctx context.Context) (map[string]entry, int64, error) {
	pending := make(map[string]entry)
	prefix := s.keys.Outbox()
	end := clientv3.GetPrefixRangeEnd(prefix)
	from, rev := prefix, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(readPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.etcd.Get(ctx, from, opts...)
		if err != nil {
			return nil, 0, fmt.Errorf("read audit outbox: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			pending[string(kv.Key)] = entry{value: kv.Value, rev: kv.ModRevision}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return pending, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// shippedKey is one event of a batch with the key and revision it came from.
type shippedKey struct {
	key string
	rev int64
}

// shipBatch ships up to batch events in key order: an op's events in
// sequence order, so they get ascending ids. Malformed values are
// quarantined on the way. Keys are deleted only after the insert committed,
// each guarded on the revision that was shipped.
func (s *Shipper) shipBatch(ctx context.Context, pending map[string]entry) error {
	keys := make([]string, 0, len(pending))
	for k := range pending {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	events := make([]Event, 0, s.batch)
	from := make([]shippedKey, 0, s.batch)
	for _, k := range keys {
		if len(events) == s.batch {
			break
		}
		en := pending[k]
		ev, err := s.decode(k, en.value)
		if err != nil {
			if qerr := s.quarantine(ctx, pending, k, en, err); qerr != nil {
				return qerr
			}
			continue
		}
		events = append(events, ev)
		from = append(from, shippedKey{key: k, rev: en.rev})
	}
	if len(events) == 0 {
		return nil
	}

	ictx, cancel := context.WithTimeout(ctx, insertTimeout)
	inserted, err := InsertEvents(ictx, s.db, events)
	cancel()
	if refusedData(err) {
		// Postgres refused a value of the batch, not the batch: found by
		// FuzzDecodeEvent, Decode accepts events Postgres cannot store (a
		// NUL in a text, invalid UTF-8, \u0000 or a lone surrogate in
		// details, a number beyond numeric). Retried whole, the batch would
		// fail forever and hold up every later event; insert its events one
		// by one and quarantine those Postgres refuses.
		events, from, inserted, err = s.insertEach(ctx, pending, events, from)
		if err == nil && len(events) == 0 {
			return nil
		}
	}
	if err != nil {
		return err
	}
	now := s.now()
	for i := range events {
		s.lag.Observe(max(now.Sub(events[i].OccurredAt), 0).Seconds())
	}
	if s.afterInsert != nil {
		s.afterInsert()
	}

	// One transaction of nested, individually guarded deletes: a key that
	// was rewritten since it was read keeps its new value (the watch brings
	// it back to pending), and a key another shipper already removed is
	// simply gone.
	ops := make([]clientv3.Op, len(from))
	for i, f := range from {
		ops[i] = clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(f.key), "=", f.rev)},
			[]clientv3.Op{clientv3.OpDelete(f.key)}, nil)
	}
	resp, err := s.etcd.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		// The rows are in Postgres; the keys stay and are shipped again
		// later, which inserts nothing.
		return fmt.Errorf("delete %d shipped audit keys: %w", len(from), err)
	}
	deleted := 0
	for i, f := range from {
		if cur, ok := pending[f.key]; ok && cur.rev == f.rev {
			delete(pending, f.key)
		}
		if r := resp.Responses[i].GetResponseTxn(); r != nil && r.Succeeded {
			deleted++
		}
	}
	s.shipped.Add(float64(deleted))
	s.log.Debug("audit events shipped", zap.Int("events", len(events)), zap.Int("inserted", inserted),
		zap.Int("deleted", deleted))
	return nil
}

// refusedData reports whether err is Postgres refusing a value for its data
// (SQLSTATE class 22, data exception), which no retry changes.
func refusedData(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "22")
}

// insertEach inserts events one at a time, quarantining those Postgres
// refuses for their data, and returns the events it inserted with their
// keys. Any other failure ends it; events already inserted are shipped
// again later, which inserts nothing.
func (s *Shipper) insertEach(ctx context.Context, pending map[string]entry, events []Event, from []shippedKey) ([]Event, []shippedKey, int, error) {
	var keptEvents []Event
	var keptFrom []shippedKey
	inserted := 0
	for i := range events {
		ictx, cancel := context.WithTimeout(ctx, insertTimeout)
		n, err := InsertEvents(ictx, s.db, events[i:i+1])
		cancel()
		switch {
		case refusedData(err):
			en := entry{value: pending[from[i].key].value, rev: from[i].rev}
			if qerr := s.quarantine(ctx, pending, from[i].key, en, err); qerr != nil {
				return nil, nil, 0, qerr
			}
		case err != nil:
			return nil, nil, 0, err
		default:
			inserted += n
			keptEvents = append(keptEvents, events[i])
			keptFrom = append(keptFrom, from[i])
		}
	}
	return keptEvents, keptFrom, inserted, nil
}

// decode checks an outbox key and its value.
func (s *Shipper) decode(key string, value []byte) (Event, error) {
	op, _, err := s.keys.ParseEventKey(key)
	if err != nil {
		return Event{}, err
	}
	ev, err := DecodeEvent(value)
	if err != nil {
		return Event{}, err
	}
	if ev.OpID != op {
		return Event{}, fmt.Errorf("%w: key names op %s, event has op_id %s", ErrInvalid, op, ev.OpID)
	}
	// InsertEvents refuses this one, and it would hold up its whole batch.
	if ev.AffectedRequests != nil && *ev.AffectedRequests > math.MaxInt32 {
		return Event{}, fmt.Errorf("%w: affected_requests %d does not fit an int column", ErrInvalid, *ev.AffectedRequests)
	}
	return ev, nil
}

// quarantine moves a malformed value out of the outbox, keeping it under
// the quarantine prefix for a person to look at: it is neither retried
// forever nor dropped silently.
func (s *Shipper) quarantine(ctx context.Context, pending map[string]entry, key string, en entry, why error) error {
	qkey := s.keys.Quarantine() + key[len(s.keys.Outbox()):]
	resp, err := s.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", en.rev)).
		Then(clientv3.OpPut(qkey, string(en.value)), clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("quarantine %s: %w", key, err)
	}
	// Either way this version is done with: moved, or replaced by a write
	// the watch will bring.
	delete(pending, key)
	if !resp.Succeeded {
		return nil
	}
	s.quarantined.Inc()
	s.log.Error("malformed audit event quarantined", zap.String("key", key), zap.String("quarantine_key", qkey),
		zap.Int64("mod_revision", en.rev), zap.ByteString("value", truncate(en.value, 512)), zap.Error(why))
	return nil
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return bytes.Clone(b[:n])
}

func (s *Shipper) setBacklog(n int) {
	s.backlog.Store(int64(n))
	s.backlogG.Set(float64(n))
}

// backoff is a capped exponential backoff with jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	// Up to 20% less, so that shippers that failed together do not retry
	// in lockstep.
	return b.cur - time.Duration(rand.Int64N(int64(b.cur)/5+1))
}

func (b *backoff) reset() { b.cur = 0 }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
