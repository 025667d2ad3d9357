package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// Job is one of the singleton jobs (op recovery, audit shipper, warm-keep
// monitor, drill scheduler): it runs until its context ends.
type Job struct {
	Name string
	Run  func(ctx context.Context)
}

// ElectionKey is the prefix of the singleton jobs' election.
func (k Keys) ElectionKey() string { return k.Prefix + "/election/leader" }

// ElectorConfig configures an Elector. Client is required.
type ElectorConfig struct {
	Client *clientv3.Client
	// Prefix is BACKFLIP_ETCD_PREFIX; the election is <prefix>/election/leader.
	Prefix string
	// ID names this replica in the election (the value of its key).
	ID string
	// TTL is the election session's lease TTL in seconds (zero: the etcd
	// client's session default, 60).
	TTL    int
	Logger *zap.Logger
	// Registerer, when set, gets backflip_leader: 1 while this replica
	// holds the election (its jobs run), 0 otherwise. Nil: no metric.
	Registerer prometheus.Registerer
	// OnLeader, when set, is called with true when this replica starts
	// leading and with false when it stops, from the election goroutine.
	OnLeader func(leading bool)
}

// Elector runs the singleton jobs on the replica that holds the election.
// Make one per replica with NewElector.
type Elector struct {
	cfg     ElectorConfig
	log     *zap.Logger
	leading atomic.Bool
	gauge   prometheus.Gauge // nil without a Registerer
}

// NewElector checks cfg and registers the leader gauge on its Registerer.
func NewElector(cfg ElectorConfig) (*Elector, error) {
	if cfg.Client == nil {
		return nil, errors.New("commands: ElectorConfig.Client is required")
	}
	e := &Elector{cfg: cfg, log: cfg.Logger}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	if cfg.Registerer != nil {
		e.gauge = prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backflip_leader",
			Help: "1 while this replica holds the singleton jobs' election (drill scheduler, warm-keep monitor, audit shipper, op recovery), 0 otherwise.",
		})
		if err := cfg.Registerer.Register(e.gauge); err != nil {
			return nil, fmt.Errorf("commands: register backflip_leader: %w", err)
		}
	}
	return e, nil
}

// Leading reports whether this replica holds the election now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// setLeading records a change of leadership in the gauge and the hook.
func (e *Elector) setLeading(v bool) {
	if e.leading.Swap(v) == v {
		return
	}
	if e.gauge != nil {
		if v {
			e.gauge.Set(1)
		} else {
			e.gauge.Set(0)
		}
	}
	if e.cfg.OnLeader != nil {
		e.cfg.OnLeader(v)
	}
}

// RunElected is Elector.Run without metrics: it campaigns for
// <prefix>/election/leader as id with a session of ttl seconds.
func RunElected(ctx context.Context, cli *clientv3.Client, prefix, id string, ttl int, log *zap.Logger, jobs ...Job) {
	e, err := NewElector(ElectorConfig{Client: cli, Prefix: prefix, ID: id, TTL: ttl, Logger: log})
	if err != nil {
		if log != nil {
			log.Error("singleton election not started", zap.Error(err))
		}
		return
	}
	e.Run(ctx, jobs...)
}

// Run campaigns for <prefix>/election/leader and, while this replica
// holds it, runs every job; when leadership is lost (its lease expired in a
// partition, etcd restarted) the jobs' context is cancelled, they are
// waited for, and the replica campaigns again. It returns when ctx ends.
//
// Leadership is not mutual exclusion on its own — a replica can believe it
// leads a moment after its lease expired — so every job fences its writes
// with revision compares (recovery claims ops with a Txn on ModRevision, the
// shipper deletes only what it shipped, drill runs are created with
// CreateRevision == 0).
func (e *Elector) Run(ctx context.Context, jobs ...Job) {
	if e.gauge != nil {
		e.gauge.Set(0) // present, and 0, from the start
	}
	key := Keys{Prefix: e.cfg.Prefix}.ElectionKey()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := e.leadOnce(ctx, key, jobs)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			e.log.Warn("singleton election: campaign failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// leadOnce runs one session: campaign, run the jobs while leading.
func (e *Elector) leadOnce(ctx context.Context, key string, jobs []Job) error {
	cli, id, log := e.cfg.Client, e.cfg.ID, e.log
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(e.cfg.TTL), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, key)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// A lost session ends a campaign that is still waiting, too.
		select {
		case <-sess.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	if err := el.Campaign(cctx, id); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			return errors.New("session lost while campaigning")
		}
		return err
	}
	log.Info("singleton jobs: this replica leads", zap.String("id", id), zap.Int64("lease", int64(sess.Lease())))
	e.setLeading(true)
	// Our election key disappears the moment the lease is revoked or
	// expires; watching it ends the jobs sooner than the keep-alive
	// noticing, which shortens the overlap with the next leader.
	go func() {
		wch := cli.Watch(cctx, el.Key(), clientv3.WithRev(el.Rev()+1))
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					cancel()
					return
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j.Run(cctx)
		}()
	}
	<-cctx.Done()
	// The election is lost (or being given up) from here on, even while
	// the jobs wind down.
	e.setLeading(false)
	wg.Wait()
	if ctx.Err() == nil {
		log.Warn("singleton jobs: leadership lost; campaigning again", zap.String("id", id))
	} else {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = el.Resign(rctx)
		rcancel()
	}
	return nil
}
