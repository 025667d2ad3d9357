package routing

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/internal/strictjson"
)

// Watchable is the part of the etcd client WaitConverged needs: it reads the
// router registrations and watches them change.
type Watchable interface {
	clientv3.KV
	clientv3.Watcher
}

var _ Watchable = (*clientv3.Client)(nil)

// Convergence is what the routers registered before a flip reported.
type Convergence struct {
	// Expected lists the router ids registered at the flip's revision − 1
	// (sorted); the other lists are a partition of it.
	Expected []string
	// Converged lists the routers that reported observed[route] >= epoch in time.
	Converged []string
	// Lost lists the routers whose registration was deleted (lease expired,
	// router stopped) before they reported.
	Lost []string
	// Pending lists the routers still registered that had not reported when
	// the wait ended.
	Pending []string
	// Malformed lists the routers registered with a value that could not be
	// decoded (or names another id) when the wait ended. They were waited
	// for by id all the same: a later valid value counts normally.
	Malformed []string
	// Last is when the last convergence was observed (zero if none).
	Last time.Time
	// ReadRev is the revision the registrations were read at.
	ReadRev int64
	// Compacted is true when the flip's revision − 1 was compacted, so the
	// registrations were read at the current revision instead.
	Compacted bool
}

// maxRouterRecordLen bounds a registration before it is decoded. It is far
// above what a router with thousands of routes writes and still keeps one
// hostile value from costing the wait more than a moment.
const maxRouterRecordLen = 1 << 20

// WaitConverged waits until the routers registered before a flip have applied
// it: until every router registered at <prefix>/routers/ at revision
// flipRev−1 has reported observed[route] >= epoch, or has lost its
// registration, or until timeout has passed.
//
// The set of expected routers is fixed by the read at flipRev−1: routers
// that register after the flip are not waited for (they read the new config
// when they start), and routers that vanish are reported as Lost rather than
// silently dropped. If that revision has been compacted, the registrations
// are read at the current revision instead and Compacted is set. A router
// that has converged stays converged even if it vanishes later; a router
// that lost its registration and registers again before the wait ends is
// waited for again.
//
// The registrations are watched from the current revision, not replayed
// from flipRev: etcd serves a watch that starts in the past from a sync loop
// that runs every 100 ms, which would add up to 100 ms to every convergence
// measured. So a watch from now is created first and the registrations are
// read after it (at flipRev−1 and at the current revision, in one round
// trip); events the read covers are skipped. A router registered at flipRev−1
// but gone at that read may have reported before it went: only for such
// routers is the history since flipRev replayed (a second watch from the
// past), and they count as lost only once it shows their deletion without a
// report before it. When a watch fails (compaction, lost leader, a broken
// stream) the same is done again: a new watch, a read at the latest
// revision, and nothing already learnt is lost.
//
// The timeout bounds the whole call, the reads included, and reaching it is
// not an error: Pending and Malformed say who did not answer. The error is
// non-nil when the arguments are invalid, when the registrations could not
// be read at all, or when ctx ended first; in the last case the Convergence
// still holds what was known.
func WaitConverged(ctx context.Context, c Watchable, prefix, route string, epoch, flipRev int64, timeout time.Duration) (Convergence, error) {
	if err := ValidateRoute(route); err != nil {
		return Convergence{}, err
	}
	switch {
	case epoch < 1:
		return Convergence{}, fmt.Errorf("%w: epoch %d must be at least 1", ErrInvalid, epoch)
	case flipRev < 2:
		// Revision 1 is an empty keyspace: no flip can have it.
		return Convergence{}, fmt.Errorf("%w: flip revision %d must be at least 2", ErrInvalid, flipRev)
	case timeout <= 0:
		return Convergence{}, fmt.Errorf("%w: convergence timeout %s must be positive", ErrInvalid, timeout)
	}
	// One deadline covers the reads as well as the watches, so an etcd that
	// does not answer cannot hold the operation past the timeout either.
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	w := &convergeWait{c: c, routers: Keyspace{Prefix: prefix}.Routers(), route: route, epoch: epoch}
	defer w.stopGap()
	// A watch that cannot be created now is not fatal: follow creates one,
	// and reads again, once the expected set is known.
	live, _ := w.subscribe(wctx)
	if err := w.readExpected(wctx, flipRev, live != nil); err != nil {
		if live != nil {
			live.cancel()
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return Convergence{}, fmt.Errorf("wait for routers on %s: read registrations at revision %d: %w", route, flipRev-1, err)
	}
	w.follow(wctx, live)
	if !w.complete() && ctx.Err() != nil {
		return w.result(), fmt.Errorf("wait for routers on %s to apply epoch %d: %w", route, epoch, ctx.Err())
	}
	return w.result(), nil
}

// routerState is what is known of one expected router.
type routerState uint8

const (
	statePending routerState = iota
	stateConverged
	stateLost
	stateMalformed
	// stateVanished: not registered at the last read, which came after a
	// stretch of history no watch delivered; whether it reported before it
	// went is being looked up in that history.
	stateVanished
)

// final reports whether the wait no longer needs to hear about the router.
func (s routerState) final() bool { return s == stateConverged || s == stateLost }

// convergeWait is the state of one WaitConverged call. It is used by one
// goroutine only.
type convergeWait struct {
	c       Watchable
	routers string // <prefix>/routers/
	route   string
	epoch   int64

	ids    []string       // expected router ids, sorted
	index  map[string]int // id → position in ids, states and seen
	states []routerState
	// seen is, per router, a revision at which it was last known to be
	// registered: a deletion in the history matters only after it.
	seen []int64
	done int // routers in a final state

	last      time.Time
	readRev   int64
	compacted bool
	// knownRev is the revision of the latest read: live events at or below
	// it are counted already.
	knownRev int64
	// liveRev is the revision up to which every event is counted, by a read
	// or by the live watch.
	liveRev int64
	gap     *gapCheck
	// rec is reused across decodes so that its map is too.
	rec RouterRecord
}

// subscription is a watch of the registrations.
type subscription struct {
	ch     clientv3.WatchChan
	cancel context.CancelFunc
}

// gapCheck replays history for the vanished routers up to the read that
// found them gone.
type gapCheck struct {
	subscription
	to int64
}

// watchFrom watches the registrations from rev (0: from the next revision).
func (w *convergeWait) watchFrom(ctx context.Context, rev int64, opts ...clientv3.OpOption) subscription {
	// WithRequireLeader ends the watch when its member loses the leader, so
	// the wait reads again from a member that has one instead of hearing
	// nothing until the timeout.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	opts = append(opts, clientv3.WithPrefix())
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	return subscription{ch: w.c.Watch(wctx, w.routers, opts...), cancel: cancel}
}

// subscribe creates a watch of the registrations from the next revision and
// waits until etcd has created it, so that a read made afterwards leaves no
// gap between what it saw and what the watch delivers.
func (w *convergeWait) subscribe(ctx context.Context) (*subscription, error) {
	s := w.watchFrom(ctx, 0, clientv3.WithCreatedNotify())
	select {
	case resp, ok := <-s.ch:
		switch {
		case !ok:
			s.cancel()
			return nil, errors.New("watch closed before it was created")
		case resp.Err() != nil:
			s.cancel()
			return nil, resp.Err()
		case !resp.Created:
			s.cancel()
			return nil, errors.New("watch answered before it was created")
		}
		return &s, nil
	case <-ctx.Done():
		s.cancel()
		return nil, ctx.Err()
	}
}

// idOf returns the router id of a registration key, or false when the key
// is not a router's (the prefix itself).
func (w *convergeWait) idOf(key []byte) ([]byte, bool) {
	if len(key) <= len(w.routers) || string(key[:len(w.routers)]) != w.routers {
		return nil, false
	}
	return key[len(w.routers):], true
}

// lookup returns the position of an expected router's key. Converting the
// id in the map index does not allocate.
func (w *convergeWait) lookup(key []byte) (int, bool) {
	id, ok := w.idOf(key)
	if !ok {
		return 0, false
	}
	i, ok := w.index[string(id)]
	return i, ok
}

// readExpected fixes the expected set from the registrations at flipRev−1,
// or at the current revision when that one is compacted. When the live
// watch is open it also reads the current registrations, in the same
// transaction, so the watch can take over from there.
func (w *convergeWait) readExpected(ctx context.Context, flipRev int64, current bool) error {
	w.readRev = flipRev - 1
	ops := []clientv3.Op{clientv3.OpGet(w.routers, clientv3.WithPrefix(), clientv3.WithRev(w.readRev))}
	if current {
		ops = append(ops, clientv3.OpGet(w.routers, clientv3.WithPrefix()))
	}
	resp, err := w.c.Txn(ctx).Then(ops...).Commit()
	if errors.Is(err, rpctypes.ErrCompacted) {
		w.compacted = true
		g, gerr := w.c.Get(ctx, w.routers, clientv3.WithPrefix())
		if gerr != nil {
			return gerr
		}
		w.readRev = g.Header.Revision
		w.expect(g.Kvs)
		w.knownRev, w.liveRev = w.readRev, w.readRev
		return nil
	}
	if err != nil {
		return err
	}
	w.expect(resp.Responses[0].GetResponseRange().Kvs)
	// The header carries the current revision whatever revision a range
	// asked for: without the current read, the states are known only at
	// readRev.
	w.knownRev, w.liveRev = w.readRev, w.readRev
	if current {
		w.sync(ctx, resp.Responses[1].GetResponseRange().Kvs, resp.Header.Revision)
	}
	return nil
}

// expect fixes the expected set from the registrations read at readRev and
// applies their values.
func (w *convergeWait) expect(kvs []*mvccpb.KeyValue) {
	for _, kv := range kvs {
		if id, ok := w.idOf(kv.Key); ok {
			w.ids = append(w.ids, string(id))
		}
	}
	sort.Strings(w.ids)
	w.index = make(map[string]int, len(w.ids))
	for i, id := range w.ids {
		w.index[id] = i
	}
	w.states = make([]routerState, len(w.ids))
	w.seen = make([]int64, len(w.ids))
	for _, kv := range kvs {
		if i, ok := w.lookup(kv.Key); ok {
			w.seen[i] = w.readRev
			w.put(i, kv.Value)
		}
	}
}

// sync applies every registration read at rev. A router present counts by
// its value. An expected router absent that has neither converged nor been
// seen to go has vanished in history no watch delivered: the gap check
// looks it up there.
func (w *convergeWait) sync(ctx context.Context, kvs []*mvccpb.KeyValue, rev int64) {
	present := make([]bool, len(w.ids))
	for _, kv := range kvs {
		if i, ok := w.lookup(kv.Key); ok {
			present[i] = true
			w.seen[i] = rev
			w.put(i, kv.Value)
		}
	}
	vanished := false
	for i, p := range present {
		if !p && !w.states[i].final() {
			w.set(i, stateVanished)
			vanished = true
		}
	}
	w.knownRev, w.liveRev = rev, rev
	w.stopGap()
	if vanished {
		w.startGap(ctx, rev)
	}
}

// startGap replays the history of the vanished routers from the earliest
// revision one of them was last seen at, up to the read at rev that found
// them gone.
func (w *convergeWait) startGap(ctx context.Context, rev int64) {
	from := rev
	for i, s := range w.states {
		if s == stateVanished {
			from = min(from, w.seen[i])
		}
	}
	w.gap = &gapCheck{subscription: w.watchFrom(ctx, from+1), to: rev}
}

func (w *convergeWait) stopGap() {
	if w.gap != nil {
		w.gap.cancel()
		w.gap = nil
	}
}

// endGap settles the routers the history could not: without a report in
// it, a router that has gone is lost.
func (w *convergeWait) endGap() {
	for i, s := range w.states {
		if s == stateVanished {
			w.set(i, stateLost)
		}
	}
	w.stopGap()
}

// follow consumes the watches until every expected router is in a final
// state or ctx ends. Whenever the live watch fails it opens a new one and
// reads the registrations again.
func (w *convergeWait) follow(ctx context.Context, live *subscription) {
	defer func() {
		if live != nil {
			live.cancel()
		}
	}()
	const minBackoff, maxBackoff = 20 * time.Millisecond, time.Second
	backoff := minBackoff
	for !w.complete() && ctx.Err() == nil {
		if live == nil {
			// A watch that fails at once again and again (no leader, a
			// refused stream) must not spin: pause before the next one.
			if !sleep(ctx, jitter(backoff)) {
				return
			}
			backoff = min(backoff*2, maxBackoff)
			live = w.resync(ctx)
			continue
		}
		var gap clientv3.WatchChan // nil, which blocks, when no gap check runs
		if w.gap != nil {
			gap = w.gap.ch
		}
		select {
		case <-ctx.Done():
			return
		case resp, ok := <-live.ch:
			if !ok || resp.Err() != nil {
				live.cancel()
				live = nil
				continue
			}
			backoff = minBackoff
			w.applyLive(resp)
		case resp, ok := <-gap:
			if !ok || resp.Err() != nil {
				// The history is not available (compacted, say): what
				// is gone without a known report is lost.
				w.endGap()
				continue
			}
			w.applyGap(resp)
		}
	}
}

// resync opens a new live watch and reads the registrations after it. It
// returns nil when either fails.
func (w *convergeWait) resync(ctx context.Context) *subscription {
	live, err := w.subscribe(ctx)
	if err != nil {
		return nil
	}
	resp, err := w.c.Get(ctx, w.routers, clientv3.WithPrefix())
	if err != nil {
		live.cancel()
		return nil
	}
	w.sync(ctx, resp.Kvs, resp.Header.Revision)
	return live
}

// applyLive applies one response of the live watch.
func (w *convergeWait) applyLive(resp clientv3.WatchResponse) {
	for _, ev := range resp.Events {
		if ev.Kv.ModRevision <= w.knownRev {
			continue // the read after the watch was created saw it
		}
		i, ok := w.lookup(ev.Kv.Key)
		if !ok || w.states[i] == stateConverged {
			continue
		}
		if ev.Type == clientv3.EventTypeDelete {
			w.set(i, stateLost)
			continue
		}
		w.seen[i] = ev.Kv.ModRevision
		w.put(i, ev.Kv.Value)
	}
	w.liveRev = max(w.liveRev, resp.Header.Revision)
}

// applyGap applies one response of the history replay. Only vanished
// routers are concerned: a report before their first deletion since they
// were last seen makes them converged, that deletion without one lost.
func (w *convergeWait) applyGap(resp clientv3.WatchResponse) {
	for _, ev := range resp.Events {
		if ev.Kv.ModRevision > w.gap.to {
			// Events come in revision order: the history up to the read
			// has been delivered.
			w.endGap()
			return
		}
		i, ok := w.lookup(ev.Kv.Key)
		if !ok || w.states[i] != stateVanished || ev.Kv.ModRevision <= w.seen[i] {
			continue
		}
		if ev.Type == clientv3.EventTypeDelete {
			w.set(i, stateLost)
		} else if w.decode(w.ids[i], ev.Kv.Value) == stateConverged {
			w.set(i, stateConverged)
		}
	}
	for _, s := range w.states {
		if s == stateVanished {
			return
		}
	}
	w.stopGap()
}

// put applies a registration's value to router i unless it has converged.
// The decoder's are the only allocations on this path.
func (w *convergeWait) put(i int, value []byte) {
	if w.states[i] != stateConverged {
		w.set(i, w.decode(w.ids[i], value))
	}
}

// decode judges one registration value of router id.
func (w *convergeWait) decode(id string, value []byte) routerState {
	if len(value) > maxRouterRecordLen {
		return stateMalformed
	}
	w.rec.ID = ""
	clear(w.rec.Observed)
	if err := strictjson.Decode(value, &w.rec); err != nil || w.rec.ID != id {
		return stateMalformed
	}
	if w.rec.Observed[w.route] >= w.epoch {
		return stateConverged
	}
	return statePending
}

func (w *convergeWait) set(i int, s routerState) {
	old := w.states[i]
	if old == s {
		return
	}
	if old.final() {
		w.done--
	}
	if s.final() {
		w.done++
	}
	w.states[i] = s
	if s == stateConverged {
		w.last = time.Now()
	}
}

func (w *convergeWait) complete() bool { return w.done == len(w.ids) }

// result reports the states. A router still vanished when the wait ends is
// reported lost: it is not registered, and no report of it was found.
func (w *convergeWait) result() Convergence {
	out := Convergence{Expected: w.ids, Last: w.last, ReadRev: w.readRev, Compacted: w.compacted}
	for i, id := range w.ids {
		switch w.states[i] {
		case stateConverged:
			out.Converged = append(out.Converged, id)
		case stateLost, stateVanished:
			out.Lost = append(out.Lost, id)
		case stateMalformed:
			out.Malformed = append(out.Malformed, id)
		default:
			out.Pending = append(out.Pending, id)
		}
	}
	return out
}
