package etcdtest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/internal/embedetcd"
)

const (
	// startTimeout bounds how long a member may take to become ready. A
	// member normally is ready in well under a second; the margin is for
	// -race on a loaded two-core machine, where fsync and the first election
	// can be slow.
	startTimeout = 30 * time.Second
	// dialTimeout is the clients' DialTimeout. clientv3 connects lazily, so
	// it does not bound connecting; it bounds fetching an auth token and
	// sets the first lease keep-alive timeout (DialTimeout + 1 s).
	dialTimeout = 5 * time.Second
)

// Server is a single-member etcd cluster.
type Server struct {
	etcd *embedetcd.Etcd
}

// Start starts a single etcd member on a free loopback port with its data in
// tb.TempDir(), and stops it when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	lg := newLogger(tb)
	// A directory etcd creates itself gets the 0700 mode etcd insists on.
	dir := filepath.Join(tb.TempDir(), "etcd")
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	e, err := embedetcd.Start(ctx, embedetcd.Config{Dir: dir, Logger: lg})
	if err != nil {
		tb.Fatalf("etcdtest: start etcd: %v", err)
	}
	// Registered after TempDir, so the member stops before its data
	// directory is removed.
	tb.Cleanup(e.Close)
	return &Server{etcd: e}
}

// Endpoint is the member's client URL, e.g. "http://127.0.0.1:34567".
func (s *Server) Endpoint() string { return s.etcd.Endpoint() }

// Etcd is the member itself, e.g. to HardStop it.
func (s *Server) Etcd() *embedetcd.Etcd { return s.etcd }

// Client returns a new client of the member, closed when the test ends.
func (s *Server) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	return newClient(tb, []string{s.etcd.Endpoint()})
}

func newClient(tb testing.TB, endpoints []string) *clientv3.Client {
	tb.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		Logger:      newLogger(tb).Named("etcd-client"),
	})
	if err != nil {
		tb.Fatalf("etcdtest: new client of %v: %v", endpoints, err)
	}
	// The error is ignored: Close reports one when the test already closed
	// the client itself, which is legitimate.
	tb.Cleanup(func() { _ = c.Close() })
	return c
}
