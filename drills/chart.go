package drills

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
)

// historyLimit is how many drills /drill history shows: enough to see a
// trend over months of weekly drills, few enough to read in one message.
const historyLimit = 30

// textRows is how many drills HistoryText lists one by one; the
// percentiles and the trend cover every point given.
const textRows = 10

// chartWidth and chartHeight are the history chart's size, readable as a
// chat attachment preview.
const (
	chartWidth  = 8 * vg.Inch
	chartHeight = 4 * vg.Inch
)

// logScaleRatio is how far the SLO may sit above the slowest drill before
// the chart's Y axis turns logarithmic: a 90 s SLO over drills of 1 s would
// otherwise flatten every drill onto the X axis.
const logScaleRatio = 10

// HistoryPoint is one recorded drill of a route.
type HistoryPoint struct {
	Route string
	At    time.Time
	Op    string
	Kind  audit.Kind
	// Outcome is the event's outcome: completed, failed, refused,
	// superseded (or the scheduler's words for a skipped drill).
	Outcome  string
	From, To string
	// Total is the rollback direction's duration (timings "total"); zero
	// when the drill did not flip.
	Total time.Duration
	// FailedAt is where a drill stopped; Regression is true when the
	// drill's calibration flagged it.
	FailedAt   string
	Regression bool
}

// drillHistorySQL reads a route's drill events, newest first. Timings and
// details are read defensively (a value of the wrong JSON type reads as
// missing) because rows are older than any one build.
const drillHistorySQL = `SELECT route, occurred_at, op_id, kind, coalesce(outcome, ''), coalesce(from_version, ''), coalesce(to_version, ''),
    CASE WHEN jsonb_typeof(timings->'total') = 'number' THEN (timings->'total')::float8 END,
    CASE WHEN jsonb_typeof(details->'failed_at') = 'string' THEN details->>'failed_at' ELSE '' END,
    coalesce(details->'calibration'->'regression' = 'true'::jsonb, false)
FROM audit_events
WHERE ($1 = '' OR route = $1) AND kind IN ('drill.completed', 'drill.failed', 'drill.superseded', 'drill.skipped')
ORDER BY occurred_at DESC, id DESC LIMIT $2`

// LoadHistory reads route's newest drill events (completed, failed,
// superseded, skipped), newest first, at most limit (clamped to
// 1..audit.MaxHistoryLimit). Route "" reads every route's.
func LoadHistory(ctx context.Context, db audit.DBTX, route string, limit int) ([]HistoryPoint, error) {
	limit = min(max(limit, 1), audit.MaxHistoryLimit)
	rows, err := db.Query(ctx, drillHistorySQL, route, limit)
	if err != nil {
		return nil, fmt.Errorf("drill history of %s: %w", route, err)
	}
	defer rows.Close()
	var out []HistoryPoint
	for rows.Next() {
		var (
			p     HistoryPoint
			op    string
			kind  string
			total *float64
		)
		if err := rows.Scan(&p.Route, &p.At, &op, &kind, &p.Outcome, &p.From, &p.To, &total, &p.FailedAt, &p.Regression); err != nil {
			return nil, fmt.Errorf("drill history of %s: %w", route, err)
		}
		p.Kind = audit.Kind(kind)
		if id, err := uuid.Parse(op); err == nil {
			p.Op = id.String()
		}
		if total != nil && *total > 0 && !math.IsInf(*total, 0) {
			p.Total = msToDuration(*total)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("drill history of %s: %w", route, err)
	}
	return out, nil
}

// History answers /drill history [<route>]: the text and, when at least
// one drill recorded a duration, the chart; route "" covers every route.
// It needs the audit database; an error is a *commands.Error.
func (r *Runner) History(ctx context.Context, route string) (text string, png []byte, err error) {
	if route != "" {
		if err := routing.ValidateRoute(route); err != nil {
			return "", nil, &commands.Error{Code: commands.EINVALID, Message: err.Error(), Usage: "/drill history [<route>]"}
		}
	}
	if r.cfg.DB == nil {
		return "", nil, commands.Errorf(commands.EUNAVAILABLE, "drill history needs the audit database, and none is configured (BACKFLIP_DATABASE_URL)")
	}
	points, err := LoadHistory(ctx, r.cfg.DB, route, historyLimit)
	if err != nil {
		r.log.Warn("drill history unavailable", zap.String("route", route), zap.Error(err))
		return "", nil, &commands.Error{Code: commands.EUNAVAILABLE, Err: err,
			Message: "the audit database did not answer, so the drill history cannot be shown now; drills and rollbacks are unaffected"}
	}
	text = HistoryText(points, route, r.cfg.SLO)
	if !hasDurations(points) {
		return text, nil, nil
	}
	png, err = HistoryChart(points, route, r.cfg.SLO)
	if err != nil {
		// The text carries the same numbers; a chart that cannot be drawn
		// is not worth failing the answer for.
		r.log.Warn("drill history chart not drawn", zap.String("route", route), zap.Error(err))
		return text, nil, nil
	}
	return text, png, nil
}

// HistoryText is a route's drill history as text: the last drills (date,
// rollback time, outcome), p50 and p95 of completed drills, the SLO and the
// trend. points may come in any order.
func HistoryText(points []HistoryPoint, route string, slo time.Duration) string {
	pts := sortedNewestFirst(points)
	var b strings.Builder
	if len(pts) == 0 {
		if route == "" {
			return "no drills recorded yet; `/drill run <route>` runs one"
		}
		fmt.Fprintf(&b, "no drills recorded for %s yet; `/drill run %s` runs one", route, route)
		return b.String()
	}
	totals := completedTotals(pts)
	fmt.Fprintf(&b, "drill history of %s: %d %s", routeName(route), len(pts), plural(len(pts), "drill", "drills"))
	if len(totals) > 0 {
		p50, p95 := percentile(totals, 0.5), percentile(totals, 0.95)
		fmt.Fprintf(&b, " · rollback p50 %s, p95 %s over %d completed", drillDuration(p50), drillDuration(p95), len(totals))
	}
	if slo > 0 {
		fmt.Fprintf(&b, " · SLO %s", drillDuration(slo))
		if over := countOver(pts, slo); over > 0 {
			fmt.Fprintf(&b, " (%d over it)", over)
		}
	}
	if t := trendText(pts); t != "" {
		b.WriteString("\ntrend: " + t)
	}
	for i, p := range pts {
		if i == textRows {
			fmt.Fprintf(&b, "\n… and %d earlier", len(pts)-textRows)
			break
		}
		fmt.Fprintf(&b, "\n%s  ", p.At.UTC().Format("2006-01-02 15:04 UTC"))
		if route == "" {
			fmt.Fprintf(&b, "%s  ", p.Route)
		}
		if p.Total > 0 {
			fmt.Fprintf(&b, "%-8s ", drillDuration(p.Total))
		} else {
			fmt.Fprintf(&b, "%-8s ", "—")
		}
		b.WriteString(outcomeText(p))
		if p.From != "" && p.To != "" {
			fmt.Fprintf(&b, "  (%s → %s)", p.From, p.To)
		}
		if p.Regression {
			b.WriteString("  REGRESSION")
		}
	}
	return b.String()
}

// HistoryChart draws a route's drill rollback times over time as a PNG:
// X is the date, Y the seconds of the rollback direction; completed drills
// are joined by a line, other drills that flipped are marked with a cross;
// the SLO is a solid red line and the p50 of completed drills a dashed one.
// It returns an error when no point has a duration.
func HistoryChart(points []HistoryPoint, route string, slo time.Duration) ([]byte, error) {
	pts := sortedNewestFirst(points)
	slices.Reverse(pts)
	var done, other plotter.XYs
	var xmin, xmax, ymax float64
	first := true
	for _, p := range pts {
		if p.Total <= 0 {
			continue
		}
		x, y := float64(p.At.Unix()), p.Total.Seconds()
		if first {
			xmin, xmax, first = x, x, false
		}
		xmin, xmax, ymax = math.Min(xmin, x), math.Max(xmax, x), math.Max(ymax, y)
		if p.Kind == audit.KindDrillCompleted {
			done = append(done, plotter.XY{X: x, Y: y})
		} else {
			other = append(other, plotter.XY{X: x, Y: y})
		}
	}
	if first {
		return nil, errors.New("no drill recorded a duration")
	}
	if xmax-xmin < 3600 {
		// One drill, or several within the hour: give the time axis some
		// width so the ticks can be labelled.
		xmin, xmax = xmin-1800, xmax+1800
	}

	p, line, err := linePlot(routeName(route)+" drill rollback times", done)
	if err != nil {
		return nil, err
	}
	p.X.Label.Text = "date (UTC)"
	p.Y.Label.Text = "seconds"
	p.X.Tick.Marker = plot.TimeTicks{Format: timeFormat(xmax - xmin)}
	p.X.Min, p.X.Max = xmin, xmax
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	if line != nil {
		line.Color = color.RGBA{B: 200, A: 255}
		line.Width = vg.Points(1.5)
		dots, err := plotter.NewScatter(done)
		if err != nil {
			return nil, err
		}
		dots.Shape, dots.Color = draw.CircleGlyph{}, line.Color
		p.Add(dots)
		p.Legend.Add("completed", line, dots)
	}
	if len(other) > 0 {
		marks, err := plotter.NewScatter(other)
		if err != nil {
			return nil, err
		}
		marks.Shape, marks.Color, marks.Radius = draw.CrossGlyph{}, color.RGBA{R: 220, G: 120, A: 255}, vg.Points(4)
		p.Add(marks)
		p.Legend.Add("failed or superseded", marks)
	}
	if totals := completedTotals(pts); len(totals) > 0 {
		p50 := percentile(totals, 0.5).Seconds()
		l, err := hline(xmin, xmax, p50)
		if err != nil {
			return nil, err
		}
		l.Color, l.Dashes = color.Gray{Y: 90}, []vg.Length{vg.Points(6), vg.Points(4)}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("p50 %s", drillDuration(percentile(totals, 0.5))), l)
	}
	ytop := ymax
	if slo > 0 {
		l, err := hline(xmin, xmax, slo.Seconds())
		if err != nil {
			return nil, err
		}
		l.Color, l.Width = color.RGBA{R: 200, A: 255}, vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("SLO %s", drillDuration(slo)), l)
		ytop = math.Max(ytop, slo.Seconds())
	}
	if slo > 0 && slo.Seconds() > logScaleRatio*ymax {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Min = lowestPositive(done, other) / 2
		// Headroom above the SLO keeps the legend, top left, clear of
		// the lines.
		p.Y.Max = ytop * 30
		p.Y.Label.Text = "seconds (log scale)"
	} else {
		p.Y.Min, p.Y.Max = 0, ytop*1.6
	}
	return renderPNG(p, chartWidth, chartHeight)
}

// renderPNG renders p as a PNG of the given size.
func renderPNG(p *plot.Plot, w, h vg.Length) ([]byte, error) {
	wt, err := p.WriterTo(w, h, "png")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// linePlot is a titled plot of one line, the base of the history chart,
// and the line for styling. With no points it is a titled plot and the
// line is nil.
func linePlot(title string, pts plotter.XYs) (*plot.Plot, *plotter.Line, error) {
	p := plot.New()
	p.Title.Text = title
	if len(pts) == 0 {
		return p, nil, nil
	}
	line, err := plotter.NewLine(pts)
	if err != nil {
		return nil, nil, err
	}
	p.Add(line)
	return p, line, nil
}

// routeName names route in a title, "all routes" for "".
func routeName(route string) string {
	if route == "" {
		return "all routes"
	}
	return route
}

// hline is a horizontal line at y across x0..x1.
func hline(x0, x1, y float64) (*plotter.Line, error) {
	return plotter.NewLine(plotter.XYs{{X: x0, Y: y}, {X: x1, Y: y}})
}

// timeFormat picks tick labels for a time axis spanning span seconds.
func timeFormat(span float64) string {
	switch {
	case span <= 2*24*3600:
		return "Jan 2 15:04"
	case span <= 300*24*3600:
		return "Jan 2"
	}
	return "2006-01-02"
}

func lowestPositive(sets ...plotter.XYs) float64 {
	low := math.Inf(1)
	for _, s := range sets {
		for _, p := range s {
			if p.Y > 0 {
				low = math.Min(low, p.Y)
			}
		}
	}
	if math.IsInf(low, 1) {
		return 0.001
	}
	return low
}

func hasDurations(points []HistoryPoint) bool {
	for _, p := range points {
		if p.Total > 0 {
			return true
		}
	}
	return false
}

// sortedNewestFirst copies points, newest first.
func sortedNewestFirst(points []HistoryPoint) []HistoryPoint {
	pts := slices.Clone(points)
	slices.SortStableFunc(pts, func(a, b HistoryPoint) int { return b.At.Compare(a.At) })
	return pts
}

// completedTotals are the durations of completed drills, in the order
// given: what the p50 and p95 are of, as DrillStatsOf computes them.
func completedTotals(pts []HistoryPoint) []time.Duration {
	var out []time.Duration
	for _, p := range pts {
		if p.Kind == audit.KindDrillCompleted && p.Total > 0 {
			out = append(out, p.Total)
		}
	}
	return out
}

// percentile is the continuous percentile q of ds (linear interpolation,
// as Postgres's percentile_cont, so the text agrees with status).
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	frac := pos - float64(lo)
	return s[lo] + time.Duration(frac*float64(s[hi]-s[lo]))
}

func countOver(pts []HistoryPoint, slo time.Duration) int {
	n := 0
	for _, p := range pts {
		if p.Total > slo {
			n++
		}
	}
	return n
}

// trendText compares the median of the newer half of the completed drills
// with the older half's ("" with fewer than four, too few to call a
// trend). pts are newest first.
func trendText(pts []HistoryPoint) string {
	totals := completedTotals(pts)
	if len(totals) < 4 {
		return ""
	}
	half := len(totals) / 2
	newer, older := percentile(totals[:half], 0.5), percentile(totals[len(totals)-half:], 0.5)
	if older <= 0 {
		return ""
	}
	ratio := float64(newer) / float64(older)
	word := "steady"
	switch {
	case ratio >= 1.2:
		word = fmt.Sprintf("slower (%.1f×)", ratio)
	case ratio <= 1/1.2:
		word = fmt.Sprintf("faster (%.1f×)", 1/ratio)
	}
	return fmt.Sprintf("%s — median of the last %d %s, %s before", word, half, drillDuration(newer), drillDuration(older))
}

// outcomeText is one drill's outcome for a history line.
func outcomeText(p HistoryPoint) string {
	o := p.Outcome
	if o == "" {
		o = strings.TrimPrefix(string(p.Kind), "drill.")
	}
	if p.FailedAt != "" && p.Kind != audit.KindDrillCompleted {
		o += " at " + p.FailedAt
	}
	return o
}
