package etcdtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	// linkDialTimeout bounds the link's dial of the member.
	linkDialTimeout = 5 * time.Second
	// linkBufferSize is what one direction of a connection reads at once.
	linkBufferSize = 32 << 10
)

// Link is a TCP link between clients and one etcd member that a test can
// partition and cut, the faults of a real network rather than a corrupting
// one:
//
//   - Partition stops all traffic in both directions without losing a byte:
//     what was read on one side waits, the kernel buffers fill and the
//     senders block, as TCP does while a network is partitioned. New
//     connections are accepted but not connected to the member. Heal lets
//     everything through again, in order, so a request sent during the
//     partition reaches etcd late, after its client may have given up on it.
//   - Cut closes every connection through the link, as a peer that rebooted
//     or a TCP timeout at the end of a long partition does: the client sees
//     the connection fail (never a silently missing byte) and reconnects.
//
// Proxy's Blackhole, by contrast, drops bytes inside a connection that stays
// open, which no real network does to TCP; a gRPC stream that loses a
// message that way may not notice.
type Link struct {
	target   string // host:port of the member
	endpoint string
	ln       net.Listener
	lg       *zap.Logger

	mu     sync.Mutex
	open   chan struct{} // closed while traffic flows; a fresh one during a partition
	conns  map[*linkConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// linkConn is one client connection through the link and, once the link
// dialled it, the member's side.
type linkConn struct {
	client net.Conn
	done   chan struct{} // closed by close

	mu     sync.Mutex
	member net.Conn // nil until connected
	closed bool
}

// connect records the member's side; false means c was closed meanwhile
// (and member is closed too).
func (c *linkConn) connect(member net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = member.Close()
		return false
	}
	c.member = member
	return true
}

func (c *linkConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	close(c.done)
	_ = c.client.Close()
	if c.member != nil {
		_ = c.member.Close()
	}
}

// NewLink starts a link to target, a member's client URL such as
// Server.Endpoint() or one of Cluster.Endpoints(), on a free loopback port,
// and closes it (and every connection through it) when the test ends.
func NewLink(tb testing.TB, target string) *Link {
	tb.Helper()
	to, err := url.Parse(target)
	if err != nil || to.Host == "" {
		tb.Fatalf("etcdtest: NewLink: target %q is not a URL with a host", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("etcdtest: NewLink: %v", err)
	}
	open := make(chan struct{})
	close(open)
	l := &Link{
		target:   to.Host,
		endpoint: "http://" + ln.Addr().String(),
		ln:       ln,
		lg:       newLogger(tb).Named("link"),
		open:     open,
		conns:    map[*linkConn]struct{}{},
	}
	l.wg.Add(1)
	go l.accept()
	tb.Cleanup(l.close)
	return l
}

// Endpoint is the URL a client dials to reach the member through the link.
func (l *Link) Endpoint() string { return l.endpoint }

// Client returns a new client that reaches the member only through the
// link, closed when the test ends.
func (l *Link) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	return newClient(tb, []string{l.endpoint})
}

// Partition stops all traffic through the link, losing nothing, until Heal.
func (l *Link) Partition() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.open:
		l.open = make(chan struct{})
		l.lg.Info("partitioned", zap.String("to", l.target))
	default: // already partitioned
	}
}

// Heal ends a partition: what waited is delivered, in order.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.open:
	default:
		close(l.open)
		l.lg.Info("healed", zap.String("to", l.target))
	}
}

// Cut closes every connection through the link, partitioned or not, and
// drops what was waiting in them. New connections are served as before (or
// wait, during a partition).
func (l *Link) Cut() {
	l.mu.Lock()
	conns := make([]*linkConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	l.lg.Info("cut", zap.String("to", l.target), zap.Int("connections", len(conns)))
}

// gate returns the channel that is closed while traffic flows.
func (l *Link) gate() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// wait blocks while the link is partitioned; false means c was closed.
func (l *Link) wait(c *linkConn) bool {
	select {
	case <-c.done:
		return false
	case <-l.gate():
		return true
	}
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		c := &linkConn{client: conn, done: make(chan struct{})}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = conn.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.serve(c)
	}
}

// serve connects c to the member once the link is not partitioned, then
// copies both ways until either side ends or the link cuts c.
func (l *Link) serve(c *linkConn) {
	defer l.wg.Done()
	defer func() {
		c.close()
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}()
	if !l.wait(c) {
		return
	}
	member, err := net.DialTimeout("tcp", l.target, linkDialTimeout)
	if err != nil {
		l.lg.Debug("dial member", zap.String("to", l.target), zap.Error(err))
		return
	}
	if !c.connect(member) {
		return // cut while dialling
	}
	var wg sync.WaitGroup
	wg.Go(func() { l.copy(c, member, c.client) })
	wg.Go(func() { l.copy(c, c.client, member) })
	wg.Wait()
}

// copy forwards src to dst, holding each chunk while the link is
// partitioned, and closes the connection when either side ends.
func (l *Link) copy(c *linkConn, dst, src net.Conn) {
	defer c.close()
	buf := make([]byte, linkBufferSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !l.wait(c) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				l.lg.Debug("link read", zap.String("to", l.target), zap.Error(err))
			}
			return
		}
	}
}

// close stops accepting, closes every connection and waits for the link's
// goroutines.
func (l *Link) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	_ = l.ln.Close()
	l.Heal()
	l.Cut()
	l.wg.Wait()
}

// String names the link for logs.
func (l *Link) String() string { return fmt.Sprintf("link %s -> %s", l.endpoint, l.target) }
