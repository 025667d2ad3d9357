package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// NewRouteChecker is implemented by warm checkers that can check a version
// of a route that has no routing config yet (its first promote).
// *warm.Checker implements it.
type NewRouteChecker interface {
	CheckNew(ctx context.Context, route, version string) (warm.Report, error)
}

// op is one rollback or promotion on its way.
type op struct {
	s        *Service
	id       string
	kind     routing.Kind
	origin   Origin
	progress ProgressFunc
	res      *Result
	start    time.Time // monotonic: Origin.Received or the call
	phaseAt  time.Time
	// entry is the route as resolved; exists is false for a promote that
	// creates the route.
	entry  routing.Entry
	exists bool
	// opRev is the op key's ModRevision after this replica's last write:
	// the fencing token of every later write of the op.
	opRev  int64
	record OpRecord
	lease  clientv3.LeaseID
	// preflight marks a dry run that stands for a real request (a
	// pre-flight card): its refusals are audited.
	preflight bool
}

// Rollback rolls a route back, in order: resolve the route and target,
// check the target is warm, flip the route in one etcd transaction together
// with the op record, the idempotency key and the first audit event, wait
// for the routers registered before the flip to converge, signal the
// workflow runtimes and wait for their acknowledgements, and record the
// final audit event with every timing. Each phase is reported through
// progress as it starts and ends.
//
// The Result is non-nil whenever the request was understood, also when it
// was refused, so a transport can show the warm report or what changed. The
// error is nil for OutcomeCompleted, OutcomeDegraded and OutcomeDryRun, and
// an *Error otherwise.
func (s *Service) Rollback(ctx context.Context, req RollbackRequest, progress ProgressFunc) (*Result, error) {
	return s.change(ctx, changeRequest{
		kind: routing.KindRollback, origin: req.Origin, route: req.Route, to: req.To, reason: req.Reason,
		forceCold: req.ForceCold, dryRun: req.DryRun || req.Preflight, preflight: req.Preflight, expectRev: req.ExpectRev, op: req.Op,
	}, progress)
}

// Promote moves a route forward to a new version (a deploy pipeline's
// call): warm-check the new version, flip with kind promote, wait for the
// routers, audit model.promote. Requests in flight are not aborted: they
// finish on the version they started on. A route that does not exist yet
// is created by its first promote.
func (s *Service) Promote(ctx context.Context, req PromoteRequest, progress ProgressFunc) (*Result, error) {
	return s.change(ctx, changeRequest{
		kind: routing.KindPromote, origin: req.Origin, route: req.Route, to: req.Version, reason: req.Reason,
		forceCold: req.ForceCold, dryRun: req.DryRun, expectRev: req.ExpectRev, op: req.Op,
	}, progress)
}

// DrillFlipRequest is a drill's flip through the real rollback path: kind
// drill (to the previous version) or drill_return (back, guarded by the
// drill's own revision in ExpectRev).
type DrillFlipRequest struct {
	Origin    Origin
	Kind      routing.Kind
	Route     string
	To        string
	Reason    string
	ExpectRev int64
	Op        string
}

// DrillFlip runs a drill's rollback or return through the same phases as
// Rollback. It is what the drills package calls.
func (s *Service) DrillFlip(ctx context.Context, req DrillFlipRequest, progress ProgressFunc) (*Result, error) {
	if req.Kind != routing.KindDrill && req.Kind != routing.KindDrillReturn {
		return nil, Errorf(EINVALID, "a drill flip is of kind drill or drill_return, not %q", req.Kind)
	}
	return s.change(ctx, changeRequest{
		kind: req.Kind, origin: req.Origin, route: req.Route, to: req.To, reason: req.Reason,
		expectRev: req.ExpectRev, op: req.Op,
	}, progress)
}

type changeRequest struct {
	kind                         routing.Kind
	origin                       Origin
	route, to, reason            string
	forceCold, dryRun, preflight bool
	expectRev                    int64
	op                           string
}

func (s *Service) change(ctx context.Context, req changeRequest, progress ProgressFunc) (*Result, error) {
	o := &op{s: s, kind: req.kind, origin: req.origin, progress: progress, start: time.Now(), preflight: req.preflight}
	if !req.origin.Received.IsZero() && time.Since(req.origin.Received) < time.Hour {
		o.start = req.origin.Received
	}
	o.res = &Result{
		Kind: req.kind, Route: req.route, Reason: strings.TrimSpace(req.reason), Actor: req.origin.Actor,
		Channel: req.origin.Channel, DryRun: req.dryRun, ExpectRev: req.expectRev, StartedAt: s.now(),
	}
	if err := o.validate(req); err != nil {
		return o.finishEarly(err)
	}
	o.res.Op = o.id

	verb := VerbRollback
	if req.kind == routing.KindPromote {
		verb = VerbPromote
	}
	dec, err := s.auth.Authorize(ctx, req.origin, verb, req.route)
	if err != nil {
		return o.finishEarly(err)
	}
	if !dec.Allowed {
		return o.refuse(ctx, &Error{Code: EUNAUTHORIZED, Message: dec.Message})
	}

	if req.origin.IdemKey != "" {
		if res, ok, err := s.replay(ctx, req.origin.IdemKey, o.res); ok {
			return res, err
		}
	}

	o.beginPhase(PhaseResolve)
	if err := o.resolve(ctx, req); err != nil {
		o.endPhase(PhaseResolve, StateFailed, ErrorMessage(err))
		return o.refuse(ctx, err)
	}
	o.endPhase(PhaseResolve, StateDone, fmt.Sprintf("%s → %s at rev %d", dash(o.res.From), o.res.To, o.res.ExpectRev))

	if req.dryRun {
		o.res.InFlightBefore = s.inFlight(ctx, req.route, o.res.From)
		o.res.LastDrill = s.lastDrill(ctx, req.route)
	} else if err := o.create(ctx); err != nil {
		return o.finishEarly(err)
	}

	o.beginPhase(PhaseWarm)
	if err := o.warm(ctx, req.forceCold); err != nil {
		o.endPhase(PhaseWarm, StateFailed, ErrorMessage(err))
		return o.refuse(ctx, err)
	}
	detail := o.res.Warm.Summary()
	if o.res.ForcedCold {
		detail += " — forced cold"
	}
	o.endPhase(PhaseWarm, StateDone, detail)

	if req.dryRun {
		o.res.Outcome = OutcomeDryRun
		o.res.Total = time.Since(o.start)
		o.res.FinishedAt = s.now()
		return o.res, nil
	}

	o.beginPhase(PhaseFlip)
	if res, done, err := o.flip(ctx); done {
		return res, err
	}
	o.endPhase(PhaseFlip, StateDone, fmt.Sprintf("rev %d, epoch %d", o.res.Revision, o.res.Epoch))
	return o.afterFlip(ctx)
}

// validate checks the request's names before anything touches etcd.
func (o *op) validate(req changeRequest) error {
	usage := RollbackUsage
	if req.kind == routing.KindPromote {
		usage = "backflipctl promote <route> <version> [--expect-rev N] --reason \"...\""
	}
	bad := func(format string, args ...any) error {
		return &Error{Code: EINVALID, Message: fmt.Sprintf(format, args...), Usage: usage}
	}
	if err := routing.ValidateRoute(req.route); err != nil {
		return bad("%s", trimInvalid(err))
	}
	if strings.EqualFold(req.to, routing.PreviousVersion) {
		req.to = ""
	}
	if req.to != "" {
		if err := routing.ValidateVersion(req.to); err != nil {
			return bad("%s", trimInvalid(err))
		}
	} else if req.kind != routing.KindRollback {
		return bad("a %s needs the version to move to", req.kind)
	}
	o.res.To = req.to
	if o.res.Reason == "" && req.kind != routing.KindPromote {
		return bad("a reason is required: say why, e.g. /rollback %s latency spike after deploy", req.route)
	}
	if len(o.res.Reason) > routing.MaxReasonLen {
		return bad("the reason is %d bytes; at most %d are kept", len(o.res.Reason), routing.MaxReasonLen)
	}
	if strings.TrimSpace(req.origin.Actor.ID) == "" {
		return Errorf(EINVALID, "the request has no actor")
	}
	if len(req.origin.Actor.ID) > routing.MaxActorLen {
		return Errorf(EINVALID, "the actor id is longer than %d bytes", routing.MaxActorLen)
	}
	if req.expectRev < 0 {
		return bad("expected revision %d is negative", req.expectRev)
	}
	if req.origin.IdemKey != "" {
		if err := validateIdemKey(req.origin.IdemKey); err != nil {
			return err
		}
	}
	o.id = req.op
	if o.id == "" {
		o.id = uuid.NewString()
	} else if _, err := uuid.Parse(o.id); err != nil || len(o.id) != 36 {
		return Errorf(EINVALID, "op id %q is not a uuid", Clip(o.id, 40))
	}
	return nil
}

// resolve reads the route and decides the target.
func (o *op) resolve(ctx context.Context, req changeRequest) error {
	s := o.s
	entry, err := s.routes.Get(ctx, req.route)
	switch {
	case errors.Is(err, routing.ErrNotFound):
		if req.kind != routing.KindPromote {
			return Errorf(ENOTFOUND, "route %s does not exist; `/rollback status` lists the routes", req.route)
		}
		if req.expectRev != 0 {
			return Errorf(ECONFLICT, "route %s does not exist (any more), but revision %d was expected; nothing changed", req.route, req.expectRev)
		}
		o.res.ExpectRev = 0
		return nil
	case errors.Is(err, routing.ErrMalformed):
		return wrapf(err, EREFUSED, "the routing config of %s in etcd is unreadable (%v); nothing changed — fix it with `backflipctl promote` before rolling back", req.route, err)
	case err != nil:
		return wrapf(err, EUNAVAILABLE, "could not read route %s from etcd; nothing changed", req.route)
	}
	o.entry, o.exists = entry, true
	cfg := entry.Config
	o.res.From = cfg.Active
	if req.expectRev != 0 && req.expectRev != entry.ModRevision {
		return Errorf(ECONFLICT, "%s changed since you looked (revision %d, now %d): %s. Nothing changed; look again and re-run if still needed.",
			req.route, req.expectRev, entry.ModRevision, describeChange(cfg, s.now()))
	}
	o.res.ExpectRev = entry.ModRevision
	if o.res.To == "" {
		switch {
		case cfg.Previous == "":
			return Errorf(EREFUSED, "%s has no previous version to roll back to (it is on %s since its first promote); name one with --to", req.route, cfg.Active)
		case cfg.Kind == routing.KindRollback || cfg.Kind == routing.KindDrill:
			return Errorf(EREFUSED, "%s was already %s from %s by %s %s (now on %s); a second rollback without --to would undo it. To go back to %s, use --to %s; to go further back, name the version with --to.",
				req.route, pastTense(cfg.Kind), cfg.From, mentionID(cfg.Actor), Ago(s.now(), cfg.At), cfg.Active, cfg.From, cfg.From)
		}
		o.res.To = cfg.Previous
	}
	if o.res.To == cfg.Active {
		return Errorf(EREFUSED, "%s is already on %s (%s); nothing to do", req.route, cfg.Active, describeChange(cfg, s.now()))
	}
	o.res.Epoch = cfg.Epoch + 1
	return nil
}

// create writes the op record before the warm check, so an op whose
// replica dies before the flip is found and closed by recovery.
func (o *op) create(ctx context.Context) error {
	s := o.s
	lease, err := s.opLeaseID(ctx)
	if err != nil {
		return wrapf(err, EUNAVAILABLE, "etcd did not answer; nothing changed")
	}
	o.lease = lease
	o.record = OpRecord{
		Kind: o.kind, Route: o.res.Route, From: o.res.From, To: o.res.To, Phase: OpPhaseStarted,
		Actor: o.origin.Actor.ID, ActorName: o.origin.Actor.Name, Reason: o.res.Reason,
		Channel: o.origin.Channel.ID, TS: o.origin.TS, Idem: o.origin.IdemKey,
		Owner: leaseHex(s.cfg.Owner.Lease()), ExpectRev: o.res.ExpectRev, Started: o.res.StartedAt.UTC(),
	}
	val, err := o.record.encode()
	if err != nil {
		return wrapf(err, EINTERNAL, "op record")
	}
	key := s.keys.Op(o.id)
	resp, err := s.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, val, clientv3.WithLease(lease))).Commit()
	if err != nil {
		return wrapf(err, EUNAVAILABLE, "etcd did not answer; nothing changed")
	}
	if !resp.Succeeded {
		return Errorf(ECONFLICT, "op %s already exists; nothing changed", o.id)
	}
	o.opRev = resp.Header.Revision
	return nil
}

// warm runs the warm check of the target.
func (o *op) warm(ctx context.Context, forceCold bool) error {
	s := o.s
	var (
		rep warm.Report
		err error
	)
	if !o.exists {
		nc, ok := s.cfg.Warm.(NewRouteChecker)
		if !ok {
			return Errorf(EINTERNAL, "this warm checker cannot check a route that does not exist yet")
		}
		rep, err = nc.CheckNew(ctx, o.res.Route, o.res.To)
	} else {
		rep, err = s.cfg.Warm.Check(ctx, o.res.Route, o.res.To)
	}
	var nw *warm.NotWarmError
	switch {
	case errors.As(err, &nw):
		o.res.Warm = &rep
		if rep.TargetNodes == 0 {
			return Errorf(EREFUSED, "no node serves %s@%s, so there is nothing to route to — not even with --force-cold. %s", o.res.Route, o.res.To, rep.Reason)
		}
		if !forceCold {
			return &Error{Code: EREFUSED, Message: fmt.Sprintf("%s@%s is not warm, so this would be a cold start, not a rollback: %s; %s.%s",
				o.res.Route, o.res.To, rep.Summary(), strings.TrimSuffix(rep.Reason, "."), coldNodes(rep)), Err: err}
		}
		o.res.ForcedCold = true
		return nil
	case err != nil:
		o.res.Warm = nil
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return wrapf(err, EUNAVAILABLE, "the warm check of %s@%s did not finish; nothing changed", o.res.Route, o.res.To)
		}
		return wrapf(err, EUNAVAILABLE, "the warm check of %s@%s could not be made (%v); nothing changed", o.res.Route, o.res.To, err)
	}
	o.res.Warm = &rep
	return nil
}

// coldNodes lists up to five nodes that are not warm, with each distinct
// reason once (a fleet-wide problem is usually one reason on every node).
func coldNodes(rep warm.Report) string {
	nodes := rep.NotWarm()
	if len(nodes) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(" Not warm:")
	seen := map[string]bool{}
	for i, n := range nodes {
		if i == 5 {
			fmt.Fprintf(&b, " and %d more", len(nodes)-5)
			break
		}
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s (%s", n.Node, n.State)
		switch {
		case n.Reason == "":
		case seen[n.Reason]:
			b.WriteString(", same")
		default:
			seen[n.Reason] = true
			fmt.Fprintf(&b, ": %s", Clip(n.Reason, 120))
		}
		b.WriteString(")")
	}
	b.WriteString(". Use --force-cold to roll back anyway (audited).")
	return b.String()
}

// flip commits the route change with the op record, the idempotency key and
// the first audit event. done is true when the op ended here (refused,
// replayed or failed); res and err are then its answer.
func (o *op) flip(ctx context.Context) (res *Result, done bool, err error) {
	s := o.s
	o.record.Phase = OpPhaseFlipped
	o.record.Epoch = o.res.Epoch
	o.record.ForcedCold = o.res.ForcedCold
	o.record.Timings = timingsMS(o.res.Timings, 0)
	delete(o.record.Timings, "total")
	val, err := o.record.encode()
	if err != nil {
		res, err := o.fail(ctx, wrapf(err, EINTERNAL, "op record"))
		return res, true, err
	}
	ev := o.event(auditKind(o.kind), "flipped", "")
	outbox, err := audit.OutboxOp(s.audit, 0, ev)
	if err != nil {
		res, err := o.fail(ctx, wrapf(err, EINTERNAL, "audit event"))
		return res, true, err
	}
	opKey := s.keys.Op(o.id)
	ch := routing.Change{
		Route: o.res.Route, Kind: o.kind, To: o.res.To, ExpectRev: o.res.ExpectRev, Op: o.id,
		Reason: o.res.Reason, Actor: o.origin.Actor.ID,
		Cmps: []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(opKey), "=", o.opRev)},
		Ops:  []clientv3.Op{clientv3.OpPut(opKey, val, clientv3.WithLease(o.lease)), outbox},
	}
	if o.exists {
		ch.Seen = &o.entry
	}
	if k := o.origin.IdemKey; k != "" {
		ik := s.keys.Idem(k)
		ch.Cmps = append(ch.Cmps, clientv3.Compare(clientv3.CreateRevision(ik), "=", 0))
		ch.Ops = append(ch.Ops, clientv3.OpPut(ik, o.id, clientv3.WithLease(o.lease)))
	}
	r, err := s.routes.Flip(ctx, ch)
	var conflict *routing.ConflictError
	switch {
	case err == nil:
		o.res.Revision, o.res.Epoch = r.Revision, r.Config.Epoch
		o.opRev = r.Revision
		o.record.Rev = r.Revision
		return nil, false, nil
	case errors.As(err, &conflict):
		// Fix (found by the fault suite, internal/faults
		// TestFlipReplyLost): a conflict may come from the re-read after a
		// failed transaction, and then it can hide this op's own flip —
		// committed, its reply lost, the route moved on by another op
		// before the re-read. The route alone cannot tell that from a lost
		// race; the op record can: only the flip transaction moves it past
		// o.opRev on this replica's behalf. Telling the operator "nothing
		// was changed" there would be wrong.
		switch landed, rev, lerr := o.ownFlipLanded(ctx); {
		case landed:
			s.log.Warn("flip landed despite a conflict on re-read; the route has moved on since", zap.String("op", o.id),
				zap.String("route", o.res.Route), zap.Int64("revision", rev), zap.NamedError("conflict", err))
			o.res.Revision, o.opRev, o.record.Rev = rev, rev, rev
			return nil, false, nil
		case lerr != nil:
			o.endPhase(PhaseFlip, StateFailed, "outcome unknown")
			return o.res, true, wrapf(lerr, EUNAVAILABLE, "etcd did not confirm the flip of %s, and %s has changed since (%s): the flip may or may not have happened before that. Check with `/rollback status %s` before trying again (op %s).",
				o.res.Route, o.res.Route, s.describeWinner(ctx, conflict), o.res.Route, o.id)
		}
		o.endPhase(PhaseFlip, StateFailed, "another change won")
		if k := o.origin.IdemKey; k != "" {
			// The same request on another replica may be what won.
			if res, ok, rerr := s.replay(ctx, k, o.res); ok {
				o.closeUnflipped(ctx, OutcomeRefused, "duplicate of op "+res.Op, nil)
				return res, true, rerr
			}
		}
		res, err := o.refuseAfterCreate(ctx, Errorf(ECONFLICT, "%s was changed by someone else first: %s. Nothing was changed by this request.",
			o.res.Route, s.describeWinner(ctx, conflict)))
		return res, true, err
	case errors.Is(err, routing.ErrGuard):
		o.endPhase(PhaseFlip, StateFailed, "guard")
		if k := o.origin.IdemKey; k != "" {
			if res, ok, rerr := s.replay(ctx, k, o.res); ok {
				o.closeUnflipped(ctx, OutcomeRefused, "duplicate of op "+res.Op, nil)
				return res, true, rerr
			}
		}
		return o.res, true, Errorf(EUNAVAILABLE, "op %s was taken over by another backflip replica (this one was presumed dead); it reports the outcome. Nothing was changed by this one.", o.id)
	case errors.Is(err, routing.ErrOutcomeUnknown):
		o.endPhase(PhaseFlip, StateFailed, "outcome unknown")
		return o.res, true, wrapf(err, EUNAVAILABLE, "etcd did not confirm the flip of %s and could not be re-read: it may or may not have happened. Check with `/rollback status %s` before trying again (op %s).", o.res.Route, o.res.Route, o.id)
	default:
		o.endPhase(PhaseFlip, StateFailed, "etcd error")
		res, err := o.fail(ctx, wrapf(err, EUNAVAILABLE, "the flip of %s did not happen (%v); nothing changed", o.res.Route, err))
		return res, true, err
	}
}

// ownFlipLanded reports whether this op's flip transaction committed, from
// the op record it writes: moved past o.opRev, in phase flipped, by this
// replica, for this op's epoch. rev is then the flip's revision. An op
// record another replica took over (recovery presumed this one dead) is
// reported as an error: whether the flip landed first is that replica's
// to report.
func (o *op) ownFlipLanded(ctx context.Context) (landed bool, rev int64, err error) {
	key := o.s.keys.Op(o.id)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	resp, err := o.s.etcd.Get(rctx, key)
	if err != nil {
		return false, 0, err
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision == o.opRev {
		return false, 0, nil
	}
	rec, err := DecodeOpRecord(key, resp.Kvs[0].Value)
	if err != nil {
		return false, 0, err
	}
	if rec.Owner != o.record.Owner {
		return false, 0, fmt.Errorf("op %s was taken over by another replica", o.id)
	}
	return rec.Phase == OpPhaseFlipped && rec.Epoch == o.res.Epoch, resp.Kvs[0].ModRevision, nil
}

// afterFlip runs the phases after a flip: routers, in-flight, audit. From
// here on the route has changed, so nothing is a refusal any more: every
// problem is reported in the result, and the op is finished whatever
// happens to the caller's context.
func (o *op) afterFlip(ctx context.Context) (*Result, error) {
	ctx = context.WithoutCancel(ctx)
	s := o.s
	o.beginPhase(PhaseRouters)
	rr := s.waitRouters(ctx, o.res.Route, o.res.Epoch, o.res.Revision)
	o.res.Routers = &rr
	state := StateDone
	if rr.Converged < rr.Expected || rr.Error != "" {
		state = StateFailed
	}
	o.endPhaseTook(PhaseRouters, state, routerDetail(rr), rr.Took)

	if o.kind.Aborts() {
		o.beginPhase(PhaseInFlight)
		in, took := s.signal(ctx, o.id, o.res.Route, o.res.Epoch, o.res.From, o.res.To, o.res.Revision)
		o.res.InFlight = &in
		state := StateDone
		if !in.Complete {
			state = StateFailed
		}
		o.endPhaseTook(PhaseInFlight, state, inflightDetail(in), took)
	}

	o.res.Outcome = OutcomeCompleted
	if rr.Converged < rr.Expected || rr.Error != "" || (o.res.InFlight != nil && !o.res.InFlight.Complete) {
		o.res.Outcome = OutcomeDegraded
	}
	o.beginPhase(PhaseAudit)
	o.finalize(ctx, auditKind(o.kind))
	o.endPhase(PhaseAudit, map[bool]PhaseState{true: StateDone, false: StateFailed}[o.res.Audit.Queued], auditDetail(o.res.Audit))
	return o.res, nil
}

// finalize writes the final audit event and closes the op record in one
// transaction guarded on the op's revision, retrying while etcd fails for
// up to FinalizeTimeout. It sets res.Audit.
func (o *op) finalize(ctx context.Context, kind audit.Kind) {
	s := o.s
	o.res.Total = time.Since(o.start)
	o.res.FinishedAt = s.now()
	o.res.Timings = append(o.res.Timings, PhaseTiming{Phase: PhaseAudit})
	ev := o.event(kind, o.res.Outcome, "")
	o.res.Timings = o.res.Timings[:len(o.res.Timings)-1]
	o.record.Phase, o.record.Outcome = OpPhaseDone, o.res.Outcome
	o.record.Timings = ev.Timings
	o.record.Report = o.res.Report()
	err := s.closeOp(ctx, o.id, o.opRev, o.lease, o.record, 1, ev)
	if err != nil {
		o.res.Audit = AuditState{Error: err.Error()}
		s.log.Error("final audit event not queued; the op stays open for recovery", zap.String("op", o.id), zap.Error(err))
		return
	}
	o.res.Audit = AuditState{Queued: true, EventID: ev.EventID.String()}
}

// closeOp writes rec (phase done) and the op's event at seq, guarded on
// the op key's revision, retrying transient etcd errors.
func (s *Service) closeOp(ctx context.Context, id string, opRev int64, lease clientv3.LeaseID, rec OpRecord, seq int, ev audit.Event) error {
	val, err := rec.encode()
	if err != nil {
		return err
	}
	put, err := audit.OutboxOp(s.audit, seq, ev)
	if err != nil {
		return err
	}
	key := s.keys.Op(id)
	opts := []clientv3.OpOption{}
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease))
	}
	deadline := time.Now().Add(s.cfg.FinalizeTimeout)
	wait := 50 * time.Millisecond
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := s.etcd.Txn(tctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", opRev)).
			Then(clientv3.OpPut(key, val, opts...), put).Commit()
		cancel()
		if err == nil {
			if !resp.Succeeded {
				return fmt.Errorf("op %s was taken over by another replica", id)
			}
			return nil
		}
		// The write may have landed with its reply lost: if the record
		// now is ours and done, it did.
		if g, gerr := s.etcd.Get(ctx, key); gerr == nil && len(g.Kvs) == 1 {
			if cur, derr := DecodeOpRecord(key, g.Kvs[0].Value); derr == nil && cur.Phase == OpPhaseDone && cur.Owner == rec.Owner && cur.Outcome == rec.Outcome {
				return nil
			}
			if g.Kvs[0].ModRevision != opRev {
				return fmt.Errorf("op %s was changed by another replica", id)
			}
		}
		if time.Now().Add(wait).After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("etcd: %w", err)
		}
		s.log.Warn("closing op failed; retrying", zap.String("op", id), zap.Error(err))
		time.Sleep(wait)
		wait = min(2*wait, 2*time.Second)
	}
}

// event builds an audit event of the op.
func (o *op) event(kind audit.Kind, outcome, detail string) audit.Event {
	opID, _ := uuid.Parse(o.id)
	ev := audit.Event{
		EventID: uuid.New(), OpID: opID, Kind: kind, Route: o.res.Route,
		FromVersion: o.res.From, ToVersion: o.res.To,
		Actor: o.origin.Actor.ID, ActorName: o.origin.Actor.Name, Channel: o.origin.Channel.ID,
		Reason: o.res.Reason, Outcome: outcome, EtcdRevision: o.res.Revision,
		SchemaVersion: audit.SchemaVersion, OccurredAt: o.s.now().UTC(),
	}
	if len(o.res.Timings) > 0 {
		ev.Timings = timingsMS(o.res.Timings, time.Since(o.start))
	}
	if in := o.res.InFlight; in != nil {
		n := in.Aborted
		ev.AffectedRequests = &n
	}
	details := map[string]any{"route_kind": o.kind}
	if o.res.ForcedCold {
		details["forced_cold"] = true
	}
	if o.res.Warm != nil {
		details["warm"] = o.res.Warm.Summary()
	}
	if rr := o.res.Routers; rr != nil {
		details["routers"] = map[string]any{"expected": rr.Expected, "converged": rr.Converged, "lost": rr.Lost, "pending": rr.Pending}
	}
	if in := o.res.InFlight; in != nil {
		details["inflight"] = map[string]any{"expected": in.Expected, "acked": in.Acked, "aborted": in.Aborted, "reissued": in.Reissued,
			"missing": in.Missing, "pending_reissue": in.PendingReissue, "vanished": in.Vanished}
	}
	if o.origin.IdemKey != "" {
		details["idem"] = o.origin.IdemKey
	}
	if o.origin.TS != "" {
		details["ts"] = o.origin.TS
	}
	if detail != "" {
		details["detail"] = Clip(detail, 1000)
	}
	ev.Details, _ = json.Marshal(details)
	return ev
}

// refuse ends a request that changed nothing, before any op record exists:
// authorization, resolve and input refusals are audited as rollback.refused
// (promotions too: the kind says what was refused in details), failures to
// reach etcd are not (there is nowhere to queue them) but logged.
func (o *op) refuse(ctx context.Context, err error) (*Result, error) {
	if o.opRev != 0 {
		return o.refuseAfterCreate(ctx, err)
	}
	o.res.Outcome = OutcomeRefused
	code := ErrorCode(err)
	if code == EUNAVAILABLE || code == EINTERNAL {
		o.res.Outcome = OutcomeFailed
	}
	o.res.Total = time.Since(o.start)
	o.res.FinishedAt = o.s.now()
	if (o.res.DryRun && !o.preflight) || code == EINVALID {
		return o.res, err
	}
	kind := audit.KindRollbackRefused
	if o.res.Outcome == OutcomeFailed {
		kind = audit.KindRollbackFailed
	}
	ev := o.event(kind, o.res.Outcome, ErrorMessage(err))
	put, perr := audit.OutboxOp(o.s.audit, 0, ev)
	if perr == nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		_, perr = o.s.etcd.Do(actx, put)
		cancel()
	}
	if perr != nil {
		o.s.log.Warn("refusal not audited", zap.String("op", o.id), zap.String("route", o.res.Route), zap.Error(perr), zap.NamedError("refusal", err))
		o.res.Audit = AuditState{Error: perr.Error()}
	} else {
		o.res.Audit = AuditState{Queued: true, EventID: ev.EventID.String()}
	}
	o.s.log.Info("refused", zap.String("op", o.id), zap.String("route", o.res.Route), zap.String("actor", o.origin.Actor.ID), zap.String("code", code), zap.Error(err))
	return o.res, err
}

// refuseAfterCreate ends a request whose op record exists but that never
// flipped: the op record is closed with the refusal and the event queued in
// one transaction.
func (o *op) refuseAfterCreate(ctx context.Context, err error) (*Result, error) {
	outcome := OutcomeRefused
	if c := ErrorCode(err); c == EUNAVAILABLE || c == EINTERNAL {
		outcome = OutcomeFailed
	}
	o.closeUnflipped(ctx, outcome, ErrorMessage(err), err)
	return o.res, err
}

func (o *op) fail(ctx context.Context, err error) (*Result, error) {
	o.closeUnflipped(ctx, OutcomeFailed, ErrorMessage(err), err)
	return o.res, err
}

// closeUnflipped closes an op that did not flip, auditing why.
func (o *op) closeUnflipped(ctx context.Context, outcome, detail string, cause error) {
	o.res.Outcome = outcome
	o.res.Total = time.Since(o.start)
	o.res.FinishedAt = o.s.now()
	kind := audit.KindRollbackRefused
	if outcome == OutcomeFailed {
		kind = audit.KindRollbackFailed
	}
	ev := o.event(kind, outcome, detail)
	rec := o.record
	rec.Phase, rec.Outcome, rec.Detail = OpPhaseDone, outcome, Clip(detail, 1000)
	rec.Timings = ev.Timings
	if err := o.s.closeOp(context.WithoutCancel(ctx), o.id, o.opRev, o.lease, rec, 0, ev); err != nil {
		o.res.Audit = AuditState{Error: err.Error()}
		o.s.log.Warn("refusal not audited", zap.String("op", o.id), zap.Error(err), zap.NamedError("refusal", cause))
		return
	}
	o.res.Audit = AuditState{Queued: true, EventID: ev.EventID.String()}
}

// finishEarly ends a request that failed before it was an op (bad input,
// etcd unreachable before anything was written).
func (o *op) finishEarly(err error) (*Result, error) {
	o.res.Outcome = OutcomeRefused
	if c := ErrorCode(err); c == EUNAVAILABLE || c == EINTERNAL {
		o.res.Outcome = OutcomeFailed
	}
	o.res.Total = time.Since(o.start)
	o.res.FinishedAt = o.s.now()
	return o.res, err
}

func (o *op) beginPhase(p Phase) {
	o.phaseAt = time.Now()
	o.progress.report(Progress{Op: o.id, Route: o.res.Route, Phase: p, State: StateRunning, From: o.res.From, To: o.res.To})
}

func (o *op) endPhase(p Phase, st PhaseState, detail string) {
	o.endPhaseTook(p, st, detail, time.Since(o.phaseAt))
}

func (o *op) endPhaseTook(p Phase, st PhaseState, detail string, took time.Duration) {
	if st != StateFailed || p != PhaseResolve {
		o.res.Timings = append(o.res.Timings, PhaseTiming{Phase: p, Took: took})
	}
	o.progress.report(Progress{Op: o.id, Route: o.res.Route, Phase: p, State: st, Took: took, Detail: detail, From: o.res.From, To: o.res.To})
}

// waitRouters waits for the routers registered before the flip.
func (s *Service) waitRouters(ctx context.Context, route string, epoch, flipRev int64) RouterResult {
	start := time.Now()
	conv, err := routing.WaitConverged(ctx, s.etcd, s.cfg.Prefix, route, epoch, flipRev, s.cfg.ConvergeTimeout)
	rr := RouterResult{Expected: len(conv.Expected), Converged: len(conv.Converged), Lost: conv.Lost, Pending: conv.Pending}
	rr.Pending = append(rr.Pending, conv.Malformed...)
	if !conv.Last.IsZero() && rr.Converged == rr.Expected {
		rr.Took = conv.Last.Sub(s.now().Add(-time.Since(start)))
	}
	if rr.Took <= 0 || rr.Converged < rr.Expected {
		rr.Took = time.Since(start)
	}
	if err != nil {
		s.log.Warn("router convergence wait ended early", zap.String("route", route), zap.Error(err))
		if rr.Expected == 0 {
			rr.Error = "router registrations could not be read: " + Clip(err.Error(), 200)
		}
	}
	return rr
}

// signal tells the runtimes and waits for their acknowledgements.
func (s *Service) signal(ctx context.Context, opID, route string, epoch int64, from, to string, flipRev int64) (runtime.Result, time.Duration) {
	start := time.Now()
	sig, err := s.cfg.Runtime.SignalRollback(ctx, opID, route, epoch, from, to, flipRev)
	if err != nil {
		s.log.Error("runtime signal failed", zap.String("op", opID), zap.Error(err))
		return runtime.Result{Missing: []string{"(signal failed: " + Clip(err.Error(), 200) + ")"}}, time.Since(start)
	}
	res, err := s.cfg.Runtime.WaitAcks(ctx, sig)
	if err != nil {
		s.log.Warn("waiting for runtime acks ended early", zap.String("op", opID), zap.Error(err))
	}
	took := time.Since(start)
	if res.Complete && res.Drain > 0 {
		took = res.Drain
	}
	return res, took
}

// inFlight sums the runtime instances' in-flight requests on route@version.
func (s *Service) inFlight(ctx context.Context, route, version string) int {
	resp, err := s.etcd.Get(ctx, runtime.Keys{Prefix: s.cfg.Prefix}.Instances(), clientv3.WithPrefix())
	if err != nil {
		return 0
	}
	n := 0
	for _, kv := range resp.Kvs {
		var rec runtime.InstanceRecord
		if runtime.Decode(kv.Value, &rec) != nil {
			continue
		}
		n += rec.InFlight[route][version]
	}
	return n
}

func routerDetail(rr RouterResult) string {
	if rr.Error != "" {
		return "convergence unknown: " + rr.Error
	}
	d := fmt.Sprintf("%d/%d routers converged", rr.Converged, rr.Expected)
	if len(rr.Lost) > 0 {
		d += fmt.Sprintf(", lost: %s", listIDs(rr.Lost))
	}
	if len(rr.Pending) > 0 {
		d += fmt.Sprintf(", not confirmed: %s", listIDs(rr.Pending))
	}
	return d
}

func inflightDetail(in runtime.Result) string {
	d := fmt.Sprintf("%d aborted, %d re-issued (%d/%d runtimes)", in.Aborted, in.Reissued, in.Acked, in.Expected)
	if len(in.Missing) > 0 {
		d += ", no answer from " + listIDs(in.Missing)
	}
	if len(in.PendingReissue) > 0 {
		d += ", re-issue not confirmed by " + listIDs(in.PendingReissue)
	}
	return d
}

func auditDetail(a AuditState) string {
	if a.Queued {
		return "queued"
	}
	return "not queued: " + a.Error
}

func listIDs(ids []string) string {
	if len(ids) <= 5 {
		return strings.Join(ids, ", ")
	}
	return strings.Join(ids[:5], ", ") + fmt.Sprintf(" and %d more", len(ids)-5)
}

// describeChange says how a route got to its current config.
func describeChange(cfg routing.RouteConfig, now time.Time) string {
	switch cfg.Kind {
	case routing.KindPromote:
		if cfg.From == "" {
			return fmt.Sprintf("created on %s by %s %s", cfg.Active, mentionID(cfg.Actor), Ago(now, cfg.At))
		}
		return fmt.Sprintf("promoted %s → %s by %s %s", cfg.From, cfg.Active, mentionID(cfg.Actor), Ago(now, cfg.At))
	default:
		return fmt.Sprintf("%s %s → %s by %s %s", pastTense(cfg.Kind), cfg.From, cfg.Active, mentionID(cfg.Actor), Ago(now, cfg.At))
	}
}

// describeWinner says who won a race and how their op is doing.
func (s *Service) describeWinner(ctx context.Context, c *routing.ConflictError) string {
	if !c.Exists {
		return "the route was deleted"
	}
	d := describeChange(c.Current, s.now())
	if err := routing.ValidateOpID(c.Current.Op); err == nil {
		key := s.keys.Op(c.Current.Op)
		if resp, err := s.etcd.Get(ctx, key); err == nil && len(resp.Kvs) == 1 {
			if rec, err := DecodeOpRecord(key, resp.Kvs[0].Value); err == nil {
				if rec.Outcome != "" {
					d += fmt.Sprintf(" (op %s, %s)", c.Current.Op, rec.Outcome)
				} else {
					d += fmt.Sprintf(" (op %s, in progress)", c.Current.Op)
				}
				return d
			}
		}
		d += fmt.Sprintf(" (op %s)", c.Current.Op)
	}
	return d
}

func pastTense(k routing.Kind) string {
	switch k {
	case routing.KindPromote:
		return "promoted"
	case routing.KindDrill:
		return "rolled back by a drill"
	case routing.KindDrillReturn:
		return "returned by a drill"
	}
	return "rolled back"
}

// mentionID renders an actor id for chat.
func mentionID(id string) string { return Actor{ID: id}.Mention() }

func dash(s string) string {
	if s == "" {
		return "(new)"
	}
	return s
}

// trimInvalid drops routing's "invalid: " prefix from a validation error.
func trimInvalid(err error) string {
	return strings.TrimPrefix(err.Error(), routing.ErrInvalid.Error()+": ")
}

// auditKind is the audit kind of a route change. A drill's flips are
// rollbacks of the model like any other (details say route_kind drill);
// the drill's own outcome is the drills package's drill.* event.
func auditKind(k routing.Kind) audit.Kind {
	if k == routing.KindPromote {
		return audit.KindPromote
	}
	return audit.KindRollback
}
