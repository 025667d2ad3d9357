package simfleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
)

const (
	// maxRPS bounds Traffic.RPS: beyond it the generator's ticker is finer
	// than the scheduler on a small machine.
	maxRPS = 10000
	// maxInFlightPerRuntime bounds the requests of one runtime: when they
	// pile up (a stalled machine), new ones are skipped rather than adding
	// goroutines without end.
	maxInFlightPerRuntime = 4096
	// Defaults of Traffic.
	defaultSteps     = 5
	defaultStepDelay = 10 * time.Millisecond
	// runtimeRefresh is Config.RuntimeRefresh's default: how often a
	// runtime rewrites its registration when its in-flight counts changed
	// (the contract allows up to 10 s).
	runtimeRefresh = time.Second
)

// Traffic is the synthetic load each runtime carries. Each request begins
// on a route (the routes taken in turn), does Steps steps of StepDelay
// each with a checkpoint after every step, then calls Done; a request a
// rollback aborts is re-issued through runtime.Run on the version rolled
// back to.
type Traffic struct {
	// RPS is how many requests each runtime starts per second. Zero means
	// no traffic.
	RPS int
	// Steps is the number of steps (and checkpoints) of a request. Default 5.
	Steps int
	// StepDelay is how long a step takes. Default 10ms.
	StepDelay time.Duration
}

// check validates t and fills in its defaults.
func (t *Traffic) check() error {
	if t.RPS < 0 || t.RPS > maxRPS {
		return fmt.Errorf("simfleet: Traffic.RPS must be 0 to %d, got %d", maxRPS, t.RPS)
	}
	if t.Steps < 0 || t.StepDelay < 0 {
		return fmt.Errorf("simfleet: Traffic.Steps and StepDelay must not be negative, got %d and %v", t.Steps, t.StepDelay)
	}
	if t.Steps == 0 {
		t.Steps = defaultSteps
	}
	if t.StepDelay == 0 {
		t.StepDelay = defaultStepDelay
	}
	return nil
}

// Stats counts the synthetic requests' outcomes since Start.
type Stats struct {
	// Started counts requests begun (re-issues not counted again).
	Started int64
	// Completed counts requests that passed Done, on whichever attempt.
	Completed int64
	// Aborted counts attempts that a rollback aborted at a checkpoint or at
	// Done; Reissued counts the attempts begun again after one. Once the
	// traffic has stopped (StopTraffic) they are equal, unless a request
	// ran out of attempts (then it is also counted in Failed); Close may cut
	// a re-issue short.
	Aborted, Reissued int64
	// Failed counts requests that ended in an error: out of attempts, an
	// unknown route, a fail-closed stale reader. Requests cut short by
	// Close are not counted.
	Failed int64
	// CompletedOnRolledBack counts requests that passed Done on a version
	// their runtime had already applied a rollback away from, after the
	// request began. It must stay 0: a non-zero value is a bug in the
	// abort-at-checkpoint path.
	CompletedOnRolledBack int64
}

// Stats returns the traffic counters. Read after StopTraffic, they are
// final.
func (f *Fleet) Stats() Stats {
	return Stats{
		Started:               f.stats.started.Load(),
		Completed:             f.stats.completed.Load(),
		Aborted:               f.stats.aborted.Load(),
		Reissued:              f.stats.reissued.Load(),
		Failed:                f.stats.failed.Load(),
		CompletedOnRolledBack: f.stats.completedOnRolledBack.Load(),
	}
}

// runtimeInst is one workflow runtime: a real SDK instance and what the
// fleet keeps about its requests.
type runtimeInst struct {
	id      string
	inst    *runtime.Instance
	running atomic.Int64

	mu sync.Mutex
	// inflight counts the running attempts by route and version.
	inflight map[string]map[string]int
	// rolledAway is, by route and version, the epoch of the latest change
	// the instance applied that rolled the route away from that version.
	rolledAway map[string]map[string]int64
	// applied is, by route, the highest epoch the instance applied.
	applied map[string]int64
	// observe is Config.Observe (nil when none).
	observe *Observer
}

// startRuntime starts one runtime instance on the fleet's etcd client.
func (f *Fleet) startRuntime(id string) error {
	rt := &runtimeInst{id: id, inflight: map[string]map[string]int{}, rolledAway: map[string]map[string]int64{},
		applied: map[string]int64{}, observe: f.cfg.Observe}
	inst, err := runtime.NewInstance(runtime.InstanceConfig{
		ID:           id,
		Client:       f.cfg.Client,
		Prefix:       f.cfg.Prefix,
		Logger:       f.cfg.Logger.Named(id),
		Now:          f.cfg.Now,
		RefreshEvery: f.cfg.RuntimeRefresh,
		OnApply:      rt.onApply,
	})
	if err != nil {
		return err
	}
	rt.inst = inst
	f.runtimes = append(f.runtimes, rt)
	inst.Start(f.ctx)
	return nil
}

// onApply runs after the instance applied a change (and marked the
// requests it aborts): from then on, Done on a request pinned to the
// version rolled away from must fail.
func (rt *runtimeInst) onApply(v routing.View) {
	if o := rt.observe; o != nil && o.RuntimeApplied != nil {
		o.RuntimeApplied(rt.id, v)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.applied[v.Route] = max(rt.applied[v.Route], v.Epoch)
	if !v.Kind.Aborts() || v.From == "" {
		return
	}
	m := rt.rolledAway[v.Route]
	if m == nil {
		m = map[string]int64{}
		rt.rolledAway[v.Route] = m
	}
	m[v.From] = max(m[v.From], v.Epoch)
}

// rolledAwayAt returns the epoch of the latest change the instance applied
// that rolled route away from version, and the highest epoch of route it
// applied.
func (rt *runtimeInst) rolledAwayAt(route, version string) (away, applied int64) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.rolledAway[route][version], rt.applied[route]
}

func (rt *runtimeInst) track(route, version string, d int) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	m := rt.inflight[route]
	if m == nil {
		m = map[string]int{}
		rt.inflight[route] = m
	}
	if m[version] += d; m[version] <= 0 {
		delete(m, version)
	}
}

// waitRuntimes waits until every runtime has applied the routes and its
// registration is in etcd, so that a rollback signalled right after Start
// waits for all of them.
func (f *Fleet) waitRuntimes(ctx context.Context) error {
	keys := runtime.Keys{Prefix: f.cfg.Prefix}
	for _, rt := range f.runtimes {
		if err := rt.inst.WaitReady(ctx); err != nil {
			return fmt.Errorf("simfleet: runtime %s: %w", rt.inst.ID(), err)
		}
	}
	return poll(ctx, "runtimes did not register", func(ctx context.Context) (bool, error) {
		resp, err := f.cfg.Client.Get(ctx, keys.Instances(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return false, err
		}
		registered := make(map[string]bool, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			registered[string(kv.Key)] = true
		}
		for _, rt := range f.runtimes {
			if !registered[keys.Instance(rt.inst.ID())] {
				return false, nil
			}
		}
		return true, nil
	})
}

// InFlight sums the runtimes' running requests on route, by version.
func (f *Fleet) InFlight(route string) map[string]int {
	out := map[string]int{}
	for _, rt := range f.runtimes {
		rt.mu.Lock()
		for v, n := range rt.inflight[route] {
			out[v] += n
		}
		rt.mu.Unlock()
	}
	return out
}

// RuntimeIDs lists the runtime instances' ids, in order.
func (f *Fleet) RuntimeIDs() []string {
	out := make([]string, len(f.runtimes))
	for i, rt := range f.runtimes {
		out[i] = rt.inst.ID()
	}
	return out
}

// startTraffic starts one request generator per runtime.
func (f *Fleet) startTraffic() {
	if f.cfg.Traffic.RPS == 0 {
		return
	}
	routes := make([]string, len(f.cfg.Routes))
	for i, r := range f.cfg.Routes {
		routes[i] = r.Route
	}
	for i, rt := range f.runtimes {
		f.genWG.Go(func() { f.generate(rt, routes, i) })
	}
}

// generate starts RPS requests a second on rt, taking the routes in turn
// from the first'th, until the traffic is stopped.
func (f *Fleet) generate(rt *runtimeInst, routes []string, first int) {
	t := time.NewTicker(time.Second / time.Duration(f.cfg.Traffic.RPS))
	defer t.Stop()
	for i := first; ; i++ {
		select {
		case <-f.trafficStop:
			return
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
		if rt.running.Load() >= maxInFlightPerRuntime {
			continue
		}
		route := routes[i%len(routes)]
		rt.running.Add(1)
		f.reqWG.Go(func() {
			defer rt.running.Add(-1)
			f.request(rt, route)
		})
	}
}

// stopGenerators stops starting requests.
func (f *Fleet) stopGenerators() {
	f.stopOnce.Do(func() { close(f.trafficStop) })
	f.genWG.Wait()
}

// StopTraffic stops starting requests and waits for the running ones to
// finish (re-issues included), after which Stats is final. The runtimes
// stay registered. It returns at once when there is no traffic.
func (f *Fleet) StopTraffic() {
	f.stopGenerators()
	f.reqWG.Wait()
}

// request runs one synthetic request through runtime.Run, which re-issues
// it when a rollback aborts it.
func (f *Fleet) request(rt *runtimeInst, route string) {
	ctx := f.ctx
	f.stats.started.Add(1)
	attempt := 0
	_, err := runtime.Run(ctx, rt.inst, route, 0, func(ctx context.Context, req *runtime.Request) error {
		if attempt++; attempt > 1 {
			f.stats.reissued.Add(1)
		}
		rt.track(route, req.Version(), 1)
		defer rt.track(route, req.Version(), -1)
		err := f.work(ctx, rt, req, attempt)
		if errors.Is(err, runtime.ErrRolledBack) {
			f.stats.aborted.Add(1)
		}
		return err
	})
	switch {
	case err == nil:
		f.stats.completed.Add(1)
	case ctx.Err() != nil:
		// Cut short by Close: not an outcome of the request.
	default:
		f.stats.failed.Add(1)
		f.cfg.Logger.Debug("synthetic request failed", zap.String("runtime", rt.inst.ID()),
			zap.String("route", route), zap.Error(err))
	}
}

// work is one attempt: the steps with their checkpoints, then Done.
func (f *Fleet) work(ctx context.Context, rt *runtimeInst, req *runtime.Request, attempt int) error {
	for range f.cfg.Traffic.Steps {
		if !sleep(ctx, f.cfg.Traffic.StepDelay) {
			return ctx.Err()
		}
		if err := req.Checkpoint(ctx); err != nil {
			return err
		}
	}
	// Read before Done: a rollback the instance applied by now must make
	// Done fail, so passing it anyway is the bug this counter exists for.
	away, applied := rt.rolledAwayAt(req.Route(), req.Version())
	err := req.Done()
	if o := rt.observe; o != nil && o.Finished != nil {
		o.Finished(Finish{Runtime: rt.id, Route: req.Route(), Version: req.Version(), Epoch: req.Epoch(),
			Attempt: attempt, Applied: applied, Err: err})
	}
	if err != nil {
		return err
	}
	if away > req.Epoch() {
		f.stats.completedOnRolledBack.Add(1)
		f.cfg.Logger.Error("request completed on a version its runtime had rolled back away from",
			zap.String("runtime", rt.inst.ID()), zap.String("route", req.Route()), zap.String("version", req.Version()),
			zap.Int64("epoch", req.Epoch()), zap.Int64("rolled_away_at", away))
	}
	return nil
}

// sleep waits d or until ctx ends; it reports whether d passed.
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
