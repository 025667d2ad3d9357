package simfleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// router is a simulated inference router: an etcd client, its own as each
// router process has in production or its process's (RouterProcesses), and
// the real reader library.
type router struct {
	id     string
	client *clientv3.Client
	// shared says client is the router process's, closed by the fleet.
	shared bool
	reader *routing.Watcher
	// crashed silences the router's logger once StopRouter has pulled its
	// client away: a crashed process logs nothing.
	crashed atomic.Bool

	// Guarded by Fleet.mu.
	stopped bool
	applied map[string]appliedAt
}

// appliedAt is when a router applied a route's epoch (by Config.Now).
type appliedAt struct {
	epoch int64
	at    time.Time
}

// routerClient dials an etcd client for a router process.
func (f *Fleet) routerClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: f.cfg.Client.Endpoints(), DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 2 * time.Second, Logger: zap.NewNop()})
}

// startRouter starts router number i (from 0). It runs until f.ctx ends or
// it is stopped.
func (f *Fleet) startRouter(id string, i int) error {
	r := &router{id: id, applied: map[string]appliedAt{}}
	if n := len(f.routerClients); n > 0 {
		r.client, r.shared = f.routerClients[i%n], true
	} else {
		cli, err := f.routerClient()
		if err != nil {
			return fmt.Errorf("etcd client of %s: %w", id, err)
		}
		r.client = cli
	}
	cli := r.client
	var err error
	log := f.cfg.Logger.Named(id).WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return gatedCore{Core: c, off: &r.crashed}
	}))
	r.reader, err = routing.NewWatcher(routing.WatcherConfig{
		Client:   cli,
		Prefix:   f.cfg.Prefix,
		Logger:   log,
		Now:      f.cfg.Now,
		RouterID: id,
		LeaseTTL: int64((f.cfg.RouterLeaseTTL + time.Second - 1) / time.Second),
		OnApply:  func(v routing.View) { f.applied(r, v) },
	})
	if err != nil {
		if !r.shared {
			_ = cli.Close()
		}
		return err
	}
	f.mu.Lock()
	f.routers = append(f.routers, r)
	f.mu.Unlock()
	r.reader.Start(f.ctx)
	return nil
}

// applied records that r applied v and wakes WaitConverged.
func (f *Fleet) applied(r *router, v routing.View) {
	if o := f.cfg.Observe; o != nil && o.RouterApplied != nil {
		o.RouterApplied(r.id, v)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r.applied[v.Route] = appliedAt{epoch: v.Epoch, at: f.cfg.Now()}
	close(f.convC)
	f.convC = make(chan struct{})
}

// close stops the router and withdraws its registration (a no-op for a
// router StopRouter crashed, whose client is gone already).
func (r *router) close() {
	r.reader.Close()
	if !r.shared {
		_ = r.client.Close()
	}
}

// waitRouters waits until every router has published, under routers/<id>,
// an epoch at least epochs[route] for every route: what the bot counts
// convergence from.
func (f *Fleet) waitRouters(ctx context.Context, epochs map[string]int64) error {
	keys := routing.Keyspace{Prefix: f.cfg.Prefix}
	f.mu.Lock()
	routers := append([]*router(nil), f.routers...)
	f.mu.Unlock()
	for _, r := range routers {
		if err := r.reader.WaitReady(ctx); err != nil {
			return fmt.Errorf("simfleet: router %s: %w", r.id, err)
		}
	}
	return poll(ctx, "routers did not publish the routes", func(ctx context.Context) (bool, error) {
		resp, err := f.cfg.Client.Get(ctx, keys.Routers(), clientv3.WithPrefix())
		if err != nil {
			return false, err
		}
		published := make(map[string]routing.RouterRecord, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			var rec routing.RouterRecord
			if json.Unmarshal(kv.Value, &rec) == nil {
				published[string(kv.Key)] = rec
			}
		}
		for _, r := range routers {
			rec, ok := published[keys.Router(r.id)]
			if !ok {
				return false, nil
			}
			for route, epoch := range epochs {
				if rec.Observed[route] < epoch {
					return false, nil
				}
			}
		}
		return true, nil
	})
}

// RouterIDs lists the routers still running, in order.
func (f *Fleet) RouterIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.routers {
		if !r.stopped {
			out = append(out, r.id)
		}
	}
	return out
}

// StopRouter stops one router the way a crash would: it applies no further
// change and says nothing more, and its registration is not withdrawn but
// left to expire with its lease (Config.RouterLeaseTTL). A flip made meanwhile counts
// it among the routers it waits for, and the bot then sees it vanish: a lost
// router.
func (f *Fleet) StopRouter(id string) error {
	f.mu.Lock()
	var r *router
	for _, c := range f.routers {
		if c.id == id {
			r = c
		}
	}
	if r == nil || r.stopped {
		f.mu.Unlock()
		return fmt.Errorf("simfleet: no running router %q", id)
	}
	if r.shared {
		f.mu.Unlock()
		return fmt.Errorf("simfleet: router %q shares its process's etcd client (RouterProcesses): a crash cannot be simulated without stopping the others", id)
	}
	r.stopped = true
	close(f.convC) // the set of routers WaitConverged counts changed
	f.convC = make(chan struct{})
	f.mu.Unlock()
	// The client goes first, so that closing the reader cannot revoke the
	// lease: the record stays until etcd expires it.
	r.crashed.Store(true)
	_ = r.client.Close()
	r.reader.Close()
	return nil
}

// Convergence is how far the running routers are with one change of one
// route.
type Convergence struct {
	// Applied counts the running routers that applied the epoch, or a later
	// one, of Routers running.
	Applied, Routers int
	// Last is when the last of them applied it (by Config.Now); zero when
	// none has.
	Last time.Time
}

// Done reports whether every running router applied the change.
func (c Convergence) Done() bool { return c.Applied == c.Routers }

// Converged reports how many running routers have applied route's epoch.
// It is what the routers themselves saw, timed by their OnApply hook; the
// bot's view of convergence is their published records in etcd.
func (f *Fleet) Converged(route string, epoch int64) Convergence {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, _ := f.convergedLocked(route, epoch)
	return c
}

func (f *Fleet) convergedLocked(route string, epoch int64) (Convergence, <-chan struct{}) {
	var c Convergence
	for _, r := range f.routers {
		if r.stopped {
			continue
		}
		c.Routers++
		if a := r.applied[route]; a.epoch >= epoch {
			c.Applied++
			if a.at.After(c.Last) {
				c.Last = a.at
			}
		}
	}
	return c, f.convC
}

// WaitConverged waits until every running router has applied route's
// epoch, or until ctx ends, and returns how far they got.
func (f *Fleet) WaitConverged(ctx context.Context, route string, epoch int64) Convergence {
	for {
		f.mu.Lock()
		c, changed := f.convergedLocked(route, epoch)
		f.mu.Unlock()
		if c.Done() {
			return c
		}
		select {
		case <-ctx.Done():
			return c
		case <-changed:
		}
	}
}

// gatedCore drops every entry once off is set.
type gatedCore struct {
	zapcore.Core
	off *atomic.Bool
}

func (c gatedCore) Enabled(l zapcore.Level) bool { return !c.off.Load() && c.Core.Enabled(l) }

func (c gatedCore) With(fields []zapcore.Field) zapcore.Core {
	return gatedCore{Core: c.Core.With(fields), off: c.off}
}

func (c gatedCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.off.Load() {
		return ce
	}
	return c.Core.Check(e, ce)
}
