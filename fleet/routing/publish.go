package routing

import (
	"context"
	"encoding/json"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// RouterRecord is the value a router publishes at <prefix>/routers/<id>:
// the etcd epoch of each route it has applied. The bot counts convergence
// from these records.
type RouterRecord struct {
	ID       string           `json:"id"`
	Observed map[string]int64 `json:"observed"`
}

// observed returns the etcd epochs currently applied, by route.
func (w *Watcher) observed() map[string]int64 {
	t := *w.table.Load()
	out := make(map[string]int64, len(t))
	for name, st := range t {
		if a := st.cur.Load(); a != nil && a.etcd.Epoch != 0 {
			out[name] = a.etcd.Epoch
		}
	}
	return out
}

// runPublish keeps the router's registration: a lease kept alive, and a put
// of the applied epochs after every change. When the lease is lost (etcd
// outage, expiry) it grants a new one and publishes again.
func (w *Watcher) runPublish(ctx context.Context) {
	key := w.keys.Router(w.cfg.RouterID)
	const minBackoff = 100 * time.Millisecond
	backoff := minBackoff
	for ctx.Err() == nil {
		start := time.Now()
		if !w.publishSession(ctx, key) {
			return
		}
		if time.Since(start) > time.Duration(w.cfg.LeaseTTL)*time.Second {
			backoff = minBackoff // the session worked for a while: this is a new failure
		}
		if !sleep(ctx, jitter(backoff)) {
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// publishSession runs one lease's life. It returns false when ctx is done.
func (w *Watcher) publishSession(ctx context.Context, key string) bool {
	c := w.cfg.Client
	gctx, cancel := context.WithTimeout(ctx, w.readTimeout())
	lease, err := c.Grant(gctx, w.cfg.LeaseTTL)
	cancel()
	if err != nil {
		w.log.Warn("router registration: grant lease failed", zap.Error(err))
		return ctx.Err() == nil
	}
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ka, err := c.KeepAlive(kctx, lease.ID)
	if err != nil {
		w.log.Warn("router registration: keepalive failed", zap.Error(err))
		return ctx.Err() == nil
	}
	var last []byte
	put := func() {
		rec := RouterRecord{ID: w.cfg.RouterID, Observed: w.observed()}
		val, err := json.Marshal(rec)
		if err != nil {
			w.log.Error("router registration: encode", zap.Error(err))
			return
		}
		if string(val) == string(last) {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, w.readTimeout())
		defer cancel()
		if _, err := c.Put(pctx, key, string(val), clientv3.WithLease(lease.ID)); err != nil {
			if ctx.Err() == nil {
				w.log.Warn("router registration: put failed", zap.Error(err))
			}
			return
		}
		last = val
	}
	// Once ready, publish right away (the watch may have applied before the lease existed).
	select {
	case <-w.ready:
		put()
	default:
	}
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			// Withdraw the registration so the bot does not count a router
			// that has stopped as lost.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_, _ = c.Revoke(rctx, lease.ID)
			cancel()
			return false
		case _, ok := <-ka:
			if !ok {
				if ctx.Err() != nil {
					continue // shutting down: the ctx.Done case revokes
				}
				w.log.Warn("router registration: lease lost, registering again")
				return true
			}
		case <-w.publishC:
			put()
		case <-retry.C:
			// Covers a failed put and a ready signal that came without a change.
			if isReady(w.ready) {
				put()
			}
		}
	}
}

func isReady(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
