package warm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// nodeSpec is one node of a decision case: the GPUs its record registers for
// the active version (v42) and the target (v41), 0 meaning not registered,
// and how its agent answers about the target.
type nodeSpec struct {
	name           string
	active, target int
	agent          behaviour
}

func (f *fleet) nodes(route string, specs []nodeSpec) map[string]*fakeAgent {
	f.tb.Helper()
	agents := map[string]*fakeAgent{}
	for _, s := range specs {
		a := startAgent(f.tb, s.name, s.agent)
		agents[s.name] = a
		serving := map[string]int{}
		if s.active > 0 {
			serving["v42"] = s.active
		}
		if s.target > 0 {
			serving["v41"] = s.target
		}
		f.node(s.name, a.url(), map[string]map[string]int{route: serving})
	}
	return agents
}

func TestCheckDecision(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	same := func(gpus ...int) []nodeSpec {
		var out []nodeSpec
		for i, g := range gpus {
			out = append(out, nodeSpec{name: "gpu-" + string(rune('a'+i)), active: g, target: g, agent: warmB(g)})
		}
		return out
	}
	withCold := func(specs []nodeSpec, i int) []nodeSpec {
		specs[i].agent = coldB(specs[i].target)
		return specs
	}
	uneven := func() []nodeSpec {
		// Active on 8+8+4 = 20 GPUs, target on two other nodes, 8+4 = 12.
		return []nodeSpec{
			{name: "act-1", active: 8}, {name: "act-2", active: 8}, {name: "act-3", active: 4},
			{name: "tgt-1", target: 8, agent: warmB(8)}, {name: "tgt-2", target: 4, agent: warmB(4)},
		}
	}
	for _, tc := range []struct {
		name          string
		specs         []nodeSpec
		policy        string
		defaultQuorum float64
		warm          bool
		needed        int
		warmGPUs      int
		targetGPUs    int
		baseline      Baseline
		summary       string
		quorumFrom    string
		first         string // the first node of the sorted report
		states        map[string]State
		reason        string // substring of Report.Reason
		nodeReason    map[string]string
	}{
		{name: "AllWarm", specs: same(4, 4, 4), warm: true, needed: 12, warmGPUs: 12, targetGPUs: 12,
			baseline: BaselineActive, summary: "3/3 nodes, 12/12 GPUs warm", quorumFrom: "default"},
		{name: "OneColdQuorumOneRefused", specs: withCold(same(4, 4, 4, 4), 2), warm: false, needed: 16, warmGPUs: 12,
			targetGPUs: 16, summary: "3/4 nodes, 12/16 GPUs warm", first: "gpu-c",
			states: map[string]State{"gpu-c": StateCold, "gpu-a": StateWarm}, reason: "4 GPUs short of the quorum",
			nodeReason: map[string]string{"gpu-c": "canary took 2.1s, budget 800ms"}},
		{name: "OneColdPolicy075Accepted", specs: withCold(same(4, 4, 4, 4), 2), policy: `{"warm_quorum":0.75,"owners":["U1"],"drill":{"cron":"0 3 * * 1"}}`,
			warm: true, needed: 12, warmGPUs: 12, targetGPUs: 16, quorumFrom: "policy", first: "gpu-c"},
		{name: "OneColdPolicy080Refused", specs: withCold(same(4, 4, 4, 4), 2), policy: `{"warm_quorum":0.8}`,
			warm: false, needed: 13, warmGPUs: 12, targetGPUs: 16, quorumFrom: "policy"},
		{name: "DefaultQuorumFromConfig", specs: withCold(same(4, 4), 0), defaultQuorum: 0.5,
			warm: true, needed: 4, warmGPUs: 4, targetGPUs: 8, quorumFrom: "default"},
		{name: "UnevenGPUsQuorumOneUnderCapacity", specs: uneven(), warm: false, needed: 20, warmGPUs: 12, targetGPUs: 12,
			summary: "2/2 nodes, 12/12 GPUs warm", reason: "only 12 GPUs are registered for v41, 20 needed"},
		{name: "UnevenGPUsPolicy060Accepted", specs: uneven(), policy: `{"warm_quorum":0.6}`, warm: true, needed: 12, warmGPUs: 12, targetGPUs: 12},
		{name: "UnevenGPUsPolicy061Refused", specs: uneven(), policy: `{"warm_quorum":0.61}`, warm: false, needed: 13, warmGPUs: 12, targetGPUs: 12},
		{name: "UnevenSharedNodes", specs: []nodeSpec{
			// Both versions on the same nodes, with different GPUs: 8+8+4
			// active, 4+4+4 target, one target server cold.
			{name: "n1", active: 8, target: 4, agent: warmB(4)},
			{name: "n2", active: 8, target: 4, agent: coldB(4)},
			{name: "n3", active: 4, target: 4, agent: warmB(4)},
		}, policy: `{"warm_quorum":0.4}`, warm: true, needed: 8, warmGPUs: 8, targetGPUs: 12},
		{name: "TargetNotServedAnywhere", specs: []nodeSpec{{name: "n1", active: 8}, {name: "n2", active: 8}},
			warm: false, needed: 16, targetGPUs: 0, summary: "0/0 nodes, 0/0 GPUs warm",
			reason: "no node registers chat-70b@v41 (2 node records, 2 serving active v42 with 16 GPUs)"},
		{name: "ZeroActiveCapacityAllWarm", specs: []nodeSpec{{name: "n1", target: 4, agent: warmB(4)}, {name: "n2", target: 2, agent: warmB(2)}},
			warm: true, needed: 6, warmGPUs: 6, targetGPUs: 6, baseline: BaselineTarget},
		{name: "ZeroActiveCapacityOneColdRefused", specs: []nodeSpec{{name: "n1", target: 4, agent: warmB(4)}, {name: "n2", target: 2, agent: coldB(2)}},
			warm: false, needed: 6, warmGPUs: 4, targetGPUs: 6, baseline: BaselineTarget},
		{name: "ZeroActiveCapacityPolicyHalf", specs: []nodeSpec{{name: "n1", target: 4, agent: warmB(4)}, {name: "n2", target: 4, agent: coldB(4)}},
			policy: `{"warm_quorum":0.5}`, warm: true, needed: 4, warmGPUs: 4, targetGPUs: 8, baseline: BaselineTarget},
		{name: "WarmOnFewerGPUsThanRegistered", specs: []nodeSpec{{name: "n1", active: 8, target: 8, agent: warmB(4)}},
			warm: false, needed: 8, warmGPUs: 4, targetGPUs: 8, states: map[string]State{"n1": StateWarm},
			nodeReason: map[string]string{"n1": "warm on 4 of the 8 GPUs"}},
		{name: "AgentClaimsMoreGPUsThanRegistered", specs: []nodeSpec{{name: "n1", active: 8, target: 2, agent: warmB(64)}},
			policy: `{"warm_quorum":0.25}`, warm: true, needed: 2, warmGPUs: 2, targetGPUs: 2},
		{name: "AgentSaysNotServing", specs: []nodeSpec{{name: "n1", active: 4, target: 4, agent: behaviour{ageMS: 10}}},
			warm: false, needed: 4, targetGPUs: 4, states: map[string]State{"n1": StateNotServing},
			nodeReason: map[string]string{"n1": "no server for chat-70b@v41"}},
		{name: "NotLoaded", specs: []nodeSpec{{name: "n1", active: 4, target: 4, agent: behaviour{served: true, gpus: 4, ageMS: 10}}},
			warm: false, needed: 4, targetGPUs: 4, states: map[string]State{"n1": StateCold},
			nodeReason: map[string]string{"n1": "version not loaded"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, cli)
			f.route("chat-70b", "v42", "v41")
			f.nodes("chat-70b", tc.specs)
			if tc.policy != "" {
				f.policy("chat-70b", tc.policy)
			}
			c := f.checker(func(c *Config) { c.DefaultQuorum = tc.defaultQuorum })
			rep, err := c.Check(testCtx(t), "chat-70b", "v41")
			if tc.warm != (err == nil) {
				t.Fatalf("warm = %v, err = %v; want warm %v\n%s", err == nil, err, tc.warm, rep.String())
			}
			if err != nil {
				var nw *NotWarmError
				if !errors.Is(err, ErrTargetNotWarm) || !errors.As(err, &nw) {
					t.Fatalf("refusal %v (%T) is not a *NotWarmError matching ErrTargetNotWarm", err, err)
				}
				if nw.Report.Warm || nw.Report.Route != "chat-70b" {
					t.Fatalf("refusal carries report %+v", nw.Report)
				}
				for _, n := range rep.NotWarm() {
					if !strings.Contains(err.Error(), n.Node) {
						t.Errorf("refusal %q does not name node %s", err, n.Node)
					}
				}
			}
			if rep.Warm != tc.warm || rep.NeededGPUs != tc.needed || rep.WarmGPUs != tc.warmGPUs || rep.TargetGPUs != tc.targetGPUs {
				t.Errorf("warm %v needed %d warmGPUs %d targetGPUs %d; want %v %d %d %d\n%s",
					rep.Warm, rep.NeededGPUs, rep.WarmGPUs, rep.TargetGPUs, tc.warm, tc.needed, tc.warmGPUs, tc.targetGPUs, rep.String())
			}
			if rep.Active != "v42" || rep.Target != "v41" || rep.Revision == 0 || rep.CheckedAt.IsZero() {
				t.Errorf("report header %+v", rep)
			}
			if tc.baseline != "" && rep.Baseline != tc.baseline {
				t.Errorf("baseline %s, want %s", rep.Baseline, tc.baseline)
			}
			if tc.summary != "" && rep.Summary() != tc.summary {
				t.Errorf("Summary() = %q, want %q", rep.Summary(), tc.summary)
			}
			if tc.quorumFrom != "" && rep.QuorumFrom != tc.quorumFrom {
				t.Errorf("quorum from %q, want %q", rep.QuorumFrom, tc.quorumFrom)
			}
			if tc.first != "" && (len(rep.Nodes) == 0 || rep.Nodes[0].Node != tc.first) {
				t.Errorf("first node %v, want %s", rep.Nodes, tc.first)
			}
			for node, want := range tc.states {
				if n, ok := nodeByName(rep, node); !ok || n.State != want {
					t.Errorf("node %s: %+v, want state %s", node, n, want)
				}
			}
			for node, want := range tc.nodeReason {
				if n, _ := nodeByName(rep, node); !strings.Contains(n.Reason, want) {
					t.Errorf("node %s reason %q, want it to contain %q", node, n.Reason, want)
				}
			}
			if tc.reason != "" && !strings.Contains(rep.Reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", rep.Reason, tc.reason)
			}
			if tc.warm && rep.Reason != "" {
				t.Errorf("warm report has reason %q", rep.Reason)
			}
		})
	}
}

// TestCheckBadAgents drives one node through every way an agent can fail;
// the other node is warm. Each failure is that node's state and reason, the
// check still decides (refused at quorum 1.0) and nothing panics.
func TestCheckBadAgents(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	// Only Hung waits for the deadline. Every other case must get its
	// answers (two agents, three etcd reads, a 2 MiB body for HugeBody)
	// within it even on a loaded 2-core CI machine under -race, so it has a
	// deadline far longer than it needs: a short one turns those cases into
	// "did not answer" flakes.
	const (
		hungTimeout = 1500 * time.Millisecond
		timeout     = 20 * time.Second
	)
	for _, tc := range []struct {
		name   string
		b      behaviour
		url    func(t *testing.T, a *fakeAgent) string
		token  string
		state  State
		reason string
	}{
		{name: "Hung", b: behaviour{mode: "hang"}, state: StateUnreachable, reason: "agent did not answer within"},
		{name: "Dead", b: warmB(4), url: func(t *testing.T, _ *fakeAgent) string { return deadURL(t) },
			state: StateUnreachable, reason: "cannot reach the agent"},
		{name: "GarbageJSON", b: behaviour{mode: "garbage"}, state: StateUnreachable, reason: "reply invalid"},
		{name: "HugeBody", b: behaviour{mode: "huge"}, state: StateUnreachable, reason: "reply larger than 1048576 bytes"},
		{name: "TrailingData", b: func() behaviour { b := warmB(4); b.mode = "trailing"; return b }(), state: StateUnreachable, reason: "trailing data"},
		{name: "WrongNodeName", b: func() behaviour { b := warmB(4); b.node = "gpu-evil"; return b }(), state: StateUnreachable,
			reason: `reply from node "gpu-evil", expected "bad"`},
		{name: "WrongVersion", b: func() behaviour { b := warmB(4); b.version = "v40"; return b }(), state: StateUnreachable,
			reason: "reply about chat-70b@v40, asked about chat-70b@v41"},
		{name: "WarmButNotLoaded", b: behaviour{served: true, warm: true, ready: true, gpus: 4}, state: StateUnreachable,
			reason: "warm but not served, loaded and ready"},
		{name: "WrongToken", b: warmB(4), token: "stale-token", state: StateUnreachable, reason: "agent refused our token (401 Unauthorized)"},
		{name: "NotFound", b: warmB(4), url: func(t *testing.T, a *fakeAgent) string { return a.url() + "/elsewhere" },
			state: StateUnreachable, reason: "agent has no /v1/warm (404 Not Found)"},
		{name: "ServerError", b: behaviour{mode: "status", status: 503}, state: StateUnreachable,
			reason: "agent answered 503 Service Unavailable: inference server exploded  [31mstack trace"},
		{name: "Redirect", b: behaviour{mode: "status", status: 302}, state: StateUnreachable, reason: "redirect (302 Found)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, cli)
			f.route("chat-70b", "v42", "v41")
			good := startAgent(t, "good", warmB(4))
			bad := startAgent(t, "bad", tc.b)
			if tc.token != "" {
				bad.token = tc.token
			}
			badURL := bad.url()
			if tc.url != nil {
				badURL = tc.url(t, bad)
			}
			serving := map[string]map[string]int{"chat-70b": {"v42": 4, "v41": 4}}
			f.node("good", good.url(), serving)
			f.node("bad", badURL, serving)
			limit := timeout
			if tc.b.mode == "hang" {
				limit = hungTimeout
			}
			c := f.checker(func(c *Config) { c.Timeout = limit })

			// The hung agent answers only when its request is cancelled, and
			// the test's context lasts a minute: a refusal (rather than
			// that context's error) is the proof that the check's own
			// deadline ended the wait. Latency figures are
			// BenchmarkWarmCheck's job, not a wall-clock assert's.
			rep, err := c.Check(testCtx(t), "chat-70b", "v41")
			if !errors.Is(err, ErrTargetNotWarm) {
				t.Fatalf("err = %v, want ErrTargetNotWarm\n%s", err, rep.String())
			}
			n, ok := nodeByName(rep, "bad")
			if !ok || n.State != tc.state || !strings.Contains(n.Reason, tc.reason) {
				t.Fatalf("bad node: %+v\nwant state %s and a reason containing %q", n, tc.state, tc.reason)
			}
			if g, _ := nodeByName(rep, "good"); g.State != StateWarm || rep.WarmGPUs != 4 || rep.Nodes[0].Node != "bad" {
				t.Fatalf("good node %+v, report:\n%s", g, rep.String())
			}
			if strings.ContainsAny(n.Reason, "\n\x1b") || len(n.Reason) > maxReasonText+200 {
				t.Errorf("reason not cleaned: %q", n.Reason)
			}
		})
	}
}

// TestCheckStaleObservations: a cached observation older than MaxAge is
// asked again with fresh=1 within the same deadline.
func TestCheckStaleObservations(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	stale := func(b behaviour) behaviour { b.ageMS = 60_000; return b }
	for _, tc := range []struct {
		name     string
		b        behaviour
		state    State
		fresh    int32
		reason   string
		warmGPUs int
	}{
		{name: "RecentCacheOneRequest", b: warmB(4), state: StateWarm, fresh: 0, warmGPUs: 4},
		{name: "StaleCacheFreshWarm", b: stale(warmB(4)), state: StateWarm, fresh: 1, warmGPUs: 4},
		{name: "StaleCacheFreshCold", b: stale(coldB(4)), state: StateCold, fresh: 1, reason: "canary took 2.1s"},
		{name: "StaleCacheFreshFails", b: func() behaviour { b := stale(warmB(4)); b.freshStatus = 500; return b }(),
			state: StateStale, fresh: 1, reason: "observation 1m0s old (max 15s); asking for a fresh probe: agent answered 500"},
		{name: "StaleCacheFreshStillOld", b: func() behaviour { b := stale(warmB(4)); b.freshAgeMS = 30_000; return b }(),
			state: StateStale, fresh: 1, reason: "answered with an observation 30s old (max 15s)"},
		{name: "NotProbedYetFreshWarm", b: func() behaviour { b := warmB(4); b.unobserved = true; return b }(),
			state: StateWarm, fresh: 1, warmGPUs: 4},
		{name: "NotProbedYetFreshNotEither", b: func() behaviour { b := warmB(4); b.unobserved, b.freshUnobserved = true, true; return b }(),
			state: StateStale, fresh: 1, reason: "asked for a fresh probe, the agent answered with no observation yet: not probed yet"},
		{name: "StaleCacheFreshHangs", b: func() behaviour { b := stale(warmB(4)); b.freshHang = true; return b }(),
			state: StateStale, fresh: 1, reason: "asking for a fresh probe: agent did not answer within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, cli)
			f.route("chat-70b", "v42", "v41")
			a := startAgent(t, "n1", tc.b)
			f.node("n1", a.url(), map[string]map[string]int{"chat-70b": {"v42": 4, "v41": 4}})
			// Only the hanging fresh probe waits for the deadline; the other
			// cases must finish within it on a loaded machine.
			limit := 20 * time.Second
			if tc.b.freshHang {
				limit = 1500 * time.Millisecond
			}
			c := f.checker(func(c *Config) { c.MaxAge = 15 * time.Second; c.Timeout = limit })
			rep, _ := c.Check(testCtx(t), "chat-70b", "v41")
			n, _ := nodeByName(rep, "n1")
			if n.State != tc.state || !strings.Contains(n.Reason, tc.reason) || n.WarmGPUs != tc.warmGPUs {
				t.Fatalf("node %+v; want state %s, warm GPUs %d, reason containing %q", n, tc.state, tc.warmGPUs, tc.reason)
			}
			if got := a.fresh.Load(); got != tc.fresh || n.Fresh != (tc.fresh > 0) {
				t.Fatalf("fresh requests %d (Fresh %v), want %d", got, n.Fresh, tc.fresh)
			}
		})
	}
}

// TestCheckMalformedRecords: malformed node records are listed and the
// other nodes are still checked.
func TestCheckMalformedRecords(t *testing.T) {
	srv := etcdtest.Start(t)
	f := newFleet(t, srv.Client(t))
	f.route("chat-70b", "v42", "v41")
	busy := warmB(4)
	inflight := 7
	busy.inflight = &inflight
	f.nodes("chat-70b", []nodeSpec{{name: "n1", active: 4, target: 4, agent: busy}, {name: "n2", active: 4, target: 4, agent: warmB(4)}})
	nodes := f.prefix + "/fleet/nodes/"
	f.put(nodes+"broken", `{"node":"broken","url":`)
	f.put(nodes+"liar", `{"node":"someone-else","url":"http://127.0.0.1:1","serving":{"chat-70b":{"v41":100}}}`)
	f.put(nodes+"bad/key", `{}`)
	rep, err := f.checker(nil).Check(testCtx(t), "chat-70b", "v41")
	if err != nil {
		t.Fatalf("%v\n%s", err, rep.String())
	}
	if len(rep.Malformed) != 3 || rep.TargetNodes != 2 || rep.WarmGPUs != 8 {
		t.Fatalf("report:\n%s\n%+v", rep.String(), rep.Malformed)
	}
	if n1, _ := nodeByName(rep, "n1"); n1.InFlight == nil || *n1.InFlight != 7 || n1.CanaryMS != 120 || n1.AgeMS != 1500 || n1.Latency <= 0 {
		t.Errorf("node figures not carried: %+v", n1)
	}
	for _, m := range rep.Malformed {
		if !strings.HasPrefix(m.Key, nodes) || m.Error == "" {
			t.Errorf("malformed %+v", m)
		}
	}
	if !strings.Contains(rep.String(), "malformed record "+nodes+"broken") {
		t.Errorf("String() does not list the malformed record:\n%s", rep.String())
	}
}

// TestCheckErrors: what stops a check (as opposed to a refusal).
func TestCheckErrors(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	for _, tc := range []struct {
		name          string
		route, target string
		setup         func(f *fleet)
		is            error
		contains      string
	}{
		{name: "RouteMissing", route: "chat-70b", target: "v41", is: routing.ErrNotFound},
		{name: "BadRouteName", route: "status", target: "v41", is: routing.ErrInvalid},
		{name: "BadTargetName", route: "chat-70b", target: "v 41", is: routing.ErrInvalid},
		{name: "MalformedPolicy", route: "chat-70b", target: "v41", is: routing.ErrMalformed, contains: "/policies/chat-70b",
			setup: func(f *fleet) { f.route("chat-70b", "v42", "v41"); f.policy("chat-70b", `{"warm_quorum":`) }},
		{name: "PolicyQuorumOutOfRange", route: "chat-70b", target: "v41", is: routing.ErrMalformed, contains: "warm_quorum",
			setup: func(f *fleet) { f.route("chat-70b", "v42", "v41"); f.policy("chat-70b", `{"warm_quorum":1.5}`) }},
		{name: "MalformedRoute", route: "chat-70b", target: "v41", is: routing.ErrMalformed, contains: "/routes/chat-70b",
			setup: func(f *fleet) { f.put(f.prefix+"/routes/chat-70b", `{"route":"chat-70b"}`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, cli)
			if tc.setup != nil {
				tc.setup(f)
			}
			_, err := f.checker(nil).Check(testCtx(t), tc.route, tc.target)
			if !errors.Is(err, tc.is) || errors.Is(err, ErrTargetNotWarm) || !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("err = %v; want %v containing %q", err, tc.is, tc.contains)
			}
		})
	}

	t.Run("Cancelled", func(t *testing.T) {
		f := newFleet(t, cli)
		f.route("chat-70b", "v42", "v41")
		a := startAgent(t, "n1", behaviour{mode: "hang"})
		f.node("n1", a.url(), map[string]map[string]int{"chat-70b": {"v42": 4, "v41": 4}})
		ctx, cancel := context.WithCancel(testCtx(t))
		go func() {
			for a.requests.Load() == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
		}()
		_, err := f.checker(nil).Check(ctx, "chat-70b", "v41")
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTargetNotWarm) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}

// TestCheckWorkerPool: no more than Workers requests are in flight, and
// when hung agents hold every worker until the deadline the nodes left are
// reported as not asked, still within the deadline.
func TestCheckWorkerPool(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)

	t.Run("Bounded", func(t *testing.T) {
		f := newFleet(t, cli)
		f.route("chat-70b", "v42", "v41")
		conc := &concurrency{}
		var specs []nodeSpec
		for i := range 12 {
			b := warmB(1)
			b.delay = 20 * time.Millisecond
			specs = append(specs, nodeSpec{name: "n" + string(rune('a'+i)), active: 1, target: 1, agent: b})
		}
		for _, a := range f.nodes("chat-70b", specs) {
			a.conc = conc
		}
		rep, err := f.checker(func(c *Config) { c.Workers = 3 }).Check(testCtx(t), "chat-70b", "v41")
		if err != nil || rep.WarmNodes != 12 {
			t.Fatalf("%v\n%s", err, rep.String())
		}
		if m := conc.max.Load(); m > 3 || m < 1 {
			t.Fatalf("%d requests in flight at once with 3 workers", m)
		}
	})

	t.Run("HungAgentsHoldEveryWorker", func(t *testing.T) {
		f := newFleet(t, cli)
		f.route("chat-70b", "v42", "v41")
		f.nodes("chat-70b", []nodeSpec{
			{name: "n1", active: 1, target: 1, agent: behaviour{mode: "hang"}},
			{name: "n2", active: 1, target: 1, agent: warmB(1)},
			{name: "n3", active: 1, target: 1, agent: warmB(1)},
		})
		// Long enough for the etcd reads on a loaded machine; the hung
		// agent holds the only worker until it passes. A refusal rather
		// than the test context's error shows the deadline ended the check.
		const timeout = 1500 * time.Millisecond
		rep, err := f.checker(func(c *Config) { c.Workers = 1; c.Timeout = timeout }).Check(testCtx(t), "chat-70b", "v41")
		if !errors.Is(err, ErrTargetNotWarm) || rep.TargetNodes != 3 {
			t.Fatalf("%v\n%s", err, rep.String())
		}
		n1, _ := nodeByName(rep, "n1")
		n3, _ := nodeByName(rep, "n3")
		if n1.State != StateUnreachable || !strings.Contains(n1.Reason, "did not answer") ||
			n3.State != StateUnreachable || !strings.Contains(n3.Reason, "not asked") {
			t.Fatalf("report:\n%s", rep.String())
		}
	})
}

func TestNeededGPUs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		quorum   float64
		baseline int
		want     int
	}{
		{"Exact", 0.75, 20, 15},
		{"RoundsUp", 0.61, 20, 13},
		{"FloatNoise", 0.7, 10, 7},
		{"FloatNoiseSmall", 0.1, 30, 3},
		{"Third", 1.0 / 3, 3, 1},
		{"All", 1, 96, 96},
		{"AtLeastOne", 1, 0, 1},
		{"TinyQuorum", 0.01, 8, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := neededGPUs(tc.quorum, tc.baseline); got != tc.want {
				t.Fatalf("neededGPUs(%v, %d) = %d, want %d", tc.quorum, tc.baseline, got, tc.want)
			}
		})
	}
}

func TestNotWarmErrorListsNodes(t *testing.T) {
	rep := Report{Route: "chat-70b", Active: "v42", Target: "v41", Quorum: 1, Baseline: BaselineActive,
		BaselineGPUs: 32, NeededGPUs: 32, TargetNodes: 8, TargetGPUs: 32, Reason: "32 GPUs short of the quorum"}
	for i := range 8 {
		rep.Nodes = append(rep.Nodes, NodeResult{Node: "gpu-" + string(rune('a'+i)), State: StateCold, GPUs: 4, Reason: "not loaded"})
	}
	err := error(&NotWarmError{Report: rep})
	msg := err.Error()
	for _, want := range []string{"chat-70b: target v41 is not warm: 0/8 nodes, 0/32 GPUs warm",
		"32 GPUs needed (quorum 1.0 of 32 GPUs on active v42)", "not warm: gpu-a cold (not loaded)", "gpu-e cold", "and 3 more"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "gpu-f") || !errors.Is(err, ErrTargetNotWarm) || errors.Is(err, routing.ErrNotFound) {
		t.Errorf("message %q / Is", msg)
	}
}

func TestNewCheckerValidates(t *testing.T) {
	// NewChecker does not use the client; a typed nil is enough.
	cli := (*clientv3.Client)(nil)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"NoKV", Config{}},
		{"QuorumAboveOne", Config{KV: cli, DefaultQuorum: 1.5}},
		{"NegativeQuorum", Config{KV: cli, DefaultQuorum: -0.5}},
		{"NegativeTimeout", Config{KV: cli, Timeout: -time.Second}},
		{"NegativeWorkers", Config{KV: cli, Workers: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewChecker(tc.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	c, err := NewChecker(Config{KV: cli})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.cfg.Timeout != DefaultTimeout || c.cfg.MaxAge != DefaultMaxAge || c.cfg.DefaultQuorum != 1 || c.cfg.Workers != DefaultWorkers {
		t.Fatalf("defaults: %+v", c.cfg)
	}
}
