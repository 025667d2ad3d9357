package simfleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/sim"
)

const (
	// startTimeout is Config.StartTimeout's default: it bounds Start even
	// when its context has no deadline, since a fleet that is not up by then
	// (etcd unreachable, say) never will be.
	startTimeout = 30 * time.Second
	// pollInterval is how often Start looks at what it waits for.
	pollInterval = 5 * time.Millisecond
	// maxNodes, maxRouters and maxRuntimes bound what one process
	// simulates; each node is five listeners, each router an etcd client.
	maxNodes, maxRouters, maxRuntimes = 1000, 1000, 100
	// defaultRouterLeaseTTL is Config.RouterLeaseTTL's default.
	defaultRouterLeaseTTL = 3 * time.Second
)

// Config is what a fleet is made of. Client is required; zero values of the
// other fields mean none (Nodes, Routes, Routers, Runtimes, Traffic) or a
// default.
type Config struct {
	// Client is the etcd client the nodes register with, the routes are
	// seeded with and the runtimes run on. Each router dials its own client
	// to the same endpoints (no credentials: simulated routers are for an
	// etcd without auth), so that stopping one looks like a crash.
	Client *clientv3.Client
	// Prefix is BACKFLIP_ETCD_PREFIX, e.g. "/backflip".
	Prefix string
	// Nodes is the number of simulated GPU nodes, named gpu-01, gpu-02, …
	Nodes int
	// Routes are the routes every node serves (see RouteSpec).
	Routes []RouteSpec
	// Routers is the number of simulated inference routers, with router ids
	// router-1, router-2, …
	Routers int
	// RouterProcesses, when set, is the number of router processes the
	// routers are spread over, round robin: each has one etcd client (one
	// gRPC connection) that its routers share, as a process serving many
	// routes' routers would. 0 (the default) is one process, so one
	// client, per router. With shared clients StopRouter is refused: it
	// simulates a crash by pulling the router's client away.
	RouterProcesses int
	// RouterLeaseTTL is the routers' registration lease, rounded up to whole
	// seconds: how long a router StopRouter stopped stays registered before
	// the bot sees it vanish. Default 3s, so that it is reported lost well
	// within the bot's convergence timeout (ROUTER_CONVERGE_TIMEOUT, 5 s)
	// while a router on a loaded machine, kept alive every second, does not
	// lose its lease by accident. etcd raises a TTL below its minimum (about
	// 2 s) to that minimum.
	RouterLeaseTTL time.Duration
	// Runtimes is the number of workflow runtime instances, with instance
	// ids runtime-1, runtime-2, …
	Runtimes int
	// Traffic is the synthetic load each runtime carries.
	Traffic Traffic
	// AgentToken is BACKFLIP_AGENT_TOKEN, the bearer token the agents
	// require. Generated when empty; AgentToken returns it.
	AgentToken string
	// RuntimeSecret is BACKFLIP_RUNTIME_SECRET, for a runtime.Signaller
	// pointed at this fleet. Generated when empty; RuntimeSecret returns it.
	RuntimeSecret []byte
	// SeedActor is the actor of the changes that seed the routes. Default
	// "simfleet".
	SeedActor string
	// Logger receives the simulated parts' logs. Default: discarded.
	Logger *zap.Logger
	// Now is the clock of agents, readers, runtimes and the seeding store.
	// Default time.Now.
	Now func() time.Time
	// Observe, if set, is told what the routers and runtimes do, for
	// tests that check invariants over a whole run (internal/faults). It
	// only watches: the fleet behaves the same with or without it.
	Observe *Observer
	// ProbeInterval is the agents' probe interval. Default 1s, so that a
	// behaviour switched at the terminal shows within about a second;
	// benchmarks at fleet scale use the agent's own default (5s).
	ProbeInterval time.Duration
	// RuntimeRefresh is how often a runtime rewrites its registration while
	// its in-flight counts change. Default 1s; the contract allows up to
	// 10 s (the SDK's default), which benchmarks of etcd's steady state use.
	RuntimeRefresh time.Duration
	// StartTimeout bounds Start (default 30s); a fleet of a thousand nodes
	// and routers on a small machine needs longer.
	StartTimeout time.Duration
	// CanaryBudget is every simulated server's canary budget (default
	// 800ms). The simulated servers answer at once, so only a starved
	// machine exceeds it; benchmarks that load two cores with a thousand
	// nodes raise it so that the agents' verdicts stay about the servers.
	CanaryBudget time.Duration
}

// Observer receives what the simulated routers and runtimes do. Every
// field is optional. The functions are called on the fleet's goroutines
// (a router's or runtime's reader, a request's), possibly concurrently,
// and must return quickly without calling back into the fleet.
type Observer struct {
	// RouterApplied is called after a router applied a route's state,
	// in the order that router applied them.
	RouterApplied func(router string, v routing.View)
	// RuntimeApplied is called after a runtime instance applied a route's
	// state (and marked the requests it aborts), in the order that
	// instance applied them.
	RuntimeApplied func(runtime string, v routing.View)
	// Finished is called when a request attempt reached its final
	// checkpoint (Done), whatever Done answered.
	Finished func(Finish)
}

// Finish is one request attempt at its final checkpoint.
type Finish struct {
	Runtime, Route string
	// Version and Epoch are what the attempt was pinned to when it began.
	Version string
	Epoch   int64
	// Attempt counts from 1; a re-issue after an abort is the next one.
	Attempt int
	// Applied is the highest epoch of the route the runtime instance had
	// applied (RuntimeApplied had been called for) just before Done was
	// called: every abort that change implies was decided by then.
	Applied int64
	// Err is what Done answered: nil means the attempt's output was
	// returned, on Version.
	Err error
}

// RouteSpec is one route as the fleet serves it. The active version is
// served and warm on every node. The previous version, if any, is loaded
// on every node too: warm when PreviousWarm, otherwise unloaded (the
// simulated server is up but does not have the model), so that a rollback
// to it is refused.
type RouteSpec struct {
	Route    string
	Active   string
	Previous string
	// PreviousWarm says whether Previous starts warm.
	PreviousWarm bool
	// GPUsPerNode is what each node's server of each version uses.
	// Default 1.
	GPUsPerNode int
	// ActiveServer and PreviousServer say which simulated inference server
	// serves each version. Zero values are filled in by position: the
	// versions of all routes, each route's active then previous, take the
	// kinds openai, kserve-v2, ollama, tgi in turn, with a model name made
	// from the route and version.
	ActiveServer, PreviousServer Server
}

// Server is a simulated inference server: its protocol and the model (and
// engine-side model version) it serves. See internal/sim.
type Server struct {
	// Kind is sim.KindOpenAI, sim.KindKServeV2, sim.KindTGI or sim.KindOllama.
	Kind         string
	Model        string
	ModelVersion string
}

// DemoRoutes are the routes `backflip dev` shows: chat-70b, whose previous
// version is warm, so it can be rolled back; and embed-small, whose
// previous version is not loaded, so a rollback to it is refused. Between
// them they use every kind of simulated inference server.
func DemoRoutes() []RouteSpec {
	return []RouteSpec{
		{Route: "chat-70b", Active: "v42", Previous: "v41", PreviousWarm: true, GPUsPerNode: 4,
			ActiveServer:   Server{Kind: sim.KindOpenAI, Model: "meta-llama/Llama-3.1-70B-Instruct"},
			PreviousServer: Server{Kind: sim.KindKServeV2, Model: "llama-70b", ModelVersion: "41"}},
		{Route: "embed-small", Active: "v7", Previous: "v6", PreviousWarm: false, GPUsPerNode: 1,
			ActiveServer:   Server{Kind: sim.KindOllama, Model: "nomic-embed-text:v7"},
			PreviousServer: Server{Kind: sim.KindTGI, Model: "nomic-ai/nomic-embed-text-v6"}},
	}
}

// version is one version of one route, as every node serves it.
type version struct {
	route, version string
	server         Server
	gpus           int
	behavior       sim.Behavior
}

// defaultKind is the kind the i-th version takes when its Server has none:
// every kind in turn, so a few routes exercise every probe.
func defaultKind(i int) string {
	switch i % 4 {
	case 0:
		return sim.KindOpenAI
	case 1:
		return sim.KindKServeV2
	case 2:
		return sim.KindOllama
	}
	return sim.KindTGI
}

// versions lists what every node serves, in spec order.
func versions(routes []RouteSpec) []version {
	var out []version
	add := func(route, v string, s Server, gpus int, b sim.Behavior) {
		if s.Kind == "" {
			s.Kind = defaultKind(len(out))
		}
		if s.Model == "" {
			switch s.Kind {
			case sim.KindKServeV2:
				s.Model, s.ModelVersion = route, v
			case sim.KindOllama:
				s.Model = route + ":" + v
			default:
				s.Model = "sim/" + route + "-" + v
			}
		}
		out = append(out, version{route: route, version: v, server: s, gpus: gpus, behavior: b})
	}
	for _, r := range routes {
		add(r.Route, r.Active, r.ActiveServer, r.GPUsPerNode, sim.Warm)
		if r.Previous != "" {
			b := sim.Unloaded
			if r.PreviousWarm {
				b = sim.Warm
			}
			add(r.Route, r.Previous, r.PreviousServer, r.GPUsPerNode, b)
		}
	}
	return out
}

// check validates cfg and fills in its defaults.
func (c *Config) check() error {
	if c.Client == nil {
		return errors.New("simfleet: Config.Client is required")
	}
	switch {
	case c.Nodes < 0 || c.Nodes > maxNodes:
		return fmt.Errorf("simfleet: Nodes must be 0 to %d, got %d", maxNodes, c.Nodes)
	case c.Routers < 0 || c.Routers > maxRouters:
		return fmt.Errorf("simfleet: Routers must be 0 to %d, got %d", maxRouters, c.Routers)
	case c.Runtimes < 0 || c.Runtimes > maxRuntimes:
		return fmt.Errorf("simfleet: Runtimes must be 0 to %d, got %d", maxRuntimes, c.Runtimes)
	case c.RouterProcesses < 0 || c.RouterProcesses > c.Routers:
		return fmt.Errorf("simfleet: RouterProcesses must be 0 to Routers (%d), got %d", c.Routers, c.RouterProcesses)
	case c.RouterLeaseTTL < 0:
		return fmt.Errorf("simfleet: RouterLeaseTTL must not be negative, got %v", c.RouterLeaseTTL)
	}
	if c.RouterLeaseTTL == 0 {
		c.RouterLeaseTTL = defaultRouterLeaseTTL
	}
	if c.ProbeInterval < 0 || c.RuntimeRefresh < 0 || c.StartTimeout < 0 || c.CanaryBudget < 0 {
		return fmt.Errorf("simfleet: ProbeInterval, RuntimeRefresh, StartTimeout and CanaryBudget must not be negative, got %v, %v, %v and %v",
			c.ProbeInterval, c.RuntimeRefresh, c.StartTimeout, c.CanaryBudget)
	}
	if c.CanaryBudget == 0 {
		c.CanaryBudget = canaryBudget
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = probeInterval
	}
	if c.RuntimeRefresh == 0 {
		c.RuntimeRefresh = runtimeRefresh
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = startTimeout
	}
	if err := c.Traffic.check(); err != nil {
		return err
	}
	routes := make([]RouteSpec, len(c.Routes))
	seen := map[string]bool{}
	for i, r := range c.Routes {
		if err := routing.ValidateRoute(r.Route); err != nil {
			return fmt.Errorf("simfleet: route %d: %w", i, err)
		}
		if seen[r.Route] {
			return fmt.Errorf("simfleet: route %s listed twice", r.Route)
		}
		seen[r.Route] = true
		if err := routing.ValidateVersion(r.Active); err != nil {
			return fmt.Errorf("simfleet: route %s: active: %w", r.Route, err)
		}
		if r.Previous != "" {
			if err := routing.ValidateVersion(r.Previous); err != nil {
				return fmt.Errorf("simfleet: route %s: previous: %w", r.Route, err)
			}
			if r.Previous == r.Active {
				return fmt.Errorf("simfleet: route %s: previous and active are both %s", r.Route, r.Active)
			}
		}
		if r.GPUsPerNode == 0 {
			r.GPUsPerNode = 1
		}
		if r.GPUsPerNode < 0 || r.GPUsPerNode > fleetapi.MaxGPUs {
			return fmt.Errorf("simfleet: route %s: GPUsPerNode must be 1 to %d, got %d", r.Route, fleetapi.MaxGPUs, r.GPUsPerNode)
		}
		routes[i] = r
	}
	c.Routes = routes
	if c.Traffic.RPS > 0 && len(c.Routes) == 0 {
		return errors.New("simfleet: traffic needs at least one route")
	}
	if c.AgentToken == "" {
		t, err := randomHex(24)
		if err != nil {
			return err
		}
		c.AgentToken = t
	}
	if len(c.RuntimeSecret) == 0 {
		s, err := randomHex(32)
		if err != nil {
			return err
		}
		c.RuntimeSecret = []byte(s)
	}
	if c.SeedActor == "" {
		c.SeedActor = "simfleet"
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("simfleet: random secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Fleet is a running simulated fleet. Its methods are safe for concurrent
// use.
type Fleet struct {
	cfg      Config
	versions []version
	store    *routing.Store
	// ctx lives until Close; everything the fleet starts runs under it.
	ctx    context.Context
	cancel context.CancelFunc
	nodes  []*node
	nodeWG sync.WaitGroup

	// mu guards the routers' state and convC.
	mu      sync.Mutex
	routers []*router
	// routerClients are the router processes' shared clients
	// (Config.RouterProcesses); nil when each router has its own.
	routerClients []*clientv3.Client
	// convC is closed and replaced whenever a router applies a change, to
	// wake WaitConverged.
	convC chan struct{}

	runtimes    []*runtimeInst
	stats       counters
	trafficStop chan struct{}
	stopOnce    sync.Once
	genWG       sync.WaitGroup
	reqWG       sync.WaitGroup

	closeOnce sync.Once
}

// Start seeds the routes, starts the nodes, routers, runtimes and traffic,
// and returns once the fleet is whole: every node registered (and its agent
// has probed every server once), every router has published the routes'
// current epochs, every runtime has applied the routes and registered.
//
// A route is seeded only when it has no config yet — previous promoted
// first, then active, so that previous is set — so a fleet started again on
// the same etcd keeps the routes as they were left. ctx bounds the start
// only: what Start starts runs until Close. On error everything started is
// stopped again.
func Start(ctx context.Context, cfg Config) (_ *Fleet, err error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	f := &Fleet{
		cfg:         cfg,
		versions:    versions(cfg.Routes),
		store:       routing.NewStore(cfg.Client, cfg.Prefix, cfg.Logger.Named("routing")),
		convC:       make(chan struct{}),
		trafficStop: make(chan struct{}),
	}
	f.store.Now = cfg.Now
	f.ctx, f.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	epochs, err := f.seed(sctx)
	if err != nil {
		return nil, err
	}
	for i := 1; i <= cfg.Nodes; i++ {
		if err := f.startNode(fmt.Sprintf("gpu-%02d", i)); err != nil {
			return nil, fmt.Errorf("simfleet: node %d: %w", i, err)
		}
	}
	for range cfg.RouterProcesses {
		cli, err := f.routerClient()
		if err != nil {
			return nil, fmt.Errorf("simfleet: router process: %w", err)
		}
		f.routerClients = append(f.routerClients, cli)
	}
	for i := 1; i <= cfg.Routers; i++ {
		if err := f.startRouter(fmt.Sprintf("router-%d", i), i-1); err != nil {
			return nil, fmt.Errorf("simfleet: router %d: %w", i, err)
		}
	}
	for i := 1; i <= cfg.Runtimes; i++ {
		if err := f.startRuntime(fmt.Sprintf("runtime-%d", i)); err != nil {
			return nil, fmt.Errorf("simfleet: runtime %d: %w", i, err)
		}
	}
	if err := f.waitNodes(sctx); err != nil {
		return nil, err
	}
	if err := f.waitRouters(sctx, epochs); err != nil {
		return nil, err
	}
	if err := f.waitRuntimes(sctx); err != nil {
		return nil, err
	}
	f.startTraffic()
	return f, nil
}

// seed creates the routes that do not exist yet, and returns every route's
// current epoch.
func (f *Fleet) seed(ctx context.Context) (map[string]int64, error) {
	epochs := make(map[string]int64, len(f.cfg.Routes))
	for _, r := range f.cfg.Routes {
		cur, err := f.store.Get(ctx, r.Route)
		if err == nil {
			epochs[r.Route] = cur.Config.Epoch
			continue
		}
		if !errors.Is(err, routing.ErrNotFound) {
			return nil, fmt.Errorf("simfleet: seed %s: %w", r.Route, err)
		}
		var rev int64
		for _, to := range []string{r.Previous, r.Active} {
			if to == "" {
				continue
			}
			res, err := f.store.Promote(ctx, routing.Change{Route: r.Route, To: to, ExpectRev: rev,
				Op: uuid.NewString(), Actor: f.cfg.SeedActor, Reason: "seeded by the simulated fleet"})
			if err != nil {
				return nil, fmt.Errorf("simfleet: seed %s: %w", r.Route, err)
			}
			rev, epochs[r.Route] = res.Revision, res.Config.Epoch
		}
	}
	return epochs, nil
}

// AgentToken is the bearer token the fleet's agents require.
func (f *Fleet) AgentToken() string { return f.cfg.AgentToken }

// RuntimeSecret is the HMAC key a runtime.Signaller pointed at this fleet
// uses. The fleet's runtimes are SDK instances, which watch etcd and need no
// signed request, but a bot configured like production needs the secret.
func (f *Fleet) RuntimeSecret() []byte { return append([]byte(nil), f.cfg.RuntimeSecret...) }

// Prefix is the etcd prefix the fleet lives under.
func (f *Fleet) Prefix() string { return f.cfg.Prefix }

// Close stops the traffic, the runtimes (deregistering them), the routers
// (withdrawing their records), the agents (deregistering the nodes) and the
// simulated servers, and returns when no goroutine of the fleet is left. It
// is safe to call more than once, and after a Start that failed.
func (f *Fleet) Close() {
	f.closeOnce.Do(func() {
		f.cancel()
		f.stopGenerators()
		f.reqWG.Wait()
		for _, rt := range f.runtimes {
			rt.inst.Close()
		}
		f.mu.Lock()
		routers := append([]*router(nil), f.routers...)
		f.mu.Unlock()
		for _, r := range routers {
			r.close()
		}
		for _, c := range f.routerClients {
			_ = c.Close()
		}
		// The agents stopped with ctx; closing the simulated servers
		// releases any probe a hung server still holds, so that the
		// agents' Run can return.
		for _, n := range f.nodes {
			n.close()
		}
		f.nodeWG.Wait()
		for _, n := range f.nodes {
			n.probes.CloseIdleConnections()
		}
	})
}

// poll calls cond every pollInterval until it reports true or ctx ends.
func poll(ctx context.Context, what string, cond func(ctx context.Context) (bool, error)) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		ok, err := cond(ctx)
		if ok && err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("simfleet: %s: %w (last error: %v)", what, ctx.Err(), err)
			}
			return fmt.Errorf("simfleet: %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// counters are the traffic's outcome counters.
type counters struct {
	started, completed, aborted, reissued, failed, completedOnRolledBack atomic.Int64
}
