package warm

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// TestMain fails the package if a worker, an HTTP connection or a monitor
// goroutine outlives its test.
func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

const testToken = "test-agent-token"

func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// behaviour scripts what a fake agent answers about the version it is asked
// about.
type behaviour struct {
	// mode selects a failure: "" answers with the fields below; "hang"
	// blocks until the request's context ends; "garbage", "huge" and
	// "trailing" send malformed bodies; "status" answers status with a
	// short body.
	mode   string
	status int

	served, loaded, ready, warm bool
	gpus                        int
	canaryMS                    float64
	inflight                    *int
	errText                     string
	// ageMS is the age of the cached observation; freshAgeMS the age of the
	// answer to fresh=1 (0 unless set).
	ageMS, freshAgeMS int64
	// freshStatus, when set, is the status of every fresh=1 answer;
	// freshHang makes fresh=1 requests hang.
	freshStatus int
	freshHang   bool
	// unobserved and freshUnobserved answer like an agent that has not
	// probed the version yet (no observed_at, not warm), from its cache
	// and to fresh=1.
	unobserved, freshUnobserved bool
	// node, when set, is the node name put in the reply instead of the
	// agent's own.
	node string
	// version, when set, is the version put in the reply.
	version string
	// delay is slept (honouring the request's context) before answering.
	delay time.Duration
}

func warmB(gpus int) behaviour {
	return behaviour{served: true, loaded: true, ready: true, warm: true, gpus: gpus, canaryMS: 120, ageMS: 1500}
}

func coldB(gpus int) behaviour {
	return behaviour{served: true, loaded: true, ready: true, gpus: gpus, canaryMS: 2100, ageMS: 1500,
		errText: "canary took 2.1s, budget 800ms"}
}

// fakeAgent serves the fleetapi GET /v1/warm contract with scripted answers
// so the bot's side can be driven through every state and failure. It is
// not the agent: the real agent (fleet/agent) and its HTTP API are tested
// in that package against simulated inference servers.
type fakeAgent struct {
	node  string
	token string
	srv   *httptest.Server

	mu sync.Mutex
	b  behaviour

	requests, fresh atomic.Int32
	// conc, when set, counts requests in progress across a set of agents.
	conc *concurrency
}

type concurrency struct {
	now, max atomic.Int32
}

func (c *concurrency) enter() {
	n := c.now.Add(1)
	for {
		m := c.max.Load()
		if n <= m || c.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func (c *concurrency) leave() { c.now.Add(-1) }

func startAgent(tb testing.TB, node string, b behaviour) *fakeAgent {
	tb.Helper()
	a := &fakeAgent{node: node, token: testToken, b: b}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	tb.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAgent) set(b behaviour) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.b = b
}

func (a *fakeAgent) url() string { return a.srv.URL }

func (a *fakeAgent) serve(w http.ResponseWriter, r *http.Request) {
	a.requests.Add(1)
	if a.conc != nil {
		a.conc.enter()
		defer a.conc.leave()
	}
	if r.Header.Get("Authorization") != "Bearer "+a.token {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if r.URL.Path != "/v1/warm" {
		http.NotFound(w, r)
		return
	}
	a.mu.Lock()
	b := a.b
	a.mu.Unlock()
	q := r.URL.Query()
	fresh := q.Get("fresh") == "1"
	if fresh {
		a.fresh.Add(1)
	}
	if b.delay > 0 {
		select {
		case <-time.After(b.delay):
		case <-r.Context().Done():
			return
		}
	}
	switch {
	case b.mode == "hang", fresh && b.freshHang:
		<-r.Context().Done()
		return
	case b.mode == "garbage":
		w.Write([]byte(`{"node": "` + a.node + `", "route": tru`))
		return
	case b.mode == "huge":
		w.Write([]byte(`{"node":"` + a.node + `","error":"`))
		w.Write([]byte(strings.Repeat("x", 2<<20)))
		w.Write([]byte(`"}`))
		return
	case b.mode == "status":
		http.Error(w, "inference server exploded\n\x1b[31mstack trace", b.status)
		return
	case fresh && b.freshStatus != 0:
		http.Error(w, "fresh probe failed", b.freshStatus)
		return
	}
	age := b.ageMS
	if fresh {
		age = b.freshAgeMS
	}
	reply := fleetapi.WarmReply{Node: a.node, VersionState: fleetapi.VersionState{
		Route: q.Get("route"), Version: q.Get("version"), Kind: "openai",
		Served: b.served, Loaded: b.loaded, Ready: b.ready, Warm: b.warm, GPUs: b.gpus,
		CanaryMS: b.canaryMS, InFlight: b.inflight, Error: b.errText,
		ObservedAt: time.Now().Add(-time.Duration(age) * time.Millisecond), AgeMS: age,
	}}
	if (!fresh && b.unobserved) || (fresh && b.freshUnobserved) {
		reply.ObservedAt, reply.AgeMS, reply.Loaded, reply.Ready, reply.Warm = time.Time{}, 0, false, false, false
		reply.CanaryMS, reply.Error = 0, "not probed yet"
	}
	if b.node != "" {
		reply.Node = b.node
	}
	if b.version != "" {
		reply.Version = b.version
	}
	body, _ := json.Marshal(reply)
	if b.mode == "trailing" {
		body = append(body, []byte(`{}`)...)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// deadURL is an http URL on which nothing listens.
func deadURL(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// fleet is one test's corner of a shared etcd: its own prefix.
type fleet struct {
	tb     testing.TB
	cli    *clientv3.Client
	prefix string
	store  *routing.Store
}

func newFleet(tb testing.TB, cli *clientv3.Client) *fleet {
	tb.Helper()
	// The test's name keeps subtests sharing one etcd apart.
	p := "/" + strings.ReplaceAll(tb.Name(), "/", "_")
	return &fleet{tb: tb, cli: cli, prefix: p, store: routing.NewStore(cli, p, zap.NewNop())}
}

// route creates a route whose active version is active and, when previous
// is set, whose previous version is previous (promoted in that order).
func (f *fleet) route(name, active, previous string) {
	f.tb.Helper()
	var rev int64
	for _, v := range []string{previous, active} {
		if v == "" {
			continue
		}
		res, err := f.store.Promote(testCtx(f.tb), routing.Change{Route: name, To: v, ExpectRev: rev,
			Op: fmt.Sprintf("op-%d", time.Now().UnixNano()), Actor: "test", Reason: "test"})
		if err != nil {
			f.tb.Fatalf("promote %s to %s: %v", name, v, err)
		}
		rev = res.Revision
	}
}

func (f *fleet) put(key, value string) {
	f.tb.Helper()
	if _, err := f.cli.Put(testCtx(f.tb), key, value); err != nil {
		f.tb.Fatal(err)
	}
}

func (f *fleet) node(name, url string, serving map[string]map[string]int) {
	f.tb.Helper()
	rec := fleetapi.NodeRecord{Node: name, URL: url, Serving: serving}
	if err := rec.Validate(); err != nil {
		f.tb.Fatal(err)
	}
	b, _ := json.Marshal(rec)
	f.put(fleetapi.Keys{Prefix: f.prefix}.Node(name), string(b))
}

func (f *fleet) policy(route, doc string) {
	f.tb.Helper()
	f.put(Keys{Prefix: f.prefix}.Policy(route), doc)
}

func (f *fleet) checker(mod func(*Config)) *Checker {
	f.tb.Helper()
	cfg := Config{KV: f.cli, Prefix: f.prefix, AgentToken: testToken, Timeout: 5 * time.Second,
		Logger: zap.NewNop()}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewChecker(cfg)
	if err != nil {
		f.tb.Fatal(err)
	}
	f.tb.Cleanup(c.Close)
	return c
}

func nodeByName(r Report, name string) (NodeResult, bool) {
	for _, n := range r.Nodes {
		if n.Node == name {
			return n, true
		}
	}
	return NodeResult{}, false
}
