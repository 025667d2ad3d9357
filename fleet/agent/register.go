package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
)

// EtcdClient is the part of the etcd client that registration uses: a
// lease, kept alive, and one put under it. *clientv3.Client has it.
type EtcdClient interface {
	Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error)
	KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error)
	Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error)
	Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error)
}

var _ EtcdClient = (*clientv3.Client)(nil)

// Registration defaults.
const (
	// DefaultLeaseTTL is the node record's lease: how long a node that died
	// without deregistering still counts as part of the fleet. The bot's
	// warm check reports such a node unreachable meanwhile, so it is never
	// counted warm.
	DefaultLeaseTTL = 10 * time.Second
	// DefaultEtcdTimeout bounds each etcd request of the registration.
	DefaultEtcdTimeout = 5 * time.Second
	// deregisterTimeout bounds the revoke on shutdown; if etcd does not
	// answer in time, the lease expires by itself within its TTL.
	deregisterTimeout = 2 * time.Second
	minBackoff        = 100 * time.Millisecond
	maxBackoff        = 5 * time.Second
)

// RegisterConfig is where and how the node registers.
type RegisterConfig struct {
	Client EtcdClient
	// Prefix is the keyspace prefix (BACKFLIP_ETCD_PREFIX), e.g. /backflip.
	Prefix string
	// URL is where the bot reaches this agent (advertise_url).
	URL string
	// LeaseTTL is the record's lease TTL, rounded up to whole seconds
	// (default 10s). etcd raises a TTL below its minimum (about 2 s with
	// default timings) to that minimum.
	LeaseTTL time.Duration
	// Timeout bounds each etcd request (default 5s).
	Timeout time.Duration
}

// Register keeps the node record (fleetapi.NodeRecord: node, URL, the GPUs
// of every served version) at <prefix>/fleet/nodes/<node> under a lease,
// until ctx is done; then it revokes the lease, which deletes the record,
// and returns nil. It returns an error at once only when cfg is unusable.
//
// The lease is kept alive with KeepAlive, whose channel is drained. When
// the channel closes — the lease expired or was revoked, e.g. because etcd
// was unreachable or without a leader for longer than the TTL — Register
// grants a new lease and writes the record again, retrying with jittered
// exponential backoff (100 ms to 5 s) while etcd is away. It writes nothing
// but that one key.
func (a *Agent) Register(ctx context.Context, cfg RegisterConfig) error {
	if cfg.Client == nil {
		return errors.New("agent: register: Client is required")
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultEtcdTimeout
	}
	if cfg.LeaseTTL < 0 || cfg.Timeout < 0 {
		return fmt.Errorf("agent: register: LeaseTTL and Timeout must be positive, got %v and %v", cfg.LeaseTTL, cfg.Timeout)
	}
	rec := a.Record(cfg.URL)
	if err := rec.Validate(); err != nil {
		return fmt.Errorf("agent: register: %w", err)
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("agent: register: encode record: %w", err)
	}
	r := &registrar{
		a:     a,
		cfg:   cfg,
		key:   fleetapi.Keys{Prefix: cfg.Prefix}.Node(a.node),
		value: string(val),
		ttl:   int64((cfg.LeaseTTL + time.Second - 1) / time.Second),
		log:   a.log.With(zap.String("key", fleetapi.Keys{Prefix: cfg.Prefix}.Node(a.node))),
	}
	r.run(ctx)
	return nil
}

type registrar struct {
	a     *Agent
	cfg   RegisterConfig
	key   string
	value string
	ttl   int64
	log   *zap.Logger
}

func (r *registrar) run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		start := time.Now()
		if !r.session(ctx) {
			return
		}
		if time.Since(start) > time.Duration(r.ttl)*time.Second {
			backoff = minBackoff // the last session worked a while: a new failure
		}
		if !sleep(ctx, backoffJitter(backoff)) {
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session runs one lease's life: grant, keep alive, put, then wait for the
// lease to be lost (true: register again) or ctx to be done (false, after
// deregistering).
func (r *registrar) session(ctx context.Context) bool {
	c := r.cfg.Client
	gctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	lease, err := c.Grant(gctx, r.ttl)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("registration: grant lease failed", zap.Error(err))
		}
		return ctx.Err() == nil
	}
	r.a.metrics.leaseGrants.Inc()
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ka, err := c.KeepAlive(kctx, lease.ID)
	if err != nil {
		r.log.Warn("registration: keepalive failed", zap.Error(err))
		r.revoke(ctx, lease.ID)
		return ctx.Err() == nil
	}
	pctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), r.cfg.Timeout)
	_, err = c.Put(pctx, r.key, r.value, clientv3.WithLease(lease.ID))
	cancel()
	if err != nil {
		// The put may have landed even if its reply was lost; revoking
		// the lease removes it either way, and the next session writes it
		// again under a lease that is kept alive.
		if ctx.Err() == nil {
			r.log.Warn("registration: put failed", zap.Error(err))
		}
		kcancel()
		r.revoke(ctx, lease.ID)
		return ctx.Err() == nil
	}
	r.a.metrics.registered.Set(1)
	defer r.a.metrics.registered.Set(0)
	r.log.Info("registered", zap.Int64("lease", int64(lease.ID)), zap.Int64("ttl_s", r.ttl))
	for {
		select {
		case <-ctx.Done():
			r.revoke(ctx, lease.ID)
			r.log.Info("deregistered")
			return false
		case _, ok := <-ka:
			if ok {
				continue
			}
			if ctx.Err() != nil {
				ka = nil // shutting down: the ctx.Done case revokes
				continue
			}
			r.log.Warn("registration: lease lost, registering again", zap.Int64("lease", int64(lease.ID)))
			return true
		}
	}
}

// revoke ends a lease, deleting the record, within a short timeout even
// when ctx is already done (shutdown).
func (r *registrar) revoke(ctx context.Context, id clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deregisterTimeout)
	defer cancel()
	if _, err := r.cfg.Client.Revoke(rctx, id); err != nil {
		r.log.Warn("registration: revoke lease failed; it expires by itself", zap.Int64("lease", int64(id)), zap.Error(err))
	}
}

// backoffJitter spreads retries over ±25% so that a fleet of agents does
// not hit a recovering etcd in step.
func backoffJitter(d time.Duration) time.Duration {
	return d - d/4 + rand.N(d/2+1)
}
