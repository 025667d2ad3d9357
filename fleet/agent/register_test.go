package agent

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

const testPrefix = "/backflip-test"

// register runs ta.Register on client until the returned stop is called
// (or the test ends), with a 2 s lease: the shortest etcd grants.
func register(tb testing.TB, ta *testAgent, client EtcdClient) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ta.Register(ctx, RegisterConfig{
			Client: client, Prefix: testPrefix, URL: "https://gpu-node-1:9090",
			LeaseTTL: 2 * time.Second, Timeout: time.Second,
		})
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Register: %v", err)
			}
		case <-time.After(10 * time.Second):
			tb.Fatal("Register did not return after its context ended")
		}
	}
	tb.Cleanup(stop)
	return stop
}

// nodeKV reads the node record, nil when absent.
func nodeKV(tb testing.TB, c *clientv3.Client) *clientv3.GetResponse {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, fleetapi.Keys{Prefix: testPrefix}.Node("gpu-node-1"))
	if err != nil {
		tb.Fatalf("get node record: %v", err)
	}
	return resp
}

// waitRecord waits until the node record is present and returns its lease.
// With notLease set, it waits for a record under another lease.
func waitRecord(tb testing.TB, c *clientv3.Client, notLease int64) int64 {
	tb.Helper()
	var lease int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp := nodeKV(tb, c); len(resp.Kvs) == 1 && resp.Kvs[0].Lease != notLease {
			lease = resp.Kvs[0].Lease
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("node record not (re)registered within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return lease
}

func waitGone(tb testing.TB, c *clientv3.Client) {
	tb.Helper()
	waitFor(tb, "the node record to go", func() bool { return len(nodeKV(tb, c).Kvs) == 0 })
}

func TestRegister(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	ta := newTestAgent(t)
	stop := register(t, ta, c)

	lease := waitRecord(t, c, 0)
	if lease == 0 {
		t.Fatal("node record written without a lease")
	}
	kv := nodeKV(t, c).Kvs[0]
	rec, err := fleetapi.DecodeNodeRecord(fleetapi.Keys{Prefix: testPrefix}, string(kv.Key), kv.Value)
	if err != nil {
		t.Fatalf("decode record: %v", err)
	}
	if rec.Node != "gpu-node-1" || rec.URL != "https://gpu-node-1:9090" ||
		rec.GPUs("chat-70b", "v42") != 4 || rec.GPUs("chat-70b", "v41") != 4 || rec.GPUs("embed-small", "v7") != 1 {
		t.Fatalf("record: %+v", rec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ttl, err := c.TimeToLive(ctx, clientv3.LeaseID(lease))
	if err != nil || ttl.GrantedTTL != 2 || ttl.TTL <= 0 {
		t.Fatalf("lease: %+v %v", ttl, err)
	}
	waitFor(t, "registered gauge", func() bool { return gauge(t, ta.Agent, "backflip_agent_registered") == 1 })

	// Kept alive past its TTL.
	time.Sleep(2500 * time.Millisecond)
	if got := waitRecord(t, c, 0); got != lease {
		t.Fatalf("lease changed from %x to %x without a loss", lease, got)
	}

	// Shutdown deregisters: the record is gone as soon as Register returns.
	stop()
	if resp := nodeKV(t, c); len(resp.Kvs) != 0 {
		t.Fatalf("record still there after shutdown: %s", resp.Kvs[0].Value)
	}
	if got := gauge(t, ta.Agent, "backflip_agent_registered"); got != 0 {
		t.Fatalf("registered gauge %v after shutdown", got)
	}
}

// TestReregisterAfterRevoke: the lease is revoked behind the agent's back
// (an operator, or etcd expiring it); the agent registers again.
func TestReregisterAfterRevoke(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	other := srv.Client(t)
	ta := newTestAgent(t)
	register(t, ta, c)

	lease := waitRecord(t, other, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := other.Revoke(ctx, clientv3.LeaseID(lease)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if again := waitRecord(t, other, lease); again == 0 {
		t.Fatal("re-registered without a lease")
	}
	if got := gauge(t, ta.Agent, "backflip_agent_lease_grants_total"); got != 2 {
		t.Fatalf("lease grants %v, want 2", got)
	}
}

// TestReregisterAfterPartition: the agent is cut off from etcd for longer
// than its lease; etcd expires the record; when the network heals the agent
// registers again.
func TestReregisterAfterPartition(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	direct := srv.Client(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	viaProxy := proxy.Client(t)
	ta := newTestAgent(t)
	register(t, ta, viaProxy)

	lease := waitRecord(t, direct, 0)
	proxy.Blackhole()
	waitGone(t, direct) // the lease expired in etcd
	waitFor(t, "registered gauge to drop", func() bool { return gauge(t, ta.Agent, "backflip_agent_registered") == 0 })
	proxy.Unblackhole()
	waitRecord(t, direct, lease)
	waitFor(t, "registered gauge", func() bool { return gauge(t, ta.Agent, "backflip_agent_registered") == 1 })
}

func TestRegisterRefuses(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	ta := newTestAgent(t)
	err := ta.Register(context.Background(), RegisterConfig{Client: srv.Client(t), Prefix: testPrefix, URL: "not a url"})
	if err == nil {
		t.Fatal("registered with a bad URL")
	}
	if err := ta.Register(context.Background(), RegisterConfig{Prefix: testPrefix, URL: "http://n:1"}); err == nil {
		t.Fatal("registered without a client")
	}
}
