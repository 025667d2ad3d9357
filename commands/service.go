package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// Etcd is the part of the etcd client the use cases need.
// *clientv3.Client satisfies it.
type Etcd interface {
	clientv3.KV
	clientv3.Watcher
	clientv3.Lease
}

var _ Etcd = (*clientv3.Client)(nil)

// WarmChecker checks that a version is loaded and warm across the fleet.
// *warm.Checker satisfies it.
type WarmChecker interface {
	Check(ctx context.Context, route, target string) (warm.Report, error)
}

var _ WarmChecker = (*warm.Checker)(nil)

// AbortSignaller tells the workflow runtimes about a rollback and collects
// their acknowledgements. *runtime.Signaller satisfies it.
type AbortSignaller interface {
	SignalRollback(ctx context.Context, op, route string, epoch int64, from, activeAfter string, flipRev int64) (runtime.Signal, error)
	WaitAcks(ctx context.Context, sig runtime.Signal) (runtime.Result, error)
}

var _ AbortSignaller = (*runtime.Signaller)(nil)

// Lessee is the running replica's liveness lease: op records name it as
// their owner, and recovery claims an op only once its owner's lease is
// gone. *concurrency.Session satisfies it.
type Lessee interface {
	Lease() clientv3.LeaseID
	Done() <-chan struct{}
}

// GroupMembership answers whether a user is in a user group (Slack user
// groups; the bot implements it with a cache).
type GroupMembership interface {
	IsMember(ctx context.Context, user, group string) (bool, error)
}

// Access is who may act and where: the BACKFLIP_INCIDENT_CHANNELS,
// *_USERS and *_USERGROUPS settings.
type Access struct {
	// IncidentChannels are channel IDs and name globs (inc-*) where
	// /rollback is accepted.
	IncidentChannels   []string
	RollbackUsers      []string
	RollbackUsergroups []string
	DrillUsers         []string
	DrillUsergroups    []string
}

// Config is what a Service needs. Etcd, Warm, Runtime and Owner are
// required.
type Config struct {
	Etcd   Etcd
	Prefix string
	// Warm runs the pre-flip warm checks.
	Warm WarmChecker
	// Runtime signals the workflow runtimes after a rollback.
	Runtime AbortSignaller
	// Owner is this replica's liveness lease.
	Owner Lessee
	// DB reads audit history and drill statistics. Nil means history is
	// unavailable (audit events still queue in etcd).
	DB audit.DBTX
	// Access and Groups decide who may act.
	Access Access
	Groups GroupMembership
	// Drills runs /drill commands; nil answers that drills are not
	// available in this build.
	Drills DrillService
	// ConvergeTimeout is ROUTER_CONVERGE_TIMEOUT (default 5s).
	ConvergeTimeout time.Duration
	// OpTTL is how long op records, idempotency keys and acks are kept
	// (default 7 days).
	OpTTL time.Duration
	// RollbackSLO is ROLLBACK_SLO (default 90s), shown with timings.
	RollbackSLO time.Duration
	// FinalizeTimeout bounds the retries of the final write of an op
	// after its flip when etcd fails (default 1 minute). Past it the op is
	// left to recovery on another replica once this one's lease is gone.
	FinalizeTimeout time.Duration
	Logger          *zap.Logger
	// Now returns the current time; it stamps records and events.
	// Durations use the monotonic clock regardless.
	Now func() time.Time
}

// Service runs the verbs. It is safe for concurrent use.
type Service struct {
	cfg    Config
	etcd   Etcd
	routes *routing.Store
	keys   Keys
	audit  audit.Keys
	auth   *Authorizer
	log    *zap.Logger
	now    func() time.Time

	mu      sync.Mutex
	opLease clientv3.LeaseID
	leaseAt time.Time
}

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Etcd == nil:
		return nil, errors.New("commands: Config.Etcd is required")
	case cfg.Warm == nil:
		return nil, errors.New("commands: Config.Warm is required")
	case cfg.Runtime == nil:
		return nil, errors.New("commands: Config.Runtime is required")
	case cfg.Owner == nil:
		return nil, errors.New("commands: Config.Owner is required")
	}
	if cfg.ConvergeTimeout <= 0 {
		cfg.ConvergeTimeout = 5 * time.Second
	}
	if cfg.OpTTL <= 0 {
		cfg.OpTTL = 7 * 24 * time.Hour
	}
	if cfg.RollbackSLO <= 0 {
		cfg.RollbackSLO = 90 * time.Second
	}
	if cfg.FinalizeTimeout <= 0 {
		cfg.FinalizeTimeout = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{
		cfg:    cfg,
		etcd:   cfg.Etcd,
		routes: routing.NewStore(cfg.Etcd, cfg.Prefix, cfg.Logger.Named("routing")),
		keys:   Keys{Prefix: cfg.Prefix},
		audit:  audit.Keys{Prefix: cfg.Prefix},
		log:    cfg.Logger,
		now:    cfg.Now,
	}
	s.routes.Now = cfg.Now
	s.auth = NewAuthorizer(cfg.Access, cfg.Groups, cfg.Etcd, cfg.Prefix, cfg.Logger.Named("auth"))
	return s, nil
}

// Keys builds the etcd keys this package owns, under one prefix.
type Keys struct{ Prefix string }

// Ops is the prefix of every op record.
func (k Keys) Ops() string { return k.Prefix + "/ops/" }

// Op is the key of one op's record. The id must have been validated.
func (k Keys) Op(id string) string { return k.Ops() + id }

// Idem is the key of an idempotency key. The key must have been validated.
func (k Keys) Idem(key string) string { return k.Prefix + "/idem/" + key }

// Policy is the key of a route's policy document.
func (k Keys) Policy(route string) string { return k.Prefix + "/policies/" + route }

// opLeaseID returns a lease of OpTTL for op records, idempotency keys and
// outbox-independent records, granting a new one at most every hour so an
// op costs no extra round trip (records then live between OpTTL and
// OpTTL + 1h).
func (s *Service) opLeaseID(ctx context.Context) (clientv3.LeaseID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opLease != 0 && s.now().Sub(s.leaseAt) < time.Hour {
		return s.opLease, nil
	}
	resp, err := s.etcd.Grant(ctx, int64(s.cfg.OpTTL/time.Second))
	if err != nil {
		return 0, fmt.Errorf("grant op lease: %w", err)
	}
	s.opLease, s.leaseAt = resp.ID, s.now()
	return resp.ID, nil
}
