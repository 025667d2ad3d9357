package drills

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
)

// runnerMetrics are a Runner's metrics (nil without Config.Registerer).
type runnerMetrics struct {
	lastSuccess *prometheus.GaugeVec

	mu sync.Mutex
	// last is what lastSuccess holds, by route: a value only ever moves
	// forward, so history loaded at start-up never hides a drill this
	// replica completed meanwhile.
	last map[string]time.Time
}

func newRunnerMetrics(reg prometheus.Registerer) (*runnerMetrics, error) {
	m := &runnerMetrics{
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "backflip_drill_last_success_timestamp_seconds",
			Help: "Unix time of the route's newest completed drill: set when this replica completes one, and at start-up from the audit database's newest drill.completed event of each route.",
		}, []string{"route"}),
		last: map[string]time.Time{},
	}
	if err := reg.Register(m.lastSuccess); err != nil {
		return nil, fmt.Errorf("drills: register backflip_drill_last_success_timestamp_seconds: %w", err)
	}
	return m, nil
}

// succeeded records a completed drill of route at at, unless a newer one
// is already recorded.
func (m *runnerMetrics) succeeded(route string, at time.Time) {
	if m == nil || at.IsZero() {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !at.After(m.last[route]) {
		return
	}
	m.last[route] = at
	m.lastSuccess.WithLabelValues(route).Set(float64(at.UnixNano()) / 1e9)
}

// LoadMetrics sets backflip_drill_last_success_timestamp_seconds of every
// route in etcd from the audit database's newest drill.completed event of
// the route (audit.DrillStatsOf), so that a replica that just started —
// after a restart, or one that was not the leader when the drill ran —
// does not report a route as never drilled. Routes without a completed
// drill stay without a series. It does nothing without a Registerer or a
// database. An error (etcd or Postgres unreachable) leaves the routes it
// could not read as they were; calling it again is safe.
func (s *Service) LoadMetrics(ctx context.Context) error { return s.runner.LoadMetrics(ctx) }

// LoadMetrics is Service.LoadMetrics.
func (r *Runner) LoadMetrics(ctx context.Context) error {
	if r.metrics == nil || r.cfg.DB == nil {
		return nil
	}
	entries, malformed, _, err := r.routes.List(ctx)
	if err != nil {
		return fmt.Errorf("drill metrics: list routes: %w", err)
	}
	for _, err := range malformed {
		r.log.Debug("drill metrics: skipping a malformed route", zap.Error(err))
	}
	var errs []error
	for _, e := range entries {
		st, err := audit.DrillStatsOf(ctx, r.cfg.DB, e.Config.Route)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if st.Count > 0 {
			r.metrics.succeeded(e.Config.Route, st.LastRun)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("drill metrics: %w", err)
	}
	return nil
}
