package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/embedetcd"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// Config is what the dev stack needs. The zero value of each optional field
// means its default.
type Config struct {
	// StateDir holds all state (etcd data). Default ".backflip".
	StateDir string
	// Routers is the number of simulated routers. Default 4.
	Routers int
	// Nodes is the number of simulated GPU nodes. Default 8.
	Nodes int
	// Runtimes is the number of simulated workflow runtimes (the real SDK).
	// Default none.
	Runtimes int
	// RPS is the synthetic requests each runtime starts per second. Default
	// none.
	RPS int
	// Prefix is the etcd key prefix. Default "/backflip".
	Prefix string
	// Actor names who types at the terminal (e.g. "cli:alice@host").
	Actor  string
	Logger *zap.Logger
	In     io.Reader
	Out    io.Writer
	Now    func() time.Time
}

func (c *Config) defaults() {
	if c.StateDir == "" {
		c.StateDir = ".backflip"
	}
	if c.Routers <= 0 {
		c.Routers = 4
	}
	if c.Nodes <= 0 {
		c.Nodes = 8
	}
	if c.Prefix == "" {
		c.Prefix = "/backflip"
	}
	if c.Actor == "" {
		c.Actor = "cli:dev"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Stack is a running dev stack.
type Stack struct {
	cfg     Config
	etcd    *embedetcd.Etcd
	client  *clientv3.Client
	store   *routing.Store
	fleet   *simfleet.Fleet
	checker *warm.Checker
	// closeLog closes etcd's log file.
	closeLog func()
}

// Start brings the stack up: etcd, then the simulated fleet (which seeds
// the demo routes the first time), then the warm checker.
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
	s.store = routing.NewStore(s.client, cfg.Prefix, cfg.Logger.Named("routing"))
	s.store.Now = cfg.Now
	s.fleet, err = simfleet.Start(ctx, simfleet.Config{
		Client:    s.client,
		Prefix:    cfg.Prefix,
		Nodes:     cfg.Nodes,
		Routes:    simfleet.DemoRoutes(),
		Routers:   cfg.Routers,
		Runtimes:  cfg.Runtimes,
		Traffic:   simfleet.Traffic{RPS: cfg.RPS},
		SeedActor: "dev-seed",
		Logger:    cfg.Logger,
		Now:       cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("simulated fleet: %w", err)
	}
	s.checker, err = warm.NewChecker(warm.Config{KV: s.client, Prefix: cfg.Prefix, AgentToken: s.fleet.AgentToken(),
		Timeout: 2 * time.Second, MaxAge: 3 * time.Second, DefaultQuorum: 1.0,
		Logger: cfg.Logger.Named("warm"), Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Endpoint is the embedded etcd's client URL.
func (s *Stack) Endpoint() string { return s.etcd.Endpoint() }

// Close stops the fleet, clients and etcd. It is safe after a failed Start.
func (s *Stack) Close() {
	if s.fleet != nil {
		s.fleet.Close()
	}
	if s.checker != nil {
		s.checker.Close()
	}
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

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + " ms"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + " ms"
}
