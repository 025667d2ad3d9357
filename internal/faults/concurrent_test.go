package faults

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// TestConcurrentRollbacksAndPromotions is scenario 7: many rollbacks and
// promotions of the same routes at once, from several operators on two
// replicas, each guarded by the revision its operator read (or none:
// --now), aimed at the default target, an explicit version or a
// promotion. Exactly the requests whose guard held at their flip may
// change a route, one at a time; every other one is told why not in
// terms that held when it was decided.
func TestConcurrentRollbacksAndPromotions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	replicas := []*replica{e.replica("bot-1", replicaOpts{}), e.replica("bot-2", replicaOpts{})}
	e.runRecovery(replicas[0])
	e.startShipper(nil)
	operators := 8
	seed := uint64(7)
	// More waves if none changed a route (on a heavily loaded machine
	// every request of a wave can fail): the scenario must show a race
	// being won.
	for wave := 0; wave < e.sz.waves || (e.changed() == 0 && wave < e.sz.waves+5); wave++ {
		// Everyone looks first, then everyone acts at once.
		ops := make([]*operator, operators)
		var wg sync.WaitGroup
		for i := range ops {
			ops[i] = e.operator(i, replicas[i%len(replicas)], seed+uint64(wave))
			wg.Go(func() {
				for _, s := range e.specs {
					if c := e.read(ops[i].r, i, s.Route); c.Err == nil {
						ops[i].seen[s.Route] = c
					}
				}
			})
		}
		e.waitCalls(&wg)
		start := make(chan struct{})
		rng := rand.New(rand.NewPCG(seed, uint64(wave)))
		for n := range e.sz.concurrent {
			o := ops[n%operators]
			route := e.specs[rng.IntN(len(e.specs))].Route
			kind, to := pickChange(rng, e.versions(route))
			var rev, ep int64
			if seen := o.seen[route]; seen != nil && rng.IntN(4) > 0 {
				rev, ep = seen.ReadRev, seen.Read.Epoch
			}
			wg.Go(func() {
				<-start
				e.change(o.r, o.i, kind, route, to, rev, ep, nil)
			})
		}
		close(start)
		e.waitCalls(&wg)
	}
	e.settle()
	e.check()
	won := e.changed()
	if won == 0 {
		t.Errorf("no request changed a route: the scenario proves nothing")
	}
	t.Logf("%d concurrent requests a wave: %d changed a route", e.sz.concurrent, won)
}

// changed counts the calls that were answered with a change so far.
func (e *env) changed() int {
	n := 0
	for _, c := range e.hist.all() {
		if c.answered && c.Err == nil && c.Res != nil && c.Res.Revision != 0 {
			n++
		}
	}
	return n
}

// pickChange picks a rollback (default target or a named version) or a
// promotion.
func pickChange(rng *rand.Rand, versions []string) (callKind, string) {
	switch rng.IntN(3) {
	case 0:
		return kindRollback, ""
	case 1:
		return kindRollback, versions[rng.IntN(len(versions))]
	}
	return kindPromote, versions[rng.IntN(len(versions))]
}
