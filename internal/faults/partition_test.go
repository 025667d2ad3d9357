package faults

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// TestMemberPartitionedFromBot is scenario 2: the etcd leader's client
// port is partitioned from the bot (a lossless partition: what was sent
// waits and arrives after the heal, possibly long after its sender gave up
// on it) while operators work through three replicas: one whose client
// knows only that member, one that has it first in its endpoint list, and
// one that reaches every member directly (and runs recovery). Every other
// partition ends with the connections cut, as a long partition's TCP
// timeouts would. Requests caught in the partition are answered by their
// deadline, as failed or as possibly applied, and the late arrival of
// their writes must not make any answer wrong.
func TestMemberPartitionedFromBot(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	eps := e.cl.Endpoints()
	cut := e.leader()
	link := etcdtest.NewLink(t, eps[cut])
	others := slices.Delete(slices.Clone(eps), cut, cut+1)
	// Operators in a hurry (backflipctl with a short timeout) use the
	// replicas that may be cut off, so that partitions outlast calls.
	hurry := 1500 * time.Millisecond
	pinned := e.replica("bot-pinned", replicaOpts{endpoints: []string{link.Endpoint()}, timeout: hurry})
	first := e.replica("bot-first", replicaOpts{endpoints: append([]string{link.Endpoint()}, others...), timeout: hurry})
	direct := e.replica("bot-direct", replicaOpts{})
	e.runRecovery(direct)
	e.startShipper(nil)

	stop := e.operate(6, []*replica{pinned, first, direct}, 2, nil)
	defer stop()
	for k, d := range e.sz.partitions {
		time.Sleep(time.Second) // ops flow
		link.Partition()
		time.Sleep(d)
		how := "healed"
		if k%2 == 1 {
			link.Cut()
			how = "cut and healed"
		}
		link.Heal()
		t.Logf("partition %d: m%d's client port was partitioned from the bot for %v, then %s", k+1, cut, d, how)
	}
	time.Sleep(time.Second)
	stop()
	e.settle()
	e.check()
}

// TestFlipReplyLost is scenario 2's sharpest case, made deterministic: a
// replica's flip reaches etcd and commits, but its reply is lost (the
// member's replies to that replica are blackholed), and before the
// replica finds out, another replica changes the route again. The first
// replica must not tell its operator that nothing changed: its change
// happened, even though the route has moved on since.
func TestFlipReplyLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	proxy := etcdtest.NewProxy(t, e.cl.Endpoints()[0])
	// bot-a's operator gives up after 4 s: its flip's reply never comes
	// (gRPC notices a dead connection only after 10 s of keepalive).
	a := e.replica("bot-a", replicaOpts{endpoints: []string{proxy.Endpoint()}, timeout: 4 * time.Second})
	b := e.replica("bot-b", replicaOpts{})
	e.runRecovery(b)
	e.startShipper(nil)
	const route = "chat-70b"

	seen := e.read(a, 0, route)
	if seen.Err != nil {
		t.Fatal(seen.Err)
	}
	overtaken := make(chan *call, 1)
	var once sync.Once
	progress := func(p commands.Progress) {
		if p.Phase != commands.PhaseFlip || p.State != commands.StateRunning {
			return
		}
		once.Do(func() {
			// From here the member's replies to bot-a are lost.
			proxy.BlackholeRx()
			go func() {
				defer proxy.UnblackholeRx()
				// Once bot-a's flip has landed, bot-b moves the route on.
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				for {
					resp, err := e.admin.Get(ctx, prefix+"/routes/"+route)
					if err != nil {
						overtaken <- nil
						return
					}
					if len(resp.Kvs) == 1 && strings.Contains(string(resp.Kvs[0].Value), p.Op) {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				overtaken <- e.flipOnce(b, 1, route)
			}()
		})
	}
	c := e.change(a, 0, kindRollback, route, "", seen.ReadRev, seen.Read.Epoch, progress)
	o := <-overtaken
	t.Logf("bot-a: %s", c)
	t.Logf("bot-b: %v", o)
	if o == nil || o.Err != nil {
		t.Fatalf("bot-b did not move the route on after bot-a's flip landed: %v", o)
	}
	e.settle()
	e.check()
}
