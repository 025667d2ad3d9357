package commands

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// gaugeValue reads an unlabelled gauge from reg; ok is false when reg has
// no such metric.
func gaugeValue(tb testing.TB, reg *prometheus.Registry, name string) (float64, bool) {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestLeaderMetric: backflip_leader is 1 on exactly one of three replicas,
// moves with the election when the leader's lease goes, and is 0 on every
// replica once they have stopped.
func TestLeaderMetric(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	regs := make([]*prometheus.Registry, 3)
	electors := make([]*Elector, 3)
	clients := make([]*clientv3.Client, 3)
	var hooks [3]atomic.Int32 // OnLeader(true) − OnLeader(false), per replica
	var wg sync.WaitGroup
	for i := range regs {
		regs[i] = prometheus.NewRegistry()
		clients[i] = srv.Client(t)
		e, err := NewElector(ElectorConfig{Client: clients[i], Prefix: "/leadermetric", ID: fmt.Sprintf("bot-%d", i), TTL: 2,
			Registerer: regs[i], OnLeader: func(leading bool) {
				if leading {
					hooks[i].Add(1)
				} else {
					hooks[i].Add(-1)
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		electors[i] = e
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.Run(ctx, Job{Name: "idle", Run: func(ctx context.Context) { <-ctx.Done() }})
		}()
	}
	// A second Elector on the same Registerer is refused: the metric is
	// the replica's, registered once.
	if _, err := NewElector(ElectorConfig{Client: clients[0], Prefix: "/leadermetric", ID: "dup", Registerer: regs[0]}); err == nil {
		t.Error("a second backflip_leader on one Registerer was accepted")
	}
	leaders := func() []int {
		var out []int
		for i, reg := range regs {
			v, ok := gaugeValue(t, reg, "backflip_leader")
			if !ok {
				t.Fatalf("replica %d exports no backflip_leader", i)
			}
			if v == 1 {
				out = append(out, i)
			} else if v != 0 {
				t.Fatalf("replica %d: backflip_leader %v", i, v)
			}
		}
		return out
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
	var first int
	waitFor("one leader", func() bool {
		l := leaders()
		if len(l) == 1 {
			first = l[0]
		}
		return len(l) == 1
	})
	for i, e := range electors {
		if e.Leading() != (i == first) || hooks[i].Load() != int32(btoi(i == first)) {
			t.Errorf("replica %d: Leading %v, hook balance %d; the gauge says replica %d leads", i, e.Leading(), hooks[i].Load(), first)
		}
	}

	// The leader's process dies (its lease is revoked): another takes over
	// and the old one reports 0.
	resp, err := clients[0].Get(context.Background(), Keys{Prefix: "/leadermetric"}.ElectionKey(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("election keys: %v", err)
	}
	if string(resp.Kvs[0].Value) != fmt.Sprintf("bot-%d", first) {
		t.Fatalf("the oldest election key is %s, but the gauge says bot-%d leads", resp.Kvs[0].Value, first)
	}
	if _, err := clients[0].Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	waitFor("a new leader", func() bool {
		l := leaders()
		return len(l) == 1 && l[0] != first
	})
	// The old replica campaigns again and waits: 0 stays 0.
	time.Sleep(200 * time.Millisecond)
	if l := leaders(); len(l) != 1 {
		t.Errorf("leaders after the takeover: %v", l)
	}

	cancel()
	wg.Wait()
	for i := range regs {
		if v, _ := gaugeValue(t, regs[i], "backflip_leader"); v != 0 || electors[i].Leading() || hooks[i].Load() != 0 {
			t.Errorf("replica %d after stopping: backflip_leader %v, Leading %v, hook balance %d", i, v, electors[i].Leading(), hooks[i].Load())
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
