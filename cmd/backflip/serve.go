package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/bot"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/drills"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/config"
	"github.com/backflip-dev/backflip/internal/etcdclient"
)

// serve runs the production bot until ctx ends.
func (m Main) serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("serve takes no arguments, got %q", fs.Args())}
	}
	cfg, err := config.FromLookup(m.Getenv)
	if err == nil {
		err = cfg.ValidateServe()
	}
	if err != nil {
		return usageError{err}
	}
	log, err := config.NewLoggerTo(m.Stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = log.Sync() }()
	s, err := newServer(ctx, cfg, log)
	if err != nil {
		return err
	}
	return s.run(ctx)
}

// server is one `backflip serve` replica.
type server struct {
	cfg      *config.Config
	log      *zap.Logger
	etcd     *clientv3.Client
	db       interface{ Close() }
	session  *concurrency.Session
	svc      *commands.Service
	bot      *bot.Bot
	slack    *bot.Slack
	checker  *warm.Checker
	shipper  *audit.Shipper
	drillSvc *drills.Service
	drills   *drills.Scheduler
	elector  *commands.Elector
	registry *prometheus.Registry
	handler  http.Handler
	id       string
}

func newServer(ctx context.Context, cfg *config.Config, log *zap.Logger) (_ *server, err error) {
	s := &server{cfg: cfg, log: log, registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	host, _ := os.Hostname()
	s.id = fmt.Sprintf("%s-%d", host, os.Getpid())
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if s.etcd, err = etcdclient.New(cfg.Etcd, log); err != nil {
		return nil, err
	}
	// The etcd database size and quota, read from etcd at each scrape
	// (bounded: /metrics never waits on etcd for more than 2 s).
	if err := s.registry.Register(newEtcdCollector(s.etcd, etcdStatusTimeout)); err != nil {
		return nil, err
	}
	pool, err := audit.Connect(ctx, cfg.Postgres.URL.Reveal())
	if err != nil {
		return nil, err
	}
	s.db = pool
	s.session, err = concurrency.NewSession(s.etcd, concurrency.WithTTL(10), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("etcd: could not open a session (is etcd at %v reachable?): %w", cfg.Etcd.Endpoints, err)
	}
	secret := []byte(cfg.Secrets.RuntimeSecret.Reveal())
	if s.checker, err = warm.NewChecker(warm.Config{
		KV: s.etcd, Prefix: cfg.Etcd.Prefix, AgentToken: cfg.Secrets.AgentToken.Reveal(),
		Timeout: cfg.Timing.WarmTimeout, MaxAge: cfg.Timing.WarmMaxAge, DefaultQuorum: cfg.Timing.WarmQuorum, Logger: log.Named("warm"),
	}); err != nil {
		return nil, err
	}
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: s.etcd, Prefix: cfg.Etcd.Prefix, Secret: secret, AckTimeout: cfg.Timing.AbortAckTimeout, Logger: log})
	if err != nil {
		return nil, err
	}
	if s.slack, err = bot.NewSlack(bot.SlackConfig{
		Token: cfg.Slack.BotToken.Reveal(), APIURL: cfg.Slack.APIURL, JoinChannels: true,
		UsergroupCacheTTL: cfg.Slack.UsergroupCacheTTL, Logger: log.Named("slack"),
	}); err != nil {
		return nil, err
	}
	if s.svc, err = commands.New(commands.Config{
		Etcd: s.etcd, Prefix: cfg.Etcd.Prefix, Warm: s.checker, Runtime: sig, Owner: s.session, DB: pool,
		Access: commands.Access{
			IncidentChannels: cfg.Slack.IncidentChannels, RollbackUsers: cfg.Access.RollbackUsers, RollbackUsergroups: cfg.Access.RollbackUsergroups,
			DrillUsers: cfg.Access.DrillUsers, DrillUsergroups: cfg.Access.DrillUsergroups,
		},
		Groups: s.slack, ConvergeTimeout: cfg.Timing.RouterConvergeTimeout, RollbackSLO: cfg.Timing.RollbackSLO, Logger: log.Named("commands"),
	}); err != nil {
		return nil, err
	}
	if s.bot, err = bot.New(bot.Config{Service: s.svc, Poster: s.slack, Channels: s.slack, CardTTL: cfg.Slack.CardTTL, OpsChannel: cfg.Slack.OpsChannel, Logger: log.Named("bot")}); err != nil {
		return nil, err
	}
	ds, err := drills.New(drills.Config{
		Etcd: s.etcd, Prefix: cfg.Etcd.Prefix, Commands: s.svc, Warm: s.checker, Owner: s.session, DB: pool,
		Announcer: s.bot, AnnounceChannel: cfg.Slack.AnnounceChannel,
		VerifyWindow: cfg.Timing.DrillVerifyWindow, QuietPeriod: cfg.Timing.DrillQuietPeriod, SLO: cfg.Timing.RollbackSLO,
		Logger: log.Named("drills"), Registerer: s.registry,
	})
	if err != nil {
		return nil, err
	}
	s.drillSvc = ds
	s.svc.SetDrills(ds)
	if s.drills, err = ds.Scheduler(15 * time.Second); err != nil {
		return nil, err
	}
	if s.shipper, err = audit.NewShipper(audit.ShipperConfig{Etcd: s.etcd, Prefix: cfg.Etcd.Prefix, DB: pool, Logger: log.Named("audit"), Registerer: s.registry}); err != nil {
		return nil, err
	}
	if s.elector, err = commands.NewElector(commands.ElectorConfig{Client: s.etcd, Prefix: cfg.Etcd.Prefix, ID: s.id, TTL: 10,
		Logger: log.Named("election"), Registerer: s.registry}); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	if cfg.Slack.Mode == "http" {
		h, err := bot.NewHTTPHandler(bot.HTTPConfig{SigningSecret: []byte(cfg.Slack.SigningSecret.Reveal()), Handler: s.bot, Logger: log.Named("slack-http")})
		if err != nil {
			return nil, err
		}
		mux.Handle("/slack/", h)
	}
	replay := runtime.NewReplayCache(0)
	hb, err := runtime.NewHeartbeatHandler(runtime.HandlerConfig{Etcd: s.etcd, Prefix: cfg.Etcd.Prefix, Secret: secret, Replay: replay, Logger: log.Named("runtime-http")})
	if err != nil {
		return nil, err
	}
	acks, err := runtime.NewAcksHandler(runtime.HandlerConfig{Etcd: s.etcd, Prefix: cfg.Etcd.Prefix, Secret: secret, Replay: replay, Logger: log.Named("runtime-http")})
	if err != nil {
		return nil, err
	}
	mux.Handle("/v1/runtime/heartbeat", hb)
	mux.Handle("/v1/runtime/acks", acks)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", s.readyz)
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	s.handler = mux
	return s, nil
}

// readyz is true when etcd answers, has a leader and no NOSPACE alarm.
// Postgres is not required: audit events queue in etcd while it is down.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.etcd.Get(ctx, s.cfg.Etcd.Prefix+"/readyz", clientv3.WithCountOnly()); err != nil {
		http.Error(w, "etcd unreachable", http.StatusServiceUnavailable)
		return
	}
	alarms, err := s.etcd.AlarmList(ctx)
	if err != nil {
		http.Error(w, "etcd alarms unreadable", http.StatusServiceUnavailable)
		return
	}
	for _, a := range alarms.Alarms {
		if a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			http.Error(w, "etcd is out of space (NOSPACE alarm): defragment and disarm", http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ready")
}

func (s *server) run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("BACKFLIP_HTTP_ADDR %s: %w", s.cfg.HTTP.Addr, err)
	}
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	s.log.Info("backflip serve", zap.String("http", ln.Addr().String()), zap.String("slack_mode", s.cfg.Slack.Mode), zap.String("replica", s.id))
	errc := make(chan error, 3)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	jctx, stopJobs := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.elector.Run(jctx, s.jobs()...)
	}()
	drillMetricsDone := make(chan struct{})
	go func() {
		defer close(drillMetricsDone)
		s.loadDrillMetrics(jctx)
	}()
	sockDone := make(chan struct{})
	if s.cfg.Slack.Mode == "socket" {
		go func() {
			defer close(sockDone)
			if err := bot.RunSocket(jctx, bot.SocketConfig{AppToken: s.cfg.Slack.AppToken.Reveal(), BotToken: s.cfg.Slack.BotToken.Reveal(), APIURL: s.cfg.Slack.APIURL, Handler: s.bot, Logger: s.log.Named("slack-socket")}); err != nil {
				errc <- fmt.Errorf("slack socket mode: %w", err)
			}
		}()
	} else {
		close(sockDone)
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopJobs()
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	_ = s.bot.Close(sctx)
	<-sockDone
	<-done
	<-drillMetricsDone
	s.close()
	return err
}

// jobs are the singleton jobs of the leader replica.
func (s *server) jobs() []commands.Job {
	return []commands.Job{
		{Name: "op-recovery", Run: func(ctx context.Context) {
			s.svc.RunRecovery(ctx, 5*time.Second, func(n commands.Notice) { s.bot.Notify(ctx, n) })
		}},
		{Name: "audit-shipper", Run: func(ctx context.Context) {
			if err := s.shipper.Run(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("audit shipper stopped", zap.Error(err))
			}
		}},
		{Name: "drill-scheduler", Run: s.drills.Run},
		{Name: "warm-keep", Run: func(ctx context.Context) {
			mon, err := warm.NewMonitor(warm.MonitorConfig{Checker: s.checker, KV: s.etcd, Prefix: s.cfg.Etcd.Prefix, Logger: s.log.Named("warm-keep"),
				Registerer: s.registry,
				Emit: func(ev warm.Event) {
					go s.bot.WarmKeep(ctx, ev)
					if err := s.svc.RecordWarmKeep(ctx, ev); err != nil {
						s.log.Warn("warm-keep event not audited", zap.Error(err))
					}
				}})
			if err != nil {
				s.log.Error("warm-keep monitor not started", zap.Error(err))
				return
			}
			mon.Run(ctx)
		}},
	}
}

// loadDrillMetrics sets each route's last drill success from the audit
// database, so that a restarted replica (or one that was not leading when
// the drill ran) reports it too. Postgres may be down at start-up (audit is
// queued, not required): it retries, backing off to every 5 minutes, until
// it has read them once or ctx ends.
func (s *server) loadDrillMetrics(ctx context.Context) {
	wait := 5 * time.Second
	for {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.drillSvc.LoadMetrics(lctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		s.log.Warn("drill metrics not loaded from the audit database; retrying", zap.Error(err), zap.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Minute)
	}
}

func (s *server) close() {
	if s.checker != nil {
		s.checker.Close()
	}
	if s.session != nil {
		_ = s.session.Close()
	}
	if s.db != nil {
		s.db.Close()
	}
	if s.etcd != nil {
		_ = s.etcd.Close()
	}
}
