package commands

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// fleetPrefix is the etcd prefix of the tests that run ops on a simulated
// fleet.
const fleetPrefix = "/bf"

// Actors and channels of the fleet tests.
const (
	alice    = "U0ALICE"
	bob      = "U0BOB"
	mallory  = "U0MALLORY"
	incident = "C0INC"
)

// fleetEnv is a real embedded etcd with a simulated fleet on it (real
// agents over simulated inference servers, real routers, real runtime SDK
// instances with traffic), an audit database, and Services as bot
// replicas over it.
type fleetEnv struct {
	srv   *etcdtest.Server
	cli   *clientv3.Client
	fleet *simfleet.Fleet
	db    *pgxpool.Pool
	log   *zap.Logger
	opts  fleetOpts
}

type fleetOpts struct {
	nodes, routers, runtimes, rps int
	// ownerTTL is the replicas' lease TTL in seconds (default 10).
	ownerTTL int
}

func newFleetEnv(t testing.TB, o fleetOpts) *fleetEnv {
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
	if o.ownerTTL == 0 {
		o.ownerTTL = 10
	}
	e := &fleetEnv{srv: etcdtest.Start(t), log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), opts: o}
	e.cli = e.srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f, err := simfleet.Start(ctx, simfleet.Config{
		Client: e.cli, Prefix: fleetPrefix, Nodes: o.nodes, Routes: simfleet.DemoRoutes(),
		Routers: o.routers, Runtimes: o.runtimes, Traffic: simfleet.Traffic{RPS: o.rps, Steps: 4, StepDelay: 5 * time.Millisecond},
		Logger: e.log.Named("fleet"),
	})
	if err != nil {
		t.Fatalf("start the simulated fleet: %v", err)
	}
	e.fleet = f
	t.Cleanup(f.Close)
	pc, err := pgxpool.ParseConfig("")
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig = pg.NewDatabase(t)
	e.db, err = pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.db.Close)
	return e
}

// access is who may act in the fleet tests: alice and bob, in incident
// channels.
func testAccess() Access {
	return Access{IncidentChannels: []string{incident, "inc-*"}, RollbackUsers: []string{alice, bob}, DrillUsers: []string{alice}}
}

// replica is one bot replica: a Service with its own liveness lease.
type replica struct {
	svc  *Service
	sess *concurrency.Session
}

func (e *fleetEnv) replica(t testing.TB, name string) *replica {
	t.Helper()
	cli := e.srv.Client(t)
	checker, err := warm.NewChecker(warm.Config{KV: cli, Prefix: fleetPrefix, AgentToken: e.fleet.AgentToken(), Timeout: 3 * time.Second, Logger: e.log.Named(name)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(checker.Close)
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: cli, Prefix: fleetPrefix, Secret: e.fleet.RuntimeSecret(), AckTimeout: 5 * time.Second, Logger: e.log.Named(name)})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(e.opts.ownerTTL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	svc, err := New(Config{
		Etcd: cli, Prefix: fleetPrefix, Warm: checker, Runtime: sig, Owner: sess, DB: e.db,
		Access: testAccess(), ConvergeTimeout: 5 * time.Second, Logger: e.log.Named(name),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &replica{svc: svc, sess: sess}
}

func from(user string) Origin {
	return Origin{Actor: Actor{ID: user}, Channel: Channel{ID: incident, Name: "inc-42"}, Transport: TransportSlack}
}

func (e *fleetEnv) route(t testing.TB, route string) routing.Entry {
	t.Helper()
	ent, err := routing.NewStore(e.cli, fleetPrefix, nil).Get(tbCtx(t), route)
	if err != nil {
		t.Fatal(err)
	}
	return ent
}

// outbox returns the events waiting in the etcd outbox, by op.
func (e *fleetEnv) outbox(t testing.TB) map[string][]audit.Event {
	t.Helper()
	keys := audit.Keys{Prefix: fleetPrefix}
	resp, err := e.cli.Get(tbCtx(t), keys.Outbox(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]audit.Event{}
	for _, kv := range resp.Kvs {
		op, _, err := keys.ParseEventKey(string(kv.Key))
		if err != nil {
			t.Fatalf("outbox key %s: %v", kv.Key, err)
		}
		ev, err := audit.DecodeEvent(kv.Value)
		if err != nil {
			t.Fatalf("outbox value at %s: %v", kv.Key, err)
		}
		out[op.String()] = append(out[op.String()], ev)
	}
	return out
}

// opRecord reads an op record.
func (e *fleetEnv) opRecord(t testing.TB, id string) OpRecord {
	t.Helper()
	key := Keys{Prefix: fleetPrefix}.Op(id)
	resp, err := e.cli.Get(tbCtx(t), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("op record %s: %v (%d keys)", id, err, len(resp.Kvs))
	}
	rec, err := DecodeOpRecord(key, resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// ship runs an audit shipper until the outbox is empty.
func (e *fleetEnv) ship(t testing.TB) {
	t.Helper()
	sh, err := audit.NewShipper(audit.ShipperConfig{Etcd: e.cli, Prefix: fleetPrefix, DB: e.db, Logger: e.log.Named("shipper")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sh.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if len(e.outbox(t)) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox not shipped: %s", sh.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// progressLog records progress reports.
type progressLog struct {
	mu  sync.Mutex
	got []Progress
}

func (p *progressLog) add(pr Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, pr)
}

// phases returns "phase:state" of every report, in order.
func (p *progressLog) phases() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s []string
	for _, pr := range p.got {
		s = append(s, fmt.Sprintf("%s:%s", pr.Phase, pr.State))
	}
	return strings.Join(s, " ")
}

func kinds(evs []audit.Event) string {
	var s []string
	for _, ev := range evs {
		s = append(s, string(ev.Kind)+"/"+ev.Outcome)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func mustUUID(t testing.TB, s string) uuid.UUID {
	t.Helper()
	u, err := uuid.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func tbCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
