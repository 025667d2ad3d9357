package faults

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/commands"
)

// TestLeaderHardStopped is scenario 1: while operators roll back and
// promote on two replicas, the etcd leader is hard-stopped (a crash, not a
// graceful stop) just as an op begins its flip — sometimes before its
// transaction is sent, sometimes racing it — or just as an op begins
// waiting for the routers, and restarted a little later. Answers,
// history, audit and in-flight requests must stay right throughout: a flip
// whose reply was lost with the leader is either re-read as landed or
// reported as possibly applied, never as "nothing changed".
func TestLeaderHardStopped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	r1, r2 := e.replica("bot-1", replicaOpts{}), e.replica("bot-2", replicaOpts{})
	e.runRecovery(r1)
	e.startShipper(nil)

	type trigger struct {
		p   commands.Progress
		ack chan struct{}
	}
	var armed atomic.Pointer[killPoint]
	fired := make(chan trigger)
	var waitKill atomic.Bool // the op waits until the leader is down
	progress := func(p commands.Progress) {
		kp := armed.Load()
		if kp == nil || p.Phase != kp.Phase || p.State != kp.State || !armed.CompareAndSwap(kp, nil) {
			return
		}
		tr := trigger{p: p, ack: make(chan struct{})}
		select {
		case fired <- tr:
		case <-time.After(10 * time.Second):
			return
		}
		if waitKill.Load() {
			select {
			case <-tr.ack:
			case <-time.After(10 * time.Second):
			}
		}
	}
	stop := e.operate(4, []*replica{r1, r2}, 1, progress)
	defer stop()
	for k := range e.sz.leaderKills {
		time.Sleep(500 * time.Millisecond) // ops flow with every member up
		kp := killPoint{commands.PhaseFlip, commands.StateRunning}
		if k%2 == 1 {
			kp.Phase = commands.PhaseRouters
		}
		waitKill.Store(k%4 == 0 || k%4 == 3)
		leader := e.leader()
		armed.Store(&kp)
		var tr trigger
		select {
		case tr = <-fired:
		case <-time.After(30 * time.Second):
			t.Fatalf("no op reached %s within 30s", kp)
		}
		e.cl.HardStop(t, leader)
		close(tr.ack)
		t.Logf("kill %d: leader m%d hard-stopped as op %s reported %s (the op %s)", k+1, leader, tr.p.Op, kp,
			map[bool]string{true: "waited for it", false: "raced it"}[waitKill.Load()])
		// The survivors elect a leader and serve; the dead member comes
		// back a little later.
		e.cl.WaitLeader(t)
		time.Sleep(time.Second)
		e.cl.Restart(t, leader)
		e.cl.WaitLeader(t)
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	e.settle()
	e.check()
}
