package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/proxy"
	"go.uber.org/zap"
)

const (
	// proxyListenAttempts bounds the retries when the port picked for the
	// proxy is taken before the proxy binds it (see NewProxy).
	proxyListenAttempts = 5
	// proxyCloseTimeout bounds the wait for the proxy to close. etcd's proxy
	// waits for every connection through it to end, and a connection only
	// ends when one of its two sides closes it.
	proxyCloseTimeout = 10 * time.Second
)

// Proxy is a fault-injecting TCP proxy in front of one etcd client URL. A
// client that dials Endpoint instead of the member can be cut off (Blackhole)
// or slowed down (Delay) without touching the member or other clients.
type Proxy struct {
	srv      proxy.Server
	endpoint string
}

// NewProxy starts a proxy to target, a member's client URL such as
// Server.Endpoint() or one of Cluster.Endpoints(), and closes it when the test
// ends. Clients of the proxy must be closed before that (those from Client
// are, since they are created later and cleanups run in reverse order), or
// the close fails the test after proxyCloseTimeout.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	to, err := url.Parse(target)
	if err != nil || to.Host == "" {
		tb.Fatalf("etcdtest: NewProxy: target %q is not a URL with a host", target)
	}
	lg := newLogger(tb).Named("proxy")

	var (
		srv  proxy.Server
		port int
	)
	for attempt := 1; ; attempt++ {
		srv, port, err = startProxy(lg, *to)
		if err == nil {
			break
		}
		if attempt == proxyListenAttempts {
			tb.Fatalf("etcdtest: start proxy to %s: %v", target, err)
		}
	}

	// The proxy reports every failed dial and broken connection on an error
	// channel with a small buffer, and stops accepting connections once the
	// buffer is full, e.g. after the target member crashed a few times. So
	// the channel is drained for as long as the proxy runs.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case err := <-srv.Error():
				lg.Debug("proxy error", zap.Error(err))
			case <-srv.Done():
				return
			}
		}
	}()

	p := &Proxy{srv: srv, endpoint: fmt.Sprintf("http://127.0.0.1:%d", port)}
	tb.Cleanup(func() {
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			_ = srv.Close()
		}()
		select {
		case <-closed:
		case <-time.After(proxyCloseTimeout):
			tb.Errorf("etcdtest: proxy %s -> %s still has open connections after %v; close its clients before the test ends",
				p.endpoint, target, proxyCloseTimeout)
		}
		<-drained
	})
	return p
}

// startProxy starts an etcd proxy to target on a free port. The proxy only
// reports the port it listens on when it was given one, so a free port is
// picked first (listen on :0, note the port, close); another process may take
// it before the proxy binds it, which NewProxy answers by trying again.
func startProxy(lg *zap.Logger, to url.URL) (proxy.Server, int, error) {
	// The proxy binds all interfaces (":port") when given a port, so the
	// port is probed the same way.
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		return nil, 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return nil, 0, err
	}
	srv := proxy.NewServer(proxy.ServerConfig{
		Logger: lg,
		From:   url.URL{Scheme: "tcp", Host: fmt.Sprintf("127.0.0.1:%d", port)},
		To:     to,
	})
	// A failed listen is reported on the error channel before NewServer
	// returns (and the proxy is already closed); a successful one makes the
	// proxy ready.
	select {
	case err := <-srv.Error():
		return nil, 0, err
	default:
	}
	<-srv.Ready()
	return srv, port, nil
}

// Endpoint is the URL a client dials to go through the proxy, e.g.
// "http://127.0.0.1:40123".
func (p *Proxy) Endpoint() string { return p.endpoint }

// Client returns a new client that reaches the member only through the
// proxy, closed when the test ends (before the proxy closes).
func (p *Proxy) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	return newClient(tb, []string{p.endpoint})
}

// Blackhole drops all traffic in both directions. Connections stay open, as
// in a network partition, so a client notices only through its own timeouts
// or keepalives.
func (p *Proxy) Blackhole() {
	p.srv.BlackholeTx()
	p.srv.BlackholeRx()
}

// Unblackhole lets traffic through again. Bytes dropped meanwhile are lost,
// so gRPC connections that carried traffic during the blackhole usually
// break and are redialled; clients should expect a failed request or two.
func (p *Proxy) Unblackhole() {
	p.srv.UnblackholeTx()
	p.srv.UnblackholeRx()
}

// BlackholeTx drops only the traffic from clients to the member: requests
// never reach etcd, so nothing they ask for is applied.
func (p *Proxy) BlackholeTx() { p.srv.BlackholeTx() }

// UnblackholeTx undoes BlackholeTx.
func (p *Proxy) UnblackholeTx() { p.srv.UnblackholeTx() }

// BlackholeRx drops only the traffic from the member to clients: requests
// reach etcd and are applied, but the replies are lost, which is the case
// where a client must re-read rather than assume its write failed.
func (p *Proxy) BlackholeRx() { p.srv.BlackholeRx() }

// UnblackholeRx undoes BlackholeRx.
func (p *Proxy) UnblackholeRx() { p.srv.UnblackholeRx() }

// Delay holds every chunk of data for d in each direction, so a request and
// its response take at least 2*d longer.
func (p *Proxy) Delay(d time.Duration) {
	p.srv.DelayTx(d, 0)
	p.srv.DelayRx(d, 0)
}

// Undelay removes the latency added by Delay.
func (p *Proxy) Undelay() {
	p.srv.UndelayTx()
	p.srv.UndelayRx()
}
