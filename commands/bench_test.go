package commands

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/heapsample"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// BenchmarkRollbackEndToEnd measures whole rollbacks through the use case,
// with the bot replica in its own process, against a simulated fleet with
// live traffic in this one:
//
//   - this process: a real embedded etcd (fsync on) and a simulated fleet —
//     GPU nodes (the real agent, probing every 5 s as its default, over two
//     simulated inference servers each: chat-70b v42 and v41, 4 GPUs each,
//     both warm; canary budget 5 s, which only a starved machine reaches),
//     routers (the reader library, publishing routers/<id> under a 10 s
//     lease; one etcd client — one gRPC connection — each, as separate
//     router processes have, or, where the name says router-processes=10,
//     100 routers on each of 10 clients, as 10 router processes serving
//     100 routers each would; that fleet is run with Postgres up only),
//     and runtime instances (the SDK, registration refreshed every 10 s)
//     each carrying synthetic requests of 8 steps of 250 ms (2 s,
//     checkpoint after each step), started at the rate that keeps the
//     stated number in flight;
//   - a child process (this test binary again): one bot replica with the
//     production defaults (WARM_TIMEOUT 2s, ROUTER_CONVERGE_TIMEOUT 5s,
//     ABORT_ACK_TIMEOUT 10s), its own etcd client, a liveness lease, the
//     audit shipper running, and a Postgres of its own (postgres=up) or a
//     pool whose server refuses connections (postgres=down). It runs one
//     unmeasured rollback (the first dials every agent, as a replica that has
//     run its warm-keep monitor has already done), then b.N rollbacks, each
//     naming its target (back and forth between v42 and v41), and reports.
//
// One sample is one Rollback call: resolve, warm check of every node, flip,
// every router converged (their records watched back), every runtime
// acknowledged its aborts and reported its re-issues, final audit event
// queued in the etcd outbox. Every request in flight on the route is
// aborted at its next checkpoint and re-issued, so the runtime's re-issue
// report comes once the re-issued requests have run again (about 2 s).
// Reported:
//
//   - p50-ms, p99-ms (the headline): the rollback without the runtime's own
//     re-issue work — the full time less the part of the in-flight phase
//     after the last runtime's abort acknowledgement (watched by this
//     process; or after the phase's start, when every acknowledgement had
//     come in before it), which only waits for the re-issued requests to
//     finish. Target p50 ≤ 250 ms;
//   - full-p50-ms, full-p99-ms: the whole call, re-issues included;
//   - abort-acked-p50-ms: from the call to the last runtime's abort
//     acknowledgement;
//   - warm-, flip-, routers-, inflight-, audit-p50-ms: the phases' own
//     timings (inflight includes the re-issues);
//   - inflight/op, aborted/op: requests in flight on the route when the
//     runtimes applied the rollback, and those aborted (and re-issued), per
//     rollback;
//   - bot-heap-MB: the bot process's heap in use (runtime.MemStats.HeapInuse
//     after two GCs) after the rollbacks; bot-peak-heap-MB: the most in use
//     while they ran (sampled every 5 ms); bot-rss-MB: its peak resident set
//     (VmHWM). The process holds the commands Service, the warm Checker with
//     its pooled connections to every agent, the Signaller, the shipper, one
//     etcd client and the test binary's own runtime;
//   - audit-backlog: events left in the outbox at the end (0 with Postgres
//     up; with it down, every event waits in etcd);
//   - refused, degraded: rollbacks of the run that were refused (a warm
//     check that could not finish within WARM_TIMEOUT on a starved machine
//     refuses, by design; not timed) or degraded (routers or runtimes not
//     all in before their timeouts; timed, the headline then being the
//     whole call). Both are 0 on a machine that is not starved.
//
// The etcd-steady-state sub-benchmark watches the fleet without rollbacks
// for b.N seconds of real time rounded up to a multiple of 10 s, the
// runtimes' refresh period (shortened from the hour it extrapolates to),
// and reports revs/s (revisions per second, from the header revision),
// write-MB/h (bytes of keys and values written, as the watch delivers them:
// the history auto-compaction has to reclaim), db-MB/h (growth of the
// database file, as etcd's Status reports it, which moves in bbolt's page
// steps) and db-inuse-MB/h (its logical size in use), each per hour.
//
//	go test -run '^$' -bench RollbackEndToEnd -benchtime 20x -timeout 60m ./commands/
func BenchmarkRollbackEndToEnd(b *testing.B) {
	if spec := os.Getenv(benchBotEnv); spec != "" {
		runBenchBot(b, spec)
		return
	}
	for _, sz := range []benchSize{
		{nodes: 16, routers: 20, runtimes: 4, inflight: 200},
		{nodes: 1000, routers: 1000, runtimes: 50, inflight: 10000, steady: true},
		{nodes: 1000, routers: 1000, routerProcesses: 10, runtimes: 50, inflight: 10000, upOnly: true},
	} {
		b.Run(sz.String(), func(b *testing.B) {
			bf := startBenchFleet(b, sz)
			b.Run("postgres=up", func(b *testing.B) { bf.rollbacks(b, false) })
			if !sz.upOnly {
				b.Run("postgres=down", func(b *testing.B) { bf.rollbacks(b, true) })
			}
			if sz.steady {
				b.Run("etcd-steady-state", bf.steadyState)
			}
			if st := bf.fleet.Stats(); st.CompletedOnRolledBack != 0 {
				b.Fatalf("%d requests completed on a version rolled back from", st.CompletedOnRolledBack)
			}
		})
	}
}

// benchBotEnv, when set, makes BenchmarkRollbackEndToEnd the bot replica
// child: its value is a benchBotSpec in JSON.
const benchBotEnv = "BACKFLIP_BENCH_BOT"

// The synthetic requests' shape in the benchmark fleet: 2 s each.
const (
	benchSteps     = 8
	benchStepDelay = 250 * time.Millisecond
	benchRoute     = "chat-70b"
)

// benchSize is one fleet the benchmark runs on.
type benchSize struct {
	nodes, routers, runtimes, inflight int
	// routerProcesses, when set, spreads the routers over that many router
	// processes sharing one etcd client (gRPC connection) each; 0 is one
	// process, so one connection, per router.
	routerProcesses int
	// steady says whether to measure etcd's steady state on it; upOnly,
	// whether to skip the run with Postgres down.
	steady, upOnly bool
}

func (s benchSize) String() string {
	procs := ""
	if s.routerProcesses > 0 {
		procs = fmt.Sprintf(",router-processes=%d", s.routerProcesses)
	}
	return fmt.Sprintf("nodes=%d,routers=%d%s,runtimes=%d,inflight=%d", s.nodes, s.routers, procs, s.runtimes, s.inflight)
}

// rps is the rate each runtime starts requests at to keep inflight
// requests running in all.
func (s benchSize) rps() int {
	d := time.Duration(benchSteps) * benchStepDelay
	return max(1, int(math.Round(float64(s.inflight)/float64(s.runtimes)/d.Seconds())))
}

// benchFleet is the parent's side: etcd and the simulated fleet.
type benchFleet struct {
	size  benchSize
	srv   *etcdtest.Server
	cli   *clientv3.Client
	fleet *simfleet.Fleet
}

func startBenchFleet(b *testing.B, sz benchSize) *benchFleet {
	b.Helper()
	// Per node: 3 listeners and the agent's 2 probe connections (both
	// ends); per router: a connection (both ends); the bot's connection to
	// each agent (the agent's end).
	checkBenchOpenFiles(b, uint64(8*sz.nodes+2*sz.routers+2*sz.runtimes+1024))
	bf := &benchFleet{size: sz, srv: etcdtest.Start(b)}
	bf.cli = bf.srv.Client(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	f, err := simfleet.Start(ctx, simfleet.Config{
		Client: bf.cli, Prefix: fleetPrefix, Nodes: sz.nodes,
		Routes:  []simfleet.RouteSpec{{Route: benchRoute, Active: "v42", Previous: "v41", PreviousWarm: true, GPUsPerNode: 4}},
		Routers: sz.routers, RouterProcesses: sz.routerProcesses, RouterLeaseTTL: 10 * time.Second, Runtimes: sz.runtimes,
		Traffic:       simfleet.Traffic{RPS: sz.rps(), Steps: benchSteps, StepDelay: benchStepDelay},
		ProbeInterval: 5 * time.Second, RuntimeRefresh: runtime.MaxRefreshEvery, StartTimeout: 10 * time.Minute,
		// The simulated servers answer canaries at once; on two cores
		// shared with a thousand nodes, an 800 ms budget would judge the
		// machine's scheduling, not the servers.
		CanaryBudget: 5 * time.Second,
		Logger:       zap.NewNop(),
	})
	if err != nil {
		b.Fatalf("start the simulated fleet (%s): %v", sz, err)
	}
	bf.fleet = f
	b.Cleanup(f.Close)
	bf.waitWarm(b)
	return bf
}

// waitWarm waits until a warm check finds both versions warm on every node:
// the first probes of a thousand agents, all at once, take longer than the
// canary budget on a small machine, and a rollback to a target whose last
// probe was slow would be refused. It also lets the traffic reach its level
// (a request lives 2 s).
func (bf *benchFleet) waitWarm(b *testing.B) {
	b.Helper()
	checker, err := warm.NewChecker(warm.Config{KV: bf.cli, Prefix: fleetPrefix, AgentToken: bf.fleet.AgentToken(), Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer checker.Close()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		time.Sleep(3 * time.Second)
		var last string
		ok := true
		for _, v := range []string{"v41", "v42"} {
			rep, err := checker.Check(context.Background(), benchRoute, v)
			if err != nil || rep.WarmNodes != bf.size.nodes {
				ok, last = false, fmt.Sprintf("%s: %d of %d nodes warm: %v", v, rep.WarmNodes, bf.size.nodes, err)
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the simulated fleet did not become warm: %s", last)
		}
	}
}

// rollbacks runs b.N rollbacks in a bot child process and reports them.
func (bf *benchFleet) rollbacks(b *testing.B, postgresDown bool) {
	acks := watchAbortAcks(b, bf.srv.Client(b))
	spec := benchBotSpec{
		Endpoint: bf.srv.Endpoint(), Prefix: fleetPrefix, Route: benchRoute,
		AgentToken: bf.fleet.AgentToken(), RuntimeSecret: bf.fleet.RuntimeSecret(),
		Samples: b.N, PostgresDown: postgresDown, Out: filepath.Join(b.TempDir(), "bot.json"),
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^BenchmarkRollbackEndToEnd$",
		"-test.benchtime=1x", "-test.count=1", "-test.timeout=60m")
	cmd.Env = append(os.Environ(), benchBotEnv+"="+string(raw))
	cmd.SysProcAttr = childProcAttr()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	b.ResetTimer()
	if err := cmd.Run(); err != nil {
		b.Fatalf("bot child: %v\n%s", err, tail(out.String(), 4000))
	}
	b.StopTimer()
	resRaw, err := os.ReadFile(spec.Out)
	if err != nil {
		b.Fatalf("bot child left no result: %v\n%s", err, tail(out.String(), 4000))
	}
	var res benchBotResult
	if err := json.Unmarshal(resRaw, &res); err != nil {
		b.Fatal(err)
	}
	var headline, full, abortAcked []float64
	phases := map[Phase][]float64{}
	aborted, inflight, refused, degraded := 0, 0, 0, 0
	for _, s := range res.Samples {
		switch s.Outcome {
		case OutcomeCompleted:
		case OutcomeDegraded:
			degraded++
		default:
			// Refused or failed: nothing flipped, nothing to time.
			refused++
			continue
		}
		total := time.Duration(s.End - s.Start)
		full = append(full, msF(total))
		for p, d := range s.Phases {
			phases[p] = append(phases[p], msF(d))
		}
		aborted += s.Aborted
		inflight += s.InFlight
		last, n := acks.last(s.Op)
		if n != bf.size.runtimes {
			// Not every runtime acknowledged in time (degraded): the
			// headline is the whole call.
			headline = append(headline, msF(total))
			continue
		}
		// Without the re-issue work, the in-flight phase would have ended
		// with the last abort acknowledgement, or at its own start when
		// every acknowledgement had come in before it.
		reissueWait := max(0, time.Duration(s.InFlightDone-max(s.InFlightStart, last.UnixNano())))
		headline = append(headline, msF(total-reissueWait))
		abortAcked = append(abortAcked, msF(time.Duration(last.UnixNano()-s.Start)))
	}
	if len(full) == 0 {
		b.Fatalf("all %d rollbacks were refused or failed: %s", len(res.Samples), res.Samples[0].Detail)
	}
	b.ReportMetric(pct(headline, 0.5), "p50-ms")
	b.ReportMetric(pct(headline, 0.99), "p99-ms")
	b.ReportMetric(pct(full, 0.5), "full-p50-ms")
	b.ReportMetric(pct(full, 0.99), "full-p99-ms")
	b.ReportMetric(pct(abortAcked, 0.5), "abort-acked-p50-ms")
	for _, p := range []Phase{PhaseWarm, PhaseFlip, PhaseRouters, PhaseInFlight, PhaseAudit} {
		b.ReportMetric(pct(phases[p], 0.5), string(p)+"-p50-ms")
	}
	b.ReportMetric(float64(inflight)/float64(len(full)), "inflight/op")
	b.ReportMetric(float64(aborted)/float64(len(full)), "aborted/op")
	b.ReportMetric(float64(refused), "refused")
	b.ReportMetric(float64(degraded), "degraded")
	b.ReportMetric(mb(res.HeapInuse), "bot-heap-MB")
	b.ReportMetric(mb(res.PeakHeap), "bot-peak-heap-MB")
	b.ReportMetric(mb(res.PeakRSS), "bot-rss-MB")
	b.ReportMetric(float64(res.Backlog), "audit-backlog")
	b.ReportMetric(0, "ns/op")
}

// steadyState watches etcd with the fleet running and no rollback, and
// reports the rates per second and per hour.
func (bf *benchFleet) steadyState(b *testing.B) {
	ctx := context.Background()
	cli := bf.srv.Client(b)
	// Let the last rollback's re-issues finish and its writes settle.
	time.Sleep(5 * time.Second)
	st0, err := cli.Status(ctx, bf.srv.Endpoint())
	if err != nil {
		b.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var bytesWritten, events int64
	done := make(chan struct{})
	wch := cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(st0.Header.Revision+1))
	go func() {
		defer close(done)
		for resp := range wch {
			for _, ev := range resp.Events {
				bytesWritten += int64(len(ev.Kv.Key) + len(ev.Kv.Value))
				events++
			}
		}
	}()
	// Runtimes rewrite their registrations every 10 s, all in step, so the
	// window is a whole number of those periods: b.N seconds rounded up
	// to the next multiple of 10.
	window := time.Duration((b.N+9)/10*10) * time.Second
	b.ResetTimer()
	time.Sleep(window)
	b.StopTimer()
	st1, err := cli.Status(ctx, bf.srv.Endpoint())
	if err != nil {
		b.Fatal(err)
	}
	// Events up to st1's revision have been delivered once the watch has
	// caught up with it; a progress request makes sure it has.
	_ = cli.RequestProgress(wctx)
	time.Sleep(200 * time.Millisecond)
	cancel()
	<-done
	perHour := float64(time.Hour) / float64(window)
	b.ReportMetric(float64(st1.Header.Revision-st0.Header.Revision)/window.Seconds(), "revs/s")
	b.ReportMetric(float64(bytesWritten)*perHour/1e6, "write-MB/h")
	b.ReportMetric(float64(st1.DbSize-st0.DbSize)*perHour/1e6, "db-MB/h")
	b.ReportMetric(float64(st1.DbSizeInUse-st0.DbSizeInUse)*perHour/1e6, "db-inuse-MB/h")
	b.ReportMetric(float64(st1.DbSize)/1e6, "db-MB")
	b.ReportMetric(0, "ns/op")
}

// benchBotSpec is what the parent tells the bot child.
type benchBotSpec struct {
	Endpoint, Prefix, Route string
	AgentToken              string
	RuntimeSecret           []byte
	Samples                 int
	PostgresDown            bool
	// Out is the file the child writes its benchBotResult to.
	Out string
}

// benchBotResult is what the bot child measured.
type benchBotResult struct {
	Samples []benchSample
	// HeapInuse after two GCs at the end, PeakHeap the most in use while
	// the rollbacks ran, PeakRSS the process's VmHWM, all in bytes.
	HeapInuse, PeakHeap, PeakRSS uint64
	Backlog                      int
}

// benchSample is one rollback, its instants in Unix nanoseconds.
type benchSample struct {
	Op, Outcome                             string
	Start, InFlightStart, InFlightDone, End int64
	Phases                                  map[Phase]time.Duration
	InFlight, Aborted                       int
	// Detail is the report of a rollback that did not complete.
	Detail string
}

// runBenchBot is the bot replica child.
func runBenchBot(b *testing.B, raw string) {
	var spec benchBotSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		b.Fatalf("%s: %v", benchBotEnv, err)
	}
	log := zaptest.NewLogger(b, zaptest.Level(zap.ErrorLevel))
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{spec.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	checker, err := warm.NewChecker(warm.Config{KV: cli, Prefix: spec.Prefix, AgentToken: spec.AgentToken, Timeout: 2 * time.Second, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	defer checker.Close()
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: cli, Prefix: spec.Prefix, Secret: spec.RuntimeSecret, AckTimeout: 10 * time.Second, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	var db *pgxpool.Pool
	if spec.PostgresDown {
		// A pool whose server refuses connections: the bot's pool while
		// Postgres is down.
		db, err = pgxpool.New(ctx, "postgres://backflip@127.0.0.1:1/audit?connect_timeout=1")
	} else {
		var pc *pgxpool.Config
		if pc, err = pgxpool.ParseConfig(""); err == nil {
			pc.ConnConfig = pg.NewDatabase(b)
			db, err = pgxpool.NewWithConfig(ctx, pc)
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	svc, err := New(Config{Etcd: cli, Prefix: spec.Prefix, Warm: checker, Runtime: sig, Owner: sess, DB: db,
		Access: testAccess(), Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	sh, err := audit.NewShipper(audit.ShipperConfig{Etcd: cli, Prefix: spec.Prefix, DB: db, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	sctx, stopShipper := context.WithCancel(ctx)
	shipped := make(chan struct{})
	go func() { defer close(shipped); _ = sh.Run(sctx) }()
	defer func() { stopShipper(); <-shipped }()

	store := svc.routes
	rollback := func() benchSample {
		cur, err := store.Get(ctx, spec.Route)
		if err != nil {
			b.Fatal(err)
		}
		var s benchSample
		s.Phases = map[Phase]time.Duration{}
		start := time.Now()
		res, err := svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: spec.Route, To: cur.Config.Previous,
			Reason: "bench", ExpectRev: cur.ModRevision}, func(p Progress) {
			if p.Phase == PhaseInFlight {
				if p.State == StateRunning {
					s.InFlightStart = time.Now().UnixNano()
				} else {
					s.InFlightDone = time.Now().UnixNano()
				}
			}
		})
		end := time.Now()
		if res == nil {
			b.Fatalf("rollback: %v", err)
		}
		s.Op, s.Outcome, s.Start, s.End = res.Op, res.Outcome, start.UnixNano(), end.UnixNano()
		if res.Outcome != OutcomeCompleted {
			s.Detail = fmt.Sprintf("%v %s", err, res.Report())
		}
		for _, t := range res.Timings {
			s.Phases[t.Phase] = t.Took
		}
		if res.InFlight != nil {
			s.InFlight, s.Aborted = res.InFlight.InFlight, res.InFlight.Aborted
		}
		return s
	}
	// Not measured: the first rollback dials every agent. On a starved
	// machine its warm check may not finish within WARM_TIMEOUT (a
	// refusal): try again a few times.
	for try := 1; ; try++ {
		s := rollback()
		if s.Outcome == OutcomeCompleted || s.Outcome == OutcomeDegraded {
			break
		}
		if try == 3 {
			b.Fatalf("first rollback, 3 tries: %s", s.Detail)
		}
		time.Sleep(5 * time.Second)
	}

	var out benchBotResult
	stop := heapsample.Peak(5 * time.Millisecond)
	for range spec.Samples {
		out.Samples = append(out.Samples, rollback())
	}
	out.PeakHeap = stop()
	// Let the shipper take the last events (Postgres up).
	time.Sleep(500 * time.Millisecond)
	out.Backlog = sh.Backlog()
	goruntime.GC()
	goruntime.GC()
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	out.HeapInuse = ms.HeapInuse
	out.PeakRSS = procStatusBytes("VmHWM")
	goruntime.KeepAlive(svc)
	raw2, err := json.Marshal(out)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(spec.Out, raw2, 0o600); err != nil {
		b.Fatal(err)
	}
}

// abortAcks records, per op, when each runtime instance's first
// acknowledgement (the abort count, written when it applied the change)
// arrived.
type abortAcks struct {
	mu    sync.Mutex
	first map[string]map[string]time.Time // op → instance → when
}

func watchAbortAcks(b *testing.B, cli *clientv3.Client) *abortAcks {
	b.Helper()
	a := &abortAcks{first: map[string]map[string]time.Time{}}
	prefix := fleetPrefix + "/runtime/acks/"
	ctx, cancel := context.WithCancel(context.Background())
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := <-wch; resp.Err() != nil {
		cancel()
		b.Fatalf("watch acks: %v", resp.Err())
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for resp := range wch {
			now := time.Now()
			for _, ev := range resp.Events {
				op, inst, ok := strings.Cut(strings.TrimPrefix(string(ev.Kv.Key), prefix), "/")
				if !ok || ev.Type != clientv3.EventTypePut {
					continue
				}
				a.mu.Lock()
				m := a.first[op]
				if m == nil {
					m = map[string]time.Time{}
					a.first[op] = m
				}
				if _, seen := m[inst]; !seen {
					m[inst] = now
				}
				a.mu.Unlock()
			}
		}
	}()
	b.Cleanup(func() { cancel(); <-done })
	return a
}

// last returns when the last instance first acknowledged op, and how many
// did.
func (a *abortAcks) last(op string) (time.Time, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var t time.Time
	for _, at := range a.first[op] {
		if at.After(t) {
			t = at
		}
	}
	return t, len(a.first[op])
}

// procStatusBytes reads a "kB" field of /proc/self/status (0 when absent).
func procStatusBytes(field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0
		}
		return kb << 10
	}
	return 0
}

// checkBenchOpenFiles fails b, naming the fix, when the open-file limit is
// below need. (Go has already raised the soft limit to the hard one.)
func checkBenchOpenFiles(b *testing.B, need uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Logf("cannot read the open-file limit: %v", err)
		return
	}
	if lim.Cur < need {
		b.Fatalf("open-file limit is %d, this needs about %d: raise it (ulimit -n %d)", lim.Cur, need, need)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func msF(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mb(n uint64) float64 { return float64(n) / (1 << 20) }

// pct is the q-quantile of xs (nearest rank).
func pct(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
