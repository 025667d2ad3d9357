package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// prefix is BACKFLIP_ETCD_PREFIX of every scenario (each has its own
// cluster).
const prefix = "/bf"

// Timing settings of the bot replicas. They only bound waits; nothing
// asserts a duration.
const (
	// warmTimeout is WARM_TIMEOUT; above the default (2s), because the
	// suite's agents answer on a machine loaded with -race and with the
	// other scenarios, and a warm check cut short is a refusal the
	// scenarios then have to make up for.
	warmTimeout     = 5 * time.Second
	convergeTimeout = 3 * time.Second
	ackTimeout      = 3 * time.Second
	finalizeTimeout = 20 * time.Second
	ownerTTL        = 5 // seconds
	// opTimeout is the deadline of an operator's call.
	opTimeout = 10 * time.Second
	// answerSlack is added to everything a call may legitimately take past
	// its deadline (the phases after a flip run to the end whatever the
	// caller's context: routers, in-flight, the final audit write) to get
	// the deadline by which an operator must have had an answer.
	answerSlack = 15 * time.Second
	afterFlip   = convergeTimeout + ackTimeout + finalizeTimeout + answerSlack
	answerBy    = opTimeout + afterFlip
	// settleTimeout bounds each wait of the end of a scenario (recovery,
	// convergence, shipping).
	settleTimeout = 90 * time.Second
)

// The operators' Slack identities and the incident channel they type in.
const incident = "C0INC"

func operatorID(i int) string { return fmt.Sprintf("U0OP%d", i+1) }

// twoRoutes are the routes most scenarios change: both versions of each
// are warm on every node.
func twoRoutes() []simfleet.RouteSpec {
	return []simfleet.RouteSpec{
		{Route: "chat-70b", Active: "v42", Previous: "v41", PreviousWarm: true, GPUsPerNode: 4},
		{Route: "code-7b", Active: "v8", Previous: "v7", PreviousWarm: true, GPUsPerNode: 2},
	}
}

// envOpts shape a scenario's world.
type envOpts struct {
	nodes, routers, runtimes, rps int
	routes                        []simfleet.RouteSpec
	// linkFleet puts a Link in front of every member and has the fleet's
	// parts (agents, routers, runtimes) dial those, so that the scenario
	// can partition and cut them off; by default they dial the members.
	linkFleet bool
	// db is the audit database; default a fresh one from pg.
	db *pgx.ConnConfig
	// policies are routes' policy documents, written before the fleet
	// starts.
	policies map[string]string
}

// env is one scenario's world: a 3-member etcd cluster, an audit
// database, a simulated fleet whose routers and runtimes are observed,
// and the ground-truth recorder of every route change. Bot replicas,
// shippers and operators are added by the scenario.
type env struct {
	t     *testing.T
	sz    sizes
	cl    *etcdtest.Cluster
	admin *clientv3.Client // the harness's own client: reads, compaction
	fleet *simfleet.Fleet
	obs   *simfleet.Recorder
	db    *pgxpool.Pool
	log   *zap.Logger
	rec   *recorder
	hist  *history
	// links are the fleet's links to the members (envOpts.linkFleet).
	links []*etcdtest.Link
	specs []simfleet.RouteSpec
	// coldOK says whether a not-warm refusal of route@version may be
	// right in this scenario. By default it may: a simulated server's
	// canary can run over its budget on a loaded machine, and the agent
	// then rightly reports it cold. The model still requires the request
	// to have been one that would otherwise change the route.
	coldOK func(route, version string) bool

	// hold pauses the background operators (those of operate) between
	// calls.
	hold atomic.Bool

	mu       sync.Mutex
	replicas []*replica
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.nodes == 0 {
		o.nodes = 4
	}
	if o.routers == 0 {
		o.routers = 3
	}
	if o.runtimes == 0 {
		o.runtimes = 2
	}
	if o.rps == 0 {
		o.rps = 20
	}
	if o.routes == nil {
		o.routes = twoRoutes()
	}
	e := &env{
		t:      t,
		sz:     sizing(t),
		log:    zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)),
		obs:    simfleet.NewRecorder(),
		specs:  o.routes,
		coldOK: func(string, string) bool { return true },
	}
	start := time.Now()
	e.cl = etcdtest.StartCluster(t, 3)
	e.admin = newClient(t, e.cl.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for route, doc := range o.policies {
		if _, err := e.admin.Put(ctx, prefix+"/policies/"+route, doc); err != nil {
			t.Fatal(err)
		}
	}

	fleetCli := e.admin
	if o.linkFleet {
		for _, ep := range e.cl.Endpoints() {
			e.links = append(e.links, etcdtest.NewLink(t, ep))
		}
		fleetCli = newClient(t, e.linkEndpoints())
	}
	f, err := simfleet.Start(ctx, simfleet.Config{
		Client: fleetCli, Prefix: prefix, Nodes: o.nodes, Routes: o.routes,
		Routers: o.routers, Runtimes: o.runtimes,
		Traffic: simfleet.Traffic{RPS: o.rps, Steps: 4, StepDelay: 5 * time.Millisecond},
		Logger:  e.log.Named("fleet"), Observe: e.obs.Observer(),
	})
	if err != nil {
		t.Fatalf("start the simulated fleet: %v", err)
	}
	e.fleet = f
	t.Cleanup(f.Close)

	cfg := o.db
	if cfg == nil {
		cfg = pg.NewDatabase(t)
	}
	pc, err := pgxpool.ParseConfig("")
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig = cfg
	e.db, err = pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.db.Close)

	e.rec = startRecorder(t, e.admin, o.routes)
	e.hist = newHistory(e.rec)
	for _, s := range o.routes {
		e.hist.init(s.Route, e.rec.initial(s.Route))
	}
	t.Logf("world up in %v: 3 etcd members, %d nodes, %d routers, %d runtimes", time.Since(start).Round(time.Millisecond), o.nodes, o.routers, o.runtimes)
	return e
}

// linkEndpoints are the links' endpoints.
func (e *env) linkEndpoints() []string {
	out := make([]string, len(e.links))
	for i, l := range e.links {
		out[i] = l.Endpoint()
	}
	return out
}

// newClient is a client of endpoints with keepalives, so that a connection
// to a partitioned member is eventually noticed and avoided (gRPC pings no
// more often than every 10 s), closed when the test ends.
func newClient(tb testing.TB, endpoints []string) *clientv3.Client {
	tb.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
		Logger: zap.NewNop(),
	})
	if err != nil {
		tb.Fatalf("etcd client of %v: %v", endpoints, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// replica is one bot replica: a commands.Service with its own etcd client
// and owner lease.
type replica struct {
	name string
	cli  *clientv3.Client
	svc  *commands.Service
	sess *concurrency.Session
	// timeout is the deadline of its operators' calls.
	timeout time.Duration
}

// replicaOpts shape a replica.
type replicaOpts struct {
	// endpoints default to every member, directly.
	endpoints []string
	// warmTimeout is WARM_TIMEOUT (default warmTimeout).
	warmTimeout time.Duration
	// httpClient asks the agents (default the checker's own).
	httpClient *http.Client
	// timeout is the deadline of the calls made through the replica
	// (default opTimeout): operators in a hurry, such as a backflipctl
	// run with a short timeout.
	timeout time.Duration
	// converge and acks are ROUTER_CONVERGE_TIMEOUT and
	// ABORT_ACK_TIMEOUT (defaults convergeTimeout and ackTimeout).
	converge, acks time.Duration
}

func (e *env) replica(name string, o replicaOpts) *replica {
	t := e.t
	t.Helper()
	if o.endpoints == nil {
		o.endpoints = e.cl.Endpoints()
	}
	if o.warmTimeout == 0 {
		o.warmTimeout = warmTimeout
	}
	if o.timeout == 0 {
		o.timeout = opTimeout
	}
	if o.converge == 0 {
		o.converge = convergeTimeout
	}
	if o.acks == 0 {
		o.acks = ackTimeout
	}
	cli := newClient(t, o.endpoints)
	log := e.log.Named(name)
	checker, err := warm.NewChecker(warm.Config{KV: cli, Prefix: prefix, AgentToken: e.fleet.AgentToken(),
		Timeout: o.warmTimeout, HTTPClient: o.httpClient, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(checker.Close)
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: cli, Prefix: prefix, Secret: e.fleet.RuntimeSecret(),
		AckTimeout: o.acks, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ownerTTL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	svc, err := commands.New(commands.Config{
		Etcd: cli, Prefix: prefix, Warm: checker, Runtime: sig, Owner: sess, DB: e.db,
		Access:          commands.Access{IncidentChannels: []string{incident}, RollbackUsers: operatorIDs()},
		ConvergeTimeout: o.converge, FinalizeTimeout: finalizeTimeout, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, cli: cli, svc: svc, sess: sess, timeout: o.timeout}
	e.mu.Lock()
	e.replicas = append(e.replicas, r)
	e.mu.Unlock()
	return r
}

func operatorIDs() []string {
	ids := make([]string, 16)
	for i := range ids {
		ids[i] = operatorID(i)
	}
	return ids
}

// runRecovery runs r's op recovery, as the elected replica does, until the
// test ends.
func (e *env) runRecovery(r *replica) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.svc.RunRecovery(ctx, 500*time.Millisecond, nil)
	}()
	e.t.Cleanup(func() { cancel(); <-done })
}

// startShipper runs an audit shipper on its own client of endpoints
// (default every member) until the test ends.
func (e *env) startShipper(endpoints []string) {
	t := e.t
	if endpoints == nil {
		endpoints = e.cl.Endpoints()
	}
	cli := newClient(t, endpoints)
	sh, err := audit.NewShipper(audit.ShipperConfig{Etcd: cli, Prefix: prefix, DB: e.db, Logger: e.log.Named("shipper"),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sh.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// origin is operator i in the incident channel.
func origin(i int) commands.Origin {
	return commands.Origin{Actor: commands.Actor{ID: operatorID(i)}, Channel: commands.Channel{ID: incident, Name: "inc-faults"},
		Transport: commands.TransportSlack}
}

// leader returns the index of the current leader.
func (e *env) leader() int { return e.cl.WaitLeader(e.t) }

// compact compacts etcd's history up to the current revision.
func (e *env) compact(ctx context.Context) (int64, error) {
	resp, err := e.admin.Get(ctx, prefix+"/routes/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	_, err = e.admin.Compact(ctx, rev)
	if errors.Is(err, rpctypes.ErrCompacted) {
		// Compacted to rev, or past it, already (by a concurrent compaction).
		err = nil
	}
	return rev, err
}

// agentHosts returns the host:port of each node's agent, by node.
func (e *env) agentHosts(ctx context.Context) map[string]string {
	t := e.t
	keys := fleetapi.Keys{Prefix: prefix}
	resp, err := e.admin.Get(ctx, keys.Nodes(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		rec, err := fleetapi.DecodeNodeRecord(keys, string(kv.Key), kv.Value)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(rec.URL)
		if err != nil {
			t.Fatal(err)
		}
		out[rec.Node] = u.Host
	}
	return out
}

// hangingHTTP returns an HTTP client for warm checks on which the agents
// at the given hosts never answer: their connections go to a listener
// that accepts and then says nothing, which is what the bot sees of a
// hung agent (its process alive, its port open, its handler stuck).
func hangingHTTP(t *testing.T, hung map[string]bool) *http.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read or answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	// The bot's own agent client, with its dial redirected for the hung
	// agents.
	c := warm.NewHTTPClient(nil)
	tr := c.Transport.(*http.Transport)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if hung[addr] {
			addr = ln.Addr().String()
		}
		return dial(ctx, network, addr)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// recorder is the ground truth: every change of every route, read from a
// watch of the routes' keys that starts at the revision the scenario
// starts from, on the harness's own client (so the faults a scenario
// injects into the bot's, the fleet's or the shipper's connections do not
// touch it). Its watch never falls behind a compaction (a watch that is
// caught up is not cancelled by one); if it ever did, the test fails
// rather than checking against an incomplete history.
type recorder struct {
	t   *testing.T
	cli *clientv3.Client

	mu      sync.Mutex
	changes map[string][]change // by route, in revision order
	heard   int64               // the revision the watch is known to be current at
	err     error
	wake    chan struct{}
}

// change is one route config as written at a revision.
type change struct {
	Rev    int64
	Config routing.RouteConfig
}

func startRecorder(t *testing.T, cli *clientv3.Client, routes []simfleet.RouteSpec) *recorder {
	t.Helper()
	r := &recorder{t: t, cli: cli, changes: map[string][]change{}, wake: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keys := routing.Keyspace{Prefix: prefix}
	resp, err := cli.Get(ctx, keys.Routes(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		r.add(keys, kv.Key, kv.Value, kv.ModRevision)
	}
	for _, s := range routes {
		if len(r.changes[s.Route]) != 1 {
			t.Fatalf("route %s not seeded", s.Route)
		}
	}
	r.heard = resp.Header.Revision
	wctx, wcancel := context.WithCancel(context.Background())
	wch := cli.Watch(wctx, keys.Routes(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1), clientv3.WithProgressNotify())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for wr := range wch {
			if err := wr.Err(); err != nil {
				r.fail(fmt.Errorf("ground-truth watch: %w (compact revision %d)", err, wr.CompactRevision))
				return
			}
			r.mu.Lock()
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					r.err = fmt.Errorf("route key %s deleted at revision %d", ev.Kv.Key, ev.Kv.ModRevision)
					continue
				}
				r.addLocked(keys, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
			}
			if wr.Header.Revision > r.heard {
				r.heard = wr.Header.Revision
			}
			close(r.wake)
			r.wake = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { wcancel(); <-done })
	return r
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
	close(r.wake)
	r.wake = make(chan struct{})
}

func (r *recorder) add(keys routing.Keyspace, key, value []byte, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLocked(keys, key, value, rev)
}

func (r *recorder) addLocked(keys routing.Keyspace, key, value []byte, rev int64) {
	name := string(key[len(keys.Routes()):])
	cfg, err := routing.DecodeRouteConfig(string(key), value, name)
	if err != nil {
		r.err = fmt.Errorf("ground truth: %w", err)
		return
	}
	r.changes[name] = append(r.changes[name], change{Rev: rev, Config: cfg})
}

// initial is the route's config when the scenario started.
func (r *recorder) initial(route string) change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changes[route][0]
}

// epochAt returns the epoch of route's config written at rev.
func (r *recorder) epochAt(route string, rev int64) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.changes[route] {
		if c.Rev == rev {
			return c.Config.Epoch, true
		}
	}
	return 0, false
}

// sync waits until the recorder has seen everything up to etcd's current
// revision.
func (r *recorder) sync(ctx context.Context) error {
	resp, err := r.cli.Get(ctx, prefix+"/routes/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	want := resp.Header.Revision
	for {
		r.mu.Lock()
		heard, ferr, wake := r.heard, r.err, r.wake
		r.mu.Unlock()
		if ferr != nil {
			return ferr
		}
		if heard >= want {
			return nil
		}
		if err := r.cli.RequestProgress(ctx); err != nil {
			return err
		}
		select {
		case <-wake:
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("ground-truth watch at revision %d, want %d: %w", heard, want, ctx.Err())
		}
	}
}

// snapshot returns every route's changes.
func (r *recorder) snapshot() (map[string][]change, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]change, len(r.changes))
	for k, v := range r.changes {
		out[k] = append([]change(nil), v...)
	}
	return out, r.err
}

// opRecords reads every op record.
func (e *env) opRecords(ctx context.Context) (map[string]commands.OpRecord, error) {
	keys := commands.Keys{Prefix: prefix}
	resp, err := e.admin.Get(ctx, keys.Ops(), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string]commands.OpRecord{}
	for _, kv := range resp.Kvs {
		rec, err := commands.DecodeOpRecord(string(kv.Key), kv.Value)
		if err != nil {
			return nil, err
		}
		out[string(kv.Key)[len(keys.Ops()):]] = rec
	}
	return out, nil
}

// countKeys counts the keys under a prefix.
func (e *env) countKeys(ctx context.Context, p string) (int64, error) {
	resp, err := e.admin.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

// auditRow is what the checks read of an audit_events row.
type auditRow struct {
	EventID, OpID, Kind, Outcome, Route string
}

func (e *env) auditRows(ctx context.Context) ([]auditRow, error) {
	rows, err := e.db.Query(ctx, `SELECT event_id::text, op_id::text, kind, outcome, route FROM audit_events ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (auditRow, error) {
		var a auditRow
		err := r.Scan(&a.EventID, &a.OpID, &a.Kind, &a.Outcome, &a.Route)
		return a, err
	})
}

// describe renders a value for a failure message.
func describe(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
