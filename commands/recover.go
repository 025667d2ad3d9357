package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
)

// StaleAfter is how long after its start an unfinished op is claimed by
// recovery even though its owner's lease is alive: no op legitimately
// runs that long (its phases are bounded by WARM_TIMEOUT,
// ROUTER_CONVERGE_TIMEOUT, ABORT_ACK_TIMEOUT and the finalize retries), so
// such an op was left behind by a failure inside a live replica.
const StaleAfter = 10 * time.Minute

// Notice says what recovery did with one op, for the op's channel (and
// OPS_CHANNEL).
type Notice struct {
	Op      string
	Route   string
	Channel string
	// TS is the op's chat message, to answer in its thread ("" if none).
	TS      string
	Outcome string
	Text    string
	// Result is the recovered op's result (after-flip phases only).
	Result *Result
}

// Recover finds ops whose replica died (its lease is gone) or that are
// stale, claims each with a transaction on its record's ModRevision (so two
// recoverers never both finish one), and either finishes it — an op that
// flipped gets its router wait, runtime signal and final audit event
// (op.recovered) — or closes it as op.abandoned when it never flipped. It
// returns what it did. It is one of the singleton jobs, but is safe to run
// on several replicas at once.
func (s *Service) Recover(ctx context.Context) ([]Notice, error) {
	resp, err := s.etcd.Get(ctx, s.keys.Ops(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("recovery: list ops: %w", err)
	}
	alive := map[clientv3.LeaseID]bool{s.cfg.Owner.Lease(): true}
	var notices []Notice
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		id := key[len(s.keys.Ops()):]
		rec, err := DecodeOpRecord(key, kv.Value)
		if err != nil {
			s.log.Warn("recovery: malformed op record left alone", zap.String("key", key), zap.Error(err))
			continue
		}
		if rec.Phase == OpPhaseDone {
			continue
		}
		owner, _ := rec.OwnerLease()
		live, known := alive[owner]
		if !known {
			ttl, err := s.etcd.TimeToLive(ctx, owner)
			if err != nil {
				s.log.Warn("recovery: lease lookup failed", zap.String("op", id), zap.Error(err))
				continue
			}
			live = ttl.TTL > 0
			alive[owner] = live
		}
		if live && s.now().Sub(rec.Started) < StaleAfter {
			continue
		}
		n, err := s.recoverOp(ctx, id, rec, kv.ModRevision, kv.Lease)
		if err != nil {
			s.log.Warn("recovery: op not recovered", zap.String("op", id), zap.Error(err))
			continue
		}
		if n != nil {
			notices = append(notices, *n)
		}
	}
	return notices, nil
}

// RunRecovery runs Recover every interval until ctx ends, passing every
// notice to notify.
func (s *Service) RunRecovery(ctx context.Context, interval time.Duration, notify func(Notice)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		notices, err := s.Recover(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("recovery pass failed", zap.Error(err))
		}
		for _, n := range notices {
			if notify != nil {
				notify(n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// recoverOp claims and finishes one op. It returns nil, nil when another
// recoverer claimed it first.
func (s *Service) recoverOp(ctx context.Context, id string, rec OpRecord, modRev, lease int64) (*Notice, error) {
	key := s.keys.Op(id)
	deadOwner := rec.Owner
	if rec.Phase == OpPhaseFlipped && rec.Rev == 0 {
		// Until the op is claimed or finished, its key's revision is the
		// flip transaction's.
		rec.Rev = modRev
	}
	rec.Owner = leaseHex(s.cfg.Owner.Lease())
	val, err := rec.encode()
	if err != nil {
		return nil, err
	}
	resp, err := s.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpPut(key, val, clientv3.WithLease(clientv3.LeaseID(lease)))).Commit()
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	if !resp.Succeeded {
		return nil, nil
	}
	opRev := resp.Header.Revision
	s.log.Info("recovery: claimed op", zap.String("op", id), zap.String("phase", rec.Phase), zap.String("dead_owner", deadOwner))
	res := resultFromRecord(id, rec)
	res.Replayed = false
	res.Text = ""
	n := &Notice{Op: id, Route: rec.Route, Channel: rec.Channel, TS: rec.TS, Result: res}

	opUUID, err := uuid.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("op id %q is not a uuid", id)
	}
	ev := audit.Event{
		EventID: uuid.New(), OpID: opUUID, Route: rec.Route, FromVersion: rec.From, ToVersion: rec.To,
		Actor: rec.Actor, ActorName: rec.ActorName, Channel: rec.Channel, Reason: rec.Reason,
		SchemaVersion: audit.SchemaVersion, EtcdRevision: rec.Rev,
	}
	seq := 0
	if rec.Phase == OpPhaseStarted {
		ev.Kind, ev.Outcome = audit.KindOpAbandoned, OutcomeAbandoned
		rec.Detail = "the bot replica running it stopped before the flip; nothing changed"
		n.Text = fmt.Sprintf("op %s (%s of %s to %s by %s) was abandoned: the backflip replica running it stopped before the flip. Nothing changed; run it again if it is still needed.",
			id, rec.Kind, rec.Route, dash(rec.To), mentionID(rec.Actor))
	} else {
		seq = 1
		start := time.Now()
		rr := s.waitRouters(ctx, rec.Route, rec.Epoch, rec.Rev)
		res.Routers = &rr
		res.Timings = append(res.Timings, PhaseTiming{Phase: PhaseRouters, Took: rr.Took})
		if rec.Kind.Aborts() {
			in, took := s.signal(ctx, id, rec.Route, rec.Epoch, rec.From, rec.To, rec.Rev)
			res.InFlight = &in
			res.Timings = append(res.Timings, PhaseTiming{Phase: PhaseInFlight, Took: took})
			n := in.Aborted
			ev.AffectedRequests = &n
		}
		ev.Kind, ev.Outcome = audit.KindOpRecovered, OutcomeRecovered
		ev.Timings = timingsMS(res.Timings, time.Since(start))
		ev.Details = mustJSON(map[string]any{"route_kind": rec.Kind, "dead_owner": deadOwner,
			"routers": map[string]any{"expected": rr.Expected, "converged": rr.Converged, "lost": rr.Lost, "pending": rr.Pending}})
		res.Outcome = OutcomeRecovered
		done := routerDetail(rr)
		if res.InFlight != nil {
			done += "; in-flight " + inflightDetail(*res.InFlight)
		}
		n.Text = fmt.Sprintf("op %s (%s of %s %s → %s by %s, rev %d) was interrupted after its flip when the backflip replica running it stopped; this replica finished it: %s; audit ✓ (op.recovered)",
			id, rec.Kind, rec.Route, rec.From, rec.To, mentionID(rec.Actor), rec.Rev, done)
	}
	ev.OccurredAt = s.now().UTC()
	rec.Phase, rec.Outcome = OpPhaseDone, ev.Outcome
	if ev.Timings != nil {
		rec.Timings = ev.Timings
	}
	rec.Report = n.Text
	if err := s.closeOp(ctx, id, opRev, clientv3.LeaseID(lease), rec, seq, ev); err != nil {
		return nil, err
	}
	res.Audit = AuditState{Queued: true, EventID: ev.EventID.String()}
	n.Outcome = ev.Outcome
	s.log.Info("recovery: op closed", zap.String("op", id), zap.String("outcome", ev.Outcome))
	return n, nil
}
