package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/embedetcd"
	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
	routers []*router
	fleet   *fleet
	checker *warm.Checker
	cancel  context.CancelFunc
	// closeLog closes etcd's log file.
	closeLog func()
}

// router is a simulated inference router: its own etcd client (one per
// router process, as in production) and the real reader library.
type router struct {
	id     string
	client *clientv3.Client
	reader *routing.Watcher
	// applied records when this router applied each (route, epoch), so the
	// terminal can report convergence as the routers saw it.
	mu      sync.Mutex
	applied map[string]appliedAt
}

type appliedAt struct {
	epoch int64
	at    time.Time
}

// Start brings the stack up: etcd, seed routes, routers.
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
	s.client, err = newClient(s.etcd.Endpoint())
	if err != nil {
		return nil, err
	}
	s.store = routing.NewStore(s.client, cfg.Prefix, cfg.Logger.Named("routing"))
	if err := s.seed(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	for i := 1; i <= cfg.Routers; i++ {
		r, err := s.startRouter(rctx, fmt.Sprintf("dev-router-%d", i))
		if err != nil {
			return nil, err
		}
		s.routers = append(s.routers, r)
	}
	s.fleet, err = s.startFleet(rctx, cfg.Nodes)
	if err != nil {
		return nil, fmt.Errorf("simulated fleet: %w", err)
	}
	s.checker, err = warm.NewChecker(warm.Config{KV: s.client, Prefix: cfg.Prefix, AgentToken: s.fleet.token,
		Timeout: 2 * time.Second, MaxAge: 3 * time.Second, DefaultQuorum: 1.0,
		Logger: cfg.Logger.Named("warm"), Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	for _, r := range s.routers {
		if err := r.reader.WaitReady(wctx); err != nil {
			return nil, fmt.Errorf("router %s: %w", r.id, err)
		}
	}
	if err := s.waitRegistered(wctx, cfg.Nodes); err != nil {
		return nil, err
	}
	return s, nil
}

// waitRegistered waits until every simulated node has registered, so the
// first warm check sees the whole fleet.
func (s *Stack) waitRegistered(ctx context.Context, n int) error {
	prefix := fleetapi.Keys{Prefix: s.cfg.Prefix}.Nodes()
	for {
		resp, err := s.client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count >= int64(n) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("simulated nodes did not register: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func newClient(endpoint string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", endpoint, err)
	}
	return cli, nil
}

// seed creates the two demo routes the first time the stack starts: one
// with a previous version to roll back to, one to show promotion.
func (s *Stack) seed(ctx context.Context) error {
	for _, r := range []struct{ route, first, second string }{
		{"chat-70b", "v41", "v42"},
		{"embed-small", "v6", "v7"},
	} {
		_, err := s.store.Get(ctx, r.route)
		if err == nil {
			continue
		}
		if !errors.Is(err, routing.ErrNotFound) {
			return err
		}
		res, err := s.store.Promote(ctx, routing.Change{Route: r.route, To: r.first, Op: uuid.NewString(), Actor: "dev-seed", Reason: "dev stack seed"})
		if err != nil {
			return fmt.Errorf("seed %s: %w", r.route, err)
		}
		if _, err := s.store.Promote(ctx, routing.Change{Route: r.route, To: r.second, ExpectRev: res.Revision, Op: uuid.NewString(), Actor: "dev-seed", Reason: "dev stack seed"}); err != nil {
			return fmt.Errorf("seed %s: %w", r.route, err)
		}
	}
	return nil
}

func (s *Stack) startRouter(ctx context.Context, id string) (*router, error) {
	cli, err := newClient(s.etcd.Endpoint())
	if err != nil {
		return nil, err
	}
	r := &router{id: id, client: cli, applied: map[string]appliedAt{}}
	r.reader, err = routing.NewWatcher(routing.WatcherConfig{
		Client:   cli,
		Prefix:   s.cfg.Prefix,
		Logger:   s.cfg.Logger.Named(id),
		Now:      s.cfg.Now,
		RouterID: id,
		OnApply: func(v routing.View) {
			r.mu.Lock()
			r.applied[v.Route] = appliedAt{epoch: v.Epoch, at: s.cfg.Now()}
			r.mu.Unlock()
		},
	})
	if err != nil {
		cli.Close()
		return nil, err
	}
	r.reader.Start(ctx)
	return r, nil
}

// Endpoint is the embedded etcd's client URL.
func (s *Stack) Endpoint() string { return s.etcd.Endpoint() }

// Close stops routers, clients and etcd. It is safe after a failed Start.
func (s *Stack) Close() {
	if s.cancel != nil {
		s.cancel()
	}
	for _, r := range s.routers {
		r.reader.Close()
		r.client.Close()
	}
	if s.fleet != nil {
		s.fleet.close()
	}
	if s.checker != nil {
		s.checker.Close()
	}
	if s.client != nil {
		s.client.Close()
	}
	if s.etcd != nil {
		s.etcd.Close()
	}
	if s.closeLog != nil {
		s.closeLog()
	}
}

// converged waits until every router has applied epoch of route, or until
// timeout, and returns how many did and when the last one did.
func (s *Stack) converged(route string, epoch int64, timeout time.Duration) (n int, last time.Time) {
	deadline := time.Now().Add(timeout)
	for {
		n, last = 0, time.Time{}
		for _, r := range s.routers {
			r.mu.Lock()
			a := r.applied[route]
			r.mu.Unlock()
			if a.epoch >= epoch {
				n++
				if a.at.After(last) {
					last = a.at
				}
			}
		}
		if n == len(s.routers) || time.Now().After(deadline) {
			return n, last
		}
		time.Sleep(time.Millisecond)
	}
}

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + " ms"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + " ms"
}
