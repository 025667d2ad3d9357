package warm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/heapsample"
)

// BenchmarkWarmCheck is the pre-flight warm check across a 1000-node fleet:
// 1000 agents serving the fleetapi /v1/warm contract as real HTTP servers on
// loopback (in-process; the real agent is tested in fleet/agent), their
// node records in a real etcd, WARM_TIMEOUT 2s, the default 64 workers and
// quorum 1.0. Sub-benchmarks:
//
//   - all-healthy: every agent answers warm (target p50 ≤ 150 ms). Each
//     iteration also times the floor: the same 1000 GETs of the same agents
//     through the same transport settings and worker count, bodies read and
//     discarded, no etcd and no decoding; reported as floor-p50-ms and
//     x-floor (p50 of Check / p50 of the floor);
//   - 5pct-hung: 50 agents hang until the request is cancelled; the check
//     must end at the 2 s deadline, not later.
//
// Reported per sub-benchmark: p50-ms and p99-ms of Check, peak-heap-MB (the
// most the heap grew above its post-GC baseline while a check ran, sampled
// every millisecond through runtime/metrics, which does not stop the world)
// and alloc-MB/op (bytes allocated per check). The heap figures include the
// in-process agents' side of each request, so they overstate the bot's.
//
// Each iteration is a whole fan-out, so run it with a fixed count:
//
//	go test -run '^$' -bench BenchmarkWarmCheck -benchtime 20x ./fleet/warm/
//
// It needs about 2 sockets per agent plus etcd's; Go raises the soft
// open-file limit to the hard one at start-up, and the benchmark fails with
// a clear message if even that is too low.
func BenchmarkWarmCheck(b *testing.B) {
	const (
		nodes   = 1000
		gpus    = 4
		timeout = 2 * time.Second
		route   = "chat-70b"
		prefix  = "/bench"
	)
	checkOpenFiles(b, 2*nodes+512)

	srv := etcdtest.Start(b)
	cli := srv.Client(b)
	store := routing.NewStore(cli, prefix, zap.NewNop())
	ctx := context.Background()
	var rev int64
	for _, v := range []string{"v41", "v42"} {
		res, err := store.Promote(ctx, routing.Change{Route: route, To: v, ExpectRev: rev, Op: "bench-" + v, Actor: "bench", Reason: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		rev = res.Revision
	}
	agents := make([]*fakeAgent, nodes)
	var ops []clientv3.Op
	for i := range agents {
		name := fmt.Sprintf("gpu-%04d", i)
		agents[i] = startAgent(b, name, warmB(gpus))
		rec, _ := json.Marshal(fleetapi.NodeRecord{Node: name, URL: agents[i].url(),
			Serving: map[string]map[string]int{route: {"v41": gpus, "v42": gpus}}})
		ops = append(ops, clientv3.OpPut(fleetapi.Keys{Prefix: prefix}.Node(name), string(rec)))
	}
	// etcd allows 128 operations per transaction by default.
	for batch := range slices.Chunk(ops, 100) {
		if _, err := cli.Txn(ctx).Then(batch...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	// One Checker, so one transport, for all iterations: the idle
	// connections it keeps are part of what is measured.
	checker, err := NewChecker(Config{KV: cli, Prefix: prefix, AgentToken: testToken, Timeout: timeout, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(checker.Close)

	urls := make([]string, nodes)
	for i, a := range agents {
		urls[i] = a.url() + "/v1/warm?route=" + route + "&version=v41"
	}
	floorClient := NewHTTPClient(nil)
	b.Cleanup(floorClient.CloseIdleConnections)
	floor := func() time.Duration { return rawFanout(b, floorClient, urls, DefaultWorkers) }

	b.Run("all-healthy", func(b *testing.B) {
		benchCheck(b, checker, route, nodes, nodes, floor)
	})
	b.Run("5pct-hung", func(b *testing.B) {
		hung := 0
		for i := 0; i < nodes; i += 20 {
			agents[i].set(behaviour{mode: "hang"})
			hung++
		}
		defer func() {
			for _, a := range agents {
				a.set(warmB(gpus))
			}
		}()
		benchCheck(b, checker, route, nodes, nodes-hung, nil)
	})
}

// benchCheck times b.N checks and, when floor is set, b.N floor fan-outs
// interleaved with them.
func benchCheck(b *testing.B, c *Checker, route string, nodes, wantWarm int, floor func() time.Duration) {
	ctx := context.Background()
	check := func() time.Duration {
		start := time.Now()
		rep, err := c.Check(ctx, route, "v41")
		took := time.Since(start)
		if rep.TargetNodes != nodes || rep.WarmNodes != wantWarm || (err == nil) != (wantWarm == nodes) {
			b.Fatalf("check: %v; %d of %d nodes warm, want %d", err, rep.WarmNodes, rep.TargetNodes, wantWarm)
		}
		return took
	}
	// Not measured: the first check dials every agent.
	check()
	var floors []time.Duration
	if floor != nil {
		floor()
	}

	lat := make([]time.Duration, 0, b.N)
	var peak, allocated uint64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		runtime.GC()
		base := heapsample.InUse()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		stop := heapsample.Peak(time.Millisecond)
		b.StartTimer()

		lat = append(lat, check())

		b.StopTimer()
		top := stop()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if top > base {
			peak = max(peak, top-base)
		}
		allocated += after.TotalAlloc - before.TotalAlloc
		if floor != nil {
			floors = append(floors, floor())
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	if floor != nil {
		slices.Sort(floors)
		b.ReportMetric(ms(percentile(floors, 0.50)), "floor-p50-ms")
		b.ReportMetric(float64(percentile(lat, 0.50))/float64(percentile(floors, 0.50)), "x-floor")
	}
	b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(allocated)/float64(b.N)/(1<<20), "alloc-MB/op")
}

// rawFanout GETs every URL, workers at a time, and reads each body to the
// end: the part of a warm check that is pure HTTP.
func rawFanout(tb testing.TB, client *http.Client, urls []string, workers int) time.Duration {
	start := time.Now()
	jobs := make(chan string)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for u := range jobs {
				req, _ := http.NewRequest(http.MethodGet, u, nil)
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp, err := client.Do(req)
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	for _, u := range urls {
		jobs <- u
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	select {
	case err := <-errs:
		tb.Fatalf("floor fan-out: %v", err)
	default:
	}
	return took
}

// percentile of sorted samples, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
