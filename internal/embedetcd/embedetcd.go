package embedetcd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Auto-compaction settings; doc.go explains the choice. The mode is spelled
// out because embed.CompactorModePeriodic is a variable, not a constant.
const (
	autoCompactionMode      = "periodic"
	autoCompactionRetention = "5m"
)

// Cluster states accepted in Config.ClusterState.
const (
	ClusterStateNew      = embed.ClusterStateFlagNew
	ClusterStateExisting = embed.ClusterStateFlagExisting
)

// Config describes one etcd member. Only Dir and Logger are required; the
// zero value of every other field starts a single-member cluster on free
// loopback ports.
type Config struct {
	// Dir is the data directory. It is required, and it is what a restarted
	// member recovers from.
	Dir string
	// Name is the member name; it defaults to "default".
	Name string
	// ClientURL is where clients connect; it defaults to
	// "http://127.0.0.1:0", and Endpoint reports the port actually bound.
	// A "unix://name" URL listens on a unix socket named "name", relative
	// to the working directory.
	ClientURL string
	// PeerURL is where the other members connect; it defaults to
	// "http://127.0.0.1:0", which only suits a single member. Members of a
	// multi-member cluster need URLs known before they start, because every
	// member lists them all in InitialCluster.
	PeerURL string
	// InitialCluster lists the members as "name=peerurl,..."; empty means a
	// single member, Name=PeerURL. It is ignored when Dir already holds a
	// member's data.
	InitialCluster string
	// ClusterState is ClusterStateNew (the default) or ClusterStateExisting.
	ClusterState string
	// Logger receives etcd's own logs. It is required: pass zap.NewNop() to
	// keep etcd quiet, since it is chatty at info level.
	Logger *zap.Logger
	// QuotaBackendBytes caps the backend database; zero keeps etcd's default
	// (2 GiB). When the quota is exceeded etcd raises a NOSPACE alarm and
	// refuses writes.
	QuotaBackendBytes int64
	// ReusePort sets SO_REUSEPORT on the client and peer listeners. A test
	// harness uses it to keep a port reserved (bound but not listening) for
	// the whole life of a cluster, so that a member restarted after a crash
	// gets its old ports back and nobody else can take them meanwhile. Leave
	// it off otherwise: with it, a second process could bind the same port
	// and silently share the traffic instead of failing to start.
	ReusePort bool
}

// Etcd is one running (or stopped) embedded etcd member.
type Etcd struct {
	srv      *embed.Etcd
	endpoint string

	// crash is cancelled by HardStop; it ends the gRPC streams that would
	// otherwise keep a crashed member's shutdown waiting (see
	// crashStreamInterceptor).
	crash       context.Context
	cancelCrash context.CancelFunc

	// stopOnce makes Close and HardStop idempotent and mutually exclusive:
	// whichever runs first decides how the member stops.
	stopOnce sync.Once
}

// Start starts a member and waits until it is ready to serve clients, that
// is, until it has joined its cluster, which needs a quorum of members. Give
// ctx a deadline: a member of a new multi-member cluster waits for the others
// indefinitely. On any failure everything started is stopped again.
func Start(ctx context.Context, cfg Config) (*Etcd, error) {
	ec, err := cfg.embedConfig()
	if err != nil {
		return nil, err
	}
	e := &Etcd{}
	e.crash, e.cancelCrash = context.WithCancel(context.Background())
	ec.GRPCAdditionalServerOptions = append(ec.GRPCAdditionalServerOptions,
		grpc.ChainStreamInterceptor(e.crashStreamInterceptor))

	srv, err := embed.StartEtcd(ec)
	if err != nil {
		// StartEtcd closes whatever it had started before returning an error.
		e.cancelCrash()
		return nil, fmt.Errorf("start etcd member %q: %w", ec.Name, err)
	}
	e.srv = srv
	e.endpoint = ec.ListenClientUrls[0].Scheme + "://" + srv.Clients[0].Addr().String()

	select {
	case <-srv.Server.ReadyNotify():
		return e, nil
	case err = <-srv.Err():
		err = fmt.Errorf("etcd member %q failed while starting: %w", ec.Name, err)
	case <-srv.Server.StopNotify():
		err = fmt.Errorf("etcd member %q stopped while starting", ec.Name)
	case <-ctx.Done():
		err = fmt.Errorf("etcd member %q not ready: %w", ec.Name, context.Cause(ctx))
	}
	e.HardStop()
	return nil, err
}

// embedConfig validates cfg, fills in the defaults and translates it into
// etcd's own configuration.
func (cfg Config) embedConfig() (*embed.Config, error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedetcd: Config.Dir is required")
	}
	if cfg.Logger == nil {
		return nil, errors.New("embedetcd: Config.Logger is required (use zap.NewNop() for silence)")
	}
	name := cmp.Or(cfg.Name, embed.DefaultName)
	clientURL, err := parseURL("ClientURL", cmp.Or(cfg.ClientURL, "http://127.0.0.1:0"))
	if err != nil {
		return nil, err
	}
	peerURL, err := parseURL("PeerURL", cmp.Or(cfg.PeerURL, "http://127.0.0.1:0"))
	if err != nil {
		return nil, err
	}

	ec := embed.NewConfig()
	ec.Name = name
	ec.Dir = cfg.Dir
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(cfg.Logger.Named("etcd").With(zap.String("etcd-member", name)))
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = cmp.Or(cfg.InitialCluster, name+"="+peerURL.String())
	ec.ClusterState = cmp.Or(cfg.ClusterState, ClusterStateNew)
	ec.AutoCompactionMode = autoCompactionMode
	ec.AutoCompactionRetention = autoCompactionRetention
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	ec.EnableGRPCGateway = false
	ec.SocketOpts.ReusePort = cfg.ReusePort
	return ec, nil
}

func parseURL(field, raw string) (url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return url.URL{}, fmt.Errorf("embedetcd: Config.%s %q: %w", field, raw, err)
	}
	switch u.Scheme {
	case "http", "unix":
	default:
		return url.URL{}, fmt.Errorf("embedetcd: Config.%s %q: scheme must be http or unix", field, raw)
	}
	if u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return url.URL{}, fmt.Errorf("embedetcd: Config.%s %q: want scheme://host:port, without a path", field, raw)
	}
	return *u, nil
}

// Endpoint is the URL clients dial, with the port actually bound, e.g.
// "http://127.0.0.1:34567". It stays valid (though unreachable) after the
// member stops.
func (e *Etcd) Endpoint() string { return e.endpoint }

// Server is the underlying embedded etcd, for what this package does not
// wrap (member ID, leader, metrics, alarms).
func (e *Etcd) Server() *embed.Etcd { return e.srv }

// Close stops the member gracefully: a leader first hands leadership over
// (which can take up to etcd's request timeout, about 7 s, if the member it
// picks is stopping too), and open streams get up to the same timeout to
// end. It is safe to call more than once, and after HardStop.
func (e *Etcd) Close() {
	e.stopOnce.Do(func() {
		e.srv.Close()
		e.cancelCrash()
	})
}

// HardStop simulates a crash of the member: the raft node stops at once, with
// no leadership transfer, open streams end with Unavailable, and the
// listeners and connections close, so clients move to another endpoint. The
// data directory is left as a crash would leave it, and a member started on
// it again recovers from its WAL. It is safe to call more than once, and
// after Close.
func (e *Etcd) HardStop() {
	e.stopOnce.Do(func() {
		e.srv.Server.HardStop()
		// Ending the streams before the graceful part of Close runs is what
		// keeps this fast: Close can wait for an open stream (a client's
		// watch or lease keep-alive) for up to the request timeout.
		e.cancelCrash()
		// Close still tries to hand leadership over, which fails at once
		// now that raft has stopped; what is left for it is releasing the
		// ports, the connections and the goroutines.
		e.srv.Close()
	})
}

// crashStreamInterceptor ties every gRPC stream (watch, lease keep-alive) to
// the member's crash context. A crashed process drops its connections and the
// client sees Unavailable. etcd's HardStop stops raft but leaves the streams
// open, and the Close that follows stops the gRPC server gracefully: whether
// it waits for open streams for the full request timeout (about 7 s) or cuts
// them at once depends on a race between its HTTP and gRPC shutdowns (both
// were measured). Ending every stream with Unavailable as soon as the crash
// context is cancelled makes the outcome the crash one every time, and
// clientv3 retries on another endpoint as it would after a real crash.
func (e *Etcd) crashStreamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	stop := context.AfterFunc(e.crash, cancel)
	defer stop()
	err := handler(srv, crashStream{ServerStream: ss, ctx: ctx})
	if e.crash.Err() != nil {
		return status.Error(codes.Unavailable, "embedetcd: member crashed (HardStop)")
	}
	return err
}

// crashStream replaces a stream's context with one that HardStop cancels.
type crashStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s crashStream) Context() context.Context { return s.ctx }
