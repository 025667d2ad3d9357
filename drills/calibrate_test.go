package drills

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backflip-dev/backflip/audit"
)

// historyDB is a fresh audit database.
func historyDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pc, err := pgxpool.ParseConfig("")
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig = pg.NewDatabase(t)
	db, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// seedDrill is one drill event to store.
type seedDrill struct {
	kind     audit.Kind
	outcome  string
	total    time.Duration // 0: no timing
	ago      time.Duration
	failedAt string
	regress  bool
}

// seedDrills stores drill events of route, as the shipper would.
func seedDrills(t *testing.T, db audit.DBTX, route string, drills []seedDrill) {
	t.Helper()
	now := time.Now().UTC()
	var evs []audit.Event
	for _, d := range drills {
		ev := audit.Event{
			EventID: uuid.New(), OpID: uuid.New(), Kind: d.kind, Route: route, FromVersion: "v42", ToVersion: "v41",
			Actor: "system:drills", Reason: "drill", Outcome: d.outcome, SchemaVersion: audit.SchemaVersion,
			OccurredAt: now.Add(-d.ago),
		}
		if d.total > 0 {
			ev.Timings = map[string]float64{"total": durationMS(d.total), "rollback": durationMS(d.total), "flip": 2}
		}
		details := map[string]any{"state": d.outcome}
		if d.failedAt != "" {
			details["failed_at"] = d.failedAt
		}
		if d.total > 0 {
			details["calibration"] = map[string]any{"regression": d.regress}
		}
		ev.Details, _ = json.Marshal(details)
		evs = append(evs, ev)
	}
	if _, err := audit.InsertEvents(context.Background(), db, evs); err != nil {
		t.Fatal(err)
	}
}

// usualDrills are twelve completed drills of 0.9–1.1 s (p50 1 s), one a
// week, and a failed one of 5 s that must not count.
func usualDrills() []seedDrill {
	var ds []seedDrill
	for i := range 12 {
		ds = append(ds, seedDrill{kind: audit.KindDrillCompleted, outcome: RunCompleted,
			total: 900*time.Millisecond + time.Duration(i%3)*100*time.Millisecond, ago: time.Duration(i+1) * 7 * 24 * time.Hour})
	}
	ds = append(ds, seedDrill{kind: audit.KindDrillFailed, outcome: RunFailed, total: 5 * time.Second, ago: 3 * 24 * time.Hour, failedAt: StepVerify})
	return ds
}

func TestCalibrate(t *testing.T) {
	db := historyDB(t)
	seedDrills(t, db, "chat-70b", usualDrills())
	ctx := runnerCtx(t)
	const slo = 90 * time.Second

	cases := []struct {
		name       string
		db         audit.DBTX
		route      string
		total      time.Duration
		regression bool
		text       []string
	}{
		{name: "UsualIsFine", db: db, route: "chat-70b", total: 1100 * time.Millisecond,
			text: []string{"1.1 s — p50 1.0 s, p95 1.1 s over 12 drills; SLO 90 s: ok"}},
		{name: "TwiceTheMedianIsARegression", db: db, route: "chat-70b", total: 2 * time.Second, regression: true,
			text: []string{"REGRESSION: 2.0× slower than the usual (p50 1.0 s)"}},
		{name: "OverTheSLOIsARegression", db: db, route: "chat-70b", total: 95 * time.Second, regression: true,
			text: []string{"REGRESSION: over the 90 s SLO by 5.0 s", "95.0× slower"}},
		{name: "NoHistoryNoRegression", db: db, route: "embed-small", total: 2 * time.Second,
			text: []string{"2.0 s — no earlier drill to compare with; SLO 90 s: ok"}},
		{name: "NoHistoryStillHasTheSLO", db: db, route: "embed-small", total: 100 * time.Second, regression: true,
			text: []string{"no earlier drill", "REGRESSION: over the 90 s SLO"}},
		{name: "NoDatabase", db: nil, route: "chat-70b", total: 2 * time.Second,
			text: []string{"2.0 s — no history (audit database unavailable); SLO 90 s: ok"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Calibrate(ctx, tc.db, tc.route, tc.total, slo)
			if c.Regression != tc.regression {
				t.Errorf("regression %v (%v), want %v: %s", c.Regression, c.Reasons, tc.regression, c.Text)
			}
			wantText(t, c.Text, tc.text...)
			if tc.regression != (len(c.Reasons) > 0) {
				t.Errorf("reasons %v", c.Reasons)
			}
		})
	}

	t.Run("DatabaseDownDoesNotFail", func(t *testing.T) {
		down := historyDB(t)
		down.Close()
		c := Calibrate(ctx, down, "chat-70b", 2*time.Second, slo)
		if c.Regression || c.HistoryError == "" {
			t.Errorf("calibration %+v", c)
		}
		wantText(t, c.Text, "no history (audit database unavailable)")
	})
}

// TestCalibrationTextUnits checks the durations a report shows, from the
// milliseconds of a healthy flip to the SLO's seconds.
func TestCalibrationTextUnits(t *testing.T) {
	for d, want := range map[time.Duration]string{
		3500 * time.Microsecond: "3.5 ms",
		120 * time.Millisecond:  "120 ms",
		1420 * time.Millisecond: "1.4 s",
		90 * time.Second:        "90 s",
	} {
		if got := drillDuration(d); got != want {
			t.Errorf("drillDuration(%s) = %q, want %q", d, got, want)
		}
	}
	c := Calibration{Total: 30 * time.Millisecond, SLO: 90 * time.Second,
		History: audit.DrillStats{Count: 3, Total: audit.Percentiles{N: 3, P50: 10, P95: 12}}}
	c.judge()
	if !c.Regression || !strings.Contains(c.Text, "30 ms — p50 10 ms, p95 12 ms over 3 drills") || !strings.Contains(c.Text, "3.0× slower") {
		t.Errorf("calibration %s", fmt.Sprint(c.Text))
	}
}
