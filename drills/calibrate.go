package drills

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
)

// regressionFactor is how much slower than the route's usual drill (its
// historical p50) a drill may be before it is flagged. Half again the
// median is well outside the run-to-run spread of a routing flip, yet
// catches a phase that has quietly doubled long before it breaks the SLO.
const regressionFactor = 1.5

// calibrateTimeout bounds the history query. Calibration is a comparison
// for the report, never a reason to hold up or fail a drill, so a slow or
// absent audit database costs at most this long.
const calibrateTimeout = 2 * time.Second

// Calibration compares one drill's rollback duration with the route's
// drill history and the rollback SLO.
type Calibration struct {
	// History is the route's completed drills before this one (Count 0
	// when none is recorded or the audit database could not be read).
	History audit.DrillStats
	// SLO is ROLLBACK_SLO.
	SLO time.Duration
	// Total is the duration compared: the rollback direction of the drill,
	// the figure a real rollback would take.
	Total time.Duration
	// Regression is true when Total is over the SLO, or more than 1.5× the
	// historical p50; Reasons says which, one sentence each.
	Regression bool
	Reasons    []string
	// HistoryError says why there is no history to compare with ("" when
	// the history was read, even if empty).
	HistoryError string
	// Text is the verdict for a person, e.g. "1.2 s — p50 0.9 s, p95 1.4 s
	// over 12 drills; SLO 90 s: REGRESSION: 1.3× the usual (p50 0.9 s)".
	Text string
}

// Calibrate compares total (a drill's rollback-direction duration) with the
// route's drill history and slo. Call it before the drill's own event is
// stored, so the drill is not compared with itself. db may be nil; a
// database that is missing or does not answer leaves the comparison with
// the SLO only and says so, never failing the drill.
func Calibrate(ctx context.Context, db audit.DBTX, route string, total, slo time.Duration) Calibration {
	c := Calibration{SLO: slo, Total: total, History: audit.DrillStats{Route: route}}
	if db == nil {
		c.HistoryError = "audit database unavailable: none is configured"
	} else {
		qctx, cancel := context.WithTimeout(ctx, calibrateTimeout)
		st, err := audit.DrillStatsOf(qctx, db, route)
		cancel()
		if err != nil {
			c.HistoryError = "audit database unavailable: " + oneLine(err.Error())
		} else {
			c.History = st
		}
	}
	c.judge()
	return c
}

// judge sets Regression, Reasons and Text from the other fields.
func (c *Calibration) judge() {
	c.Regression, c.Reasons = false, nil
	if c.SLO > 0 && c.Total > c.SLO {
		c.Reasons = append(c.Reasons, fmt.Sprintf("over the %s SLO by %s", drillDuration(c.SLO), drillDuration(c.Total-c.SLO)))
	}
	p50 := msToDuration(c.History.Total.P50)
	hasHistory := c.HistoryError == "" && c.History.Total.N > 0 && p50 > 0
	if hasHistory && float64(c.Total) > regressionFactor*float64(p50) {
		c.Reasons = append(c.Reasons, fmt.Sprintf("%.1f× slower than the usual (p50 %s)", float64(c.Total)/float64(p50), drillDuration(p50)))
	}
	c.Regression = len(c.Reasons) > 0

	var b strings.Builder
	b.WriteString(drillDuration(c.Total))
	b.WriteString(" — ")
	switch {
	case c.HistoryError != "":
		b.WriteString("no history (audit database unavailable)")
	case hasHistory:
		fmt.Fprintf(&b, "p50 %s, p95 %s over %d %s", drillDuration(p50), drillDuration(msToDuration(c.History.Total.P95)),
			c.History.Total.N, plural(c.History.Total.N, "drill", "drills"))
	default:
		b.WriteString("no earlier drill to compare with")
	}
	if c.SLO > 0 {
		fmt.Fprintf(&b, "; SLO %s", drillDuration(c.SLO))
	}
	if c.Regression {
		b.WriteString(": REGRESSION: ")
		b.WriteString(strings.Join(c.Reasons, "; "))
	} else {
		b.WriteString(": ok")
	}
	c.Text = b.String()
}

// details is the calibration as recorded in a drill event's details.
func (c Calibration) details() map[string]any {
	d := map[string]any{
		"total_ms":   durationMS(c.Total),
		"slo_ms":     durationMS(c.SLO),
		"regression": c.Regression,
		"text":       c.Text,
	}
	if len(c.Reasons) > 0 {
		d["reasons"] = c.Reasons
	}
	if c.HistoryError != "" {
		d["history_error"] = commands.Clip(c.HistoryError, 300)
	} else {
		d["history"] = map[string]any{"count": c.History.Total.N, "p50_ms": c.History.Total.P50, "p95_ms": c.History.Total.P95}
	}
	return d
}

// drillDuration renders a duration for a drill report: "8.5 ms", "120 ms",
// "1.2 s", "90 s". Sub-second figures stay in milliseconds because a
// healthy flip is tens of milliseconds, and "0.0 s" would hide it.
func drillDuration(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f s", d.Seconds())
}

// durationMS is d in the milliseconds of audit timings (microsecond
// precision, like commands' timings).
func durationMS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// msToDuration is the inverse of durationMS.
func msToDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// oneLine flattens an error's text for a one-line report.
func oneLine(s string) string {
	return commands.Clip(strings.Join(strings.Fields(s), " "), 300)
}
