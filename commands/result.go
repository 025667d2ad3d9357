package commands

import (
	"time"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// Outcomes of an op, as recorded in its op record and audit events.
const (
	// OutcomeCompleted: flipped, every router converged, every runtime
	// instance acknowledged.
	OutcomeCompleted = "completed"
	// OutcomeDegraded: flipped (the route is on the target, which is the
	// part that matters), but some routers or runtime instances did not
	// confirm in time; the report lists them.
	OutcomeDegraded = "degraded"
	// OutcomeRefused: nothing changed (authorization, cold target, already
	// on target, stale revision, a concurrent op won).
	OutcomeRefused = "refused"
	// OutcomeFailed: nothing changed because something broke before the
	// flip (etcd unreachable, malformed state).
	OutcomeFailed = "failed"
	// OutcomeDryRun: a --dry-run; nothing changed.
	OutcomeDryRun = "dry_run"
	// OutcomeRecovered: the replica running the op died after the flip and
	// another finished it.
	OutcomeRecovered = "recovered"
	// OutcomeAbandoned: the replica running the op died before the flip;
	// nothing changed and recovery closed the op.
	OutcomeAbandoned = "abandoned"
)

// Result is the outcome of a rollback or a promotion (and of a dry run,
// which stops after the warm check).
type Result struct {
	Op    string       `json:"op"`
	Kind  routing.Kind `json:"kind"`
	Route string       `json:"route"`
	From  string       `json:"from"`
	To    string       `json:"to"`
	// Reason and Actor are the request's (or, for a Replayed result, the
	// first request's).
	Reason  string  `json:"reason"`
	Actor   Actor   `json:"actor"`
	Channel Channel `json:"channel"`
	// ExpectRev is the route revision the flip was guarded on; Revision is
	// the flip's revision and Epoch the route's epoch after it (0 when
	// nothing was flipped).
	ExpectRev int64 `json:"expect_rev"`
	Revision  int64 `json:"revision,omitempty"`
	Epoch     int64 `json:"epoch,omitempty"`
	DryRun    bool  `json:"dry_run,omitempty"`
	// ForcedCold is true when --force-cold let a rollback go to a target
	// the warm check found not warm.
	ForcedCold bool `json:"forced_cold,omitempty"`
	// Replayed is true when this request did not flip itself: it carried
	// the idempotency key of an earlier request, and this is that request's
	// result (as far as it had got).
	Replayed bool `json:"replayed,omitempty"`
	// Text is, for a Replayed result, the first request's report as it
	// recorded it (its warm, router and runtime details are not kept).
	Text string       `json:"text,omitempty"`
	Warm *warm.Report `json:"warm,omitempty"`
	// InFlightBefore is the runtime's in-flight count on the route when
	// the op started (dry runs and pre-flight cards show it).
	InFlightBefore int `json:"inflight_before"`
	// LastDrill is the route's drill record, for a dry run's pre-flight
	// card (nil when none or the audit database is unavailable).
	LastDrill *DrillInfo      `json:"last_drill,omitempty"`
	Routers   *RouterResult   `json:"routers,omitempty"`
	InFlight  *runtime.Result `json:"inflight,omitempty"`
	Audit     AuditState      `json:"audit"`
	Timings   []PhaseTiming   `json:"timings"`
	// Total runs from Origin.Received (or the start) to the end.
	Total      time.Duration `json:"total_ns"`
	Outcome    string        `json:"outcome"`
	StartedAt  time.Time     `json:"started_at"`
	FinishedAt time.Time     `json:"finished_at"`
}

// RouterResult is what the routers registered before the flip reported.
type RouterResult struct {
	// Expected are the routers registered at the flip's revision − 1.
	Expected int `json:"expected"`
	// Converged reported the new epoch (or a later one) in time.
	Converged int `json:"converged"`
	// Lost are routers whose registration vanished before they reported.
	Lost []string `json:"lost,omitempty"`
	// Pending are routers still registered that had not reported when the
	// wait ended.
	Pending []string `json:"pending,omitempty"`
	// Took is from the flip's commit to the last router's report (or the
	// end of the wait).
	Took time.Duration `json:"took_ns"`
	// Error says why convergence is unknown (the registrations could not
	// be read); the counts are then zero and mean nothing.
	Error string `json:"error,omitempty"`
}

// AuditState says where the op's final audit event is.
type AuditState struct {
	// Queued is true once the event is in the etcd outbox (durable; the
	// shipper moves it to Postgres, also while Postgres is down).
	Queued  bool   `json:"queued"`
	EventID string `json:"event_id,omitempty"`
	// Error says why the event could not be queued ("" when it was).
	Error string `json:"error,omitempty"`
}

// Timing returns the duration of phase p (0 when it did not run).
func (r *Result) Timing(p Phase) time.Duration {
	for _, t := range r.Timings {
		if t.Phase == p {
			return t.Took
		}
	}
	return 0
}
