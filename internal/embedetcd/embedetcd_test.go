package embedetcd_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/internal/embedetcd"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStartRejectsIncompleteConfig(t *testing.T) {
	for name, cfg := range map[string]embedetcd.Config{
		"MissingDir":    {Logger: zap.NewNop()},
		"MissingLogger": {Dir: t.TempDir()},
		"BadScheme":     {Dir: t.TempDir(), Logger: zap.NewNop(), ClientURL: "https://127.0.0.1:0"},
		"PathInURL":     {Dir: t.TempDir(), Logger: zap.NewNop(), PeerURL: "http://127.0.0.1:0/x"},
	} {
		t.Run(name, func(t *testing.T) {
			e, err := embedetcd.Start(context.Background(), cfg)
			if err == nil {
				e.Close()
				t.Fatal("Start succeeded")
			}
		})
	}
}

func TestStartServesAndCompacts(t *testing.T) {
	e := mustStart(t, embedetcd.Config{Dir: dataDir(t), Logger: zap.NewNop()})
	defer e.Close()

	if strings.HasSuffix(e.Endpoint(), ":0") || !strings.HasPrefix(e.Endpoint(), "http://127.0.0.1:") {
		t.Fatalf("Endpoint() = %q, want the bound loopback port", e.Endpoint())
	}
	cfg := e.Server().Config()
	if cfg.AutoCompactionMode != "periodic" || cfg.AutoCompactionRetention != "5m" {
		t.Fatalf("auto-compaction %s/%s, want periodic/5m", cfg.AutoCompactionMode, cfg.AutoCompactionRetention)
	}

	c := newClient(t, e.Endpoint())
	defer c.Close()
	put(t, c, "k", "v")
	if got := get(t, c, "k"); got != "v" {
		t.Fatalf("Get(k) = %q, want v", got)
	}
}

func TestCloseAndHardStopAreIdempotent(t *testing.T) {
	e := mustStart(t, embedetcd.Config{Dir: dataDir(t), Logger: zap.NewNop()})
	e.Close()
	e.Close()
	e.HardStop()

	e = mustStart(t, embedetcd.Config{Dir: dataDir(t), Logger: zap.NewNop()})
	e.HardStop()
	e.HardStop()
	e.Close()
}

// A crash must not wait for open streams: without the crash interceptor, the
// graceful part of the shutdown would wait for the client's watch for etcd's
// request timeout (about 7 s). The 5 s bound separates the two behaviours with
// a wide margin; it is not a performance claim.
func TestHardStopEndsStreamsAndKeepsData(t *testing.T) {
	dir := dataDir(t)
	e := mustStart(t, embedetcd.Config{Dir: dir, Logger: zap.NewNop()})
	c := newClient(t, e.Endpoint())
	defer c.Close()
	put(t, c, "k", "v")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Watching from revision 1 replays the put, which proves the watch
	// stream is open on the server.
	wch := c.Watch(ctx, "k", clientv3.WithRev(1))
	select {
	case <-wch:
	case <-time.After(5 * time.Second):
		t.Fatal("no event on the watch")
	}

	stopped := make(chan struct{})
	go func() {
		e.HardStop()
		close(stopped)
	}()
	start := time.Now()
	select {
	case <-stopped:
		t.Logf("HardStop with an open watch took %v", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("HardStop still waiting for the open watch after 5s")
	}
	cancel()

	// The data directory survives the crash.
	e = mustStart(t, embedetcd.Config{Dir: dir, Logger: zap.NewNop()})
	defer e.Close()
	c2 := newClient(t, e.Endpoint())
	defer c2.Close()
	if got := get(t, c2, "k"); got != "v" {
		t.Fatalf("Get(k) after restart = %q, want v", got)
	}
}

// A member that cannot become ready (its peer never starts) must give up at
// the context's deadline and release everything it started; TestMain's leak
// check covers the goroutines, the test covers the port.
func TestStartTimeoutCleansUp(t *testing.T) {
	port := freePort(t)
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e, err := embedetcd.Start(ctx, embedetcd.Config{
		Dir:            dataDir(t),
		Name:           "a",
		ClientURL:      fmt.Sprintf("http://127.0.0.1:%d", port),
		PeerURL:        peer,
		InitialCluster: "a=" + peer + ",b=http://127.0.0.1:1",
		Logger:         zap.NewNop(),
	})
	if err == nil {
		e.Close()
		t.Fatal("Start of a member without quorum succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start error = %v, want one wrapping context.DeadlineExceeded", err)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("client port still bound after a failed Start: %v", err)
	}
	l.Close()
}

func mustStart(tb testing.TB, cfg embedetcd.Config) *embedetcd.Etcd {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := embedetcd.Start(ctx, cfg)
	if err != nil {
		tb.Fatalf("Start: %v", err)
	}
	return e
}

// dataDir is a data directory etcd creates itself, with the 0700 mode it
// insists on.
func dataDir(tb testing.TB) string { return filepath.Join(tb.TempDir(), "etcd") }

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newClient(tb testing.TB, endpoint string) *clientv3.Client {
	tb.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatalf("clientv3.New: %v", err)
	}
	return c
}

func put(tb testing.TB, c *clientv3.Client, k, v string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, k, v); err != nil {
		tb.Fatalf("Put(%s): %v", k, err)
	}
}

func get(tb testing.TB, c *clientv3.Client, k string) string {
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
