package routing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestLeaderHardStopDuringFlips crashes the leader of a 3-member cluster
// while a writer flips a route in a loop, the way the bot would: read the
// revision, flip with it, and on an error re-read rather than assume. Each
// flip also writes a marker in the same transaction. Afterwards the route's
// epoch must equal the number of markers (no flip applied twice, none half
// applied), every flip reported as done must have its marker, and the
// restarted member must agree.
func TestLeaderHardStopDuringFlips(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	cli := c.Client(t)
	s := NewStore(cli, testPrefix, zap.NewNop())
	ctx := testCtx(t)
	marker := func(op string) clientv3.Op { return clientv3.OpPut(testPrefix+"/test/applied/"+op, op) }

	first, err := s.Promote(ctx, Change{Route: "chat-70b", To: "v1", Op: "op-1", Ops: []clientv3.Op{marker("op-1")}})
	if err != nil {
		t.Fatal(err)
	}
	const want = 40
	var mu sync.Mutex
	reported := []string{first.Config.Op}
	var uncertain []string
	progress := make(chan int, want)
	writerDone := make(chan error, 1)
	go func() {
		// An op whose outcome is unknown is retried with the same op id and
		// expected revision: if the first attempt lands late, the retry sees
		// it as its own instead of flipping again.
		var pending *Change
		for n := 2; ; {
			mu.Lock()
			done := len(reported)
			mu.Unlock()
			if done >= want {
				writerDone <- nil
				return
			}
			if ctx.Err() != nil {
				writerDone <- ctx.Err()
				return
			}
			if pending == nil {
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				cur, err := s.Get(rctx, "chat-70b")
				cancel()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				op := "op-" + strconv.Itoa(n)
				n++
				pending = &Change{Route: "chat-70b", Kind: KindRollback, To: fmt.Sprintf("v%d", cur.Config.Epoch+1),
					ExpectRev: cur.ModRevision, Op: op, Ops: []clientv3.Op{marker(op)}}
			}
			fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			res, err := s.Flip(fctx, *pending)
			cancel()
			mu.Lock()
			switch {
			case err == nil:
				reported = append(reported, res.Config.Op)
				pending = nil
				progress <- len(reported)
			case errors.Is(err, ErrConflict):
				mu.Unlock()
				writerDone <- fmt.Errorf("conflict with a single writer: %v", err)
				return
			default:
				uncertain = append(uncertain, pending.Op)
				time.Sleep(50 * time.Millisecond)
			}
			mu.Unlock()
		}
	}()

wait:
	for {
		select {
		case n := <-progress:
			if n >= 10 {
				break wait
			}
		case err := <-writerDone:
			t.Fatalf("writer stopped before the fault: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatal("writer made no progress")
		}
	}
	leader := c.WaitLeader(t)
	c.HardStop(t, leader)
	var werr error
	select {
	case werr = <-writerDone:
	case <-time.After(60 * time.Second):
		t.Fatal("writer did not finish after the leader was killed")
	}
	if werr != nil {
		t.Fatal(werr)
	}
	c.Restart(t, leader)
	c.WaitLeader(t)

	final, err := s.Get(ctx, "chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, testPrefix+"/test/applied/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	applied := map[string]bool{}
	for _, kv := range resp.Kvs {
		applied[string(kv.Value)] = true
	}
	mu.Lock()
	defer mu.Unlock()
	if int64(len(applied)) != final.Config.Epoch {
		t.Fatalf("epoch %d but %d flips applied: a flip was lost or applied twice", final.Config.Epoch, len(applied))
	}
	for _, op := range reported {
		if !applied[op] {
			t.Fatalf("flip %s reported done but not applied", op)
		}
	}
	if len(applied) != len(reported) {
		t.Fatalf("%d flips applied but %d reported done", len(applied), len(reported))
	}
	t.Logf("%d flips done, %d attempts retried during failover, final epoch %d", len(reported), len(uncertain), final.Config.Epoch)

	// The restarted member has caught up with the same history.
	mcli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Endpoints()[leader]}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer mcli.Close()
	eventually(t, "restarted member has the final config", func() bool {
		r, err := mcli.Get(ctx, testPrefix+"/routes/chat-70b", clientv3.WithSerializable())
		return err == nil && len(r.Kvs) == 1 && r.Kvs[0].ModRevision == final.ModRevision
	})
}
