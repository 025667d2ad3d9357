package drills

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
)

// SchedulerActor is the audit actor of what the scheduler records on its
// own (skipped runs), in the "system:<job>" form of commands.Actor.
const SchedulerActor = "system:drill-scheduler"

// recordTTL is how long run and announcement records are kept: far longer
// than Lookback, so a record is always there while its run can still be
// found due, and short enough that etcd does not collect them forever.
const recordTTL = 7 * 24 * time.Hour

// writeTimeout bounds a record write and what must follow it (the post
// of an announcement), which run detached from the tick's cancellation.
const writeTimeout = 10 * time.Second

// RunFunc runs one scheduled drill of route, the one due at scheduled. The
// runner reports its outcome in chat and audit itself; the scheduler only
// records in the run record whether it returned an error.
type RunFunc func(ctx context.Context, route string, scheduled time.Time) error

// SchedulerConfig is what a Scheduler needs. Store, Owner and Run are
// required.
type SchedulerConfig struct {
	Store *Store
	// Etcd and Prefix default to the Store's.
	Etcd   commands.Etcd
	Prefix string
	// Owner is the replica's liveness lease; run records name it.
	Owner commands.Lessee
	Run   RunFunc
	// Announcer and AnnounceChannel carry announcements and skip notices;
	// a nil Announcer logs them only.
	Announcer       Announcer
	AnnounceChannel string
	// Late is how late a run may start (default 10 minutes); a run found
	// later is recorded skipped, audited and announced instead.
	Late time.Duration
	// Tick is how often Run looks at the schedules (default 15 s).
	Tick time.Duration
	// Lookback is how far back Once looks for runs that never started, to
	// record and announce them as skipped (default 24 h, at least
	// Late + Tick, less than the 7 days records are kept). Runs before a
	// schedule's CreatedAt are never looked at.
	Lookback time.Duration
	// VerifyWindow is how long a drill holds the previous version
	// (DRILL_VERIFY_WINDOW, default 30 s); announcements say so.
	VerifyWindow time.Duration
	Logger       *zap.Logger
	// Now is the clock of every schedule computation; only Tick uses a
	// real timer.
	Now func() time.Time
}

// Scheduler is the drill scheduler, one of the singleton jobs: it starts
// due drills, records and announces runs that could not start in time, and
// announces drills ahead of time. Leadership alone does not make it run
// once: every run is claimed by creating drills/runs/<route>/<unix> with
// CreateRevision == 0 and every announcement by creating its record the
// same way, so two schedulers that both believe they lead still start each
// run and post each announcement at most once.
type Scheduler struct {
	cfg    SchedulerConfig
	etcd   commands.Etcd
	keys   Keys
	outbox audit.Keys
	routes *routing.Store
	log    *zap.Logger
	now    func() time.Time

	// drills are the drill goroutines started by Once, waited for by Run
	// and Wait.
	drills sync.WaitGroup

	mu sync.Mutex
	// running holds the routes with a drill started by this scheduler and
	// not finished: one drill at a time per route.
	running map[string]bool
	// lease is the 7-day lease of run and announcement records, granted at
	// most once an hour (by the real clock: it is etcd's time that counts).
	lease   clientv3.LeaseID
	leaseAt time.Time
	// lastTick is the clock reading of the last Once that read the
	// schedules, to tell "no leader" from "could not start in time".
	lastTick time.Time
	// warned remembers malformed schedules already logged, by revision,
	// so a bad value is logged once and not every tick.
	warned map[string]int64
	// mine are the run and announcement records this scheduler created
	// and acted on, by key, with the run time they are for (to forget
	// them once past the window). A record is acted on at most once per
	// scheduler even when a lost reply makes create re-read it.
	mine map[string]time.Time
}

// NewScheduler checks cfg, fills in its defaults and returns a Scheduler.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("drills: SchedulerConfig.Store is required")
	case cfg.Owner == nil:
		return nil, errors.New("drills: SchedulerConfig.Owner is required")
	case cfg.Run == nil:
		return nil, errors.New("drills: SchedulerConfig.Run is required")
	}
	if cfg.Etcd == nil {
		cfg.Etcd = cfg.Store.etcd
	}
	if cfg.Prefix == "" {
		cfg.Prefix = cfg.Store.keys.Prefix
	}
	if cfg.Prefix != cfg.Store.keys.Prefix {
		return nil, fmt.Errorf("drills: scheduler prefix %q differs from the store's %q", cfg.Prefix, cfg.Store.keys.Prefix)
	}
	if cfg.Late <= 0 {
		cfg.Late = 10 * time.Minute
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 15 * time.Second
	}
	if cfg.Lookback <= 0 {
		cfg.Lookback = 24 * time.Hour
	}
	cfg.Lookback = max(cfg.Lookback, cfg.Late+cfg.Tick)
	if cfg.Lookback >= recordTTL {
		return nil, fmt.Errorf("drills: Lookback %v must be shorter than the %v run records are kept", cfg.Lookback, recordTTL)
	}
	if cfg.VerifyWindow <= 0 {
		cfg.VerifyWindow = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	routes := routing.NewStore(cfg.Etcd, cfg.Prefix, cfg.Logger.Named("routing"))
	routes.Now = cfg.Now
	return &Scheduler{
		cfg: cfg, etcd: cfg.Etcd, keys: Keys{Prefix: cfg.Prefix}, outbox: audit.Keys{Prefix: cfg.Prefix},
		routes: routes, log: cfg.Logger, now: cfg.Now,
		running: map[string]bool{}, warned: map[string]int64{}, mine: map[string]time.Time{},
	}, nil
}

// Run calls Once at once and then every Tick until ctx ends, then waits
// for the drills it started. Those see ctx end too: a drill that has
// flipped cuts its hold short and flips back, and its run record is
// finished even though leadership is gone.
func (s *Scheduler) Run(ctx context.Context) {
	defer s.Wait()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		// A tick's etcd calls are bounded, so one hung call cannot stop
		// the scheduler; the drills it starts live on ctx instead.
		tctx, cancel := context.WithTimeout(ctx, max(s.cfg.Tick, 10*time.Second))
		if err := s.once(tctx, ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("drill scheduler: tick failed", zap.Error(err))
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Wait waits for the drills started by Once to finish and their run
// records to be written.
func (s *Scheduler) Wait() { s.drills.Wait() }

// Once looks at every schedule once: it starts the runs that are due
// (each on its own goroutine, living on ctx), records and announces runs
// found too late or skipped with /drill skip, and posts the announcements
// that are due. Errors of single schedules are joined; the other
// schedules are still handled.
func (s *Scheduler) Once(ctx context.Context) error { return s.once(ctx, ctx) }

func (s *Scheduler) once(ctx, drillCtx context.Context) error {
	select {
	case <-s.cfg.Owner.Done():
		// A replica whose liveness lease is gone is presumed dead by the
		// others; it must not start drills they cannot see it own.
		return errors.New("drill scheduler: the replica's lease is gone; not starting drills")
	default:
	}
	now := s.now()
	entries, err := s.cfg.Store.list(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	lastTick := s.lastTick
	s.mu.Unlock()
	var errs []error
	for _, e := range entries {
		if e.err != nil {
			s.warnMalformed(e)
			continue
		}
		if err := s.runs(ctx, drillCtx, now, lastTick, e); err != nil {
			errs = append(errs, fmt.Errorf("drills of %s: %w", e.route, err))
		}
		if err := s.announcements(ctx, now, e); err != nil {
			errs = append(errs, fmt.Errorf("announcements of %s: %w", e.route, err))
		}
	}
	s.mu.Lock()
	s.lastTick = now
	for k, at := range s.mine {
		if at.Before(now.Add(-s.cfg.Lookback - time.Hour)) {
			delete(s.mine, k)
		}
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

func (s *Scheduler) warnMalformed(e schedEntry) {
	s.mu.Lock()
	seen := s.warned[e.route] == e.rev
	s.warned[e.route] = e.rev
	s.mu.Unlock()
	if !seen {
		s.log.Warn("drill scheduler: schedule cannot be used; its drills do not run", zap.String("route", e.route), zap.Error(e.err))
	}
}

// lateRun is one run recorded as skipped in this tick, for the notice.
type lateRun struct {
	at     time.Time
	reason string
}

// runs handles the runs of one schedule that are due: in (now - Lookback,
// now], after the schedule was created, without a run record.
func (s *Scheduler) runs(ctx, drillCtx context.Context, now, lastTick time.Time, e schedEntry) error {
	from := now.Add(-s.cfg.Lookback)
	if e.sc.CreatedAt.After(from) {
		from = e.sc.CreatedAt
	}
	due := runsBetween(e.sched, from, now)
	if e.sc.Skip != 0 && e.sc.Skip < now.Add(-s.cfg.Lookback).Unix() {
		// A skip whose run is past the window will never be matched;
		// clearing it keeps /drill list honest.
		s.clearSkip(ctx, e)
	}
	if len(due) == 0 {
		return nil
	}
	resp, err := s.etcd.Get(ctx, s.keys.Runs(e.route), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("read run records: %w", err)
	}
	have := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		have[string(kv.Key)] = true
	}
	var late []lateRun
	var errs []error
	for _, t := range due {
		if have[s.keys.Run(e.route, t.Unix())] {
			continue
		}
		var err error
		switch {
		case e.sc.Skip == t.Unix():
			err = s.skipAsked(ctx, e, t)
		case now.Sub(t) > s.cfg.Late:
			reason := s.lateReason(e.route, t, now, lastTick)
			var ok bool
			if ok, err = s.recordSkipped(ctx, e, t, SchedulerActor, reason, nil); ok {
				late = append(late, lateRun{at: t, reason: reason})
			}
		default:
			err = s.start(ctx, drillCtx, e.route, t, now)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(late) > 0 {
		nctx, cancel := detached(ctx)
		s.announce(nctx, e.route, s.lateNotice(e, late, now))
		cancel()
	}
	return errors.Join(errs...)
}

// lateReason says why a run was not started in time, for the audit event
// and the notice.
func (s *Scheduler) lateReason(route string, t, now, lastTick time.Time) string {
	by := lateSpan(now.Sub(t))
	s.mu.Lock()
	busy := s.running[route]
	s.mu.Unlock()
	switch {
	case busy:
		return fmt.Sprintf("the previous drill of %s was still running %s after this one was due (a drill may start at most %s late)", route, by, schedSpan(s.cfg.Late))
	case lastTick.IsZero() || lastTick.Before(t):
		// This scheduler did not look at the schedules between the run's
		// time and now: no replica led, or the one that did could not
		// reach etcd.
		return fmt.Sprintf("backflip had no leader for %s (a drill may start at most %s late)", by, schedSpan(s.cfg.Late))
	default:
		return fmt.Sprintf("late by %s (a drill may start at most %s late)", by, schedSpan(s.cfg.Late))
	}
}

// lateNotice is the chat notice of runs recorded skipped for lateness.
func (s *Scheduler) lateNotice(e schedEntry, late []lateRun, now time.Time) string {
	var b strings.Builder
	if len(late) == 1 {
		fmt.Fprintf(&b, "The drill of %s due at %s was skipped: %s.", e.route, runClock(late[0].at), late[0].reason)
	} else {
		times := make([]string, len(late))
		for i, l := range late {
			times[i] = runClock(l.at)
		}
		fmt.Fprintf(&b, "%d drills of %s (due at %s) were skipped: %s.", len(late), e.route, strings.Join(times, ", "), late[len(late)-1].reason)
	}
	b.WriteString(" " + s.nextText(e, now))
	return b.String()
}

// nextText says when the next drill of a schedule is.
func (s *Scheduler) nextText(e schedEntry, now time.Time) string {
	for _, t := range NextRuns(e.sched, now, 2) {
		if t.Unix() == e.sc.Skip {
			continue
		}
		return fmt.Sprintf("The next is at %s (in %s).", runClock(t), schedSpan(t.Sub(now)))
	}
	return "There is no next one."
}

// skipAsked records a run skipped with /drill skip and clears the skip,
// in one transaction guarded on the schedule's revision.
func (s *Scheduler) skipAsked(ctx context.Context, e schedEntry, t time.Time) error {
	by := e.sc.SkippedBy
	if by == "" {
		// A skip stored before skipped_by was recorded.
		by = SchedulerActor
	}
	reason := fmt.Sprintf("skipped with /drill skip by %s (the schedule was created by %s)", by, e.sc.CreatedBy)
	cleared := e.sc
	cleared.Skip, cleared.SkippedBy = 0, ""
	val, err := json.Marshal(cleared)
	if err != nil {
		return err
	}
	skey := s.keys.Schedule(e.route)
	guard := &txnExtra{
		cmps: []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(skey), "=", e.rev)},
		ops:  []clientv3.Op{clientv3.OpPut(skey, string(val))},
	}
	ok, err := s.recordSkipped(ctx, e, t, by, reason, guard)
	if err != nil || !ok {
		return err
	}
	nctx, cancel := detached(ctx)
	defer cancel()
	s.announce(nctx, e.route, fmt.Sprintf("The drill of %s due at %s was skipped, as %s asked with /drill skip. %s", e.route, runClock(t), by, s.nextText(e, s.now())))
	return nil
}

// txnExtra are compares and writes to add to a run record's creation.
type txnExtra struct {
	cmps []clientv3.Cmp
	ops  []clientv3.Op
}

// recordSkipped creates the run record of t in state skipped with its
// drill.skipped audit event, in one transaction that succeeds only if no
// record exists (and extra's compares hold). actor is who the event names:
// the person who asked for the skip, or the scheduler for a late run. ok
// is false when another scheduler got there first.
func (s *Scheduler) recordSkipped(ctx context.Context, e schedEntry, t time.Time, actor, reason string, extra *txnExtra) (bool, error) {
	now := s.now().UTC()
	rec := RunRecord{
		Route: e.route, Scheduled: t.UTC(), State: RunSkipped, Owner: leaseHex(s.cfg.Owner.Lease()),
		FinishedAt: now, Detail: commands.Clip(reason, 1000),
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	ev := audit.Event{
		EventID: uuid.New(), OpID: uuid.New(), Kind: audit.KindDrillSkipped, Route: e.route,
		Actor: actor, Channel: s.cfg.AnnounceChannel, Reason: commands.Clip(reason, 1000), Outcome: RunSkipped,
		SchemaVersion: audit.SchemaVersion, OccurredAt: now,
	}
	ev.Details, _ = json.Marshal(map[string]any{
		"scheduled": t.Format(time.RFC3339), "cron": e.sc.Cron, "created_by": e.sc.CreatedBy,
		"late_ms": now.Sub(t).Milliseconds(),
	})
	put, err := audit.OutboxOp(s.outbox, 0, ev)
	if err != nil {
		return false, err
	}
	key := s.keys.Run(e.route, t.Unix())
	if extra == nil {
		extra = &txnExtra{}
	}
	extra.ops = append(extra.ops, put)
	created, _, err := s.create(ctx, key, t, val, extra)
	if err != nil {
		return false, fmt.Errorf("record the skipped run at %s: %w", t.Format(time.RFC3339), err)
	}
	if created {
		s.log.Info("drill skipped", zap.String("route", e.route), zap.Time("scheduled", t), zap.String("reason", reason))
	}
	return created, nil
}

// create puts val at key, leased for recordTTL, if the key does not exist
// and extra's compares hold, together with extra's writes, in one
// transaction. It reports whether this call created the key, and at which
// revision. at is the run time the record is for.
//
// The transaction runs on a context detached from ctx's cancellation
// (bounded by its own timeout) once ctx is still live at the start: what
// follows a creation — an announcement, a skip notice — must not be lost
// to a leadership change in between, and the CreateRevision guard keeps
// it at most once whoever finishes it. After an error the key is re-read,
// because the write may have landed with its reply lost: a value equal to
// val names this replica's lease, so it is this scheduler's, and unless
// this scheduler has already acted on the key it is this call's.
func (s *Scheduler) create(ctx context.Context, key string, at time.Time, val []byte, extra *txnExtra) (bool, int64, error) {
	if err := ctx.Err(); err != nil {
		return false, 0, err
	}
	s.mu.Lock()
	_, done := s.mine[key]
	s.mu.Unlock()
	if done {
		return false, 0, nil
	}
	wctx, cancel := detached(ctx)
	defer cancel()
	lease, err := s.recordLease(wctx)
	if err != nil {
		return false, 0, err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	ops := []clientv3.Op{clientv3.OpPut(key, string(val), clientv3.WithLease(lease))}
	if extra != nil {
		cmps = append(cmps, extra.cmps...)
		ops = append(ops, extra.ops...)
	}
	resp, err := s.etcd.Txn(wctx).If(cmps...).Then(ops...).Commit()
	if err == nil {
		if resp.Succeeded {
			s.markMine(key, at)
		}
		return resp.Succeeded, resp.Header.Revision, nil
	}
	s.forgetLease(err)
	rctx, rcancel := detached(ctx)
	defer rcancel()
	if g, gerr := s.etcd.Get(rctx, key); gerr == nil && len(g.Kvs) == 1 && string(g.Kvs[0].Value) == string(val) {
		s.markMine(key, at)
		return true, g.Kvs[0].ModRevision, nil
	}
	return false, 0, err
}

func (s *Scheduler) markMine(key string, at time.Time) {
	s.mu.Lock()
	s.mine[key] = at
	s.mu.Unlock()
}

// detached returns a context that keeps ctx's values but not its
// cancellation, bounded by writeTimeout.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
}

// clearSkip removes a skip whose run is long past, guarded on the
// schedule's revision; failing is harmless (the next tick tries again).
func (s *Scheduler) clearSkip(ctx context.Context, e schedEntry) {
	sc := e.sc
	sc.Skip, sc.SkippedBy = 0, ""
	val, err := json.Marshal(sc)
	if err != nil {
		return
	}
	key := s.keys.Schedule(e.route)
	if _, err := s.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", e.rev)).Then(clientv3.OpPut(key, string(val))).Commit(); err != nil {
		s.log.Debug("drill scheduler: clearing a past skip failed", zap.String("route", e.route), zap.Error(err))
	}
}

// start claims the run of route at t and, if this scheduler created its
// record, runs it on its own goroutine. A route with a drill of this
// scheduler still running is left for a later tick (and recorded skipped
// once it is too late).
func (s *Scheduler) start(ctx, drillCtx context.Context, route string, t, now time.Time) error {
	s.mu.Lock()
	if s.running[route] {
		s.mu.Unlock()
		s.log.Info("drill scheduler: a drill of the route is still running; the next waits", zap.String("route", route), zap.Time("scheduled", t))
		return nil
	}
	s.running[route] = true
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		delete(s.running, route)
		s.mu.Unlock()
	}

	rec := RunRecord{Route: route, Scheduled: t.UTC(), State: RunStarted, Owner: leaseHex(s.cfg.Owner.Lease()), StartedAt: now.UTC()}
	val, err := json.Marshal(rec)
	if err != nil {
		release()
		return err
	}
	key := s.keys.Run(route, t.Unix())
	created, rev, err := s.create(ctx, key, t, val, nil)
	if err != nil {
		// The claim did not land (create re-read it): no one runs this
		// drill yet, and the next tick claims it again.
		release()
		return fmt.Errorf("claim the run at %s: %w", t.Format(time.RFC3339), err)
	}
	if !created {
		release()
		return nil
	}
	s.drills.Go(func() {
		defer release()
		if drillCtx.Err() != nil {
			// Leadership ended while the claim was being written: give
			// the run back, so the next leader starts it instead of
			// nobody.
			s.unclaim(drillCtx, key, rev)
			return
		}
		s.log.Info("drill starting", zap.String("route", route), zap.Time("scheduled", t), zap.Int64("rev", rev))
		runErr := s.cfg.Run(drillCtx, route, t)
		s.finish(key, rev, rec, runErr)
	})
	return nil
}

// unclaim deletes a run record this scheduler created but will not run,
// guarded on its revision.
func (s *Scheduler) unclaim(ctx context.Context, key string, rev int64) {
	wctx, cancel := detached(ctx)
	defer cancel()
	resp, err := s.etcd.Txn(wctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil || !resp.Succeeded {
		s.log.Error("drill run claimed but not started, and the claim could not be given back; the run is lost", zap.String("key", key), zap.Error(err))
		return
	}
	s.mu.Lock()
	delete(s.mine, key)
	s.mu.Unlock()
	s.log.Info("drill run given back: leadership ended before it started", zap.String("key", key))
}

// finish writes the run record's final state, guarded on the revision the
// scheduler created it at. It runs after the drill whatever happened to
// the scheduler's context, retrying for a while when etcd fails, and
// re-reading after an error because the write may have landed.
func (s *Scheduler) finish(key string, rev int64, rec RunRecord, runErr error) {
	rec.FinishedAt = s.now().UTC()
	switch commands.ErrorCode(runErr) {
	case "":
		rec.State = RunCompleted
	case commands.EREFUSED, commands.EINVALID, commands.ENOTFOUND:
		rec.State = RunRefused
		rec.Detail = commands.Clip(commands.ErrorMessage(runErr), 1000)
	default:
		rec.State = RunFailed
		rec.Detail = commands.Clip(runErr.Error(), 1000)
	}
	val, err := json.Marshal(rec)
	if err != nil {
		s.log.Error("drill run record not finished", zap.String("key", key), zap.Error(err))
		return
	}
	deadline := time.Now().Add(time.Minute)
	wait := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := s.etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(val), clientv3.WithIgnoreLease())).
			Else(clientv3.OpGet(key)).
			Commit()
		cancel()
		if err == nil {
			switch {
			case resp.Succeeded:
			case landed(resp, val):
				// An earlier attempt landed and only its reply was lost.
			default:
				s.log.Warn("drill run record changed by someone else; not overwritten", zap.String("key", key), zap.String("state", rec.State))
			}
			s.log.Info("drill finished", zap.String("key", key), zap.String("state", rec.State), zap.Error(runErr))
			return
		}
		if time.Now().Add(wait).After(deadline) {
			s.log.Error("drill run record not finished: etcd failed", zap.String("key", key), zap.String("state", rec.State), zap.Error(err))
			return
		}
		time.Sleep(wait)
		wait = min(2*wait, 2*time.Second)
	}
}

// landed reports whether the Else branch of a failed guarded put read the
// very value the put would have written.
func landed(resp *clientv3.TxnResponse, val []byte) bool {
	if len(resp.Responses) != 1 {
		return false
	}
	r := resp.Responses[0].GetResponseRange()
	return r != nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == string(val)
}

// announcement is the value of drills/announcements/<route>/<unix>-<offset>.
type announcement struct {
	Route     string    `json:"route"`
	Scheduled time.Time `json:"scheduled"`
	Offset    string    `json:"offset"`
	At        time.Time `json:"at"`
	Owner     string    `json:"owner"`
}

// announcements posts the announcements of one schedule that are due: for
// each offset d and run T, when now is in [T-d, T-d+Late). A run skipped
// with /drill skip is not announced.
func (s *Scheduler) announcements(ctx context.Context, now time.Time, e schedEntry) error {
	var errs []error
	for _, d := range e.offsets {
		// T-d <= now < T-d+Late  ⇔  now+d-Late < T <= now+d.
		for _, t := range runsBetween(e.sched, now.Add(d-s.cfg.Late), now.Add(d)) {
			if t.Unix() == e.sc.Skip || !t.After(now) {
				continue
			}
			if err := s.announceRun(ctx, e, t, d, now); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// announceKey is the key of the announcement of the run at t, d ahead.
func (s *Scheduler) announceKey(route string, t time.Time, d time.Duration) string {
	return s.keys.Announcements(route) + strconv.FormatInt(t.Unix(), 10) + "-" + d.String()
}

// announceRun creates the announcement record (CreateRevision == 0) and,
// if this scheduler created it, posts the announcement. The record comes
// first so a leader change never announces twice; an announcement lost
// between the two is logged.
func (s *Scheduler) announceRun(ctx context.Context, e schedEntry, t time.Time, d time.Duration, now time.Time) error {
	key := s.announceKey(e.route, t, d)
	val, err := json.Marshal(announcement{Route: e.route, Scheduled: t.UTC(), Offset: d.String(), At: now.UTC(), Owner: leaseHex(s.cfg.Owner.Lease())})
	if err != nil {
		return err
	}
	created, _, err := s.create(ctx, key, t, val, nil)
	if err != nil {
		return fmt.Errorf("record the announcement of %s: %w", t.Format(time.RFC3339), err)
	}
	if !created {
		return nil
	}
	nctx, cancel := detached(ctx)
	defer cancel()
	s.announce(nctx, e.route, s.announceText(nctx, e, t, now))
	return nil
}

// announceText says what will happen, what it does to traffic, and how
// to postpone it.
func (s *Scheduler) announceText(ctx context.Context, e schedEntry, t, now time.Time) string {
	r := e.route
	when := fmt.Sprintf("%s (in %s)", runClock(t), schedSpan(t.Sub(now)))
	hold := schedSpan(s.cfg.VerifyWindow)
	postpone := fmt.Sprintf("To postpone it: /drill skip %s (cancel the schedule: /drill cancel %s).", r, r)
	entry, err := s.routes.Get(ctx, r)
	switch {
	case errors.Is(err, routing.ErrNotFound):
		return fmt.Sprintf("Drill scheduled at %s: a real rollback of %s, but %s does not exist now; the drill will be refused unless it does by then. %s", when, r, r, postpone)
	case err != nil:
		return fmt.Sprintf("Drill at %s: a real rollback of %s to its previous version, held %s, then flipped back. Impact: in-flight requests on %s are aborted and re-issued twice (at the rollback and at the return). %s", when, r, hold, r, postpone)
	case entry.Config.Previous == "":
		return fmt.Sprintf("Drill scheduled at %s: a real rollback of %s, but %s has no previous version now (active %s); the drill will be refused unless it has one by then. %s", when, r, r, entry.Config.Active, postpone)
	}
	c := entry.Config
	return fmt.Sprintf("Drill at %s: a real rollback of %s from %s to %s, held %s, then flipped back to %s. Impact: in-flight requests on %s are aborted and re-issued twice (at the rollback and at the return). %s",
		when, r, c.Active, c.Previous, hold, c.Active, r, postpone)
}

// announce posts text in the announce channel, or logs it without an
// Announcer. A failed post is logged: the record that prevents a second
// announcement already exists, so it is not retried.
func (s *Scheduler) announce(ctx context.Context, route, text string) {
	if s.cfg.Announcer == nil {
		s.log.Info("drill announcement (no announcer)", zap.String("route", route), zap.String("text", text))
		return
	}
	if err := s.cfg.Announcer.Announce(ctx, s.cfg.AnnounceChannel, text); err != nil {
		s.log.Warn("drill announcement not posted", zap.String("route", route), zap.String("channel", s.cfg.AnnounceChannel), zap.String("text", text), zap.Error(err))
	}
}

// recordLease returns the lease of run and announcement records, granting
// a new one at most once an hour so a record costs no extra round trip
// (records then live between 7 days and 7 days + 1 hour).
func (s *Scheduler) recordLease(ctx context.Context) (clientv3.LeaseID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease != 0 && time.Since(s.leaseAt) < time.Hour {
		return s.lease, nil
	}
	resp, err := s.etcd.Grant(ctx, int64(recordTTL/time.Second))
	if err != nil {
		return 0, fmt.Errorf("grant the drill records' lease: %w", err)
	}
	s.lease, s.leaseAt = resp.ID, time.Now()
	return resp.ID, nil
}

// forgetLease drops the record lease when etcd no longer knows it (a
// restored or replaced cluster), so the next tick grants a new one.
func (s *Scheduler) forgetLease(err error) {
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		s.mu.Lock()
		s.lease = 0
		s.mu.Unlock()
	}
}

// leaseHex is how records name a replica's lease, as commands does.
func leaseHex(id clientv3.LeaseID) string { return strconv.FormatInt(int64(id), 16) }

// schedSpan renders a duration for chat, to the minute above a minute:
// "30s", "14 min", "2 h", "1 h 30 min", "3 days".
func schedSpan(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Round(time.Minute)/time.Minute))
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 {
			return fmt.Sprintf("%d h", h)
		}
		return fmt.Sprintf("%d h %d min", h, m)
	default:
		return fmt.Sprintf("%d days", int(d.Round(time.Hour)/(24*time.Hour)))
	}
}

// lateSpan renders how late a run is: like schedSpan, but to the second
// under an hour, so "11 min" never reads as a rounding of "10 min 30s"
// next to a limit of 10 min.
func lateSpan(d time.Duration) string {
	d = d.Round(time.Second)
	if d < time.Minute || d >= time.Hour || d%time.Minute == 0 {
		return schedSpan(d)
	}
	return fmt.Sprintf("%d min %ds", int(d/time.Minute), int(d%time.Minute/time.Second))
}
