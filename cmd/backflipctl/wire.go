package main

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/drills"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/config"
	"github.com/backflip-dev/backflip/internal/etcdclient"
)

// ownerTTL is the TTL, in seconds, of the lease a rollback or promotion
// names as its op's owner: if backflipctl dies mid-operation, the bot's
// recovery finishes the op about this long after.
const ownerTTL = 10

// deps are the connections one invocation uses.
type deps struct {
	svc     *commands.Service
	closers []func()
}

// close releases everything, last opened first (the owner lease is revoked
// while the etcd client is still open).
func (d *deps) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// startError is a start-up failure and the exit code it deserves.
type startError struct {
	exit int
	msg  string
	err  error
}

func (e *startError) Error() string { return e.msg }
func (e *startError) Unwrap() error { return e.err }

// connect builds the Service command needs: the etcd client, the warm
// checker, the runtime signaller, the owner lease of a rollback or
// promotion, and the audit database pool when BACKFLIP_DATABASE_URL is set.
func connect(ctx context.Context, cfg *config.Config, inv invocation, log *zap.Logger) (_ *deps, err error) {
	d := &deps{}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	cli, err := etcdclient.New(cfg.Etcd, log)
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return nil, &startError{exit: exitInput, msg: "etcd refused BACKFLIP_ETCD_USERNAME / BACKFLIP_ETCD_PASSWORD: authentication failed", err: err}
	case err != nil:
		// TLS files that cannot be read, or an etcd that does not answer
		// the authentication in time.
		return nil, &startError{exit: exitFailed, msg: err.Error(), err: err}
	}
	d.closers = append(d.closers, func() { _ = cli.Close() })

	checker, err := warm.NewChecker(warm.Config{
		KV:            cli,
		Prefix:        cfg.Etcd.Prefix,
		AgentToken:    cfg.Secrets.AgentToken.Reveal(),
		Timeout:       cfg.Timing.WarmTimeout,
		MaxAge:        cfg.Timing.WarmMaxAge,
		DefaultQuorum: cfg.Timing.WarmQuorum,
		Logger:        log.Named("warm"),
	})
	if err != nil {
		return nil, &startError{exit: exitInput, msg: err.Error(), err: err}
	}
	d.closers = append(d.closers, checker.Close)

	var signaller commands.AbortSignaller = noSignaller{}
	if cfg.Secrets.RuntimeSecret.IsSet() {
		signaller, err = runtime.NewSignaller(runtime.SignallerConfig{
			Etcd:       cli,
			Prefix:     cfg.Etcd.Prefix,
			Secret:     []byte(cfg.Secrets.RuntimeSecret.Reveal()),
			AckTimeout: cfg.Timing.AbortAckTimeout,
			Logger:     log.Named("runtime"),
		})
		if err != nil {
			return nil, &startError{exit: exitInput, msg: err.Error(), err: err}
		}
	}

	var owner commands.Lessee = readOnly{}
	if inv.flips() {
		// The session's keepalives stop when ctx ends (the --timeout): an
		// op still running then is left to the bot's recovery once the
		// lease expires, as if backflipctl had been killed.
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ownerTTL), concurrency.WithContext(ctx))
		if err != nil {
			return nil, &startError{exit: exitFailed, msg: "etcd could not be reached (granting the op's owner lease): " + err.Error(), err: err}
		}
		d.closers = append(d.closers, func() { _ = sess.Close() })
		owner = sess
	}

	scfg := commands.Config{
		Etcd:            cli,
		Prefix:          cfg.Etcd.Prefix,
		Warm:            checker,
		Runtime:         signaller,
		Owner:           owner,
		ConvergeTimeout: cfg.Timing.RouterConvergeTimeout,
		RollbackSLO:     cfg.Timing.RollbackSLO,
		Logger:          log,
	}
	if cfg.Postgres.URL.IsSet() {
		pool, err := audit.Connect(ctx, cfg.Postgres.URL.Reveal())
		if err != nil {
			return nil, &startError{exit: exitInput, msg: err.Error(), err: err}
		}
		d.closers = append(d.closers, pool.Close)
		scfg.DB = pool
	}
	if d.svc, err = commands.New(scfg); err != nil {
		return nil, &startError{exit: exitFailed, msg: err.Error(), err: err}
	}
	if inv.command == "drill" {
		// The same drills the bot runs, without the scheduler (that is the
		// bot's elected job) and without chat announcements: the report
		// is the answer here.
		ds, err := drills.New(drills.Config{
			Etcd: cli, Prefix: cfg.Etcd.Prefix, Commands: d.svc, Warm: checker, Owner: owner, DB: scfg.DB,
			VerifyWindow: cfg.Timing.DrillVerifyWindow, QuietPeriod: cfg.Timing.DrillQuietPeriod, SLO: cfg.Timing.RollbackSLO,
			Logger: log.Named("drills"),
		})
		if err != nil {
			return nil, &startError{exit: exitFailed, msg: err.Error(), err: err}
		}
		d.svc.SetDrills(ds)
	}
	return d, nil
}

// flips is true for the commands that change a route (rollback, promote,
// drill run): they hold an owner lease for their op records.
func (inv invocation) flips() bool {
	return inv.command == "rollback" || inv.command == "promote" || (inv.command == "drill" && first(inv.args) == "run")
}

// readOnly is the owner of status, history and fleet: they never write an
// op record, so they hold no lease (and cost etcd no lease grant).
type readOnly struct{}

func (readOnly) Lease() clientv3.LeaseID { return clientv3.NoLease }
func (readOnly) Done() <-chan struct{}   { return nil }

// noSignaller stands in for the runtime signaller when
// BACKFLIP_RUNTIME_SECRET is not set, for the commands that never signal
// (a promotion lets in-flight requests finish; reads change nothing).
// rollback requires the secret, so this never answers one.
type noSignaller struct{}

var errNoRuntimeSecret = errors.New("BACKFLIP_RUNTIME_SECRET is not set: backflipctl cannot sign abort signals")

func (noSignaller) SignalRollback(context.Context, string, string, int64, string, string, int64) (runtime.Signal, error) {
	return runtime.Signal{}, errNoRuntimeSecret
}

func (noSignaller) WaitAcks(context.Context, runtime.Signal) (runtime.Result, error) {
	return runtime.Result{}, fmt.Errorf("wait for acknowledgements: %w", errNoRuntimeSecret)
}
