package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/internal/embedetcd"
)

const (
	// leaderTimeout bounds WaitLeader. An election takes one to two election
	// timeouts (1 s each with etcd's defaults, which the harness keeps so
	// that failover in tests looks like failover in production); the rest is
	// margin for -race on a loaded machine.
	leaderTimeout = 10 * time.Second
	// pollInterval is how often WaitLeader looks at the members again.
	pollInterval = 20 * time.Millisecond
)

// Cluster is a multi-member etcd cluster whose members can be crashed and
// restarted on the same URLs and data directories.
type Cluster struct {
	lg             *zap.Logger
	initialCluster string

	// mu guards the members' state, so that a test may, say, wait for a
	// leader in one goroutine while crashing a member in another.
	mu      sync.Mutex
	members []*member
}

// member is one slot of the cluster; its etcd changes on every Restart while
// its name, URLs and data directory stay.
type member struct {
	name      string
	dir       string
	clientURL string
	peerURL   string
	etcd      *embedetcd.Etcd
	running   bool
}

// StartCluster starts an n-member cluster on loopback ports reserved for the
// cluster's lifetime, with each member's data in its own tb.TempDir(), and
// waits until every member is ready. The members are stopped when the test
// ends.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("etcdtest: StartCluster needs at least one member, got %d", n)
	}
	c := &Cluster{lg: newLogger(tb)}
	peers := make([]string, n)
	for i := range n {
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       filepath.Join(tb.TempDir(), "etcd"),
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", mustReservePort(tb)),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", mustReservePort(tb)),
		}
		c.members = append(c.members, m)
		peers[i] = m.name + "=" + m.peerURL
	}
	c.initialCluster = strings.Join(peers, ",")
	// Registered after the data directories and port reservations, so the
	// members stop before those go away.
	tb.Cleanup(c.stopAll)

	// The members start together because none of them is ready before a
	// quorum has started.
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() { errs[i] = c.start(ctx, m, embedetcd.ClusterStateNew) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatalf("etcdtest: start %d-member cluster: %v", n, err)
	}
	return c
}

func mustReservePort(tb testing.TB) int {
	tb.Helper()
	port, release, err := reservePort()
	if err != nil {
		tb.Fatalf("etcdtest: %v", err)
	}
	tb.Cleanup(release)
	return port
}

// start starts m from its data directory; clusterState only matters the first
// time, when the directory is still empty.
func (c *Cluster) start(ctx context.Context, m *member, clusterState string) error {
	e, err := embedetcd.Start(ctx, embedetcd.Config{
		Dir:            m.dir,
		Name:           m.name,
		ClientURL:      m.clientURL,
		PeerURL:        m.peerURL,
		InitialCluster: c.initialCluster,
		ClusterState:   clusterState,
		Logger:         c.lg,
		ReusePort:      true,
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	m.etcd, m.running = e, true
	c.mu.Unlock()
	return nil
}

// stopAll crashes every running member. A crash rather than Close because the
// data is thrown away anyway, and because a graceful stop of the leader hands
// leadership to a member that may be stopping too, which waits out etcd's
// request timeout (about 7 s) per member.
func (c *Cluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.running {
			m.etcd.HardStop()
			m.running = false
		}
	}
}

// Endpoints lists the members' client URLs, in member order. They stay the
// same across HardStop and Restart.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientURL
	}
	return eps
}

// Client returns a new client of the given endpoints, by default all members,
// closed when the test ends.
func (c *Cluster) Client(tb testing.TB, endpoints ...string) *clientv3.Client {
	tb.Helper()
	if len(endpoints) == 0 {
		endpoints = c.Endpoints()
	}
	return newClient(tb, endpoints)
}

// WaitLeader waits until the running members agree on a leader that is itself
// running, and returns its index. It fails the test after leaderTimeout.
// Agreement matters right after a crash: the survivors keep naming the dead
// leader until their election timeout fires.
func (c *Cluster) WaitLeader(tb testing.TB) int {
	tb.Helper()
	deadline := time.Now().Add(leaderTimeout)
	for {
		if i := c.leader(); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			tb.Fatalf("etcdtest: no leader agreed on by the running members within %v", leaderTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// leader returns the index of the leader all running members agree on, or -1.
func (c *Cluster) leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	byID := make(map[types.ID]int)
	var lead types.ID
	for i, m := range c.members {
		if !m.running {
			continue
		}
		s := m.etcd.Server().Server
		byID[s.MemberID()] = i
		l := s.Leader()
		if l == types.ID(0) || (lead != 0 && l != lead) {
			return -1
		}
		lead = l
	}
	if i, ok := byID[lead]; ok {
		return i
	}
	return -1
}

// HardStop crashes member i (see embedetcd.Etcd.HardStop). Its data directory
// and ports are kept for Restart.
func (c *Cluster) HardStop(tb testing.TB, i int) {
	tb.Helper()
	m := c.member(tb, i)
	c.mu.Lock()
	running := m.running
	if running {
		m.etcd.HardStop()
		m.running = false
	}
	c.mu.Unlock()
	if !running {
		tb.Fatalf("etcdtest: HardStop: member %d is not running", i)
	}
}

// Restart starts the stopped member i again from its data directory, on the
// same client and peer URLs, so existing clients reconnect to it, and waits
// until it has rejoined the cluster, which needs a quorum.
func (c *Cluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	m := c.member(tb, i)
	c.mu.Lock()
	running := m.running
	c.mu.Unlock()
	if running {
		tb.Fatalf("etcdtest: Restart: member %d is running; HardStop it first", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.start(ctx, m, embedetcd.ClusterStateExisting); err != nil {
		tb.Fatalf("etcdtest: restart member %d: %v", i, err)
	}
}

// Member returns member i's current etcd; after HardStop it is the stopped
// one, after Restart the new one.
func (c *Cluster) Member(i int) *embedetcd.Etcd {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].etcd
}

// member returns slot i, failing the test for an index out of range. The
// slice never changes after StartCluster, so it needs no lock.
func (c *Cluster) member(tb testing.TB, i int) *member {
	tb.Helper()
	if i < 0 || i >= len(c.members) {
		tb.Fatalf("etcdtest: no member %d in a %d-member cluster", i, len(c.members))
	}
	return c.members[i]
}
