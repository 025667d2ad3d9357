package faults

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// killPoint is where in an op a replica is killed: when phase reports
// state.
type killPoint struct {
	Phase commands.Phase
	State commands.PhaseState
}

func (k killPoint) String() string { return string(k.Phase) + ":" + string(k.State) }

var phases = []commands.Phase{commands.PhaseResolve, commands.PhaseWarm, commands.PhaseFlip,
	commands.PhaseRouters, commands.PhaseInFlight, commands.PhaseAudit}

// donePoints kill a replica as each phase of a rollback ends.
func donePoints() []killPoint {
	out := make([]killPoint, len(phases))
	for i, p := range phases {
		out[i] = killPoint{p, commands.StateDone}
	}
	return out
}

// runningPoints kill a replica as each phase of a rollback begins.
func runningPoints() []killPoint {
	out := make([]killPoint, len(phases))
	for i, p := range phases {
		out[i] = killPoint{p, commands.StateRunning}
	}
	return out
}

// flippedBy reports whether a replica killed at k had flipped the route.
func flippedBy(k killPoint) bool {
	switch k.Phase {
	case commands.PhaseResolve, commands.PhaseWarm:
		return false
	case commands.PhaseFlip:
		return k.State == commands.StateDone
	}
	return true
}

// The crash child's settings, in its environment.
const (
	childEnv       = "BACKFLIP_FAULTS_CHILD"
	childEndpoints = "BACKFLIP_FAULTS_ENDPOINTS"
	childToken     = "BACKFLIP_FAULTS_AGENT_TOKEN"
	childSecret    = "BACKFLIP_FAULTS_RUNTIME_SECRET"
	childRoute     = "BACKFLIP_FAULTS_ROUTE"
	childTo        = "BACKFLIP_FAULTS_TO"
	childRev       = "BACKFLIP_FAULTS_EXPECT_REV"
	childOp        = "BACKFLIP_FAULTS_OP"
	childKill      = "BACKFLIP_FAULTS_KILL"
)

// crashChild is a bot replica in a process of its own: it runs one
// rollback and SIGKILLs itself when the op reports the kill point. It
// returns (an exit code) only when the op ended before that.
func crashChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 3
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(os.Getenv(childEndpoints), ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fail(err)
	}
	secret, err := hex.DecodeString(os.Getenv(childSecret))
	if err != nil {
		return fail(err)
	}
	checker, err := warm.NewChecker(warm.Config{KV: cli, Prefix: prefix, AgentToken: os.Getenv(childToken), Timeout: warmTimeout})
	if err != nil {
		return fail(err)
	}
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: cli, Prefix: prefix, Secret: secret, AckTimeout: ackTimeout})
	if err != nil {
		return fail(err)
	}
	// A short lease, so that the survivors presume this replica dead soon
	// after it is; not the shortest etcd grants (2 s), which a loaded
	// machine can let expire under a live replica (its op is then taken
	// over, which the parent records and tries again).
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(3))
	if err != nil {
		return fail(err)
	}
	svc, err := commands.New(commands.Config{Etcd: cli, Prefix: prefix, Warm: checker, Runtime: sig, Owner: sess,
		Access:          commands.Access{IncidentChannels: []string{incident}, RollbackUsers: operatorIDs()},
		ConvergeTimeout: convergeTimeout})
	if err != nil {
		return fail(err)
	}
	rev, err := strconv.ParseInt(os.Getenv(childRev), 10, 64)
	if err != nil {
		return fail(err)
	}
	phase, state, _ := strings.Cut(os.Getenv(childKill), ":")
	res, err := svc.Rollback(context.Background(), commands.RollbackRequest{Origin: origin(0), Route: os.Getenv(childRoute),
		To: os.Getenv(childTo), Reason: "fault suite: killed replica", ExpectRev: rev, Op: os.Getenv(childOp)},
		func(p commands.Progress) {
			if string(p.Phase) == phase && string(p.State) == state {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal arrives; nothing more of the op runs
			}
		})
	// The op ended before the kill point: tell the parent what its
	// operator would have been told.
	ans := childAnswer{Code: commands.ErrorCode(err), Message: commands.ErrorMessage(err)}
	if res != nil {
		ans.Outcome, ans.From, ans.To, ans.Epoch, ans.Revision, ans.ExpectRev = res.Outcome, res.From, res.To, res.Epoch, res.Revision, res.ExpectRev
		ans.Queued, ans.EventID = res.Audit.Queued, res.Audit.EventID
	}
	b, _ := json.Marshal(ans)
	fmt.Printf("ANSWER %s\n", b)
	fmt.Fprintf(os.Stderr, "crash child: the op ended (%s, %v) before %s:%s\n", ans.Outcome, err, phase, state)
	return 4
}

// childAnswer is what a crash child that was not killed answered.
type childAnswer struct {
	Code, Message              string
	Outcome, From, To          string
	Epoch, Revision, ExpectRev int64
	Queued                     bool
	EventID                    string
}

// result rebuilds the answer as the in-process call would have had it.
func (a childAnswer) result(route string) (*commands.Result, error) {
	res := &commands.Result{Route: route, Outcome: a.Outcome, From: a.From, To: a.To, Epoch: a.Epoch, Revision: a.Revision,
		ExpectRev: a.ExpectRev, Audit: commands.AuditState{Queued: a.Queued, EventID: a.EventID}}
	if a.Code == "" {
		return res, nil
	}
	return res, &commands.Error{Code: a.Code, Message: a.Message}
}

// TestReplicaKilledAtEveryPhase is scenario 6: a bot replica (a process of
// its own, SIGKILLed) dies at every phase of a rollback while two other
// replicas run recovery at once. Each op ends exactly once: abandoned if
// it had not flipped, finished (op.recovered) if it had, completed if it
// had; with exactly one final audit event, and the route's history,
// answers and events all agreeing.
func TestReplicaKilledAtEveryPhase(t *testing.T) {
	t.Parallel()
	routes := append(twoRoutes(), simfleet.RouteSpec{Route: "rank-1b", Active: "v3", Previous: "v2", PreviousWarm: true})
	e := newEnv(t, envOpts{routes: routes})
	r1, r2 := e.replica("bot-1", replicaOpts{}), e.replica("bot-2", replicaOpts{})
	var mu sync.Mutex
	notices := map[string][]commands.Notice{}
	for _, r := range []*replica{r1, r2} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.svc.RunRecovery(ctx, 300*time.Millisecond, func(n commands.Notice) {
				mu.Lock()
				defer mu.Unlock()
				notices[n.Op] = append(notices[n.Op], n)
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	e.startShipper(nil)
	// A third operator keeps reading the routes while replicas die.
	stopReads := e.operateReads(2, r2)

	points := e.sz.killAt
	type killed struct {
		c  *call
		at killPoint
	}
	var all []killed
	for len(points) > 0 {
		n := min(len(points), len(e.specs))
		round := points[:n]
		points = points[n:]
		var wg sync.WaitGroup
		results := make([]killed, n)
		for i, kp := range round {
			route := e.specs[i].Route
			wg.Go(func() {
				c := e.killedRollback(t, r1, route, kp)
				results[i] = killed{c: c, at: kp}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		// Recovery closes each op the dead replica left.
		for _, k := range results {
			e.waitOpDone(t, k.c.Op)
			all = append(all, k)
		}
	}
	stopReads()
	e.settle()
	e.check()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, err := e.opRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	changes, err := e.rec.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	flipped := map[string]bool{}
	for _, cs := range changes {
		for _, c := range cs {
			flipped[c.Config.Op] = true
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, k := range all {
		rec, ok := recs[k.c.Op]
		want := map[bool]string{true: commands.OutcomeRecovered, false: commands.OutcomeAbandoned}[flippedBy(k.at)]
		switch {
		case k.at.Phase == commands.PhaseResolve:
			// Killed before the op record was written: nothing to recover.
			if ok || flipped[k.c.Op] || len(notices[k.c.Op]) != 0 {
				t.Errorf("killed at %s: record %v (%+v), flipped %v, notices %d", k.at, ok, rec, flipped[k.c.Op], len(notices[k.c.Op]))
			}
			t.Logf("killed at %-16s → no op record, nothing to recover", k.at)
			continue
		case k.at == killPoint{commands.PhaseAudit, commands.StateDone}:
			want = commands.OutcomeCompleted
		}
		if !ok || rec.Outcome != want || flipped[k.c.Op] != flippedBy(k.at) {
			t.Errorf("killed at %s: record %v %+v, flipped %v; want outcome %s, flipped %v", k.at, ok, rec, flipped[k.c.Op], want, flippedBy(k.at))
		}
		wantNotices := 1
		if want == commands.OutcomeCompleted {
			wantNotices = 0
		}
		if got := len(notices[k.c.Op]); got != wantNotices {
			t.Errorf("killed at %s: %d recovery notices, want %d (two replicas recover at once, exactly one may claim the op)", k.at, got, wantNotices)
		}
		t.Logf("killed at %-16s → %s", k.at, rec.Outcome)
	}
}

// killedRollback reads route, then runs a rollback in a child replica
// that dies at kp, and records it as a call without an answer. A child
// whose op ended before kp (on a loaded machine its lease can expire under
// it, and recovery takes its op over) is recorded with the answer it got,
// and the kill is tried again.
func (e *env) killedRollback(t *testing.T, r *replica, route string, kp killPoint) *call {
	for attempt := 1; ; attempt++ {
		c, ok := e.childRollback(t, r, route, kp)
		if ok || c == nil {
			return c
		}
		if attempt == 3 {
			t.Errorf("the replica to kill at %s never got there: %s", kp, c)
			return c
		}
		t.Logf("the replica to kill at %s did not get there (%s); trying again", kp, c)
	}
}

// childRollback runs one child; ok is false when it was not killed.
func (e *env) childRollback(t *testing.T, r *replica, route string, kp killPoint) (*call, bool) {
	seen := e.read(r, 0, route)
	if seen.Err != nil {
		t.Errorf("status of %s: %v", route, seen.Err)
		return nil, false
	}
	to := "" // the default target, unless the last change was a rollback
	if seen.Read.Kind != "promote" {
		to = seen.Read.Previous
	}
	c := &call{Operator: 0, Replica: "child@" + kp.String(), Route: route, Kind: kindRollback, To: to,
		ExpectRev: seen.ReadRev, ExpectEpoch: seen.Read.Epoch, Op: newOpID(), Killed: true}
	e.hist.begin(c)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"=1",
		childEndpoints+"="+strings.Join(e.cl.Endpoints(), ","),
		childToken+"="+e.fleet.AgentToken(),
		childSecret+"="+hex.EncodeToString(e.fleet.RuntimeSecret()),
		childRoute+"="+route,
		childTo+"="+to,
		childRev+"="+strconv.FormatInt(seen.ReadRev, 10),
		childOp+"="+c.Op,
		childKill+"="+kp.String(),
	)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return c, true
	}
	line, found := strings.CutPrefix(strings.TrimSpace(stdout.String()), "ANSWER ")
	var ans childAnswer
	if !found || json.Unmarshal([]byte(line), &ans) != nil {
		t.Fatalf("the replica to kill at %s neither died nor answered (%v): %s", kp, err, stderr.String())
	}
	c.Killed = false
	c.Res, c.Err = ans.result(route)
	e.hist.end(c)
	return c, false
}

// waitOpDone waits until op's record (if it has one) is done.
func (e *env) waitOpDone(t *testing.T, op string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	for {
		recs, err := e.opRecords(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rec, ok := recs[op]
		if !ok || rec.Phase == commands.OpPhaseDone {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("op %s not recovered: %+v", op, rec)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// operateReads runs n operators that only read, until stopped.
func (e *env) operateReads(n int, r *replica) (stop func()) {
	ch := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-ch:
					return
				case <-time.After(50 * time.Millisecond):
				}
				e.read(r, 10+i, e.specs[k%len(e.specs)].Route)
			}
		})
	}
	return func() { close(ch); e.waitCalls(&wg) }
}
