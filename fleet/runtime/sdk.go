package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// Errors of the SDK.
var (
	// ErrRolledBack: a rollback, drill or drill return moved the route away
	// from the version the request was pinned to. The error is a
	// *RolledBackError naming the version to re-issue on.
	ErrRolledBack = errors.New("route rolled back away from the request's version")
	// ErrUnknownRoute: Begin was asked for a route the reader does not know.
	ErrUnknownRoute = errors.New("unknown route")
	// ErrReaderStale: the reader is stale and its policy is fail-closed.
	ErrReaderStale = errors.New("routing reader stale (fail-closed)")
	// ErrFinished: Checkpoint or Done on a request that already finished.
	ErrFinished = errors.New("request already finished")
)

// RolledBackError is returned by Checkpoint and Done once the request must
// not go on: its output would come from a version the route was rolled away
// from.
type RolledBackError struct {
	Route string
	// Pinned is the version the request started on.
	Pinned string
	// ReissueOn is the route's active version when the abort was decided:
	// the version to re-issue the request on.
	ReissueOn string
	// Epoch is the route's epoch when the abort was decided.
	Epoch int64
}

func (e *RolledBackError) Error() string {
	return fmt.Sprintf("route %s moved away from %s (epoch %d): re-issue on %s", e.Route, e.Pinned, e.Epoch, e.ReissueOn)
}

// Is makes errors.Is(err, ErrRolledBack) true.
func (e *RolledBackError) Is(target error) bool { return target == ErrRolledBack }

// Limits and defaults of an instance.
const (
	// MaxRefreshEvery is the contract's bound on how stale a registration
	// record may be.
	MaxRefreshEvery    = 10 * time.Second
	DefaultLeaseTTL    = 10
	DefaultMaxAttempts = 3
	ackLeaseTTL        = 7 * 24 * 3600
	ackLeaseRenewAfter = 24 * time.Hour
	closeTimeout       = 3 * time.Second
	writeTimeout       = 5 * time.Second
	minRetryBackoff    = 50 * time.Millisecond
	maxRetryBackoff    = 2 * time.Second
	readyPollInterval  = 5 * time.Millisecond
)

// InstanceConfig configures a runtime instance.
type InstanceConfig struct {
	// ID names the instance in etcd (ValidateInstance).
	ID string
	// URL is optional: where an HTTP abort signal would reach this
	// instance. SDK instances watch etcd themselves and need none.
	URL    string
	Client *clientv3.Client
	// Prefix is BACKFLIP_ETCD_PREFIX.
	Prefix string
	Logger *zap.Logger
	// Now returns the current time (injected for tests). Default time.Now.
	Now func() time.Time
	// LeaseTTL is the registration lease's TTL in seconds. Default 10.
	LeaseTTL int64
	// RefreshEvery is how often the registration record is rewritten when
	// the in-flight counts changed. Default and maximum 10s.
	RefreshEvery time.Duration
	// MaxStaleness and Policy configure the reader (READER_MAX_STALENESS
	// and serve-last-known / fail-closed).
	MaxStaleness time.Duration
	Policy       routing.Policy
	// OnApply, if set, is called after the instance has applied a route
	// change (and marked the requests it aborts). It runs on the reader's
	// goroutine and must not block.
	OnApply func(v routing.View)
}

// Instance is one workflow runtime instance: it reads the routes through
// its own reader, registers its in-flight counts under a lease, aborts
// requests at their next checkpoint when their version is rolled away from,
// and acknowledges each aborting change.
type Instance struct {
	cfg    InstanceConfig
	keys   Keys
	log    *zap.Logger
	reader *routing.Watcher

	mu    sync.RWMutex // guards slots
	slots map[string]*routeSlot

	dirty    atomic.Bool
	dirtyC   chan struct{}
	recordMu sync.Mutex // guards lease
	lease    clientv3.LeaseID

	ackMu      sync.Mutex // guards the fields below and every ackTracker
	ackPending map[string]AckRecord
	ackLease   clientv3.LeaseID
	ackGranted time.Time
	ackC       chan struct{}

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// routeSlot is the stable home of one route in an instance.
type routeSlot struct {
	route string
	// cur is the route's immutable abort state; requests compare it.
	cur atomic.Pointer[routeState]

	mu     sync.Mutex // guards the fields below and requests' marks
	reqs   map[*Request]struct{}
	counts map[string]int
}

// routeState is what decides aborts for one route, rebuilt on every change.
// It is never modified once published.
type routeState struct {
	epoch  int64
	active string
	rev    int64
	// rolledAwayAt maps a version to the epoch of the latest aborting
	// change whose From was that version.
	rolledAwayAt map[string]int64
	// gapAt is the latest epoch at which the instance saw the route jump
	// by more than one epoch (or from a version other than the one it
	// had): changes it never saw may have moved any version away.
	gapAt int64
	// removed: the route's key is gone; no new request may begin on it.
	removed bool
}

// aborts is the abort rule for a request pinned to version v at epoch e.
func (s *routeState) aborts(v string, e int64) bool {
	return s.rolledAwayAt[v] > e || (s.gapAt > e && v != s.active)
}

// next returns the state after v is applied to s.
func (s *routeState) next(v routing.View) *routeState {
	n := &routeState{epoch: v.Epoch, active: v.Active, rev: v.Revision, gapAt: s.gapAt,
		rolledAwayAt: make(map[string]int64, len(s.rolledAwayAt)+1)}
	for k, e := range s.rolledAwayAt {
		n.rolledAwayAt[k] = e
	}
	if v.Kind.Aborts() && v.From != "" {
		n.rolledAwayAt[v.From] = v.Epoch
	}
	if v.Epoch > s.epoch+1 || (v.From != "" && v.From != s.active) {
		n.gapAt = v.Epoch
	}
	return n
}

// ackTracker follows the requests one aborting change marked until each is
// re-issued and finished or abandoned. Guarded by Instance.ackMu.
type ackTracker struct {
	op       string
	rec      AckRecord
	pending  int
	reissued int
}

// NewInstance validates cfg and creates the instance and its reader.
func NewInstance(cfg InstanceConfig) (*Instance, error) {
	if err := ValidateInstance(cfg.ID); err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		return nil, errors.New("runtime: InstanceConfig.Client is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.RefreshEvery <= 0 {
		cfg.RefreshEvery = MaxRefreshEvery
	}
	if cfg.RefreshEvery > MaxRefreshEvery {
		return nil, fmt.Errorf("%w: refresh every %s: at most %s allowed", ErrInvalid, cfg.RefreshEvery, MaxRefreshEvery)
	}
	rec := InstanceRecord{ID: cfg.ID, URL: cfg.URL}
	if err := rec.Validate(); err != nil {
		return nil, err
	}
	in := &Instance{
		cfg:        cfg,
		keys:       Keys{Prefix: cfg.Prefix},
		log:        cfg.Logger.With(zap.String("instance", cfg.ID)),
		slots:      map[string]*routeSlot{},
		dirtyC:     make(chan struct{}, 1),
		ackPending: map[string]AckRecord{},
		ackC:       make(chan struct{}, 1),
	}
	r, err := routing.NewWatcher(routing.WatcherConfig{
		Client:       cfg.Client,
		Prefix:       cfg.Prefix,
		Logger:       cfg.Logger.Named("reader"),
		Now:          cfg.Now,
		MaxStaleness: cfg.MaxStaleness,
		Policy:       cfg.Policy,
		OnApply:      in.apply,
	})
	if err != nil {
		return nil, err
	}
	in.reader = r
	return in, nil
}

// Reader is the instance's routing reader (read-only use: Current, Routes,
// Health). The instance starts and closes it.
func (in *Instance) Reader() *routing.Watcher { return in.reader }

// ID is the instance's id.
func (in *Instance) ID() string { return in.cfg.ID }

// Start runs the reader, the registration and the ack writer until Close.
func (in *Instance) Start(ctx context.Context) {
	ctx, in.cancel = context.WithCancel(ctx)
	in.reader.Start(ctx)
	in.wg.Add(2)
	go func() { defer in.wg.Done(); in.runRegistration(ctx) }()
	go func() { defer in.wg.Done(); in.runAcks(ctx) }()
}

// WaitReady blocks until the reader has read the routes and the instance
// has applied every one of them.
func (in *Instance) WaitReady(ctx context.Context) error {
	if err := in.reader.WaitReady(ctx); err != nil {
		return err
	}
	t := time.NewTicker(readyPollInterval)
	defer t.Stop()
	for {
		if in.caughtUp() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("runtime instance not ready: %w", ctx.Err())
		case <-t.C:
		}
	}
}

func (in *Instance) caughtUp() bool {
	for _, v := range in.reader.Routes() {
		if v.Active == "" {
			continue
		}
		in.mu.RLock()
		sl := in.slots[v.Route]
		in.mu.RUnlock()
		if sl == nil || sl.cur.Load().epoch < v.Epoch {
			return false
		}
	}
	return true
}

// Close stops the instance and deletes its registration record (by
// revoking its lease). Requests still in flight are left to their callers.
func (in *Instance) Close() {
	in.closeOnce.Do(func() {
		if in.cancel != nil {
			in.cancel()
		}
		in.wg.Wait()
		in.reader.Close()
	})
}

// apply is the reader's OnApply hook: it publishes the route's new abort
// state, marks the requests it aborts and, for an aborting change, queues
// the acknowledgement.
func (in *Instance) apply(v routing.View) {
	defer func() {
		if in.cfg.OnApply != nil {
			in.cfg.OnApply(v)
		}
	}()
	in.mu.Lock()
	sl := in.slots[v.Route]
	if sl == nil {
		if v.Active == "" {
			in.mu.Unlock()
			return
		}
		// First sight of the route: nothing can be in flight on it, and a
		// change made before this instance knew the route is not its to ack.
		sl = &routeSlot{route: v.Route, reqs: map[*Request]struct{}{}, counts: map[string]int{}}
		sl.cur.Store(&routeState{epoch: v.Epoch, active: v.Active, rev: v.Revision, rolledAwayAt: map[string]int64{}})
		in.slots[v.Route] = sl
		in.mu.Unlock()
		return
	}
	in.mu.Unlock()

	sl.mu.Lock()
	old := sl.cur.Load()
	if v.Active == "" {
		n := *old
		n.removed = true
		sl.cur.Store(&n)
		sl.mu.Unlock()
		return
	}
	if v.Epoch <= old.epoch && !old.removed {
		sl.mu.Unlock()
		return
	}
	ns := old.next(v)
	sl.cur.Store(ns)
	var t *ackTracker
	if v.Kind.Aborts() && v.Op != "" {
		t = &ackTracker{op: v.Op}
	}
	inflight, aborted := 0, 0
	for r := range sl.reqs {
		inflight++
		if r.marked || !ns.aborts(r.version, r.epoch) {
			continue
		}
		r.marked = true
		r.tracker = t
		aborted++
	}
	if t != nil {
		t.rec = AckRecord{InFlight: inflight, Aborted: aborted, AppliedRev: v.Revision, At: in.cfg.Now().UTC()}
		in.ackMu.Lock()
		t.pending = aborted
		in.queueAckLocked(t)
		in.ackMu.Unlock()
	}
	sl.mu.Unlock()
	if aborted > 0 || t != nil {
		in.log.Info("route change applied", zap.String("route", v.Route), zap.String("kind", string(v.Kind)),
			zap.String("from", v.From), zap.String("active", v.Active), zap.Int64("epoch", v.Epoch),
			zap.Int("inflight", inflight), zap.Int("aborted", aborted))
	}
}

// queueAckLocked queues the current state of t's acknowledgement.
func (in *Instance) queueAckLocked(t *ackTracker) {
	rec := t.rec
	if t.pending == 0 {
		n := t.reissued
		rec.Reissued = &n
	}
	in.ackPending[t.op] = rec
	select {
	case in.ackC <- struct{}{}:
	default:
	}
}

// resolve ends one marked request's story for each tracker: re-issued and
// finished (ok) or abandoned.
func (in *Instance) resolve(trackers []*ackTracker, ok bool) {
	if len(trackers) == 0 {
		return
	}
	in.ackMu.Lock()
	defer in.ackMu.Unlock()
	for _, t := range trackers {
		if t == nil {
			continue
		}
		t.pending--
		if ok {
			t.reissued++
		}
		if t.pending == 0 {
			in.queueAckLocked(t)
		}
	}
}

// Request is one request's pin on a route. It is used by one goroutine at
// a time.
type Request struct {
	in      *Instance
	slot    *routeSlot
	seen    *routeState // state last evaluated as "go on"; nil once finished
	version string
	epoch   int64
	err     error
	done    bool
	// run, when the request runs under Run, collects the trackers of the
	// changes that aborted it.
	run *[]*ackTracker

	// Guarded by slot.mu.
	marked  bool
	tracker *ackTracker
}

// Begin pins route's current version and epoch for a new request.
func (in *Instance) Begin(route string) (*Request, error) {
	if t, ok := in.reader.Ticket(route); ok && in.reader.Valid(t) == routing.StatusStaleRefused {
		return nil, fmt.Errorf("begin on route %s: %w", route, ErrReaderStale)
	}
	in.mu.RLock()
	sl := in.slots[route]
	in.mu.RUnlock()
	if sl == nil {
		return nil, fmt.Errorf("begin on route %s: %w", route, ErrUnknownRoute)
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	s := sl.cur.Load()
	if s.removed {
		return nil, fmt.Errorf("begin on route %s: %w (removed)", route, ErrUnknownRoute)
	}
	r := &Request{in: in, slot: sl, seen: s, version: s.active, epoch: s.epoch}
	sl.reqs[r] = struct{}{}
	sl.counts[r.version]++
	in.markDirty()
	return r, nil
}

// Version is the version the request is pinned to.
func (r *Request) Version() string { return r.version }

// Epoch is the route's epoch when the request began.
func (r *Request) Epoch() int64 { return r.epoch }

// Route is the request's route.
func (r *Request) Route() string { return r.slot.route }

// Checkpoint is called between steps: it returns a *RolledBackError once
// the request must not go on. While the route has not changed it is one
// atomic load and a compare. ctx is accepted for symmetry with the steps
// around it; cancellation is the job's business.
func (r *Request) Checkpoint(ctx context.Context) error {
	if r.slot.cur.Load() == r.seen {
		return nil
	}
	return r.check(false)
}

// Done is the final checkpoint, called before the request returns its
// output: nil means the output may be returned. It ends the request either
// way; a second Done returns ErrFinished.
func (r *Request) Done() error { return r.check(true) }

// Abandon ends a request that will neither finish nor be re-issued (its
// job failed). It is a no-op on a finished request.
func (r *Request) Abandon() {
	if r.done {
		return
	}
	sl := r.slot
	sl.mu.Lock()
	t := r.tracker
	r.finishLocked()
	sl.mu.Unlock()
	if t != nil {
		if r.run != nil {
			*r.run = append(*r.run, t)
		} else {
			r.in.resolve([]*ackTracker{t}, false)
		}
	}
}

// check is the slow path: the route changed since the request last looked,
// or the request ends.
func (r *Request) check(final bool) error {
	if r.done {
		if r.err != nil {
			return r.err
		}
		return ErrFinished
	}
	sl := r.slot
	sl.mu.Lock()
	s := sl.cur.Load()
	if !r.marked {
		if final {
			r.finishLocked()
		} else {
			r.seen = s
		}
		sl.mu.Unlock()
		return nil
	}
	t := r.tracker
	r.finishLocked()
	sl.mu.Unlock()
	r.err = &RolledBackError{Route: sl.route, Pinned: r.version, ReissueOn: s.active, Epoch: s.epoch}
	if t != nil {
		if r.run != nil {
			*r.run = append(*r.run, t)
		} else {
			// Nobody will re-issue it through Run: it is abandoned.
			r.in.resolve([]*ackTracker{t}, false)
		}
	}
	return r.err
}

// finishLocked removes the request from the in-flight set. sl.mu is held.
func (r *Request) finishLocked() {
	sl := r.slot
	r.done = true
	r.seen = nil
	delete(sl.reqs, r)
	if sl.counts[r.version]--; sl.counts[r.version] <= 0 {
		delete(sl.counts, r.version)
	}
	r.in.markDirty()
}

func (in *Instance) markDirty() {
	if !in.dirty.Swap(true) {
		select {
		case in.dirtyC <- struct{}{}:
		default:
		}
	}
}

// Run runs job on a new request on route and re-issues it, on the version
// the route was rolled back to, each time it fails with ErrRolledBack, at
// most maxAttempts times in all (DefaultMaxAttempts when ≤ 0), so a route
// that keeps flipping cannot re-issue a job forever. If job returns nil
// without calling Done, Run calls it. It returns the number of attempts
// begun and the last error.
func Run(ctx context.Context, inst *Instance, route string, maxAttempts int, job func(ctx context.Context, req *Request) error) (attempts int, err error) {
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	var trackers []*ackTracker
	defer func() { inst.resolve(trackers, err == nil) }()
	for {
		if err := ctx.Err(); err != nil {
			return attempts, err
		}
		req, err := inst.Begin(route)
		if err != nil {
			return attempts, err
		}
		attempts++
		req.run = &trackers
		err = job(ctx, req)
		if err == nil && !req.done {
			err = req.Done()
		}
		if err != nil {
			req.Abandon()
		}
		if err == nil || !errors.Is(err, ErrRolledBack) || attempts >= maxAttempts {
			return attempts, err
		}
		inst.log.Debug("re-issuing rolled-back request", zap.String("route", route), zap.Int("attempt", attempts+1), zap.Error(err))
	}
}

// record builds the registration record from the current counts.
func (in *Instance) record() InstanceRecord {
	rec := InstanceRecord{ID: in.cfg.ID, URL: in.cfg.URL, InFlight: map[string]map[string]int{}}
	in.mu.RLock()
	slots := make([]*routeSlot, 0, len(in.slots))
	for _, sl := range in.slots {
		slots = append(slots, sl)
	}
	in.mu.RUnlock()
	for _, sl := range slots {
		sl.mu.Lock()
		if len(sl.counts) > 0 {
			m := make(map[string]int, len(sl.counts))
			for v, n := range sl.counts {
				m[v] = n
			}
			rec.InFlight[sl.route] = m
		}
		sl.mu.Unlock()
	}
	return rec
}

// runRegistration keeps the record under a lease: grant, put, drain the
// keep-alives, rewrite on change at most every RefreshEvery, and grant a
// new lease when the old one is lost. On exit it revokes the lease, which
// deletes the record.
func (in *Instance) runRegistration(ctx context.Context) {
	defer in.revokeRegistration()
	backoff := minRetryBackoff
	for ctx.Err() == nil {
		err := in.registerOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		in.log.Warn("runtime registration lost; registering again", zap.Error(err), zap.Duration("retry_in", backoff))
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, maxRetryBackoff)
	}
}

// registerOnce runs one lease's life. It returns when the lease is lost or
// a write fails.
func (in *Instance) registerOnce(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, writeTimeout)
	g, err := in.cfg.Client.Grant(gctx, in.cfg.LeaseTTL)
	cancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	in.recordMu.Lock()
	in.lease = g.ID
	in.recordMu.Unlock()
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ka, err := in.cfg.Client.KeepAlive(kctx, g.ID)
	if err != nil {
		return fmt.Errorf("keep lease alive: %w", err)
	}
	in.dirty.Store(false)
	if err := in.putRecord(ctx, g.ID); err != nil {
		return err
	}
	tick := time.NewTicker(in.cfg.RefreshEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-ka:
			if !ok {
				return errors.New("lease keep-alive ended (lease expired or revoked)")
			}
		case <-tick.C:
			if in.dirty.Swap(false) {
				if err := in.putRecord(ctx, g.ID); err != nil {
					in.dirty.Store(true)
					return err
				}
			}
		}
	}
}

func (in *Instance) putRecord(ctx context.Context, lease clientv3.LeaseID) error {
	rec := in.record()
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if _, err := in.cfg.Client.Put(pctx, in.keys.Instance(in.cfg.ID), string(val), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("write registration: %w", err)
	}
	return nil
}

func (in *Instance) revokeRegistration() {
	in.recordMu.Lock()
	lease := in.lease
	in.lease = 0
	in.recordMu.Unlock()
	if lease == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if _, err := in.cfg.Client.Revoke(ctx, lease); err != nil {
		in.log.Warn("revoke registration lease", zap.Error(err))
	}
}

// runAcks writes queued acknowledgements, retrying failures, and flushes
// once more when the instance closes.
func (in *Instance) runAcks(ctx context.Context) {
	backoff := minRetryBackoff
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			_ = in.flushAcks(fctx)
			cancel()
			return
		case <-in.ackC:
		}
		for ctx.Err() == nil {
			err := in.flushAcks(ctx)
			if err == nil {
				backoff = minRetryBackoff
				break
			}
			in.log.Warn("write runtime acks", zap.Error(err), zap.Duration("retry_in", backoff))
			if !sleepCtx(ctx, backoff) {
				break
			}
			backoff = min(backoff*2, maxRetryBackoff)
		}
	}
}

// flushAcks writes every queued acknowledgement; a failed one stays queued
// unless a newer state of it was queued meanwhile.
func (in *Instance) flushAcks(ctx context.Context) error {
	in.ackMu.Lock()
	batch := in.ackPending
	in.ackPending = map[string]AckRecord{}
	in.ackMu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	lease, err := in.ackLeaseID(ctx)
	var failed error
	for op, rec := range batch {
		if err == nil {
			var val []byte
			if val, err = json.Marshal(rec); err == nil {
				wctx, cancel := context.WithTimeout(ctx, writeTimeout)
				_, err = in.cfg.Client.Put(wctx, in.keys.Ack(op, in.cfg.ID), string(val), clientv3.WithLease(lease))
				cancel()
			}
		}
		if err != nil {
			failed = err
			err = nil
			in.ackMu.Lock()
			if _, newer := in.ackPending[op]; !newer {
				in.ackPending[op] = rec
			}
			in.ackMu.Unlock()
		}
	}
	if failed != nil {
		in.ackMu.Lock()
		in.ackLease = 0 // the lease may be gone: grant a new one next time
		in.ackMu.Unlock()
	}
	return failed
}

// ackLeaseID returns the instance's 7-day ack lease, granting a new one
// when it is older than a day so every ack lives about 7 days.
func (in *Instance) ackLeaseID(ctx context.Context) (clientv3.LeaseID, error) {
	in.ackMu.Lock()
	lease, granted := in.ackLease, in.ackGranted
	in.ackMu.Unlock()
	now := in.cfg.Now()
	if lease != 0 && now.Sub(granted) < ackLeaseRenewAfter {
		return lease, nil
	}
	gctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	g, err := in.cfg.Client.Grant(gctx, ackLeaseTTL)
	if err != nil {
		return 0, fmt.Errorf("grant ack lease: %w", err)
	}
	in.ackMu.Lock()
	in.ackLease, in.ackGranted = g.ID, now
	in.ackMu.Unlock()
	return g.ID, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
