package commands

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// replayWait bounds how long a duplicate request waits for the first one
// to finish before answering that it is still running.
const replayWait = 30 * time.Second

// replay answers a request whose idempotency key was used before with the
// first request's result. ok is false when the key is unused (or could not
// be read: the flip transaction's guard on the key still prevents a second
// flip, so going on is safe).
func (s *Service) replay(ctx context.Context, key string, cur *Result) (res *Result, ok bool, err error) {
	resp, gerr := s.etcd.Get(ctx, s.keys.Idem(key))
	if gerr != nil || len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	opID := string(resp.Kvs[0].Value)
	if routing.ValidateOpID(opID) != nil {
		return cur, true, Errorf(EINTERNAL, "idempotency key %s holds a malformed op id", key)
	}
	wctx, cancel := context.WithTimeout(ctx, replayWait)
	defer cancel()
	rec, err := s.waitOpDone(wctx, opID)
	if err != nil {
		return cur, true, Errorf(EUNAVAILABLE, "this request was already received (op %s), but its state could not be read: %v", opID, err)
	}
	res = resultFromRecord(opID, rec)
	switch rec.Outcome {
	case OutcomeCompleted, OutcomeDegraded, OutcomeRecovered:
		return res, true, nil
	case "":
		return res, true, Errorf(ECONFLICT, "this request is already being handled (op %s, %s); its result will be reported there", opID, rec.Phase)
	case OutcomeFailed:
		return res, true, Errorf(EUNAVAILABLE, "this request was already handled (op %s) and failed: %s", opID, rec.Detail)
	default:
		return res, true, Errorf(EREFUSED, "this request was already handled (op %s) and refused: %s", opID, rec.Detail)
	}
}

// waitOpDone reads an op record and, while it is not done, watches it until
// it is or ctx ends; it then returns the latest record.
func (s *Service) waitOpDone(ctx context.Context, opID string) (OpRecord, error) {
	key := s.keys.Op(opID)
	resp, err := s.etcd.Get(ctx, key)
	if err != nil {
		return OpRecord{}, err
	}
	if len(resp.Kvs) == 0 {
		return OpRecord{}, errNoOp(opID)
	}
	rec, err := DecodeOpRecord(key, resp.Kvs[0].Value)
	if err != nil || rec.Phase == OpPhaseDone {
		return rec, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range s.etcd.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1)) {
		if wr.Err() != nil {
			return rec, nil
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				return rec, nil
			}
			if r, err := DecodeOpRecord(key, ev.Kv.Value); err == nil {
				rec = r
				if rec.Phase == OpPhaseDone {
					return rec, nil
				}
			}
		}
	}
	return rec, nil
}

type errNoOp string

func (e errNoOp) Error() string {
	return "op " + string(e) + " has no record (expired or never started)"
}

// resultFromRecord rebuilds what an op record keeps of a result.
func resultFromRecord(opID string, rec OpRecord) *Result {
	res := &Result{
		Op: opID, Kind: rec.Kind, Route: rec.Route, From: rec.From, To: rec.To, Reason: rec.Reason,
		Actor: Actor{ID: rec.Actor, Name: rec.ActorName}, Channel: Channel{ID: rec.Channel},
		ExpectRev: rec.ExpectRev, Revision: rec.Rev, Epoch: rec.Epoch, ForcedCold: rec.ForcedCold,
		Replayed: true, Text: rec.Report, Outcome: rec.Outcome, StartedAt: rec.Started,
	}
	for _, p := range []Phase{PhaseResolve, PhaseWarm, PhaseFlip, PhaseRouters, PhaseInFlight, PhaseAudit} {
		if v, ok := rec.Timings[string(p)]; ok {
			res.Timings = append(res.Timings, PhaseTiming{Phase: p, Took: time.Duration(v * float64(time.Millisecond))})
		}
	}
	res.Total = time.Duration(rec.Timings["total"] * float64(time.Millisecond))
	res.Audit.Queued = rec.Phase == OpPhaseDone
	return res
}
