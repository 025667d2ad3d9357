package routing

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// benchWatcher returns a ready reader over one route.
func benchWatcher(b *testing.B) *Watcher {
	b.Helper()
	srv := etcdtest.Start(b)
	s := NewStore(srv.Client(b), testPrefix, zap.NewNop())
	mustPromote(b, s, "chat-70b", "v1", 0)
	w := startWatcher(b, WatcherConfig{Client: srv.Client(b), Logger: zap.NewNop()})
	waitReady(b, w)
	return w
}

// BenchmarkRequestBoundaryCheck is the per-request cost a router pays:
// Valid on a ticket. Target: ≤ 2 ns/op, 0 allocs/op.
func BenchmarkRequestBoundaryCheck(b *testing.B) {
	w := benchWatcher(b)
	w.checkStale()
	tk, ok := w.Ticket("chat-70b")
	if !ok {
		b.Fatal("no ticket")
	}
	b.Run("Valid", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			if w.Valid(tk) == StatusOK {
				n++
			}
		}
		if n == 0 {
			b.Fatal("never valid")
		}
	})
	b.Run("ValidParallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if w.Valid(tk) != StatusOK {
					panic("ticket not valid")
				}
			}
		})
	})
	b.Run("Ticket", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := w.Ticket("chat-70b"); !ok {
				b.Fatal("no ticket")
			}
		}
	})
	b.Run("Current", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if v, ok := w.Current("chat-70b"); !ok || v.Epoch != 1 {
				b.Fatal("no route")
			}
		}
	})
	// The floor: one atomic pointer load and an int64 compare.
	b.Run("FloorAtomicLoad", func(b *testing.B) {
		var p atomic.Pointer[applied]
		a := &applied{etcd: RouteConfig{Epoch: 1}}
		p.Store(a)
		b.ReportAllocs()
		var n int
		for b.Loop() {
			if p.Load().etcd.Epoch == 1 {
				n++
			}
		}
		if n == 0 {
			b.Fatal("floor broken")
		}
	})
}

// convergence counts how many of n watchers have seen a target.
type convergence struct {
	n      int32
	target atomic.Int64
	count  atomic.Int32
	done   chan time.Time
}

func newConvergence(n int) *convergence {
	return &convergence{n: int32(n), done: make(chan time.Time, 1)}
}

func (c *convergence) arm(target int64) {
	c.count.Store(0)
	c.target.Store(target)
}

func (c *convergence) saw(v int64) {
	if v == c.target.Load() && c.count.Add(1) == c.n {
		c.done <- time.Now()
	}
}

// fanout is one topology of router processes: nClients clients with
// perClient watchers each.
type fanout struct {
	nClients, perClient int
}

func (f fanout) String() string {
	if f.perClient == 1 {
		return fmt.Sprintf("%d-clients-x1", f.nClients)
	}
	return fmt.Sprintf("%d-clients-x%d", f.nClients, f.perClient)
}

// BenchmarkFlipToLastWatcher measures, for 1000 routers, the time from the
// start of a flip to the moment the last router has applied it, against
// raw etcd watches on the same clients measured in the same run (flips
// alternate between the two, each on its own key prefix). Reported: p50 of
// both in ms and their ratio (target ≤ 1.2).
func BenchmarkFlipToLastWatcher(b *testing.B) {
	for _, topo := range []fanout{{1000, 1}, {10, 100}} {
		b.Run(topo.String(), func(b *testing.B) { benchFanout(b, topo) })
	}
}

func benchFanout(b *testing.B, topo fanout) {
	srv := etcdtest.Start(b)
	total := topo.nClients * topo.perClient
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clients := make([]*clientv3.Client, topo.nClients)
	for i := range clients {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = cli
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	writer := clients[0]

	// Raw floor: plain watches on their own prefix.
	const rawPrefix = "/raw"
	raw := newConvergence(total)
	var wg sync.WaitGroup
	for _, cli := range clients {
		for j := 0; j < topo.perClient; j++ {
			wch := cli.Watch(ctx, rawPrefix+"/routes/", clientv3.WithPrefix())
			wg.Add(1)
			go func() {
				defer wg.Done()
				for resp := range wch {
					for _, ev := range resp.Events {
						if n, err := strconv.ParseInt(string(ev.Kv.Value), 10, 64); err == nil {
							raw.saw(n)
						}
					}
				}
			}()
		}
	}
	// The reader library, same clients.
	rdr := newConvergence(total)
	readers := make([]*Watcher, 0, total)
	for _, cli := range clients {
		for j := 0; j < topo.perClient; j++ {
			w, err := NewWatcher(WatcherConfig{Client: cli, Prefix: testPrefix, Logger: zap.NewNop(),
				OnApply: func(v View) { rdr.saw(v.Epoch) }})
			if err != nil {
				b.Fatal(err)
			}
			w.Start(ctx)
			readers = append(readers, w)
		}
	}
	defer func() {
		cancel()
		for _, w := range readers {
			w.Close()
		}
		wg.Wait()
	}()
	for _, w := range readers {
		waitReady(b, w)
	}
	s := NewStore(writer, testPrefix, zap.NewNop())
	f := newFlipper(b, s, "chat-70b")
	// Let every raw watch be established before measuring.
	time.Sleep(time.Second)

	var rawLat, rdrLat []time.Duration
	var rawRev int64 // ModRevision of the raw key: 0 until the first put creates it
	wait := func(c *convergence, what string) time.Time {
		select {
		case t := <-c.done:
			return t
		case <-time.After(30 * time.Second):
			b.Fatalf("%s: only %d of %d watchers converged", what, c.count.Load(), total)
			return time.Time{}
		}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// Raw: one guarded Txn with one put, as light as a flip can be.
		raw.arm(int64(i))
		start := time.Now()
		resp, err := writer.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(rawPrefix+"/routes/r"), "=", rawRev)).
			Then(clientv3.OpPut(rawPrefix+"/routes/r", strconv.Itoa(i))).Commit()
		if err != nil || !resp.Succeeded {
			b.Fatalf("raw flip: %v", err)
		}
		rawRev = resp.Header.Revision
		rawLat = append(rawLat, wait(raw, "raw").Sub(start))

		rdr.arm(f.cur.Config.Epoch + 1)
		start = time.Now()
		f.flip()
		rdrLat = append(rdrLat, wait(rdr, "reader").Sub(start))
	}
	b.StopTimer()
	rp, qp := p50(rawLat), p50(rdrLat)
	b.ReportMetric(float64(rp)/1e6, "raw-p50-ms")
	b.ReportMetric(float64(qp)/1e6, "reader-p50-ms")
	b.ReportMetric(float64(qp)/float64(rp), "ratio")
	b.ReportMetric(0, "ns/op")
}

func p50(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
