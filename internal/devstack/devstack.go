package devstack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/drills"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/embedetcd"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// Defaults of Config.
const (
	defaultRouters     = 4
	defaultNodes       = 8
	defaultRuntimes    = 2
	defaultWarmTimeout = 2 * time.Second
	// warmMaxAge is how old an agent's warm observation may be before the
	// checker asks for a fresh canary. Production allows 15 s; the dev
	// stack asks sooner so that a `sim` command that breaks an engine is
	// reflected by the next rollback a person types, not 15 s later.
	warmMaxAge = 3 * time.Second
	// ownerTTL is the TTL, in seconds, of the stack's owner lease and of
	// the singleton election: a dev stack killed mid-operation has its op
	// recovered by the next one about this long after.
	ownerTTL = 10
	// recoveryInterval is how often the op recovery job looks for ops
	// whose owner is gone.
	recoveryInterval = 5 * time.Second
	// A synthetic request takes trafficSteps steps of trafficStepDelay,
	// about a second, so that a rollback finds requests in flight to abort
	// and re-issue even at a few requests a second, as a workflow calling
	// a 70B model would.
	trafficSteps     = 5
	trafficStepDelay = 200 * time.Millisecond
)

// Config is what the dev stack needs. The zero value of each optional field
// means its default.
type Config struct {
	// StateDir holds all state (etcd data and log). Default ".backflip".
	StateDir string
	// Routers is the number of simulated routers. Default 4.
	Routers int
	// Nodes is the number of simulated GPU nodes. Default 8.
	Nodes int
	// Runtimes is the number of simulated workflow runtimes (the real SDK).
	// Default 2.
	Runtimes int
	// RPS is the synthetic requests each runtime starts per second; zero
	// means no traffic (rollbacks then abort nothing).
	RPS int
	// Prefix is the etcd key prefix. Default "/backflip".
	Prefix string
	// User is the person at the terminal (the OS user). Their actor is
	// "dev:<User>", which the stack's access settings allow to roll back
	// and promote. Default "dev".
	User string
	// WarmTimeout is BACKFLIP_WARM_TIMEOUT. Default 2s.
	WarmTimeout time.Duration
	// ConvergeTimeout is BACKFLIP_ROUTER_CONVERGE_TIMEOUT and AckTimeout
	// BACKFLIP_ABORT_ACK_TIMEOUT; zero means the commands and runtime
	// packages' defaults.
	ConvergeTimeout time.Duration
	AckTimeout      time.Duration
	// DrillVerifyWindow and DrillQuietPeriod are BACKFLIP_DRILL_VERIFY_WINDOW
	// and BACKFLIP_DRILL_QUIET_PERIOD when set; zero means the dev stack's
	// own short ones (3s and 10s), so a drill can be watched within a
	// minute of start.
	DrillVerifyWindow time.Duration
	DrillQuietPeriod  time.Duration
	// DatabaseURL is BACKFLIP_DATABASE_URL: the audit database to migrate
	// and use. "" starts a Postgres of the stack's own from the local
	// binaries, its data in <StateDir>/postgres.
	DatabaseURL string
	// Getenv finds the Postgres binaries (BACKFLIP_PG_BIN). Default
	// os.LookupEnv.
	Getenv func(string) (string, bool)
	// Logger receives the stack's logs. Required.
	Logger *zap.Logger
	// Now is the clock of the fleet and the use cases. Default
	// time.Now.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.StateDir == "" {
		c.StateDir = ".backflip"
	}
	if c.Routers <= 0 {
		c.Routers = defaultRouters
	}
	if c.Nodes <= 0 {
		c.Nodes = defaultNodes
	}
	if c.Runtimes <= 0 {
		c.Runtimes = defaultRuntimes
	}
	if c.Prefix == "" {
		c.Prefix = "/backflip"
	}
	if c.User == "" {
		c.User = "dev"
	}
	if c.WarmTimeout <= 0 {
		c.WarmTimeout = defaultWarmTimeout
	}
	if c.DrillVerifyWindow <= 0 {
		c.DrillVerifyWindow = devVerifyWindow
	}
	if c.DrillQuietPeriod <= 0 {
		c.DrillQuietPeriod = devQuietPeriod
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Getenv == nil {
		c.Getenv = os.LookupEnv
	}
}

// Stack is a running dev stack.
type Stack struct {
	cfg     Config
	etcd    *embedetcd.Etcd
	client  *clientv3.Client
	fleet   *simfleet.Fleet
	checker *warm.Checker
	// signalHTTP is the runtime signaller's HTTP client, kept to drop its
	// idle connections on Close.
	signalHTTP *http.Client
	owner      *concurrency.Session
	svc        *commands.Service
	// origin is who types at the terminal, and where.
	origin commands.Origin
	// stopJobs ends the singleton jobs; jobs is waited for on Close.
	stopJobs context.CancelFunc
	jobs     sync.WaitGroup
	// audit is the audit database and shipper the job that fills it from
	// the etcd outbox (nil without a database).
	audit   *auditDB
	db      audit.DBTX
	shipper *audit.Shipper
	// closeLog closes etcd's log file.
	closeLog func()
}

// Start brings the stack up: etcd, then the simulated fleet (which seeds
// the demo routes the first time), then the use cases of the commands
// package over them — the same Service the bot and backflipctl run.
// StartJobs starts op recovery once there is a chat to tell about it.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	cfg.defaults()
	if cfg.Logger == nil {
		return nil, errors.New("devstack: Logger is required")
	}
	s := &Stack{cfg: cfg}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// The state folder is searchable (not readable) by others, so that
	// Postgres, which runs as the postgres OS user when we are root, can
	// reach its folder in it; etcd's folder stays private. A folder left
	// 0700 by an older version is opened the same way.
	if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if fi, err := os.Stat(cfg.StateDir); err == nil && fi.Mode().Perm() == 0o700 {
		_ = os.Chmod(cfg.StateDir, 0o711)
	}
	dir := filepath.Join(cfg.StateDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	// etcd's own log goes to a file in the state folder: it is verbose, and
	// it logs its normal shutdown as errors, which would alarm a new user.
	etcdLogPath := filepath.Join(cfg.StateDir, "etcd.log")
	etcdLog, closeLog, err := zap.Open(etcdLogPath)
	if err != nil {
		return nil, fmt.Errorf("etcd log %s: %w", etcdLogPath, err)
	}
	s.closeLog = closeLog
	s.etcd, err = embedetcd.Start(ctx, embedetcd.Config{Dir: dir, Name: "dev", Logger: zap.New(zapcore.NewCore(
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), etcdLog, zap.InfoLevel))})
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s (its log: %s): %w", dir, etcdLogPath, err)
	}
	s.client, err = clientv3.New(clientv3.Config{Endpoints: []string{s.etcd.Endpoint()}, DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", s.etcd.Endpoint(), err)
	}
	if s.audit, err = startAudit(ctx, cfg); err != nil {
		return nil, err
	}
	s.fleet, err = simfleet.Start(ctx, simfleet.Config{
		Client:    s.client,
		Prefix:    cfg.Prefix,
		Nodes:     cfg.Nodes,
		Routes:    simfleet.DemoRoutes(),
		Routers:   cfg.Routers,
		Runtimes:  cfg.Runtimes,
		Traffic:   simfleet.Traffic{RPS: cfg.RPS, Steps: trafficSteps, StepDelay: trafficStepDelay},
		SeedActor: "dev-seed",
		Logger:    cfg.Logger,
		Now:       cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("simulated fleet: %w", err)
	}
	if err := s.startService(); err != nil {
		return nil, err
	}
	if cfg.RPS > 0 {
		// The first rollback a person pipes in right away should find
		// requests in flight, as it would in production: give the traffic
		// one request's length to reach its steady state.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(trafficSteps * trafficStepDelay):
		}
	}
	return s, nil
}

// startService builds the commands.Service the chat calls, wired to the
// dev stack as `backflip serve` wires it to production: warm checks against
// the simulated agents, abort signals to the simulated runtimes, an owner
// lease for op records, the audit database, and access settings that let
// the person at the terminal act.
func (s *Stack) startService() error {
	cfg := s.cfg
	var err error
	s.checker, err = warm.NewChecker(warm.Config{KV: s.client, Prefix: cfg.Prefix, AgentToken: s.fleet.AgentToken(),
		Timeout: cfg.WarmTimeout, MaxAge: warmMaxAge, DefaultQuorum: 1.0,
		Logger: cfg.Logger.Named("warm"), Now: cfg.Now})
	if err != nil {
		return fmt.Errorf("warm checker: %w", err)
	}
	// Its own transport, so that Close can drop its connections and leave
	// no goroutine behind.
	s.signalHTTP = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	signaller, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: s.client, Prefix: cfg.Prefix,
		Secret: s.fleet.RuntimeSecret(), HTTPClient: s.signalHTTP, AckTimeout: cfg.AckTimeout,
		Logger: cfg.Logger.Named("runtime"), Now: cfg.Now})
	if err != nil {
		return fmt.Errorf("runtime signaller: %w", err)
	}
	// The session's keep-alives run until Close revokes it, not until the
	// context of Start ends: a rollback still running when the person
	// presses Ctrl-C finishes under a live owner.
	s.owner, err = concurrency.NewSession(s.client, concurrency.WithTTL(ownerTTL))
	if err != nil {
		return fmt.Errorf("owner lease: %w", err)
	}
	actor := commands.Actor{ID: "dev:" + cfg.User, Name: cfg.User}
	s.origin = commands.Origin{Actor: actor, Channel: commands.Channel{ID: devChannel, Name: devChannel},
		Transport: commands.TransportTerminal}
	if s.audit.pool != nil {
		s.db = s.audit.pool
		if s.shipper, err = audit.NewShipper(audit.ShipperConfig{Etcd: s.client, Prefix: cfg.Prefix, DB: s.audit.pool,
			Logger: cfg.Logger.Named("audit"), Now: cfg.Now}); err != nil {
			return fmt.Errorf("audit shipper: %w", err)
		}
	}
	s.svc, err = commands.New(commands.Config{
		DB:      s.db,
		Etcd:    s.client,
		Prefix:  cfg.Prefix,
		Warm:    s.checker,
		Runtime: signaller,
		Owner:   s.owner,
		Access: commands.Access{
			IncidentChannels: []string{devChannel},
			RollbackUsers:    []string{actor.ID},
			DrillUsers:       []string{actor.ID},
		},
		ConvergeTimeout: cfg.ConvergeTimeout,
		Logger:          cfg.Logger.Named("commands"),
		Now:             cfg.Now,
	})
	return err
}

// devChannel is the terminal's channel: the one incident channel of the dev
// stack, and its ops channel.
const devChannel = "dev"

// Service is the stack's commands.Service, for the chat (the bot on the
// terminal and on the loopback Slack endpoints) to call.
func (s *Stack) Service() *commands.Service { return s.svc }

// Origin is the person at the terminal and their channel: the actor the
// stack's access settings allow to roll back and promote, in the one
// incident channel.
func (s *Stack) Origin() commands.Origin { return s.origin }

// StartJobs runs op recovery as the singleton job it is in production,
// under the etcd election, so that a dev stack killed in the middle of a
// rollback has it finished (or closed) by the next one; notify tells the
// chat what it did, as the bot's Notify does in production. Call it once;
// Close stops it.
//
// It also sets up drills: /drill runs them through the same rollback path,
// and the drill scheduler runs as a second singleton job, announcing in
// the terminal's channel through announce. The dev stack's quiet period is
// short (Config.DrillQuietPeriod), because its routes were promoted a
// moment ago.
func (s *Stack) StartJobs(notify func(context.Context, commands.Notice), announce drills.Announcer) error {
	ds, err := drills.New(drills.Config{
		Etcd: s.client, Prefix: s.cfg.Prefix, Commands: s.svc, Warm: s.checker, Owner: s.owner, DB: s.db,
		Announcer: announce, AnnounceChannel: devChannel,
		VerifyWindow: s.cfg.DrillVerifyWindow, QuietPeriod: s.cfg.DrillQuietPeriod,
		Logger: s.cfg.Logger.Named("drills"), Now: s.cfg.Now,
	})
	if err != nil {
		return err
	}
	s.svc.SetDrills(ds)
	sched, err := ds.Scheduler(devSchedulerTick)
	if err != nil {
		return err
	}
	jctx, cancel := context.WithCancel(context.Background())
	s.stopJobs = cancel
	host, _ := os.Hostname()
	id := fmt.Sprintf("dev:%s:%d", host, os.Getpid())
	log := s.cfg.Logger.Named("jobs")
	jobs := []commands.Job{{
		Name: "op-recovery",
		Run: func(ctx context.Context) {
			s.svc.RunRecovery(ctx, recoveryInterval, func(n commands.Notice) { notify(ctx, n) })
		},
	}, {Name: "drill-scheduler", Run: sched.Run}}
	if s.shipper != nil {
		jobs = append(jobs, commands.Job{Name: "audit-shipper", Run: func(ctx context.Context) {
			if err := s.shipper.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("audit shipper stopped", zap.Error(err))
			}
		}})
	}
	s.jobs.Go(func() { commands.RunElected(jctx, s.client, s.cfg.Prefix, id, ownerTTL, log, jobs...) })
	return nil
}

// The dev stack's drill timing: a short hold and quiet period so a drill
// can be watched within a minute of `make run`, and a scheduler that looks
// every few seconds.
const (
	devVerifyWindow  = 3 * time.Second
	devQuietPeriod   = 10 * time.Second
	devSchedulerTick = 5 * time.Second
)

// Endpoint is the embedded etcd's client URL.
func (s *Stack) Endpoint() string { return s.etcd.Endpoint() }

// Close stops the jobs, revokes the owner lease, and stops the fleet,
// clients and etcd. It is safe after a failed Start.
func (s *Stack) Close() {
	if s.stopJobs != nil {
		s.stopJobs()
		s.jobs.Wait()
	}
	if s.owner != nil {
		_ = s.owner.Close()
	}
	if s.fleet != nil {
		s.fleet.Close()
	}
	if s.checker != nil {
		s.checker.Close()
	}
	if s.signalHTTP != nil {
		s.signalHTTP.CloseIdleConnections()
	}
	s.audit.close()
	if s.client != nil {
		_ = s.client.Close()
	}
	if s.etcd != nil {
		s.etcd.Close()
	}
	if s.closeLog != nil {
		s.closeLog()
	}
}
