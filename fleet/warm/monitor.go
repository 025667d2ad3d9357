package warm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/strictjson"
)

// AuditKindColdTarget is the audit event kind of a warm-keep alert.
const AuditKindColdTarget = "warmkeep.cold_target"

// DefaultInterval is the monitor's interval when its config has none.
const DefaultInterval = 30 * time.Second

// WarmChecker is what the Monitor needs of a Checker.
type WarmChecker interface {
	Check(ctx context.Context, route, target string) (Report, error)
}

var _ WarmChecker = (*Checker)(nil)

// KeepState is a route's warm-keep state, stored at <prefix>/warmkeep/<route>.
// It is written only when the state changes.
type KeepState struct {
	Route string `json:"route"`
	// Target is the rollback target (the route's previous version) the
	// state is about; a new target starts a new state.
	Target string `json:"target"`
	// State is "warm" or "cold".
	State string `json:"state"`
	// Since is when the target entered this state (as this package saw it).
	Since time.Time `json:"since"`
	// Summary is the report's Summary() at that moment, and Reason its
	// Reason (why it is not warm).
	Summary string `json:"summary"`
	Reason  string `json:"reason,omitempty"`
}

// The values of KeepState.State.
const (
	keepWarm = "warm"
	keepCold = "cold"
)

// maxKeepStateBytes bounds a stored state before it is decoded.
const maxKeepStateBytes = 16 << 10

// DecodeKeepState strictly decodes the state stored at key for route.
func DecodeKeepState(key string, value []byte, route string) (KeepState, error) {
	var s KeepState
	if len(value) > maxKeepStateBytes {
		return s, &routing.MalformedError{Key: key, Err: fmt.Errorf("state is %d bytes, at most %d allowed", len(value), maxKeepStateBytes)}
	}
	if err := strictjson.Decode(value, &s); err != nil {
		return KeepState{}, &routing.MalformedError{Key: key, Err: err}
	}
	switch {
	case s.Route != route:
		return KeepState{}, &routing.MalformedError{Key: key, Err: fmt.Errorf("route field %q does not match the key", s.Route)}
	case s.State != keepWarm && s.State != keepCold:
		return KeepState{}, &routing.MalformedError{Key: key, Err: fmt.Errorf("state %q is neither warm nor cold", s.State)}
	}
	if err := routing.ValidateVersion(s.Target); err != nil {
		return KeepState{}, &routing.MalformedError{Key: key, Err: fmt.Errorf("target: %w", err)}
	}
	return s, nil
}

// EventState is what changed.
type EventState string

// The changes the Monitor reports.
const (
	// EventCold: the rollback target is not warm at the route's quorum
	// (first seen cold, warm before, or a new target that is cold).
	EventCold EventState = "cold"
	// EventWarmAgain: a target reported cold is warm again.
	EventWarmAgain EventState = "warm-again"
)

// Event is one warm-keep state change, emitted by exactly one replica: the
// one whose guarded write of the new state succeeded. The bot posts Text()
// to OPS_CHANNEL and audits a cold target as AuditKindColdTarget.
type Event struct {
	Route  string     `json:"route"`
	Target string     `json:"target"`
	Active string     `json:"active"`
	State  EventState `json:"state"`
	At     time.Time  `json:"at"`
	// ColdSince, for EventWarmAgain, is when the target went cold.
	ColdSince time.Time `json:"cold_since,omitzero"`
	// Revision is the etcd revision of the state write. Route and Revision
	// together identify the change, e.g. as an audit idempotency key.
	Revision int64  `json:"revision"`
	Report   Report `json:"report"`
}

// Text is the message for the ops channel, plain text (the bot escapes it
// for Slack).
func (e *Event) Text() string {
	r := &e.Report
	if e.State == EventWarmAgain {
		s := fmt.Sprintf("%s: rollback target %s is warm again: %s", e.Route, e.Target, r.Summary())
		if !e.ColdSince.IsZero() {
			s += fmt.Sprintf(" (cold for %s)", roundAge(e.At.Sub(e.ColdSince)))
		}
		return s + "."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: rollback target %s is not warm: %s; %s.", e.Route, e.Target, r.Summary(), r.Decision())
	if r.Reason != "" {
		fmt.Fprintf(&b, " %s.", r.Reason)
	}
	cold := r.NotWarm()
	for i, n := range cold {
		if i == maxListed {
			fmt.Fprintf(&b, ", and %d more", len(cold)-maxListed)
			break
		}
		sep := ", "
		if i == 0 {
			sep = " Not warm: "
		}
		fmt.Fprintf(&b, "%s%s %s (%s)", sep, n.Node, n.State, n.Reason)
	}
	if len(cold) > 0 {
		b.WriteString(".")
	}
	fmt.Fprintf(&b, " A rollback of %s to %s would be refused unless forced.", e.Route, e.Target)
	return b.String()
}

// MonitorConfig is what a Monitor needs. Checker, KV and Emit are required.
type MonitorConfig struct {
	Checker WarmChecker
	// KV reads routes and states and writes states (routing.KV: Get, Txn).
	KV     routing.KV
	Prefix string
	// Interval is the pause between the end of one pass and the start of
	// the next (DefaultInterval when zero).
	Interval time.Duration
	Logger   *zap.Logger
	// Now returns the current time; it stamps states and events.
	Now func() time.Time
	// Emit receives each state change, from the monitor's goroutine: it
	// must hand the event off (queue the Slack post and the audit event)
	// rather than block on Slack.
	Emit func(Event)
	// Registerer, when set, gets the rollback targets' warm state by route,
	// as of each route's last check: backflip_rollback_target_warm (1 warm
	// at the route's quorum, 0 not) and backflip_rollback_target_warm_ratio
	// (warm GPUs of the target over the GPUs it has to carry, the baseline
	// the quorum applies to). Routes without a rollback target have no
	// series; a check that fails keeps the last value. The series are
	// dropped when Run returns (a replica that no longer leads stops
	// reporting). Monitors given the same Registerer share the series (the
	// bot makes a new Monitor each time it becomes the leader). Nil: no
	// metrics.
	Registerer prometheus.Registerer
}

// monitorMetrics are a Monitor's gauges, by route.
type monitorMetrics struct {
	warm  *prometheus.GaugeVec
	ratio *prometheus.GaugeVec
}

func newMonitorMetrics(reg prometheus.Registerer) (*monitorMetrics, error) {
	m := &monitorMetrics{
		warm: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "backflip_rollback_target_warm",
			Help: "1 when the route's rollback target (its previous version) is warm at the route's quorum, 0 when a rollback to it would be refused as cold; as of the warm-keep monitor's last check.",
		}, []string{"route"}),
		ratio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "backflip_rollback_target_warm_ratio",
			Help: "Warm GPUs of the route's rollback target over the GPUs it has to carry (those registered for the active version, or for the target when the active version has none); compare with the route's warm quorum.",
		}, []string{"route"}),
	}
	warm, err := registerGaugeVec(reg, m.warm)
	if err != nil {
		return nil, err
	}
	ratio, err := registerGaugeVec(reg, m.ratio)
	if err != nil {
		if warm == m.warm {
			reg.Unregister(warm) // all or nothing
		}
		return nil, err
	}
	m.warm, m.ratio = warm, ratio
	return m, nil
}

// registerGaugeVec registers v, or returns the identical vector already
// registered on reg.
func registerGaugeVec(reg prometheus.Registerer, v *prometheus.GaugeVec) (*prometheus.GaugeVec, error) {
	err := reg.Register(v)
	if err == nil {
		return v, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(*prometheus.GaugeVec); ok {
			return existing, nil
		}
	}
	return nil, fmt.Errorf("warm: register the monitor's metrics: %w", err)
}

// set records a route's check.
func (mm *monitorMetrics) set(route string, rep *Report) {
	warm := 0.0
	if rep.Warm {
		warm = 1
	}
	ratio := 0.0
	if rep.BaselineGPUs > 0 {
		ratio = float64(rep.WarmGPUs) / float64(rep.BaselineGPUs)
	}
	mm.warm.WithLabelValues(route).Set(warm)
	mm.ratio.WithLabelValues(route).Set(ratio)
}

// prune drops the series of the routes in had that are not in keep.
func (mm *monitorMetrics) prune(had, keep map[string]bool) {
	for route := range had {
		if !keep[route] {
			mm.warm.DeleteLabelValues(route)
			mm.ratio.DeleteLabelValues(route)
		}
	}
}

// reset drops every series.
func (mm *monitorMetrics) reset() {
	mm.warm.Reset()
	mm.ratio.Reset()
}

// Monitor checks every route's rollback target on an interval and reports
// state changes. Any number of Monitors may run on the same etcd (the bot
// runs one on its leader; a second one after a failover or a restart does
// not repeat an event).
type Monitor struct {
	cfg   MonitorConfig
	store *routing.Store
	keys  Keys
	log   *zap.Logger
	now   func() time.Time

	// metrics is nil without a Registerer; mu guards reported, the routes
	// that may have series.
	metrics  *monitorMetrics
	mu       sync.Mutex
	reported map[string]bool
}

// NewMonitor validates cfg and returns a Monitor.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	switch {
	case cfg.Checker == nil:
		return nil, errors.New("warm: MonitorConfig.Checker is required")
	case cfg.KV == nil:
		return nil, errors.New("warm: MonitorConfig.KV is required")
	case cfg.Emit == nil:
		return nil, errors.New("warm: MonitorConfig.Emit is required")
	case cfg.Interval < 0:
		return nil, fmt.Errorf("warm: Interval %s must be positive", cfg.Interval)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	m := &Monitor{cfg: cfg, keys: Keys{Prefix: cfg.Prefix}, log: cfg.Logger, now: cfg.Now}
	if m.log == nil {
		m.log = zap.NewNop()
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.store = routing.NewStore(cfg.KV, cfg.Prefix, m.log)
	if cfg.Registerer != nil {
		mm, err := newMonitorMetrics(cfg.Registerer)
		if err != nil {
			return nil, err
		}
		m.metrics, m.reported = mm, map[string]bool{}
	}
	return m, nil
}

// Run runs a pass at once and then every Interval after the previous pass
// ended, until ctx is done. A failed pass is logged and the next one runs
// on time.
func (m *Monitor) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	defer m.dropMetrics()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := m.Tick(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("warm-keep pass failed", zap.Error(err))
		}
		t.Reset(m.cfg.Interval)
	}
}

// stored is a route's state as read, with the revision to guard on (0 when
// the key does not exist).
type stored struct {
	state  *KeepState
	modRev int64
}

// Tick runs one pass: every route with a previous version has that version
// checked, one route at a time (each check is bounded by its Checker's
// timeout), and a change of state is written and emitted. States of routes
// that no longer exist or have no previous version are removed. It returns
// an error only when it could not list routes or states; a route whose
// check fails is logged and keeps its state.
func (m *Monitor) Tick(ctx context.Context) error {
	routes, malformed, _, err := m.store.List(ctx)
	if err != nil {
		return fmt.Errorf("warm-keep: %w", err)
	}
	// A route whose config cannot be read keeps its state: it is not gone,
	// and forgetting would repeat a cold alert once it is readable again.
	live := make(map[string]bool, len(routes)+len(malformed))
	for _, err := range malformed {
		m.log.Warn("warm-keep: skipping a malformed route", zap.Error(err))
		var me *routing.MalformedError
		if errors.As(err, &me) {
			live[strings.TrimPrefix(me.Key, m.store.Keys().Routes())] = true
		}
	}
	resp, err := m.cfg.KV.Get(ctx, m.keys.WarmKeeps(), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("warm-keep: read states: %w", err)
	}
	states := make(map[string]stored, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		route := strings.TrimPrefix(key, m.keys.WarmKeeps())
		st := stored{modRev: kv.ModRevision}
		if s, err := DecodeKeepState(key, kv.Value, route); err != nil {
			// Overwritten (guarded on its revision) at the next change, or
			// removed if the route is gone.
			m.log.Warn("warm-keep: malformed state, treating it as absent", zap.Error(err))
		} else {
			st.state = &s
		}
		states[route] = st
	}
	for _, e := range routes {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if e.Config.Previous == "" {
			continue
		}
		live[e.Config.Route] = true
		m.checkRoute(ctx, e, states[e.Config.Route])
	}
	// Series of routes without a rollback target, or gone, go; a
	// malformed route keeps its last value, as it keeps its state.
	m.pruneMetrics(live)
	for route, st := range states {
		if !live[route] {
			m.forget(ctx, route, st.modRev)
		}
	}
	return nil
}

// checkRoute checks one route's rollback target and records a change.
func (m *Monitor) checkRoute(ctx context.Context, entry routing.Entry, prev stored) {
	route, target := entry.Config.Route, entry.Config.Previous
	rep, err := m.cfg.Checker.Check(ctx, route, target)
	var nw *NotWarmError
	state := keepWarm
	switch {
	case err == nil:
	case errors.As(err, &nw):
		state, rep = keepCold, nw.Report
	default:
		if ctx.Err() == nil {
			m.log.Warn("warm-keep: cannot check the rollback target", zap.String("route", route),
				zap.String("target", target), zap.Error(err))
		}
		return
	}
	m.recordMetrics(route, &rep)
	sameTarget := prev.state != nil && prev.state.Target == target
	if sameTarget && prev.state.State == state {
		return
	}
	now := m.now()
	var ev *Event
	switch {
	case state == keepCold:
		ev = &Event{State: EventCold}
	case sameTarget:
		// Warm, and this target was cold.
		ev = &Event{State: EventWarmAgain, ColdSince: prev.state.Since}
	}
	// Otherwise the target is warm on first sight (or is a new target):
	// the state is recorded without an event, so that a later cold is news.
	next := KeepState{Route: route, Target: target, State: state, Since: now, Summary: rep.Summary(), Reason: rep.Reason}
	rev, ok := m.write(ctx, m.keys.WarmKeep(route), prev.modRev, m.store.Keys().Route(route), entry.ModRevision, next)
	if !ok || ev == nil {
		return
	}
	ev.Route, ev.Target, ev.Active, ev.At, ev.Revision, ev.Report = route, target, rep.Active, now, rev, rep
	m.log.Info("warm-keep: rollback target state changed", zap.String("route", route),
		zap.String("target", target), zap.String("state", string(ev.State)), zap.String("summary", rep.Summary()))
	m.cfg.Emit(*ev)
}

// recordMetrics records a route's check in the gauges.
func (m *Monitor) recordMetrics(route string, rep *Report) {
	if m.metrics == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.metrics.set(route, rep)
	m.reported[route] = true
}

// pruneMetrics drops the series of the routes not in live.
func (m *Monitor) pruneMetrics(live map[string]bool) {
	if m.metrics == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.metrics.prune(m.reported, live)
	for route := range m.reported {
		if !live[route] {
			delete(m.reported, route)
		}
	}
}

// dropMetrics drops every series: this Monitor no longer runs.
func (m *Monitor) dropMetrics() {
	if m.metrics == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.metrics.reset()
	clear(m.reported)
}

// write stores next at key if the key is still at seenRev (0: absent) and
// the route's config is still at routeRev, the revision its rollback target
// was read at: a flip during the check (up to WARM_TIMEOUT) makes the result
// about a target that is no longer the rollback target, or judged against
// another active version, and it must be neither stored nor emitted; the
// next pass checks the new target. It reports the revision written and
// whether this call's write is the one that landed: only then may the
// caller emit.
func (m *Monitor) write(ctx context.Context, key string, seenRev int64, routeKey string, routeRev int64, next KeepState) (int64, bool) {
	val, err := json.Marshal(next)
	if err != nil {
		m.log.Error("warm-keep: encode state", zap.Error(err))
		return 0, false
	}
	resp, err := m.cfg.KV.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", seenRev),
			clientv3.Compare(clientv3.ModRevision(routeKey), "=", routeRev)).
		Then(clientv3.OpPut(key, string(val))).
		Commit()
	if err == nil {
		if !resp.Succeeded {
			m.log.Debug("warm-keep: another replica recorded the change first, or the route changed during the check", zap.String("key", key))
		}
		return resp.Header.Revision, resp.Succeeded
	}
	// The write may have landed with its reply lost: re-read rather than
	// guess. The value carries a nanosecond timestamp, so an equal value is
	// this call's write.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	got, rerr := m.cfg.KV.Get(rctx, key)
	if rerr == nil && len(got.Kvs) == 1 && got.Kvs[0].ModRevision > seenRev && bytes.Equal(got.Kvs[0].Value, val) {
		return got.Kvs[0].ModRevision, true
	}
	m.log.Warn("warm-keep: write state", zap.String("key", key), zap.Error(err))
	return 0, false
}

// forget removes the state of a route that is gone or has no rollback
// target, unless it changed since it was read.
func (m *Monitor) forget(ctx context.Context, route string, seenRev int64) {
	key := m.keys.WarmKeep(route)
	_, err := m.cfg.KV.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", seenRev)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil && ctx.Err() == nil {
		m.log.Warn("warm-keep: remove the state of a route without a rollback target", zap.String("route", route), zap.Error(err))
	}
}
