package drills

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// RunDryRun is the State of a dry run: the checks ran and nothing changed.
const RunDryRun = "dry_run"

// The drill's own phases, reported through the ProgressFunc given to Run.
// Between a flip phase's running and done reports, the flip's own phases
// (resolve, warm, flip, routers, inflight, audit) are passed through as
// commands reports them, with the flip's op id, so a live message can show
// them too.
const (
	PhaseDrillCheck    commands.Phase = "drill.check"
	PhaseDrillRollback commands.Phase = "drill.rollback"
	PhaseDrillVerify   commands.Phase = "drill.verify"
	PhaseDrillHold     commands.Phase = "drill.hold"
	PhaseDrillReturn   commands.Phase = "drill.return"
)

// Where a drill stopped (Outcome.FailedAt).
const (
	// StepCheck: a pre-flight check refused the drill (quiet period, an
	// op in progress, no previous version, a drill that never returned).
	StepCheck = "check"
	// StepWarm: the previous version is not warm, so a real rollback would
	// be a cold start. This is a finding, recorded as drill.failed.
	StepWarm = "warm"
	// StepRollback: the drill's flip to the previous version.
	StepRollback = "rollback"
	// StepVerify: routers, runtime acknowledgements or the canary on the
	// rolled-back version.
	StepVerify = "verify"
	// StepHold: the wait on the previous version (cancelled, or the route
	// could not be watched).
	StepHold = "hold"
	// StepReturn: the flip back to the original version.
	StepReturn = "return"
)

// auditTimeout bounds the writes of a drill's final event to the etcd
// outbox; the drill is over by then and only its record is at stake.
const auditTimeout = 5 * time.Second

// Runner runs drills: flip a route to its previous version through the
// same code path as a real rollback, verify, hold, flip back, time every
// phase, compare with the route's history, and record the outcome. It is
// safe for concurrent use; drills of one route are run one at a time per
// Runner, and across replicas the route's revision guard lets one win.
type Runner struct {
	cfg    Config
	routes *routing.Store
	ops    commands.Keys
	outbox audit.Keys
	log    *zap.Logger
	// metrics is nil without Config.Registerer.
	metrics *runnerMetrics

	mu sync.Mutex
	// running maps a route to the op of the drill this Runner is running
	// on it, so a second /drill run on the same replica is refused at once
	// with a clear answer instead of racing the first to the flip.
	running map[string]string
}

// NewRunner checks cfg (Etcd, Commands and Owner as for the Service, and
// Warm, which runs the checks before and after the drill's flip) and
// returns a Runner.
func NewRunner(cfg Config) (*Runner, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if cfg.Warm == nil {
		return nil, errors.New("drills: Config.Warm is required to run drills")
	}
	store := routing.NewStore(cfg.Etcd, cfg.Prefix, cfg.Logger.Named("routing"))
	store.Now = cfg.Now
	r := &Runner{
		cfg:     cfg,
		routes:  store,
		ops:     commands.Keys{Prefix: cfg.Prefix},
		outbox:  audit.Keys{Prefix: cfg.Prefix},
		log:     cfg.Logger,
		running: map[string]string{},
	}
	if cfg.Registerer != nil {
		m, err := newRunnerMetrics(cfg.Registerer)
		if err != nil {
			return nil, err
		}
		r.metrics = m
	}
	return r, nil
}

// VerifyResult is what the drill checked after its flip to the previous
// version: what a real rollback needs to have happened.
type VerifyResult struct {
	// RoutersConverged of RoutersExpected routers applied the drill's
	// epoch; RoutersError says why that is unknown.
	RoutersConverged int    `json:"routers_converged"`
	RoutersExpected  int    `json:"routers_expected"`
	RoutersError     string `json:"routers_error,omitempty"`
	// RuntimesAcked of RuntimesExpected runtime instances acknowledged the
	// abort; InFlightComplete is true when all did (and reported their
	// re-issues).
	RuntimesAcked    int  `json:"runtimes_acked"`
	RuntimesExpected int  `json:"runtimes_expected"`
	InFlightComplete bool `json:"inflight_complete"`
	Aborted          int  `json:"aborted"`
	Reissued         int  `json:"reissued"`
	// Warm is the canary check of the rolled-back version once it was
	// active; WarmError says why it could not be made.
	Warm      *warm.Report `json:"warm,omitempty"`
	WarmError string       `json:"warm_error,omitempty"`
	// OK is true when every check passed; Problems lists the others, one
	// sentence each.
	OK       bool          `json:"ok"`
	Problems []string      `json:"problems,omitempty"`
	Took     time.Duration `json:"took_ns"`
}

// String is the verification in one line.
func (v VerifyResult) String() string {
	var parts []string
	if v.RoutersError != "" {
		parts = append(parts, "routers unknown")
	} else {
		parts = append(parts, fmt.Sprintf("%d/%d routers", v.RoutersConverged, v.RoutersExpected))
	}
	parts = append(parts, fmt.Sprintf("%d/%d runtimes acknowledged (%d aborted, %d re-issued)",
		v.RuntimesAcked, v.RuntimesExpected, v.Aborted, v.Reissued))
	switch {
	case v.Warm != nil:
		parts = append(parts, fmt.Sprintf("canary on %s: %s", v.Warm.Target, v.Warm.Summary()))
	case v.WarmError != "":
		parts = append(parts, "canary not run")
	}
	s := strings.Join(parts, ", ")
	if v.OK {
		return "verified: " + s
	}
	return "verification FAILED: " + strings.Join(v.Problems, "; ") + " (" + s + ")"
}

// Outcome is what one drill did.
type Outcome struct {
	// Route is the route drilled; From its active version before the
	// drill (and after it, when it returned) and To the previous version
	// it was rolled back to.
	Route, From, To string
	// Rollback and Return are the drill's two flips, as commands ran them
	// (nil when the drill did not get that far).
	Rollback, Return *commands.Result
	// PreWarm is the warm check of the previous version before the drill.
	PreWarm *warm.Report
	Verify  VerifyResult
	// Held is how long the route stayed on the previous version after the
	// verification, watched for other changes.
	Held time.Duration
	// State is RunCompleted, RunFailed, RunSuperseded, RunRefused or
	// RunDryRun.
	State string
	// FailedAt is the step where a failed, refused or superseded drill
	// stopped (StepCheck … StepReturn); "" when it completed.
	FailedAt string
	// Detail says, for a person, why the drill did not complete.
	Detail string
	// Returned is true when the drill flipped the route back.
	Returned bool
	// Calibration compares the rollback direction with the route's drill
	// history and the SLO (zero when nothing was flipped).
	Calibration Calibration
	// Total is the whole drill, checks to final record.
	Total time.Duration
	// Op is the drill's own op id: the op_id of its drill.* event. Each
	// flip has its own (Rollback.Op, Return.Op).
	Op string
	// Audit says whether the drill's event is queued in the outbox.
	Audit     commands.AuditState
	StartedAt time.Time
}

// Text is the drill's report for chat: the verdict, both directions'
// timing lines, the verification, the hold and the calibration. Names in
// it were validated (routes, versions, op ids); details quoted from agents
// are the warm checker's cleaned text.
func (o Outcome) Text() string {
	var b strings.Builder
	switch o.State {
	case RunCompleted:
		fmt.Fprintf(&b, "drill of %s completed in %s: %s → %s → %s", o.Route, drillDuration(o.Total), o.From, o.To, o.From)
	case RunDryRun:
		fmt.Fprintf(&b, "drill of %s (dry run): %s", o.Route, o.Detail)
	case RunRefused:
		fmt.Fprintf(&b, "drill of %s refused: %s", o.Route, o.Detail)
	case RunSuperseded:
		fmt.Fprintf(&b, "drill of %s superseded at %s: %s", o.Route, o.FailedAt, o.Detail)
	default:
		fmt.Fprintf(&b, "drill of %s FAILED at %s: %s", o.Route, o.FailedAt, o.Detail)
	}
	if o.Op != "" && o.State != RunDryRun {
		fmt.Fprintf(&b, " (op %s)", o.Op)
	}
	if o.Rollback != nil && o.Rollback.Revision != 0 {
		b.WriteString("\n• " + o.Rollback.Report())
	}
	if o.Verify.Took > 0 || len(o.Verify.Problems) > 0 {
		b.WriteString("\n• " + o.Verify.String())
	}
	if o.Held > 0 {
		fmt.Fprintf(&b, "\n• held %s on %s", drillDuration(o.Held), o.To)
		if o.State != RunSuperseded && o.FailedAt != StepHold {
			b.WriteString(": no other change to the route")
		}
	}
	if o.Return != nil && o.Return.Revision != 0 {
		b.WriteString("\n• " + o.Return.Report())
	}
	if o.Rollback != nil && o.Rollback.Revision != 0 && o.State != RunCompleted && o.State != RunSuperseded {
		if o.Returned {
			fmt.Fprintf(&b, "\n• flipped back to %s", o.From)
		} else {
			fmt.Fprintf(&b, "\n• NOT flipped back: %s is still on %s unless someone changed it; check with `/rollback status %s`",
				o.Route, o.To, o.Route)
		}
	}
	if o.Calibration.Text != "" {
		b.WriteString("\n• calibration: " + o.Calibration.Text)
	}
	if o.State != RunDryRun && o.Op != "" && !o.Audit.Queued {
		b.WriteString("\n• audit ✗: the drill's event was not recorded (see the bot's logs)")
	}
	return b.String()
}

// DrillResult is the outcome as commands' DrillReply carries it.
func (o Outcome) DrillResult() *commands.DrillResult {
	r := &commands.DrillResult{Rollback: o.Rollback, Return: o.Return, Outcome: o.State}
	if o.Calibration.Regression {
		r.Regression = strings.Join(o.Calibration.Reasons, "; ")
	}
	return r
}

// drillRun is one drill on its way.
type drillRun struct {
	r        *Runner
	origin   commands.Origin
	progress commands.ProgressFunc
	out      *Outcome
	start    time.Time
	phaseAt  time.Time
	// timings are the drill's own phases' durations.
	timings map[string]time.Duration
	// rev is the route revision the drill's flip was guarded on, and
	// drillRev the flip's own (0 until it flipped).
	rev, drillRev int64
	// supersededBy describes the change that superseded the drill.
	supersededBy string
}

// Run runs one drill of route, in order:
//
//   - check: refuse (EREFUSED, audited as drill.failed with outcome
//     refused) when the route's last change was a real promote or rollback
//     within QuietPeriod, its last change was a real rollback at all (its
//     previous version is then the one rolled away from), an op is in
//     progress on it, it has no previous version, or a drill left it on
//     its previous version; then warm-check
//     the previous version, whose coldness is a finding (drill.failed at
//     StepWarm) because a real rollback would be a cold start;
//   - rollback: commands.DrillFlip of kind drill to the previous version,
//     guarded by the revision the checks read;
//   - verify: every router converged, every runtime acknowledged, and a
//     canary on the rolled-back version, now active, is warm;
//   - hold: VerifyWindow on the previous version while watching the route;
//     a change by anyone else supersedes the drill, which then flips
//     nothing back;
//   - return: DrillFlip of kind drill_return to the original version,
//     guarded by the drill's own revision, also after a failed
//     verification, so a failure never leaves the route on the previous
//     version unless someone else has changed it meanwhile.
//
// The outcome is recorded as drill.completed, drill.failed or
// drill.superseded through the etcd outbox, with the timings DrillStatsOf
// reads ("total" is the rollback direction, the figure a real rollback
// would take). A dry run stops after the checks, changes nothing and
// records nothing.
//
// The error is non-nil exactly when the drill flipped nothing because it
// was refused or could not start (EINVALID, ENOTFOUND, EREFUSED — also for
// a cold previous version — or EUNAVAILABLE); a drill that flipped reports
// how it ended in Outcome.State, with a nil error. Once the drill has
// flipped, it finishes (returns, records) even if ctx is cancelled.
func (r *Runner) Run(ctx context.Context, origin commands.Origin, route string, dryRun bool, progress commands.ProgressFunc) (Outcome, error) {
	out := Outcome{Route: route, Op: uuid.NewString(), StartedAt: r.cfg.Now()}
	d := &drillRun{r: r, origin: origin, progress: progress, out: &out, start: time.Now(), timings: map[string]time.Duration{}}

	if err := routing.ValidateRoute(route); err != nil {
		return d.invalid(err.Error())
	}
	if strings.TrimSpace(origin.Actor.ID) == "" {
		return d.invalid("the drill has no actor")
	}
	if len(origin.Actor.ID) > routing.MaxActorLen {
		return d.invalid(fmt.Sprintf("the actor id is longer than %d bytes", routing.MaxActorLen))
	}
	if other, ok := r.claim(route, out.Op); !ok {
		return d.refuse(ctx, StepCheck, commands.Errorf(commands.EREFUSED,
			"a drill of %s is already running (op %s); wait for its report", route, other))
	}
	defer r.release(route)

	d.begin(PhaseDrillCheck)
	entry, err := d.check(ctx)
	if err != nil {
		d.end(PhaseDrillCheck, commands.StateFailed, commands.ErrorMessage(err))
		return d.refuse(ctx, d.out.FailedAt, err)
	}
	d.rev = entry.ModRevision
	d.end(PhaseDrillCheck, commands.StateDone, fmt.Sprintf("%s → %s at rev %d; %s", out.From, out.To, d.rev, out.PreWarm.Summary()))

	if dryRun {
		out.State = RunDryRun
		out.Detail = fmt.Sprintf("would roll %s back %s → %s (%s), verify, hold %s on %s and return to %s; nothing changed",
			route, out.From, out.To, out.PreWarm.Summary(), drillDuration(r.cfg.VerifyWindow), out.To, out.From)
		out.Total = time.Since(d.start)
		return out, nil
	}

	if flipped, err := d.rollback(ctx); !flipped {
		return out, err
	}
	// From here on the route is on the previous version: whatever happens
	// to the caller, the drill verifies, returns and records. Only the hold
	// is cut short when the caller gives up (a replica shutting down), so
	// the route goes back sooner.
	stop := ctx.Done()
	ctx = context.WithoutCancel(ctx)
	if d.verify(ctx) {
		d.hold(ctx, stop)
	}
	if out.State != RunSuperseded {
		d.giveBack(ctx)
	}
	if out.State == "" {
		out.State = RunCompleted
	}
	if out.Rollback.Total > 0 {
		out.Calibration = Calibrate(ctx, r.cfg.DB, route, out.Rollback.Total, r.cfg.SLO)
	}
	d.record(ctx)
	if out.State == RunCompleted {
		r.metrics.succeeded(route, r.cfg.Now())
	}
	return out, nil
}

// claim marks a drill of route as running in this Runner; it returns the
// running drill's op when there is one.
func (r *Runner) claim(route, op string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if other, ok := r.running[route]; ok {
		return other, false
	}
	r.running[route] = op
	return "", true
}

func (r *Runner) release(route string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, route)
}

// invalid ends a drill whose request is malformed: nothing is recorded,
// as there is nothing valid to record it under.
func (d *drillRun) invalid(msg string) (Outcome, error) {
	d.out.State, d.out.FailedAt, d.out.Detail = RunRefused, StepCheck, msg
	d.out.Op = ""
	return *d.out, &commands.Error{Code: commands.EINVALID, Message: msg, Usage: "/drill run <route> [--dry-run]"}
}

// check runs the checks before the flip and fills in From, To and PreWarm.
// A refusal sets FailedAt.
func (d *drillRun) check(ctx context.Context) (routing.Entry, error) {
	r, out := d.r, d.out
	out.FailedAt = StepCheck
	entry, err := r.routes.Get(ctx, out.Route)
	switch {
	case errors.Is(err, routing.ErrNotFound):
		return entry, commands.Errorf(commands.ENOTFOUND, "route %s does not exist; `/rollback status` lists the routes", out.Route)
	case errors.Is(err, routing.ErrMalformed):
		return entry, &commands.Error{Code: commands.EREFUSED, Err: err,
			Message: fmt.Sprintf("the routing config of %s in etcd is unreadable (%s); no drill until it is fixed", out.Route, oneLine(err.Error()))}
	case err != nil:
		return entry, &commands.Error{Code: commands.EUNAVAILABLE, Err: err,
			Message: fmt.Sprintf("route %s could not be read from etcd; no drill ran", out.Route)}
	}
	cfg := entry.Config
	out.From, out.To = cfg.Active, cfg.Previous
	now := r.cfg.Now()

	if cfg.Kind == routing.KindDrill {
		return entry, commands.Errorf(commands.EREFUSED,
			"%s is on %s since a drill rolled it back from %s %s, and that drill has not returned; if it is not running any more, return the route with `/rollback %s --to %s` first",
			out.Route, cfg.Active, cfg.From, commands.Ago(now, cfg.At), out.Route, cfg.From)
	}
	if (cfg.Kind == routing.KindPromote || cfg.Kind == routing.KindRollback) && now.Sub(cfg.At) < r.cfg.QuietPeriod {
		return entry, commands.Errorf(commands.EREFUSED,
			"%s was %s %s; drills wait %s after a real change (BACKFLIP_DRILL_QUIET_PERIOD), so the next is possible %s",
			out.Route, realChange(cfg), commands.Ago(now, cfg.At), shortDuration(r.cfg.QuietPeriod), inText(cfg.At.Add(r.cfg.QuietPeriod).Sub(now)))
	}
	if cfg.Kind == routing.KindRollback {
		// After a real rollback the previous version is the one rolled
		// away from: a drill would send traffic back to a version someone
		// took out of service. Drills resume with the next promote.
		return entry, commands.Errorf(commands.EREFUSED,
			"%s was rolled back from %s by %s %s; its previous version is the one rolled away from, so a drill would send traffic back to it. Drills of %s resume after its next promote.",
			out.Route, cfg.From, commands.Actor{ID: cfg.Actor}.Mention(), commands.Ago(now, cfg.At), out.Route)
	}
	busy, err := r.opInProgress(ctx, out.Route)
	if err != nil {
		return entry, &commands.Error{Code: commands.EUNAVAILABLE, Err: err,
			Message: fmt.Sprintf("the ops in progress could not be read from etcd; no drill of %s ran", out.Route)}
	}
	if busy != "" {
		return entry, commands.Errorf(commands.EREFUSED, "%s is in progress on %s; a drill waits until it is done", busy, out.Route)
	}
	if cfg.Previous == "" {
		return entry, commands.Errorf(commands.EREFUSED,
			"%s has no previous version (it is on %s since its first promote), so there is no rollback to drill", out.Route, cfg.Active)
	}

	out.FailedAt = StepWarm
	rep, err := r.cfg.Warm.Check(ctx, out.Route, cfg.Previous)
	var nw *warm.NotWarmError
	switch {
	case errors.As(err, &nw):
		out.PreWarm = &rep
		out.State = RunFailed
		return entry, &commands.Error{Code: commands.EREFUSED, Err: err, Message: fmt.Sprintf(
			"%s@%s, the rollback target, is not warm (%s): %s A real rollback now would be a cold start; no drill ran.",
			out.Route, cfg.Previous, rep.Summary(), sentence(rep.Reason))}
	case err != nil:
		out.FailedAt = StepCheck
		return entry, &commands.Error{Code: commands.EUNAVAILABLE, Err: err, Message: fmt.Sprintf(
			"the warm check of %s@%s could not be made (%s); no drill ran", out.Route, cfg.Previous, oneLine(err.Error()))}
	}
	out.PreWarm = &rep
	out.FailedAt = ""
	return entry, nil
}

// opInProgress returns a description of an op on route that is not done
// ("" when none). Op records are read directly: commands keeps them under
// ops/<op> until their lease ends, and an op not done is either running or
// waiting for recovery — in both cases the route is not the drill's.
func (r *Runner) opInProgress(ctx context.Context, route string) (string, error) {
	resp, err := r.cfg.Etcd.Get(ctx, r.ops.Ops(), clientv3.WithPrefix())
	if err != nil {
		return "", err
	}
	for _, kv := range resp.Kvs {
		rec, err := commands.DecodeOpRecord(string(kv.Key), kv.Value)
		if err != nil || rec.Route != route || rec.Phase == commands.OpPhaseDone {
			// A malformed record is recovery's to report; it says nothing
			// reliable about this route.
			continue
		}
		id := strings.TrimPrefix(string(kv.Key), r.ops.Ops())
		return fmt.Sprintf("op %s (%s %s → %s by %s, %s)", id, rec.Kind, dashed(rec.From), dashed(rec.To),
			commands.Actor{ID: rec.Actor}.Mention(), rec.Phase), nil
	}
	return "", nil
}

// rollback runs the drill's flip. flipped means the route is on the
// previous version at d.drillRev (cleanly or not: out.State says); when it
// is false the drill is over, recorded, and err is Run's answer.
func (d *drillRun) rollback(ctx context.Context) (flipped bool, err error) {
	r, out := d.r, d.out
	d.begin(PhaseDrillRollback)
	opID := uuid.NewString()
	res, err := r.cfg.Commands.DrillFlip(ctx, commands.DrillFlipRequest{
		Origin: d.flipOrigin(), Kind: routing.KindDrill, Route: out.Route, To: out.To,
		Reason: "drill", ExpectRev: d.rev, Op: opID,
	}, d.progress)
	out.Rollback = res
	if err == nil && res != nil && res.Revision != 0 {
		d.drillRev = res.Revision
		d.end(PhaseDrillRollback, commands.StateDone, fmt.Sprintf("%s → %s in %s (rev %d)", out.From, out.To, drillDuration(res.Total), res.Revision))
		return true, nil
	}
	if err == nil {
		err = commands.Errorf(commands.EINTERNAL, "the drill flip of %s reported no revision", out.Route)
	}
	// A flip whose outcome is unknown (etcd did not confirm) may have
	// landed: the route then names the flip's op.
	if e, rerr := r.routes.Get(context.WithoutCancel(ctx), out.Route); rerr == nil && e.Config.Op == opID {
		d.drillRev = e.ModRevision
		if res == nil {
			res = &commands.Result{Op: opID, Kind: routing.KindDrill, Route: out.Route, From: out.From, To: out.To}
			out.Rollback = res
		}
		res.Revision, res.Epoch = e.ModRevision, e.Config.Epoch
		d.end(PhaseDrillRollback, commands.StateFailed, "flipped, but the flip was not confirmed: "+commands.ErrorMessage(err))
		d.fail(StepRollback, "the drill's flip to "+out.To+" happened but did not finish cleanly: "+commands.ErrorMessage(err))
		return true, nil
	}
	d.end(PhaseDrillRollback, commands.StateFailed, commands.ErrorMessage(err))
	ctx = context.WithoutCancel(ctx)
	if commands.ErrorCode(err) == commands.ECONFLICT {
		// Someone changed the route between the checks and the flip: that
		// change is the route's news, not the drill's failure.
		out.State, out.FailedAt, out.Detail = RunSuperseded, StepRollback, commands.ErrorMessage(err)
		d.record(ctx)
		return false, nil
	}
	step := StepRollback
	if res != nil && res.Warm != nil && !res.Warm.Warm {
		// The commands warm check found the target cold after the drill's
		// own check found it warm: the same finding, a moment later.
		step = StepWarm
	}
	if c := commands.ErrorCode(err); out.State == "" && c != commands.EUNAUTHORIZED && c != commands.EINVALID {
		// Refused by the flip's own checks or broken on the way: the
		// drill tried and failed; an authorization or input refusal is
		// not a finding about the route.
		out.State = RunFailed
	}
	_, err = d.refuse(ctx, step, err)
	return false, err
}

// flipOrigin is the origin of the drill's flips: the drill's actor and
// channel, but timed from the flip itself (the drill's checks are not part
// of the rollback time) and without the request's idempotency key, which
// would make the return a replay of the rollback.
//
// The flips run as backflip's own job (TransportSystem): the drill itself
// was authorized as a drill before it got here (commands.Drill checks
// VerbDrillRun; the scheduler is backflip), and its flips are steps of it,
// not rollbacks requested from a channel, so the incident-channel guard and
// the rollback users do not apply. The actor stays the person (or job) who
// asked, for the audit trail.
func (d *drillRun) flipOrigin() commands.Origin {
	o := d.origin
	o.IdemKey = ""
	o.Received = time.Time{}
	o.Transport = commands.TransportSystem
	o.Trusted = false
	return o
}

// verify checks what a real rollback needs: routers converged, runtimes
// acknowledged, the rolled-back version warm while serving. It reports
// whether the drill goes on to the hold.
func (d *drillRun) verify(ctx context.Context) bool {
	if d.out.State != "" {
		return false
	}
	r, out := d.r, d.out
	d.begin(PhaseDrillVerify)
	start := time.Now()
	v := VerifyResult{}
	res := out.Rollback
	if rr := res.Routers; rr == nil {
		v.Problems = append(v.Problems, "router convergence was not measured")
	} else {
		v.RoutersConverged, v.RoutersExpected, v.RoutersError = rr.Converged, rr.Expected, rr.Error
		switch {
		case rr.Error != "":
			v.Problems = append(v.Problems, "router convergence is unknown: "+rr.Error)
		case rr.Converged < rr.Expected:
			v.Problems = append(v.Problems, fmt.Sprintf("only %d of %d routers applied the drill's epoch", rr.Converged, rr.Expected))
		}
	}
	if in := res.InFlight; in == nil {
		v.Problems = append(v.Problems, "the runtimes were not signalled")
	} else {
		v.RuntimesAcked, v.RuntimesExpected, v.InFlightComplete = in.Acked, in.Expected, in.Complete
		v.Aborted, v.Reissued = in.Aborted, in.Reissued
		if !in.Complete {
			v.Problems = append(v.Problems, fmt.Sprintf("%d of %d runtimes did not confirm aborts and re-issues",
				len(in.Missing)+len(in.PendingReissue), in.Expected))
		}
	}
	rep, err := r.cfg.Warm.Check(ctx, out.Route, res.To)
	var nw *warm.NotWarmError
	switch {
	case err == nil:
		v.Warm = &rep
	case errors.As(err, &nw):
		v.Warm = &rep
		v.Problems = append(v.Problems, fmt.Sprintf("%s is not warm while serving (%s): %s", res.To, rep.Summary(), sentence(rep.Reason)))
	default:
		v.WarmError = oneLine(err.Error())
		v.Problems = append(v.Problems, "the canary on "+res.To+" could not be run: "+v.WarmError)
	}
	v.OK = len(v.Problems) == 0
	v.Took = time.Since(start)
	out.Verify = v
	if !v.OK {
		d.end(PhaseDrillVerify, commands.StateFailed, strings.Join(v.Problems, "; "))
		d.fail(StepVerify, strings.Join(v.Problems, "; "))
		return false
	}
	d.end(PhaseDrillVerify, commands.StateDone, v.String())
	return true
}

// hold keeps the route on the previous version for VerifyWindow, watching
// its key: any write after the drill's flip is someone else's change (a
// real rollback, a promotion), which supersedes the drill.
//
// stop is the caller's cancellation: it ends the hold early (the drill
// then fails at StepHold and flips back at once) rather than keeping a
// replica that is shutting down busy for the rest of the window.
func (d *drillRun) hold(ctx context.Context, stop <-chan struct{}) {
	r, out := d.r, d.out
	d.begin(PhaseDrillHold)
	start := time.Now()
	defer func() { out.Held = time.Since(start) }()
	key := r.routes.Keys().Route(out.Route)

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := r.cfg.Etcd.Watch(wctx, key, clientv3.WithRev(d.drillRev+1))
	timer := time.NewTimer(r.cfg.VerifyWindow)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			// A change the watch has not delivered yet is caught by the
			// return's revision guard, which is the final word.
			d.end(PhaseDrillHold, commands.StateDone, fmt.Sprintf("held %s on %s, no other change", drillDuration(time.Since(start)), out.To))
			return
		case <-stop:
			d.end(PhaseDrillHold, commands.StateFailed, "cancelled")
			d.fail(StepHold, fmt.Sprintf("the drill was stopped during its hold, after %s of %s (the request was cancelled or the replica is shutting down)",
				drillDuration(time.Since(start)), drillDuration(r.cfg.VerifyWindow)))
			return
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil {
				// Without a watch the window is still kept; a change
				// during it is then caught by the return's revision
				// guard instead.
				r.log.Warn("drill hold: the route watch ended early", zap.String("route", out.Route), zap.Error(resp.Err()))
				wch = nil
				continue
			}
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision == d.drillRev {
					continue
				}
				d.supersede(key, ev.Type == clientv3.EventTypeDelete, ev.Kv.Value)
				d.end(PhaseDrillHold, commands.StateSkipped, out.Detail)
				return
			}
		}
	}
}

// supersede ends the drill because someone else changed the route.
func (d *drillRun) supersede(key string, deleted bool, value []byte) {
	out := d.out
	change := "the route was deleted"
	if !deleted {
		if cfg, err := routing.DecodeRouteConfig(key, value, out.Route); err == nil {
			change = describeRouteChange(cfg)
			if cfg.Op != "" {
				change += " (op " + cfg.Op + ")"
			}
		} else {
			change = "its routing config was overwritten with a value that cannot be read"
		}
	}
	d.supersededBy = change
	out.State, out.FailedAt = RunSuperseded, StepHold
	out.Detail = fmt.Sprintf("%s was changed during the drill: %s. The drill did not flip it back; the route is as that change left it.", out.Route, change)
}

// giveBack flips the route back to the original version, guarded by the
// drill's own revision so that it never undoes someone else's change.
func (d *drillRun) giveBack(ctx context.Context) {
	r, out := d.r, d.out
	d.begin(PhaseDrillReturn)
	res, err := r.cfg.Commands.DrillFlip(ctx, commands.DrillFlipRequest{
		Origin: d.flipOrigin(), Kind: routing.KindDrillReturn, Route: out.Route, To: out.From,
		Reason: "drill return", ExpectRev: d.drillRev, Op: uuid.NewString(),
	}, d.progress)
	out.Return = res
	switch {
	case err == nil && res != nil && res.Revision != 0:
		out.Returned = true
		if res.Outcome != commands.OutcomeCompleted {
			d.end(PhaseDrillReturn, commands.StateFailed, res.Report())
			d.fail(StepReturn, fmt.Sprintf("the route is back on %s, but the return did not complete cleanly (%s)", out.From, res.Outcome))
			return
		}
		d.end(PhaseDrillReturn, commands.StateDone, fmt.Sprintf("%s → %s in %s (rev %d)", out.To, out.From, drillDuration(res.Total), res.Revision))
	case commands.ErrorCode(err) == commands.ECONFLICT:
		d.end(PhaseDrillReturn, commands.StateSkipped, commands.ErrorMessage(err))
		if out.State == "" {
			// The route changed at the last moment, after the hold's
			// watch: the same as a change during the hold.
			out.State, out.FailedAt = RunSuperseded, StepReturn
			out.Detail = commands.ErrorMessage(err) + " The drill did not flip it back."
			return
		}
		out.Detail += " It was not flipped back: " + commands.ErrorMessage(err)
	default:
		if err == nil {
			err = commands.Errorf(commands.EINTERNAL, "the return flip reported no revision")
		}
		d.end(PhaseDrillReturn, commands.StateFailed, commands.ErrorMessage(err))
		msg := fmt.Sprintf("THE ROUTE IS STILL ON %s: the return to %s failed (%s); return it with `/rollback %s --to %s drill did not return`",
			out.To, out.From, commands.ErrorMessage(err), out.Route, out.From)
		if out.State == RunFailed {
			out.Detail += " " + msg
			return
		}
		d.fail(StepReturn, msg)
	}
}

// fail marks the drill failed at step, keeping the first failure.
func (d *drillRun) fail(step, detail string) {
	if d.out.State == RunFailed {
		return
	}
	d.out.State, d.out.FailedAt, d.out.Detail = RunFailed, step, detail
}

// refuse ends a drill that flipped nothing: a refusal, or a cold previous
// version (a finding: State RunFailed at StepWarm), recorded as
// drill.failed. Failures to reach etcd are not recorded (there is nowhere
// to queue them) but logged.
func (d *drillRun) refuse(ctx context.Context, step string, err error) (Outcome, error) {
	out := d.out
	if out.State == "" {
		out.State = RunRefused
	}
	out.FailedAt, out.Detail = step, commands.ErrorMessage(err)
	switch commands.ErrorCode(err) {
	case commands.EUNAVAILABLE, commands.ENOTFOUND, commands.EINVALID:
		d.r.log.Warn("drill did not run", zap.String("route", out.Route), zap.String("op", out.Op), zap.Error(err))
		if out.Rollback == nil {
			// Nothing is recorded, so there is no drill op to name.
			out.Op = ""
		}
	default:
		d.record(context.WithoutCancel(ctx))
	}
	out.Total = time.Since(d.start)
	return *out, err
}

// record queues the drill's event in the etcd outbox.
func (d *drillRun) record(ctx context.Context) {
	r, out := d.r, d.out
	out.Total = time.Since(d.start)
	ev, err := d.event()
	if err == nil {
		var put clientv3.Op
		put, err = audit.OutboxOp(r.outbox, 0, ev)
		if err == nil {
			err = r.putWithRetry(ctx, put)
		}
	}
	if err != nil {
		out.Audit = commands.AuditState{Error: err.Error()}
		r.log.Error("drill event not queued", zap.String("route", out.Route), zap.String("op", out.Op),
			zap.String("state", out.State), zap.Error(err))
		return
	}
	out.Audit = commands.AuditState{Queued: true, EventID: ev.EventID.String()}
	r.log.Info("drill", zap.String("route", out.Route), zap.String("op", out.Op), zap.String("state", out.State),
		zap.String("failed_at", out.FailedAt), zap.Duration("total", out.Total), zap.Bool("regression", out.Calibration.Regression))
}

// putWithRetry writes one outbox event, retrying briefly: after a timeout
// the put may have landed, and writing the same key and value again is
// harmless.
func (r *Runner) putWithRetry(ctx context.Context, put clientv3.Op) error {
	deadline := time.Now().Add(auditTimeout)
	wait := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := r.cfg.Etcd.Do(actx, put)
		cancel()
		if err == nil || time.Now().Add(wait).After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait *= 2
	}
}

// event is the drill's audit event.
func (d *drillRun) event() (audit.Event, error) {
	out := d.out
	opID, err := uuid.Parse(out.Op)
	if err != nil {
		return audit.Event{}, err
	}
	kind := audit.KindDrillFailed
	switch out.State {
	case RunCompleted:
		kind = audit.KindDrillCompleted
	case RunSuperseded:
		kind = audit.KindDrillSuperseded
	}
	ev := audit.Event{
		EventID: uuid.New(), OpID: opID, Kind: kind, Route: out.Route,
		FromVersion: out.From, ToVersion: out.To,
		Actor: d.origin.Actor.ID, ActorName: d.origin.Actor.Name, Channel: d.origin.Channel.ID,
		Reason: "drill", Outcome: out.State, Timings: d.timingsMS(),
		SchemaVersion: audit.SchemaVersion, OccurredAt: d.r.cfg.Now().UTC(),
	}
	details := map[string]any{"state": out.State}
	if out.FailedAt != "" {
		details["failed_at"] = out.FailedAt
	}
	if out.Detail != "" {
		details["detail"] = commands.Clip(out.Detail, 1000)
	}
	if d.supersededBy != "" {
		details["superseded_by"] = commands.Clip(d.supersededBy, 500)
	}
	if out.PreWarm != nil {
		details["pre_warm"] = out.PreWarm.Summary()
	}
	affected := 0
	if res := out.Rollback; res != nil {
		details["rollback_op"] = res.Op
		ev.EtcdRevision = res.Revision
		if res.InFlight != nil {
			affected += res.InFlight.Aborted
		}
	}
	if res := out.Return; res != nil {
		details["return_op"] = res.Op
		if res.Revision != 0 {
			ev.EtcdRevision = res.Revision
		}
		if res.InFlight != nil {
			affected += res.InFlight.Aborted
		}
	}
	if out.Rollback != nil && out.Rollback.Revision != 0 {
		details["returned"] = out.Returned
		details["held_ms"] = durationMS(out.Held)
		ev.AffectedRequests = &affected
		v := out.Verify
		vd := map[string]any{"ok": v.OK, "routers_converged": v.RoutersConverged, "routers_expected": v.RoutersExpected,
			"runtimes_acked": v.RuntimesAcked, "runtimes_expected": v.RuntimesExpected, "inflight_complete": v.InFlightComplete}
		if len(v.Problems) > 0 {
			vd["problems"] = v.Problems
		}
		if v.Warm != nil {
			vd["warm"] = v.Warm.Summary()
		}
		details["verify"] = vd
		if out.Calibration.Text != "" {
			details["calibration"] = out.Calibration.details()
		}
	}
	if d.origin.Transport != "" {
		details["transport"] = d.origin.Transport
	}
	ev.Details, err = json.Marshal(details)
	return ev, err
}

// timingsMS are the event's timings. "total" is the rollback direction
// (what DrillStatsOf calibrates and status shows as a route's drill time),
// "rollback" the same, "return" the way back, "warm", "flip", "routers"
// and "inflight" the rollback's phases, "check", "verify" and "hold" the
// drill's own, and "drill" the whole drill.
func (d *drillRun) timingsMS() map[string]float64 {
	m := map[string]float64{}
	for phase, took := range d.timings {
		m[phase] = durationMS(took)
	}
	if res := d.out.Rollback; res != nil && res.Revision != 0 {
		m["total"] = durationMS(res.Total)
		m["rollback"] = durationMS(res.Total)
		for _, p := range []commands.Phase{commands.PhaseWarm, commands.PhaseFlip, commands.PhaseRouters, commands.PhaseInFlight} {
			if t := res.Timing(p); t > 0 {
				m[string(p)] = durationMS(t)
			}
		}
	}
	if res := d.out.Return; res != nil && res.Revision != 0 {
		m["return"] = durationMS(res.Total)
	}
	m["drill"] = durationMS(time.Since(d.start))
	return m
}

func (d *drillRun) begin(p commands.Phase) {
	d.phaseAt = time.Now()
	d.report(commands.Progress{Phase: p, State: commands.StateRunning})
}

func (d *drillRun) end(p commands.Phase, st commands.PhaseState, detail string) {
	took := time.Since(d.phaseAt)
	switch p {
	case PhaseDrillCheck:
		d.timings["check"] = took
	case PhaseDrillVerify:
		d.timings["verify"] = took
	case PhaseDrillHold:
		d.timings["hold"] = took
	}
	d.report(commands.Progress{Phase: p, State: st, Took: took, Detail: detail})
}

func (d *drillRun) report(p commands.Progress) {
	if d.progress == nil {
		return
	}
	p.Op, p.Route, p.From, p.To = d.out.Op, d.out.Route, d.out.From, d.out.To
	d.progress(p)
}

// realChange names the last change of a route in the past tense.
func realChange(cfg routing.RouteConfig) string {
	if cfg.Kind == routing.KindPromote {
		return "promoted"
	}
	return "rolled back"
}

// describeRouteChange says what a route's config records as its last
// change, e.g. "rolled back v41 → v42 by <@U0ALICE>". It happened during
// the drill, so when is already clear.
func describeRouteChange(cfg routing.RouteConfig) string {
	verb := "rolled back"
	switch cfg.Kind {
	case routing.KindPromote:
		verb = "promoted"
	case routing.KindDrill:
		verb = "rolled back by another drill"
	case routing.KindDrillReturn:
		verb = "returned by another drill"
	}
	return fmt.Sprintf("%s %s → %s by %s", verb, dashed(cfg.From), cfg.Active, commands.Actor{ID: cfg.Actor}.Mention())
}

// inText renders a wait: "in 40 s", "in 21 h".
func inText(d time.Duration) string {
	switch {
	case d <= 0:
		return "now"
	case d < 2*time.Minute:
		return fmt.Sprintf("in %d s", int(d.Seconds())+1)
	case d < 2*time.Hour:
		return fmt.Sprintf("in %d min", int(d.Minutes())+1)
	}
	return fmt.Sprintf("in %d h", int(d.Hours())+1)
}

// shortDuration renders a configured duration the way it is written in
// the environment: "24h", "30m", "90s".
func shortDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

// sentence makes s end with a full stop.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

func dashed(v string) string {
	if v == "" {
		return "(none)"
	}
	return v
}
