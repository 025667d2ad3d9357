package commands

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// The crash child's settings, passed in its environment.
const (
	childEndpoint = "BACKFLIP_CRASH_ENDPOINT"
	childToken    = "BACKFLIP_CRASH_AGENT_TOKEN"
	childSecret   = "BACKFLIP_CRASH_RUNTIME_SECRET"
	childTarget   = "BACKFLIP_CRASH_TO"
	childPhase    = "BACKFLIP_CRASH_AFTER"
)

// crashChild is the subprocess of TestCrashAfterEachPhase: a bot replica
// that starts a rollback and SIGKILLs itself when a phase is done. It
// prints "OP <id>" as soon as the op has an id. It returns an exit code
// only when it did not crash (which the parent reports as a failure).
func crashChild() int {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{os.Getenv(childEndpoint)}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 3
	}
	secret, _ := hex.DecodeString(os.Getenv(childSecret))
	checker, err := warm.NewChecker(warm.Config{KV: cli, Prefix: fleetPrefix, AgentToken: os.Getenv(childToken), Timeout: 3 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 3
	}
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: cli, Prefix: fleetPrefix, Secret: secret, AckTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 3
	}
	// The shortest lease etcd grants, so the parent's recovery does not
	// wait long for this replica to be presumed dead.
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(2))
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 3
	}
	svc, err := New(Config{Etcd: cli, Prefix: fleetPrefix, Warm: checker, Runtime: sig, Owner: sess, Access: testAccess()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 3
	}
	after := Phase(os.Getenv(childPhase))
	var once sync.Once
	_, err = svc.Rollback(context.Background(), RollbackRequest{Origin: from(alice), Route: "chat-70b", To: os.Getenv(childTarget), Reason: "crash test"}, func(p Progress) {
		once.Do(func() { fmt.Printf("OP %s\n", p.Op) })
		if p.Phase == after && p.State == StateDone {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal arrives; nothing more of the op runs
		}
	})
	fmt.Fprintln(os.Stderr, "crash child: the rollback ended without the crash:", err)
	return 4
}

// TestCrashAfterEachPhase kills a bot replica (a real subprocess, SIGKILL)
// after each phase of a rollback; another replica's recovery then finishes
// the op or reports it abandoned, with exactly one final audit event, and
// a second recovery pass does nothing.
func TestCrashAfterEachPhase(t *testing.T) {
	e := newFleetEnv(t, fleetOpts{rps: 20})
	r1, r2 := e.replica(t, "bot-2"), e.replica(t, "bot-3")
	for _, tc := range []struct {
		after   Phase
		flipped bool
		events  string
	}{
		{PhaseResolve, false, ""},
		{PhaseWarm, false, "op.abandoned/abandoned"},
		{PhaseFlip, true, "model.rollback/flipped op.recovered/recovered"},
		{PhaseRouters, true, "model.rollback/flipped op.recovered/recovered"},
		{PhaseInFlight, true, "model.rollback/flipped op.recovered/recovered"},
		{PhaseAudit, true, "model.rollback/completed model.rollback/flipped"},
	} {
		t.Run("After"+strings.ToUpper(string(tc.after[:1]))+string(tc.after[1:]), func(t *testing.T) {
			before := e.route(t, "chat-70b")
			target := before.Config.Previous
			op := runCrashChild(t, e, target, tc.after)
			after := e.route(t, "chat-70b")
			if tc.after == PhaseResolve {
				if op != "" && len(e.outbox(t)[op]) != 0 {
					t.Errorf("a crash before the op record left events")
				}
				if after.ModRevision != before.ModRevision {
					t.Error("route changed")
				}
				return
			}
			if op == "" {
				t.Fatal("the child never reported its op")
			}
			if tc.flipped != (after.Config.Op == op) {
				t.Fatalf("flipped = %v, want %v (route %+v)", after.Config.Op == op, tc.flipped, after.Config)
			}

			// Two replicas recover at once until the dead child's lease
			// is gone and the op is closed.
			var notices []Notice
			deadline := time.Now().Add(20 * time.Second)
			for e.opRecord(t, op).Phase != OpPhaseDone {
				if time.Now().After(deadline) {
					t.Fatalf("op not recovered: %+v", e.opRecord(t, op))
				}
				var mu sync.Mutex
				var wg sync.WaitGroup
				for _, r := range []*replica{r1, r2} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						n, err := r.svc.Recover(testCtx(t))
						if err != nil {
							t.Errorf("recover: %v", err)
						}
						mu.Lock()
						notices = append(notices, n...)
						mu.Unlock()
					}()
				}
				wg.Wait()
				time.Sleep(200 * time.Millisecond)
			}
			if got := kinds(e.outbox(t)[op]); got != tc.events {
				t.Errorf("audit events %q, want %q", got, tc.events)
			}
			rec := e.opRecord(t, op)
			if tc.after == PhaseAudit {
				if len(notices) != 0 || rec.Outcome != OutcomeCompleted {
					t.Errorf("a finished op was recovered: %+v %+v", notices, rec)
				}
				return
			}
			if len(notices) != 1 || notices[0].Op != op || notices[0].Channel != incident {
				t.Fatalf("notices %+v", notices)
			}
			want := map[bool]string{true: OutcomeRecovered, false: OutcomeAbandoned}[tc.flipped]
			if rec.Outcome != want || notices[0].Outcome != want {
				t.Errorf("outcome %s / %s, want %s", rec.Outcome, notices[0].Outcome, want)
			}
			if tc.flipped && (notices[0].Result.Routers == nil || notices[0].Result.Routers.Converged != notices[0].Result.Routers.Expected) {
				t.Errorf("recovered op's routers: %+v", notices[0].Result.Routers)
			}
			if again, err := r1.svc.Recover(testCtx(t)); err != nil || len(again) != 0 {
				t.Errorf("second recovery pass: %v %+v", err, again)
			}
			t.Logf("notice: %s", notices[0].Text)
		})
	}
}

// runCrashChild runs the crash child and returns the op it reported.
func runCrashChild(t *testing.T, e *fleetEnv, target string, after Phase) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		helperEnv+"=1",
		childEndpoint+"="+e.srv.Endpoint(),
		childToken+"="+e.fleet.AgentToken(),
		childSecret+"="+hex.EncodeToString(e.fleet.RuntimeSecret()),
		childTarget+"="+target,
		childPhase+"="+string(after),
	)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var op string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "OP "); ok {
			op = id
		}
	}
	err = cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child did not crash (%v): %s", err, stderr.String())
	}
	return op
}
