package commands

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// TestSingletonJobsRunOnOneReplica: three replicas campaign; the jobs run
// on exactly one at a time, and when the leader's lease is revoked (its
// process is gone) another takes over.
func TestSingletonJobsRunOnOneReplica(t *testing.T) {
	srv := etcdtest.Start(t)
	var running, maxRunning atomic.Int32
	var mu sync.Mutex
	leaders := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	clients := make([]*clientv3.Client, 3)
	for i := range clients {
		clients[i] = srv.Client(t)
		id := fmt.Sprintf("bot-%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			RunElected(ctx, clients[i], "/el", id, 2, nil, Job{Name: "count", Run: func(ctx context.Context) {
				n := running.Add(1)
				for {
					m := maxRunning.Load()
					if n <= m || maxRunning.CompareAndSwap(m, n) {
						break
					}
				}
				mu.Lock()
				leaders[id]++
				mu.Unlock()
				<-ctx.Done()
				running.Add(-1)
			}})
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("a leader", func() bool { return running.Load() == 1 })
	time.Sleep(300 * time.Millisecond)
	if m := maxRunning.Load(); m != 1 {
		t.Fatalf("jobs run on %d replicas at once", m)
	}

	// Kill the leader's lease, as if its process had died.
	resp, err := clients[0].Get(context.Background(), Keys{Prefix: "/el"}.ElectionKey(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("election keys: %v", err)
	}
	first := string(resp.Kvs[0].Value)
	if _, err := clients[0].Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	waitFor("a new leader", func() bool {
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for _, n := range leaders {
			total += n
		}
		return total >= 2 && running.Load() == 1
	})
	// Leadership alone is not mutual exclusion: for a moment after the
	// revoke both the old and the new leader may run (the jobs fence
	// their writes). It must settle to one.
	time.Sleep(300 * time.Millisecond)
	if n := running.Load(); n != 1 {
		t.Errorf("jobs run on %d replicas after the takeover", n)
	}
	cancel()
	wg.Wait()
	if n := running.Load(); n != 0 {
		t.Errorf("%d jobs still running after the replicas stopped", n)
	}
	t.Logf("first leader %s, leaderships %v", first, leaders)
}
