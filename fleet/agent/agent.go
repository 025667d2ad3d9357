package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
)

// Config is what an Agent needs. Zero optional fields take their defaults.
type Config struct {
	// Node is this node's name, its key under <prefix>/fleet/nodes/.
	Node string
	// Servers are the node's inference servers, as validated by
	// FileConfig.Validate (New validates them again).
	Servers []ServerConfig
	// Interval is the probe interval of each server (default 5s); each
	// wait is jittered by ±20% so servers, and nodes, do not probe in step.
	Interval time.Duration
	// FreshTimeout bounds how long a fresh=1 request waits for its probe
	// (default 1.5s).
	FreshTimeout time.Duration
	// NewProber builds each server's prober. Tests set it to script
	// observations; by default it is NewProber with HTTPClient.
	NewProber func(ServerConfig) (Prober, error)
	// HTTPClient is what the default probers use (default: a client that
	// never goes through a proxy, since the servers are local).
	HTTPClient *http.Client
	// Logger is required.
	Logger *zap.Logger
	// Now is the clock of observation times and ages (default time.Now).
	Now func() time.Time
}

// Agent probes the node's inference servers and keeps the latest
// observation of each. It is safe for concurrent use.
type Agent struct {
	node         string
	interval     time.Duration
	freshTimeout time.Duration
	log          *zap.Logger
	now          func() time.Time
	metrics      *metrics

	servers []*entry // in config order
	byKey   map[versionKey]*entry

	// mu guards the run state. Probes start only while Run runs, and are
	// counted in wg so that Run returns only after the last one ended.
	mu      sync.Mutex
	runCtx  context.Context
	started bool
	stopped bool
	wg      sync.WaitGroup
}

// entry is one inference server and what the agent last saw of it.
type entry struct {
	cfg     ServerConfig
	prober  Prober
	timeout time.Duration

	mu     sync.Mutex
	last   *sample // nil until the first probe ended
	flight *flight // non-nil while a probe runs
}

// sample is one stored observation.
type sample struct {
	obs Observation
	at  time.Time
}

// flight is a running probe. Every caller that wants a probe of the server
// while it runs (the interval loop, any number of fresh=1 requests) waits
// for this one, so a server never has more than one probe in flight: a burst
// of fresh requests costs the GPU one canary.
type flight struct {
	done chan struct{}
	// res and stored are set before done is closed; stored is false when
	// the agent was stopping and the result was not kept.
	res    sample
	stored bool
	// joins counts the callers sharing this probe (under entry.mu).
	joins int
}

// New checks cfg and builds the probers. Nothing runs until Run.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		return nil, errors.New("agent: Logger is required")
	}
	if err := fleetapi.ValidateNode(cfg.Node); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	var p fieldErrors
	validateServers(&p, cfg.Servers)
	if err := p.err(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultProbeInterval
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("agent: Interval must be positive, got %v", cfg.Interval)
	}
	if cfg.FreshTimeout == 0 {
		cfg.FreshTimeout = DefaultFreshTimeout
	}
	if cfg.FreshTimeout < 0 {
		return nil, fmt.Errorf("agent: FreshTimeout must be positive, got %v", cfg.FreshTimeout)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	newProber := cfg.NewProber
	if newProber == nil {
		client := cfg.HTTPClient
		if client == nil {
			client = NewHTTPClient()
		}
		newProber = func(sc ServerConfig) (Prober, error) { return NewProber(sc, client) }
	}
	a := &Agent{
		node:         cfg.Node,
		interval:     cfg.Interval,
		freshTimeout: cfg.FreshTimeout,
		log:          cfg.Logger,
		now:          cfg.Now,
		metrics:      newMetrics(),
		byKey:        make(map[versionKey]*entry, len(cfg.Servers)),
	}
	for i, sc := range cfg.Servers {
		p, err := newProber(sc)
		if err == nil && p == nil {
			err = errors.New("no prober for this kind")
		}
		if err != nil {
			return nil, fmt.Errorf("agent: servers[%d] (%s %s@%s): %w", i, sc.Kind, sc.Route, sc.Version, err)
		}
		s := &entry{cfg: sc, prober: p, timeout: probeTimeout(cfg.Interval, time.Duration(sc.Budget))}
		a.servers = append(a.servers, s)
		a.byKey[versionKey{sc.Route, sc.Version}] = s
		// Exported from the start, so a version that never answers shows
		// as cold rather than missing.
		a.metrics.warm.WithLabelValues(sc.Route, sc.Version).Set(0)
	}
	return a, nil
}

// NewHTTPClient is the HTTP client of the default probers. It never uses a
// proxy from the environment: the inference servers are on this node, and
// an HTTP_PROXY meant for the outside must not carry the canaries.
// Timeouts come from each probe's context.
func NewHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConnsPerHost = 4
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{
		Transport: t,
		// A probe checks the URL it was given; a redirect elsewhere is a
		// misconfiguration the probe should report, not follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// probeTimeout bounds one probe: health, model and canary, each up to the
// canary's budget, plus slack for connecting (3×budget + 2 s), and at most
// the interval so probes keep their rhythm. It never goes below budget + 1 s,
// or a short interval would time every canary out and call a warm server
// cold.
func probeTimeout(interval, budget time.Duration) time.Duration {
	return max(min(interval, 3*budget+2*time.Second), budget+time.Second)
}

// Node is the node's name.
func (a *Agent) Node() string { return a.node }

// Run probes every server now and then every Interval (jittered), each
// server on its own goroutine, until ctx is done. It returns after the last
// probe has ended. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return errors.New("agent: Run called twice")
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.started, a.runCtx = true, rctx
	a.mu.Unlock()

	a.log.Info("probing", zap.String("node", a.node), zap.Int("servers", len(a.servers)), zap.Duration("interval", a.interval))
	var loops sync.WaitGroup
	for _, s := range a.servers {
		loops.Go(func() { a.loop(rctx, s) })
	}
	<-ctx.Done()
	cancel()
	loops.Wait()
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	a.wg.Wait()
	return nil
}

func (a *Agent) loop(ctx context.Context, s *entry) {
	for {
		if f := a.probe(s); f != nil {
			select {
			case <-f.done:
			case <-ctx.Done():
				return
			}
		}
		if !sleep(ctx, jitter(a.interval)) {
			return
		}
	}
}

// probe returns the server's running probe, starting one if none runs. It
// returns nil when the agent is not running (before Run, or stopping).
func (a *Agent) probe(s *entry) *flight {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flight != nil {
		s.flight.joins++
		return s.flight
	}
	ctx, ok := a.enter()
	if !ok {
		return nil
	}
	f := &flight{done: make(chan struct{}), joins: 1}
	s.flight = f
	go func() {
		defer a.wg.Done()
		r := a.runProbe(ctx, s)
		s.mu.Lock()
		prev := s.last
		// A probe cut short because the agent is stopping says nothing
		// about the server: keep the last real observation.
		f.stored = ctx.Err() == nil
		if f.stored {
			s.last = &r
		}
		s.flight = nil
		s.mu.Unlock()
		f.res = r
		close(f.done)
		if f.stored {
			a.logChange(s, prev, &r)
		}
	}()
	return f
}

// enter counts a new probe in wg if the agent is running.
func (a *Agent) enter() (context.Context, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.started || a.stopped || a.runCtx.Err() != nil {
		return nil, false
	}
	a.wg.Add(1)
	return a.runCtx, true
}

// runProbe runs one probe under the server's timeout, holds the prober to
// the Observation's invariants and records the metrics.
func (a *Agent) runProbe(ctx context.Context, s *entry) sample {
	pctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	obs := safeProbe(pctx, s.prober)
	took := time.Since(start)
	obs = sanitize(obs, time.Duration(s.cfg.Budget), pctx.Err(), s.timeout)

	kind, route, version := s.cfg.Kind, s.cfg.Route, s.cfg.Version
	if ctx.Err() == nil {
		a.metrics.probeDuration.WithLabelValues(kind).Observe(took.Seconds())
		if obs.Err != nil {
			a.metrics.probeErrors.WithLabelValues(route, version, kind).Inc()
		}
		a.metrics.warm.WithLabelValues(route, version).Set(b2f(obs.Warm))
		a.metrics.canary.WithLabelValues(route, version).Set(obs.CanaryLatency.Seconds())
	}
	return sample{obs: obs, at: a.now()}
}

// safeProbe turns a panicking prober into an error: one buggy probe must
// not take the node's agent down.
func safeProbe(ctx context.Context, p Prober) (obs Observation) {
	defer func() {
		if v := recover(); v != nil {
			obs = Observation{Err: fmt.Errorf("probe panicked: %v", v)}
		}
	}()
	return p.Probe(ctx)
}

// sanitize makes an observation consistent: warm only when loaded, ready
// and within budget, and never "not warm" without a reason.
func sanitize(obs Observation, budget time.Duration, ctxErr error, timeout time.Duration) Observation {
	if obs.CanaryLatency < 0 {
		obs.CanaryLatency = 0
	}
	if obs.InFlight != nil {
		if n := *obs.InFlight; n < 0 {
			obs.InFlight = nil
		} else {
			obs.InFlight = &n // the prober keeps no handle on what is served
		}
	}
	switch {
	case obs.Warm && (!obs.Loaded || !obs.Ready):
		obs.Warm = false
		obs.Err = fmt.Errorf("prober reported warm without loaded and ready (loaded=%t ready=%t)", obs.Loaded, obs.Ready)
	case obs.Warm && obs.CanaryLatency > budget:
		obs.Warm = false
		obs.Err = fmt.Errorf("canary took %v, over its budget of %v", obs.CanaryLatency.Round(time.Millisecond), budget)
	case obs.Warm:
		obs.Err = nil
	case obs.Err == nil && ctxErr != nil:
		obs.Err = fmt.Errorf("probe did not finish within %v", timeout)
	case obs.Err == nil:
		obs.Err = errors.New("not warm (the probe gave no reason)")
	}
	return obs
}

func (a *Agent) logChange(s *entry, prev, cur *sample) {
	if prev != nil && prev.obs.Warm == cur.obs.Warm {
		return
	}
	fields := []zap.Field{zap.String("route", s.cfg.Route), zap.String("version", s.cfg.Version),
		zap.String("kind", s.cfg.Kind), zap.String("url", s.cfg.URL)}
	if cur.obs.Warm {
		a.log.Info("version warm", append(fields, zap.Duration("canary", cur.obs.CanaryLatency))...)
	} else {
		a.log.Warn("version not warm", append(fields, zap.Bool("loaded", cur.obs.Loaded),
			zap.Bool("ready", cur.obs.Ready), zap.Error(cur.obs.Err))...)
	}
}

// State is the cached observation of route's version, aged now. Served is
// false when no server on this node serves it.
func (a *Agent) State(route, version string) fleetapi.VersionState {
	s := a.byKey[versionKey{route, version}]
	if s == nil {
		return fleetapi.VersionState{Route: route, Version: version}
	}
	s.mu.Lock()
	last := s.last
	s.mu.Unlock()
	return a.stateOf(s, last, a.now())
}

// Warm is State, or with fresh a new probe: it waits up to FreshTimeout
// (or ctx) for the probe — sharing one already running. On timeout it
// returns the cached observation with Error saying the fresh probe did not
// finish, and never as warm: the bot asked for fresh because the cached one
// was too old to trust, and a canary that cannot answer in time is exactly
// what a rollback must not be sent to.
func (a *Agent) Warm(ctx context.Context, route, version string, fresh bool) fleetapi.VersionState {
	s := a.byKey[versionKey{route, version}]
	if s == nil || !fresh {
		return a.State(route, version)
	}
	f := a.probe(s)
	if f == nil {
		return a.withNote(s, "fresh probe not run: the agent is not probing")
	}
	t := time.NewTimer(a.freshTimeout)
	defer t.Stop()
	select {
	case <-f.done:
		if !f.stored {
			return a.withNote(s, "fresh probe cut short: the agent is stopping")
		}
		return a.stateOf(s, &f.res, a.now())
	case <-t.C:
		return a.withNote(s, fmt.Sprintf("fresh probe did not finish within %v", a.freshTimeout))
	case <-ctx.Done():
		return a.withNote(s, fmt.Sprintf("fresh probe abandoned: %v", ctx.Err()))
	}
}

// withNote is the cached state with note prepended to its error.
func (a *Agent) withNote(s *entry, note string) fleetapi.VersionState {
	s.mu.Lock()
	last := s.last
	s.mu.Unlock()
	vs := a.stateOf(s, last, a.now())
	vs.Warm = false
	switch {
	case last == nil:
		vs.Error = note + "; no earlier observation"
	case vs.Error == "":
		vs.Error = fmt.Sprintf("%s; cached observation from %v ago", note, time.Duration(vs.AgeMS)*time.Millisecond)
	default:
		vs.Error = fmt.Sprintf("%s; cached observation from %v ago: %s", note, time.Duration(vs.AgeMS)*time.Millisecond, vs.Error)
	}
	vs.Error = truncate(vs.Error, fleetapi.MaxErrorLen)
	return vs
}

func (a *Agent) stateOf(s *entry, r *sample, now time.Time) fleetapi.VersionState {
	vs := fleetapi.VersionState{
		Route:   s.cfg.Route,
		Version: s.cfg.Version,
		Kind:    s.cfg.Kind,
		Served:  true,
		GPUs:    s.cfg.GPUs,
	}
	if r == nil {
		vs.Error = "not probed yet"
		return vs
	}
	vs.Loaded, vs.Ready, vs.Warm = r.obs.Loaded, r.obs.Ready, r.obs.Warm
	vs.CanaryMS = float64(r.obs.CanaryLatency.Microseconds()) / 1000
	if r.obs.InFlight != nil {
		n := *r.obs.InFlight
		vs.InFlight = &n
	}
	if r.obs.Err != nil {
		vs.Error = truncate(r.obs.Err.Error(), fleetapi.MaxErrorLen)
	}
	vs.ObservedAt = r.at.UTC()
	vs.AgeMS = max(0, now.Sub(r.at).Milliseconds())
	return vs
}

// Status is every served version's cached state, sorted by route and
// version.
func (a *Agent) Status() fleetapi.StatusReply {
	now := a.now()
	reply := fleetapi.StatusReply{Node: a.node, At: now.UTC(), Versions: make([]fleetapi.VersionState, 0, len(a.servers))}
	for _, s := range a.servers {
		s.mu.Lock()
		last := s.last
		s.mu.Unlock()
		reply.Versions = append(reply.Versions, a.stateOf(s, last, now))
	}
	slices.SortFunc(reply.Versions, func(x, y fleetapi.VersionState) int {
		return cmp.Or(cmp.Compare(x.Route, y.Route), cmp.Compare(x.Version, y.Version))
	})
	return reply
}

// Record is the node record to register: this node, the URL the bot reaches
// it at, and the GPUs of every version it serves.
func (a *Agent) Record(advertiseURL string) fleetapi.NodeRecord {
	rec := fleetapi.NodeRecord{Node: a.node, URL: advertiseURL, Serving: map[string]map[string]int{}}
	for _, s := range a.servers {
		if rec.Serving[s.cfg.Route] == nil {
			rec.Serving[s.cfg.Route] = map[string]int{}
		}
		rec.Serving[s.cfg.Route][s.cfg.Version] = s.cfg.GPUs
	}
	return rec
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ell = "…"
	cut := n - len(ell)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// jitter spreads d over ±20%.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}

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
