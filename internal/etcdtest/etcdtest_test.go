package etcdtest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

func TestMain(m *testing.M) {
	etcdtest.VerifyTestMain(m)
}

func TestServerPutGet(t *testing.T) {
	s := etcdtest.Start(t)
	c := s.Client(t)
	mustPut(t, c, "k", "v")
	if got := mustGet(t, c, "k"); got != "v" {
		t.Fatalf("Get(k) = %q, want %q", got, "v")
	}
}

func TestClusterSurvivesLeaderCrash(t *testing.T) {
	cl := etcdtest.StartCluster(t, 3)
	all := cl.Client(t)
	mustPut(t, all, "before", "1")

	old := cl.WaitLeader(t)
	// Created before the crash: it must reconnect to the restarted member on
	// the same URL.
	own := cl.Client(t, cl.Endpoints()[old])

	// Watches opened before the crash must deliver the write made after it:
	// the one on all endpoints by failing over (if its stream was on the
	// leader), the one on the crashed member after its restart.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	allWatch := mustWatch(t, ctx, all, "after")
	ownWatch := mustWatch(t, ctx, own, "after")

	start := time.Now()
	cl.HardStop(t, old)
	t.Logf("HardStop of the leader took %v", time.Since(start))

	// The write may fail while the survivors elect a new leader.
	eventually(t, 15*time.Second, func(ctx context.Context) error {
		_, err := all.Put(ctx, "after", "2")
		return err
	})
	t.Logf("write succeeded %v after the crash", time.Since(start))

	if leader := cl.WaitLeader(t); leader == old {
		t.Fatalf("WaitLeader = %d, the crashed member", leader)
	}
	waitEvent(t, allWatch, "after", "2")

	cl.Restart(t, old)
	t.Logf("restarted %v after the crash", time.Since(start))
	// A linearizable read served by the restarted member sees the write made
	// while it was down, once it has caught up.
	eventually(t, 15*time.Second, func(ctx context.Context) error {
		resp, err := own.Get(ctx, "after")
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "2" {
			return fmt.Errorf("got %v, want after=2", resp.Kvs)
		}
		return nil
	})
	waitEvent(t, ownWatch, "after", "2")
	if got := mustGet(t, own, "before"); got != "1" {
		t.Fatalf("Get(before) on the restarted member = %q, want %q", got, "1")
	}
	if leader := cl.WaitLeader(t); leader < 0 {
		t.Fatalf("WaitLeader = %d", leader)
	}
}

func TestProxy(t *testing.T) {
	s := etcdtest.Start(t)
	direct := s.Client(t)
	p := etcdtest.NewProxy(t, s.Endpoint())
	c := p.Client(t)
	mustPut(t, c, "k", "v")
	// reconnected waits until c works through the proxy again: bytes dropped
	// by a blackhole usually break the connection, and the client redials.
	reconnected := func(t *testing.T) {
		t.Helper()
		eventually(t, 15*time.Second, func(ctx context.Context) error {
			_, err := c.Get(ctx, "k")
			return err
		})
	}

	t.Run("Blackhole", func(t *testing.T) {
		p.Blackhole()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := c.Get(ctx, "k")
		cancel()
		p.Unblackhole()
		if err == nil {
			t.Fatal("Get through a blackholed proxy succeeded")
		}
		t.Logf("Get through a blackholed proxy: %v", err)
		reconnected(t)
	})

	t.Run("BlackholeRxLosesReplies", func(t *testing.T) {
		reconnected(t) // the request must go out on an established connection
		p.BlackholeRx()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := c.Put(ctx, "rx", "landed")
		cancel()
		p.UnblackholeRx()
		if err == nil {
			t.Fatal("Put whose reply was blackholed succeeded")
		}
		// On a loaded machine the request may still be on its way to etcd when
		// the client gives up; it is applied all the same, only later.
		eventually(t, 15*time.Second, func(ctx context.Context) error {
			resp, err := direct.Get(ctx, "rx")
			if err != nil {
				return err
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "landed" {
				return fmt.Errorf("Get(rx) = %v, want the write that reached etcd", resp.Kvs)
			}
			return nil
		})
		reconnected(t)
	})

	t.Run("BlackholeTxLosesRequests", func(t *testing.T) {
		reconnected(t)
		p.BlackholeTx()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := c.Put(ctx, "tx", "lost")
		cancel()
		p.UnblackholeTx()
		if err == nil {
			t.Fatal("Put whose request was blackholed succeeded")
		}
		reconnected(t)
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := direct.Get(ctx, "tx")
		if err != nil {
			t.Fatalf("Get(tx): %v", err)
		}
		if len(resp.Kvs) != 0 {
			t.Fatalf("Get(tx) = %v, want nothing: the request never reached etcd", resp.Kvs)
		}
	})

	t.Run("Delay", func(t *testing.T) {
		const d = 100 * time.Millisecond
		p.Delay(d)
		defer p.Undelay()
		start := time.Now()
		if got := mustGet(t, c, "k"); got != "v" {
			t.Fatalf("Get(k) = %q, want %q", got, "v")
		}
		if took := time.Since(start); took < d {
			t.Fatalf("Get through a proxy delaying %v took %v", d, took)
		}
	})
}

// mustWatch opens a watch on key and waits until the server has created it,
// so that no later write can be missed.
func mustWatch(tb testing.TB, ctx context.Context, c *clientv3.Client, key string) clientv3.WatchChan {
	tb.Helper()
	wch := c.Watch(ctx, key, clientv3.WithCreatedNotify())
	select {
	case resp := <-wch:
		if !resp.Created {
			tb.Fatalf("Watch(%s): first response %+v, want the created notification", key, resp)
		}
	case <-time.After(5 * time.Second):
		tb.Fatalf("Watch(%s): not created within 5s", key)
	}
	return wch
}

// waitEvent waits for a put of key=value on wch.
func waitEvent(tb testing.TB, wch clientv3.WatchChan, key, value string) {
	tb.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				tb.Fatalf("watch on %s closed before %s=%s arrived", key, key, value)
			}
			if err := resp.Err(); err != nil {
				tb.Fatalf("watch on %s: %v", key, err)
			}
			for _, ev := range resp.Events {
				if string(ev.Kv.Key) == key && string(ev.Kv.Value) == value {
					return
				}
			}
		case <-timeout:
			tb.Fatalf("no event %s=%s within 15s", key, value)
		}
	}
}

func mustPut(tb testing.TB, c *clientv3.Client, k, v string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, k, v); err != nil {
		tb.Fatalf("Put(%s): %v", k, err)
	}
}

func mustGet(tb testing.TB, c *clientv3.Client, k string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, k)
	if err != nil {
		tb.Fatalf("Get(%s): %v", k, err)
	}
	if len(resp.Kvs) != 1 {
		tb.Fatalf("Get(%s): %d keys, want 1", k, len(resp.Kvs))
	}
	return string(resp.Kvs[0].Value)
}

// eventually calls f, each time with a 2 s timeout, until it succeeds, and
// fails the test if it has not within timeout.
func eventually(tb testing.TB, timeout time.Duration, f func(context.Context) error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var errs []error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		errs = append(errs, err)
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("not done within %v: last error: %v (%d attempts)", timeout, errors.Join(errs[len(errs)-1:]...), len(errs))
}

func TestLink(t *testing.T) {
	s := etcdtest.Start(t)
	direct := s.Client(t)
	l := etcdtest.NewLink(t, s.Endpoint())
	c := l.Client(t)
	mustPut(t, c, "k", "v")

	t.Run("PartitionLosesNothing", func(t *testing.T) {
		l.Partition()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := c.Get(ctx, "k")
		cancel()
		if err == nil {
			t.Fatal("Get through a partitioned link succeeded")
		}
		// A write sent during the partition waits in the link, and nothing
		// of it reaches etcd until the link heals.
		put := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_, err := c.Put(ctx, "held", "late")
			put <- err
		}()
		time.Sleep(300 * time.Millisecond)
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := direct.Get(ctx, "held")
		cancel()
		if err != nil || len(resp.Kvs) != 0 {
			t.Fatalf("Get(held) during the partition = %v, %v; want nothing", resp, err)
		}
		l.Heal()
		if err := <-put; err != nil {
			t.Fatalf("Put held by the partition, after the heal: %v", err)
		}
		if got := mustGet(t, direct, "held"); got != "late" {
			t.Fatalf("Get(held) = %q, want the write held by the partition", got)
		}
	})

	t.Run("CutReconnects", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wch := mustWatch(t, ctx, c, "after-cut")
		l.Cut()
		// The client redials; its watch resumes on the new connection.
		eventually(t, 15*time.Second, func(ctx context.Context) error {
			_, err := c.Get(ctx, "k")
			return err
		})
		mustPut(t, direct, "after-cut", "1")
		waitEvent(t, wch, "after-cut", "1")
	})
}
