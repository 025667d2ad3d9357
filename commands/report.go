package commands

import (
	"fmt"
	"strings"
	"time"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// Report is the contract's timing report, one line, e.g.
//
//	chat-70b rolled back v42 → v41 in 1.42 s · warm 180 ms (24/24 nodes, 96/96 GPUs) · flip 2 ms (rev 5121) ·
//	routers 31 ms (200/200) · in-flight 37 aborted, 37 re-issued (1.1 s) · audit ✓
//
// Names in it were validated (routes, versions) or are counts, so it is
// safe to post as chat text.
func (r *Result) Report() string {
	if r.Replayed && r.Text != "" {
		return r.Text
	}
	var b strings.Builder
	verb := "rolled back"
	switch {
	case r.DryRun && r.Kind == routing.KindPromote:
		verb = "would promote"
	case r.DryRun:
		verb = "would roll back"
	case r.Kind == routing.KindPromote:
		verb = "promoted"
	case r.Kind == routing.KindDrill:
		verb = "drill: rolled back"
	case r.Kind == routing.KindDrillReturn:
		verb = "drill: returned"
	}
	from := r.From
	if from == "" {
		from = "(new route)"
	}
	if !r.DryRun && r.Revision == 0 {
		// Nothing flipped: never word a refusal like a rollback.
		verb = "not rolled back"
		if r.Kind == routing.KindPromote {
			verb = "not promoted"
		}
		fmt.Fprintf(&b, "%s %s (%s → %s): %s", r.Route, verb, from, dash(r.To), r.Outcome)
		if r.Warm != nil {
			fmt.Fprintf(&b, " · warm %s", r.Warm.Summary())
		}
		return b.String()
	}
	fmt.Fprintf(&b, "%s %s %s → %s", r.Route, verb, from, r.To)
	if !r.DryRun {
		fmt.Fprintf(&b, " in %s", seconds(r.Total))
	}
	if r.Warm != nil {
		fmt.Fprintf(&b, " · warm %s (%d/%d nodes, %d/%d GPUs)", millis(r.Timing(PhaseWarm)),
			r.Warm.WarmNodes, r.Warm.TargetNodes, r.Warm.WarmGPUs, r.Warm.TargetGPUs)
		if r.ForcedCold {
			b.WriteString(" FORCED COLD")
		}
	}
	if r.DryRun {
		fmt.Fprintf(&b, " · %d in flight would be aborted and re-issued", r.InFlightBefore)
		return b.String()
	}
	if r.Revision != 0 {
		fmt.Fprintf(&b, " · flip %s (rev %d)", millis(r.Timing(PhaseFlip)), r.Revision)
	}
	if rr := r.Routers; rr != nil && rr.Error != "" {
		b.WriteString(" · routers unknown (registrations could not be read)")
	} else if rr != nil {
		fmt.Fprintf(&b, " · routers %s (%d/%d", millis(rr.Took), rr.Converged, rr.Expected)
		if len(rr.Lost) > 0 {
			fmt.Fprintf(&b, ", %d lost", len(rr.Lost))
		}
		if len(rr.Pending) > 0 {
			fmt.Fprintf(&b, ", %d not confirmed", len(rr.Pending))
		}
		b.WriteString(")")
	}
	if in := r.InFlight; in != nil {
		fmt.Fprintf(&b, " · in-flight %d aborted, %d re-issued (%s)", in.Aborted, in.Reissued, seconds(in.Drain))
		if missing := len(in.Missing) + len(in.PendingReissue); missing > 0 {
			fmt.Fprintf(&b, ", %d of %d runtimes did not confirm", missing, in.Expected)
		}
	}
	if r.Audit.Queued {
		b.WriteString(" · audit ✓")
	} else if r.Revision != 0 {
		b.WriteString(" · audit ✗ (see the bot's logs)")
	}
	return b.String()
}

// AuditSummary is the audit summary posted in the report's thread: op id,
// actor, reason, per-phase timings, etcd revision and where the audit event
// is (row is the audit_events id once shipped, 0 for "pending").
func (r *Result) AuditSummary(row int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "op %s · %s by %s", r.Op, r.Kind, r.Actor)
	if r.Reason != "" {
		fmt.Fprintf(&b, " · reason: %s", r.Reason)
	}
	b.WriteString("\ntimings:")
	for _, t := range r.Timings {
		fmt.Fprintf(&b, " %s %s,", t.Phase, millis(t.Took))
	}
	fmt.Fprintf(&b, " total %s", millis(r.Total))
	if r.Revision != 0 {
		fmt.Fprintf(&b, "\netcd revision %d, epoch %d", r.Revision, r.Epoch)
	}
	switch {
	case row > 0:
		fmt.Fprintf(&b, " · audit row %d", row)
	case r.Audit.Queued:
		b.WriteString(" · audit row pending (queued in etcd)")
	default:
		b.WriteString(" · audit not queued: " + r.Audit.Error)
	}
	b.WriteString(" · outcome " + r.Outcome)
	return b.String()
}

// millis formats a phase duration: "2 ms", "180 ms", "1.42 s".
func millis(d time.Duration) string {
	if d >= time.Second {
		return seconds(d)
	}
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// seconds formats a total: "1.42 s", "0.31 s".
func seconds(d time.Duration) string {
	return fmt.Sprintf("%.2f s", d.Seconds())
}
