package warm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
)

// Defaults of Config, the contract's defaults of the matching variables.
const (
	DefaultTimeout = 2 * time.Second  // BACKFLIP_WARM_TIMEOUT
	DefaultMaxAge  = 15 * time.Second // BACKFLIP_WARM_MAX_AGE
	DefaultQuorum  = 1.0              // BACKFLIP_WARM_QUORUM
	// DefaultWorkers bounds the requests in flight at once. A hung agent
	// holds a worker until the deadline, so this is also how many hung
	// agents a check absorbs before healthy ones wait for a worker; 64 is
	// far above the handful a real fleet has, and far below what would
	// flood the bot's network or file descriptors.
	DefaultWorkers = 64
)

// KV is the part of the etcd client a Checker needs: it only reads.
type KV interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
}

var _ KV = (*clientv3.Client)(nil)

// Config is what a Checker needs. KV is required; zero values of the others
// take the defaults.
type Config struct {
	// KV reads route configs, policies and node records.
	KV KV
	// Prefix is BACKFLIP_ETCD_PREFIX, e.g. "/backflip".
	Prefix string
	// HTTPClient asks the agents. Nil means NewHTTPClient(nil), created
	// once per Checker and shared across its checks.
	HTTPClient *http.Client
	// AgentToken is BACKFLIP_AGENT_TOKEN, sent as "Authorization: Bearer".
	// It is never logged.
	AgentToken string
	// Timeout (BACKFLIP_WARM_TIMEOUT) bounds the whole check: the etcd
	// reads and every agent request share one deadline, so no agent, hung
	// or dead, delays the answer past it.
	Timeout time.Duration
	// MaxAge (BACKFLIP_WARM_MAX_AGE) is the oldest agent observation that
	// counts. An older one is asked again with fresh=1 within the same
	// deadline; if that does not produce a recent one the node is stale.
	MaxAge time.Duration
	// DefaultQuorum (BACKFLIP_WARM_QUORUM), in (0, 1], applies to routes
	// whose policy has no warm_quorum.
	DefaultQuorum float64
	// Workers bounds the agent requests in flight at once.
	Workers int
	Logger  *zap.Logger
	// Now returns the current time; it stamps reports and times them.
	Now func() time.Time
}

// Checker runs warm checks. It is safe for concurrent use; concurrent checks
// each have their own worker pool.
type Checker struct {
	cfg       Config
	keys      Keys
	fleet     fleetapi.Keys
	routes    routing.Keyspace
	client    *http.Client
	ownClient bool
	log       *zap.Logger
	now       func() time.Time
}

// NewChecker validates cfg and returns a Checker.
func NewChecker(cfg Config) (*Checker, error) {
	if cfg.KV == nil {
		return nil, errors.New("warm: Config.KV is required")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.DefaultQuorum == 0 {
		cfg.DefaultQuorum = DefaultQuorum
	}
	if cfg.Workers == 0 {
		cfg.Workers = DefaultWorkers
	}
	switch {
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("warm: Timeout %s must be positive", cfg.Timeout)
	case cfg.MaxAge < 0:
		return nil, fmt.Errorf("warm: MaxAge %s must be positive", cfg.MaxAge)
	case cfg.Workers < 0:
		return nil, fmt.Errorf("warm: Workers %d must be positive", cfg.Workers)
	}
	if err := validQuorum(cfg.DefaultQuorum); err != nil {
		return nil, fmt.Errorf("warm: DefaultQuorum: %w", err)
	}
	c := &Checker{
		cfg:    cfg,
		keys:   Keys{Prefix: cfg.Prefix},
		fleet:  fleetapi.Keys{Prefix: cfg.Prefix},
		routes: routing.Keyspace{Prefix: cfg.Prefix},
		client: cfg.HTTPClient,
		log:    cfg.Logger,
		now:    cfg.Now,
	}
	if c.client == nil {
		c.client, c.ownClient = NewHTTPClient(nil), true
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Close closes the idle agent connections of the HTTP client the Checker
// created (a client passed in Config is the caller's to manage).
func (c *Checker) Close() {
	if c.ownClient {
		c.client.CloseIdleConnections()
	}
}

// targetNode is one node registered for the target version.
type targetNode struct {
	node string
	url  string
	gpus int
}

// fleetView is what the etcd reads of one check found.
type fleetView struct {
	cfg         routing.RouteConfig
	quorum      float64
	quorumFrom  string
	activeNodes int
	activeGPUs  int
	targets     []targetNode
	targetGPUs  int
	malformed   []MalformedRecord
	nodeRecords int
	revision    int64
}

// Check decides whether target is warm enough to carry route's traffic.
//
// It reads the route (for its active version, the capacity baseline), the
// route's policy (for its quorum) and every node record, then asks the agent
// of every node registered for target, Workers at a time, all under one
// deadline of Timeout. The target is warm when its warm GPUs are at least
// ceil(quorum × GPUs registered for the active version), and at least 1.
// When no GPUs are registered for the active version (a new route, or its
// nodes are gone) there is no traffic capacity to compare with, and the
// target's own registered GPUs are the baseline instead: a target is never
// warm by default.
//
// It returns the report and nil when the target is warm, the report and a
// *NotWarmError (errors.Is ErrTargetNotWarm) when it is not, and another
// error when the check could not be made (bad names, the route is missing or
// malformed, the policy is malformed, etcd did not answer, ctx was
// cancelled). Unreachable agents and malformed node records are never
// errors: they are listed in the report and count for nothing.
func (c *Checker) Check(ctx context.Context, route, target string) (Report, error) {
	return c.check(ctx, route, target, false)
}

// CheckNew warm-checks version of a route that has no routing config yet
// (its first promote): the baseline is the version's own registered GPUs,
// quorum from policy or default. The report's Active is "" and its active
// capacity zero. If the route does exist, CheckNew is Check: the caller
// decided it was new from an earlier read, and a route created since then
// must be judged against what it now serves.
func (c *Checker) CheckNew(ctx context.Context, route, version string) (Report, error) {
	return c.check(ctx, route, version, true)
}

// check is Check, and with allowNew CheckNew.
func (c *Checker) check(ctx context.Context, route, target string, allowNew bool) (Report, error) {
	start := c.now()
	rep := Report{Route: route, Target: target, CheckedAt: start}
	if err := routing.ValidateRoute(route); err != nil {
		return rep, fmt.Errorf("warm check: %w", err)
	}
	if err := routing.ValidateVersion(target); err != nil {
		return rep, fmt.Errorf("warm check of %s: target: %w", route, err)
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	view, err := c.discover(dctx, route, target, allowNew)
	if err != nil {
		rep.Duration = c.now().Sub(start)
		return rep, fmt.Errorf("warm check of %s@%s: %w", route, target, err)
	}
	rep.Active = view.cfg.Active
	rep.Quorum, rep.QuorumFrom = view.quorum, view.quorumFrom
	rep.ActiveNodes, rep.ActiveGPUs = view.activeNodes, view.activeGPUs
	rep.Malformed = view.malformed
	rep.Revision = view.revision
	rep.TargetNodes = len(view.targets)
	rep.TargetGPUs = view.targetGPUs

	rep.Nodes = c.fanOut(dctx, route, target, view.targets)
	if err := ctx.Err(); err != nil {
		// The caller gave up: the nodes' answers are not a decision.
		rep.Duration = c.now().Sub(start)
		return rep, fmt.Errorf("warm check of %s@%s: %w", route, target, err)
	}
	decide(&rep, len(view.malformed), view.nodeRecords)
	rep.Duration = c.now().Sub(start)

	// A warm answer is routine (the monitor asks every interval); a cold
	// one is worth a line at info.
	logAt := c.log.Debug
	if !rep.Warm {
		logAt = c.log.Info
	}
	logAt("warm check",
		zap.String("route", route), zap.String("target", target), zap.String("active", rep.Active),
		zap.Bool("warm", rep.Warm), zap.String("summary", rep.Summary()),
		zap.Int("needed_gpus", rep.NeededGPUs), zap.Float64("quorum", rep.Quorum),
		zap.Int("malformed_records", len(rep.Malformed)), zap.Duration("took", rep.Duration))
	if !rep.Warm {
		return rep, &NotWarmError{Report: rep}
	}
	return rep, nil
}

// decide fills in the decision from the node results.
func decide(rep *Report, malformed, records int) {
	for _, n := range rep.Nodes {
		if n.State == StateWarm {
			rep.WarmNodes++
			rep.WarmGPUs += n.WarmGPUs
		}
	}
	rep.Baseline, rep.BaselineGPUs = BaselineActive, rep.ActiveGPUs
	if rep.ActiveGPUs == 0 {
		rep.Baseline, rep.BaselineGPUs = BaselineTarget, rep.TargetGPUs
	}
	rep.NeededGPUs = neededGPUs(rep.Quorum, rep.BaselineGPUs)
	rep.Warm = rep.WarmGPUs >= rep.NeededGPUs

	switch {
	case rep.Warm:
	case rep.TargetNodes == 0:
		rep.Reason = fmt.Sprintf("no node registers %s@%s (%d node records", rep.Route, rep.Target, records)
		if rep.Active != "" {
			rep.Reason += fmt.Sprintf(", %d serving active %s with %d GPUs", rep.ActiveNodes, rep.Active, rep.ActiveGPUs)
		}
		if malformed > 0 {
			rep.Reason += fmt.Sprintf(", %d malformed", malformed)
		}
		if rep.Active == "" {
			// A first promote: there is no active version to speak of.
			rep.Reason += "; the route has no active version yet"
		}
		rep.Reason += ")"
	case rep.TargetGPUs < rep.NeededGPUs:
		rep.Reason = fmt.Sprintf("only %d GPUs are registered for %s, %d needed: the target is under capacity even if all of it is warm",
			rep.TargetGPUs, rep.Target, rep.NeededGPUs)
	default:
		rep.Reason = fmt.Sprintf("%d GPUs short of the quorum", rep.NeededGPUs-rep.WarmGPUs)
	}
	sortNodes(rep.Nodes)
}

// neededGPUs is ceil(quorum × baseline), at least 1. The small tolerance
// keeps binary floating point from turning 0.7 × 10 = 7.000000000000001
// into 8.
func neededGPUs(quorum float64, baseline int) int {
	n := int(math.Ceil(quorum*float64(baseline) - 1e-9))
	if n < 1 {
		n = 1
	}
	return n
}

// discover reads the route, its policy and the fleet. With allowNew a
// missing route is a route about to be created: it has no active version,
// so nothing counts as active capacity and decide takes the target's own
// registered GPUs as the baseline.
func (c *Checker) discover(ctx context.Context, route, target string, allowNew bool) (fleetView, error) {
	var v fleetView
	routeKey := c.routes.Route(route)
	resp, err := c.cfg.KV.Get(ctx, routeKey)
	if err != nil {
		return v, fmt.Errorf("read route: %w", err)
	}
	switch {
	case len(resp.Kvs) > 0:
		if v.cfg, err = routing.DecodeRouteConfig(routeKey, resp.Kvs[0].Value, route); err != nil {
			return v, err
		}
	case !allowNew:
		return v, fmt.Errorf("route %s: %w", route, routing.ErrNotFound)
	}

	policyKey := c.keys.Policy(route)
	if resp, err = c.cfg.KV.Get(ctx, policyKey); err != nil {
		return v, fmt.Errorf("read policy: %w", err)
	}
	v.quorum, v.quorumFrom = c.cfg.DefaultQuorum, "default"
	if len(resp.Kvs) > 0 {
		p, err := DecodePolicy(policyKey, resp.Kvs[0].Value)
		if err != nil {
			return v, err
		}
		if p.WarmQuorum != 0 {
			v.quorum, v.quorumFrom = p.WarmQuorum, "policy"
		}
	}

	if resp, err = c.cfg.KV.Get(ctx, c.fleet.Nodes(), clientv3.WithPrefix()); err != nil {
		return v, fmt.Errorf("read node records: %w", err)
	}
	v.revision = resp.Header.Revision
	v.nodeRecords = len(resp.Kvs)
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		rec, err := fleetapi.DecodeNodeRecord(c.fleet, key, kv.Value)
		if err != nil {
			// The decoder's message repeats the key, which the record shows.
			msg := strings.TrimPrefix(err.Error(), fleetapi.ErrInvalid.Error()+": ")
			msg = strings.TrimPrefix(msg, key+": ")
			v.malformed = append(v.malformed, MalformedRecord{Key: key, Error: clean(msg)})
			c.log.Warn("malformed node record", zap.String("key", key), zap.Error(err))
			continue
		}
		versions := rec.Serving[route]
		// A new route has no active version ("" is never a version a
		// record can register, but the capacity must not hinge on that).
		if g, ok := versions[v.cfg.Active]; ok && v.cfg.Active != "" {
			v.activeNodes++
			v.activeGPUs += g
		}
		if g, ok := versions[target]; ok {
			v.targets = append(v.targets, targetNode{node: rec.Node, url: rec.URL, gpus: g})
			v.targetGPUs += g
		}
	}
	return v, nil
}

// fanOut asks every target node's agent, Workers at a time. It returns when
// every request has ended, which the shared deadline in ctx bounds.
func (c *Checker) fanOut(ctx context.Context, route, target string, nodes []targetNode) []NodeResult {
	results := make([]NodeResult, len(nodes))
	if len(nodes) == 0 {
		return results
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(c.cfg.Workers, len(nodes)) {
		wg.Go(func() {
			for i := range jobs {
				results[i] = c.askNode(ctx, route, target, nodes[i])
			}
		})
	}
	next := 0
feed:
	for ; next < len(nodes); next++ {
		select {
		case jobs <- next:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	for i := next; i < len(nodes); i++ {
		results[i] = c.notAsked(ctx, nodes[i])
	}
	return results
}

func (c *Checker) notAsked(ctx context.Context, n targetNode) NodeResult {
	reason := fmt.Sprintf("not asked: the check's %s deadline passed before one of its %d workers was free (other agents were slow)", c.cfg.Timeout, c.cfg.Workers)
	if errors.Is(ctx.Err(), context.Canceled) {
		reason = "not asked: the check was cancelled"
	}
	return NodeResult{Node: n.node, URL: n.url, GPUs: n.gpus, State: StateUnreachable, Reason: reason}
}

// askNode asks one agent about the target from its cache, and once more with
// fresh=1 if that observation is missing (not probed yet) or older than
// MaxAge. That keeps a healthy fleet at one request per node (agents probe
// on an interval shorter than WARM_MAX_AGE, so their cache is recent) and
// off the inference servers' critical path, while an agent whose cache went
// stale still gets a chance to run a canary within the same deadline. If
// the fresh answer is not recent either, the node is stale: its GPUs do not
// count, whatever the old observation said.
func (c *Checker) askNode(ctx context.Context, route, target string, n targetNode) (res NodeResult) {
	res = NodeResult{Node: n.node, URL: n.url, GPUs: n.gpus}
	if ctx.Err() != nil {
		return c.notAsked(ctx, n)
	}
	start := c.now()
	defer func() { res.Latency = c.now().Sub(start) }()

	reply, err := c.get(ctx, n, route, target, false)
	if err != nil {
		res.State, res.Reason = StateUnreachable, c.failReason(ctx, err, c.now().Sub(start))
		return res
	}
	if c.tooOld(reply) {
		res.Fresh = true
		freshStart := c.now()
		fresh, err := c.get(ctx, n, route, target, true)
		switch {
		case err != nil:
			fill(&res, reply)
			res.State = StateStale
			res.Reason = fmt.Sprintf("%s; asking for a fresh probe: %s",
				c.describeAge(reply), c.failReason(ctx, err, c.now().Sub(freshStart)))
			return res
		case c.tooOld(fresh):
			fill(&res, fresh)
			res.State = StateStale
			res.Reason = "asked for a fresh probe, the agent answered with " + c.describeAge(fresh)
			if fresh.Error != "" {
				res.Reason += ": " + clean(fresh.Error)
			}
			return res
		}
		reply = fresh
	}
	fill(&res, reply)
	switch {
	case !reply.Served:
		res.State = StateNotServing
		res.Reason = fmt.Sprintf("the agent has no server for %s@%s, though the node's record registers %d GPUs for it", route, target, n.gpus)
	case reply.Warm:
		res.State = StateWarm
		res.WarmGPUs = min(reply.GPUs, n.gpus)
		if reply.GPUs < n.gpus {
			res.Reason = fmt.Sprintf("warm on %d of the %d GPUs the node's record registers", reply.GPUs, n.gpus)
		}
	default:
		res.State = StateCold
		res.Reason = coldReason(reply)
	}
	return res
}

// tooOld reports whether a served version's observation is missing (the
// agent has not probed it yet: no observed_at) or older than MaxAge.
func (c *Checker) tooOld(r fleetapi.WarmReply) bool {
	return r.Served && (r.ObservedAt.IsZero() || r.AgeMS > c.cfg.MaxAge.Milliseconds())
}

func (c *Checker) describeAge(r fleetapi.WarmReply) string {
	if r.ObservedAt.IsZero() {
		return "no observation yet"
	}
	return fmt.Sprintf("an observation %s old (max %s)", roundAge(time.Duration(r.AgeMS)*time.Millisecond), c.cfg.MaxAge)
}

func fill(res *NodeResult, r fleetapi.WarmReply) {
	res.CanaryMS, res.InFlight, res.AgeMS = r.CanaryMS, r.InFlight, r.AgeMS
}

// coldReason says why an agent judged a version cold: its own error text
// when it gave one (the agent knows the budget: "canary took 2.1s, budget
// 800ms"), else the first stage that failed.
func coldReason(r fleetapi.WarmReply) string {
	if r.Error != "" {
		return clean(r.Error)
	}
	switch {
	case !r.Loaded:
		return "version not loaded"
	case !r.Ready:
		return "loaded but not ready"
	case r.CanaryMS > 0:
		return fmt.Sprintf("canary took %s, over budget", formatMS(r.CanaryMS))
	}
	return "loaded and ready, but the canary did not answer"
}

// statusError is a non-200 answer from an agent.
type statusError struct {
	code    int
	snippet string
}

func (e *statusError) Error() string {
	text := fmt.Sprintf("%d %s", e.code, http.StatusText(e.code))
	switch {
	case e.code == http.StatusUnauthorized || e.code == http.StatusForbidden:
		return fmt.Sprintf("agent refused our token (%s): BACKFLIP_AGENT_TOKEN differs between the bot and the agent", text)
	case e.code == http.StatusNotFound:
		return fmt.Sprintf("agent has no /v1/warm (%s): not a backflip agent, or an older one", text)
	case e.code >= 300 && e.code < 400:
		return fmt.Sprintf("agent answered with a redirect (%s), which is not followed", text)
	case e.snippet != "":
		return fmt.Sprintf("agent answered %s: %s", text, e.snippet)
	}
	return fmt.Sprintf("agent answered %s", text)
}

// replyError is a 200 answer that could not be used.
type replyError struct{ err error }

func (e *replyError) Error() string {
	return "reply invalid: " + strings.TrimPrefix(e.err.Error(), fleetapi.ErrInvalid.Error()+": ")
}

// get makes one request to an agent's /v1/warm.
func (c *Checker) get(ctx context.Context, n targetNode, route, target string, fresh bool) (fleetapi.WarmReply, error) {
	u, err := url.Parse(n.url)
	if err != nil {
		return fleetapi.WarmReply{}, fmt.Errorf("node url: %w", err)
	}
	u = u.JoinPath("v1", "warm")
	q := url.Values{"route": {route}, "version": {target}}
	if fresh {
		q.Set("fresh", "1")
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fleetapi.WarmReply{}, err
	}
	if c.cfg.AgentToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.AgentToken)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "backflip-warm-check")
	resp, err := c.client.Do(req)
	if err != nil {
		return fleetapi.WarmReply{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		se := &statusError{code: resp.StatusCode}
		if resp.StatusCode >= 500 {
			// Read past the 200 bytes quoted so that a token starting
			// before the cut is whole when it is redacted.
			b, _ := io.ReadAll(io.LimitReader(resp.Body, int64(200+len(c.cfg.AgentToken))))
			se.snippet = clean(clip(c.redact(string(b)), 200))
		}
		return fleetapi.WarmReply{}, se
	}
	reply, err := fleetapi.DecodeWarmReply(resp.Body, n.node, route, target)
	if err != nil {
		return fleetapi.WarmReply{}, &replyError{err: err}
	}
	reply.Error = c.redact(reply.Error)
	return reply, nil
}

// redact replaces the agent token in text an agent sent. Found by
// FuzzAgentWarmReply: an agent or a proxy whose error page echoes the
// request (debug pages do) put "Bearer <AGENT_TOKEN>" into the node's
// reason, which is posted in Slack and logged. It runs before any clipping,
// so a token is never cut into a prefix that escapes it.
func (c *Checker) redact(s string) string {
	if c.cfg.AgentToken == "" {
		return s
	}
	return strings.ReplaceAll(s, c.cfg.AgentToken, "[agent token]")
}

// failReason turns a failed request into a reason for a person.
func (c *Checker) failReason(ctx context.Context, err error, took time.Duration) string {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.Canceled) {
			return "the check was cancelled before the agent answered"
		}
		return fmt.Sprintf("agent did not answer within %s", roundAge(took))
	}
	var se *statusError
	var re *replyError
	if errors.As(err, &se) || errors.As(err, &re) {
		return clean(c.redact(err.Error()))
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return clean(c.redact("cannot reach the agent: " + err.Error()))
}

// roundAge rounds a duration for a person: 2s, 850ms, 42s.
func roundAge(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}
