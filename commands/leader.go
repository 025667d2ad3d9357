package commands

import (
	"context"
	"errors"
	"sync"
	"time"

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

// RunElected campaigns for <prefix>/election/leader and, while this replica
// holds it, runs every job; when leadership is lost (its lease expired in a
// partition, etcd restarted) the jobs' context is cancelled, they are
// waited for, and the replica campaigns again. It returns when ctx ends.
//
// Leadership is not mutual exclusion on its own — a replica can believe it
// leads a moment after its lease expired — so every job fences its writes
// with revision compares (recovery claims ops with a Txn on ModRevision, the
// shipper deletes only what it shipped, drill runs are created with
// CreateRevision == 0).
func RunElected(ctx context.Context, cli *clientv3.Client, prefix, id string, ttl int, log *zap.Logger, jobs ...Job) {
	if log == nil {
		log = zap.NewNop()
	}
	key := Keys{Prefix: prefix}.ElectionKey()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := leadOnce(ctx, cli, key, id, ttl, log, jobs)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Warn("singleton election: campaign failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
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
func leadOnce(ctx context.Context, cli *clientv3.Client, key, id string, ttl int, log *zap.Logger, jobs []Job) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
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
