package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/sim"
)

// BenchmarkAgentMemory measures what one node agent costs in memory, with
// N inference servers (servers=2: a route's active and previous version, as
// in the fleet benchmarks; servers=8: one per GPU of an 8-GPU node). The
// agent is the real one: probers over simulated servers of every kind
// (internal/sim, HTTP on loopback), its HTTP API, and its lease
// registration through an etcd client of its own to a real embedded etcd.
//
// One iteration is a fresh warm round: GET /v1/warm?fresh=1 for each server
// through the agent's HTTP API, as the bot's warm check does for an old
// observation, so each makes the agent probe its server (health, model
// list, canary inference) before it answers. The agent also probes on its
// own every 5 s (its default).
//
// Reported: agent-heap-MB, the heap in use (runtime.MemStats.HeapInuse
// after two GCs) with the agent running after the rounds, less the same
// before it started; the simulated servers, etcd and the benchmark's own
// client (one connection) live in the same process, so their side of the
// agent's connections (a few KB each) is counted as the agent's, and the
// difference of two heaps of a few MB is good to about ±0.3 MB.
// agent-goroutines is the goroutines it added.
//
//	go test -run '^$' -bench BenchmarkAgentMemory -benchtime 200x ./fleet/agent/
func BenchmarkAgentMemory(b *testing.B) {
	for _, n := range []int{2, 8} {
		b.Run(fmt.Sprintf("servers=%d", n), func(b *testing.B) { benchAgentMemory(b, n) })
	}
}

func benchAgentMemory(b *testing.B, n int) {
	const token = "bench-agent-token"
	srv := etcdtest.Start(b)
	kinds := []string{sim.KindOpenAI, sim.KindKServeV2, sim.KindTGI, sim.KindOllama}
	servers := make([]ServerConfig, n)
	for i := range servers {
		kind := kinds[i%len(kinds)]
		model := fmt.Sprintf("model-%d", i)
		if kind == sim.KindOllama {
			model += ":v1"
		}
		_, servers[i] = simServer(b, kind, "chat-70b", fmt.Sprintf("v%d", i+1), model, "1", 1)
	}
	base, goroutines := settledHeap()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	probes := NewHTTPClient()
	defer probes.CloseIdleConnections()
	a, err := New(Config{Node: "gpu-bench", Servers: servers, HTTPClient: probes, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	hs, err := Listen(HTTPConfig{Addr: "127.0.0.1:0", Handler: a.Handler(token), Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	url := "http://" + hs.Addr().String()
	wg.Go(func() { _ = a.Run(ctx) })
	wg.Go(func() { _ = hs.Serve(ctx) })
	wg.Go(func() { _ = a.Register(ctx, RegisterConfig{Client: cli, Prefix: "/bench", URL: url}) })

	// The bot's side, outside the agent: a client of its own.
	bot := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer bot.CloseIdleConnections()
	round := func() {
		for _, s := range servers {
			req, _ := http.NewRequest(http.MethodGet, url+"/v1/warm?fresh=1&route="+s.Route+"&version="+s.Version, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := bot.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("GET /v1/warm %s: %d", s.Version, resp.StatusCode)
			}
		}
	}
	round()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		round()
	}
	b.StopTimer()
	heap, g := settledHeap()
	b.ReportMetric(float64(int64(heap)-int64(base))/(1<<20), "agent-heap-MB")
	b.ReportMetric(float64(g-goroutines), "agent-goroutines")
}

// settledHeap returns the heap in use after two GCs, and the goroutines.
func settledHeap() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, runtime.NumGoroutine()
}
