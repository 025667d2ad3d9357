package faults

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// TestHungAgents is scenario 5: a tenth of the GPU nodes' agents hang
// (their port accepts, their warm endpoint never answers) while operators
// roll back and promote two routes: chat-70b, whose policy's warm quorum
// (0.8) the other nodes meet, and code-7b, on the default quorum (1.0),
// which no target can meet without the hung nodes. Every warm check
// decides by its timeout instead of waiting for the hung agents, and its
// report names them; chat-70b changes, code-7b is refused as not warm,
// naming the hung nodes; no request fails for want of an answer.
func TestHungAgents(t *testing.T) {
	t.Parallel()
	const quorumRoute, strictRoute = "chat-70b", "code-7b"
	e := newEnv(t, envOpts{nodes: sizing(t).hungFleet, policies: map[string]string{quorumRoute: `{"warm_quorum":0.8}`}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hosts := e.agentHosts(ctx)
	hungHosts := map[string]bool{}
	var hungNodes []string
	for _, node := range e.fleet.Nodes()[:e.sz.hungNodes] {
		hungHosts[hosts[node]] = true
		hungNodes = append(hungNodes, node)
	}
	agents := hangingHTTP(t, hungHosts)
	const timeout = 2 * time.Second // WARM_TIMEOUT's default
	r1 := e.replica("bot-1", replicaOpts{warmTimeout: timeout, httpClient: agents})
	r2 := e.replica("bot-2", replicaOpts{warmTimeout: timeout, httpClient: agents})
	e.runRecovery(r1)
	e.startShipper(nil)

	// The operators go on past their count until both routes have been
	// decided on by warm checks at least once each way (on a loaded
	// machine many requests end before their warm check, in conflicts).
	total := int64(e.sz.hungOps)
	var made atomic.Int64
	var quorumChanged, strictRefused atomic.Bool
	var wg sync.WaitGroup
	for i := range 4 {
		o := e.operator(i, []*replica{r1, r2}[i%2], 5)
		wg.Go(func() {
			for n := made.Load(); n < 5*total && (n < total || !quorumChanged.Load() || !strictRefused.Load()); n = made.Load() {
				c := o.act(e.specs[o.rng.IntN(len(e.specs))].Route)
				if c.Kind == kindRead {
					continue
				}
				made.Add(1)
				switch {
				case c.Route == quorumRoute && c.Err == nil && c.Res != nil && c.Res.Revision != 0:
					quorumChanged.Store(true)
				case c.Route == strictRoute && refusalClass(commands.ErrorMessage(c.Err)) == refNotWarm:
					strictRefused.Store(true)
				}
			}
		})
	}
	e.waitCalls(&wg)
	e.settle()
	e.check()

	decided, changed, refusedCold := 0, 0, 0
	var slowest time.Duration
	for _, c := range e.hist.all() {
		if c.Kind == kindRead {
			continue
		}
		if c.Res == nil || c.Res.Warm == nil {
			// Decided before the warm check (refused or conflict by state),
			// or the check could not read the fleet from etcd in time (a
			// failure that says so; hung agents never cause one: the
			// check decides without them).
			continue
		}
		decided++
		slowest = max(slowest, c.Res.Timing(commands.PhaseWarm))
		if !c.warmEnded.Load() {
			t.Errorf("the warm phase never reported its end: %s", c)
		}
		rep := c.Res.Warm
		states := map[string]warm.NodeResult{}
		for _, n := range rep.Nodes {
			states[n.Node] = n
		}
		for _, node := range hungNodes {
			n := states[node]
			if n.State != warm.StateUnreachable || !strings.Contains(n.Reason, "did not answer within") {
				t.Errorf("hung %s reported %s (%s), want unreachable for want of an answer: %s", node, n.State, n.Reason, c)
			}
		}
		switch {
		case c.Route == quorumRoute && c.Out.Kind == outCompleted:
			changed++
		case c.Route == strictRoute && c.Out.Kind == outCompleted:
			t.Errorf("%s changed without its hung nodes, below its quorum of 1.0: %s", strictRoute, c)
		case c.Route == strictRoute && c.Out.Kind == outRefused && c.Out.Class == refNotWarm:
			refusedCold++
			msg := commands.ErrorMessage(c.Err)
			for _, node := range hungNodes {
				if !strings.Contains(msg, node) {
					t.Errorf("the refusal does not name hung %s: %s", node, msg)
				}
			}
		}
	}
	if changed == 0 || refusedCold == 0 {
		t.Errorf("%d changes of %s, %d not-warm refusals of %s: the scenario proves nothing", changed, quorumRoute, refusedCold, strictRoute)
	}
	t.Logf("%d of %d agents hung (%s): %d warm checks decided (slowest %v with a %v timeout), %d changes of %s, %d refusals of %s naming them",
		len(hungNodes), len(hosts), strings.Join(hungNodes, ", "), decided, slowest.Round(time.Millisecond), timeout, changed, quorumRoute, refusedCold, strictRoute)
}
