package drills

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
)

// pngMagic opens every PNG file.
const pngMagic = "\x89PNG\r\n\x1a\n"

func mustPNG(t *testing.T, b []byte) {
	t.Helper()
	if !bytes.HasPrefix(b, []byte(pngMagic)) {
		t.Fatalf("not a PNG: % x", b[:min(len(b), 8)])
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode the PNG: %v", err)
	}
	if bd := img.Bounds(); bd.Dx() < 100 || bd.Dy() < 100 {
		t.Fatalf("image is %v", bd)
	}
}

func TestHistoryFromDatabase(t *testing.T) {
	db := historyDB(t)
	drills := usualDrills()
	drills = append(drills,
		seedDrill{kind: audit.KindDrillCompleted, outcome: RunCompleted, total: 2500 * time.Millisecond, ago: 24 * time.Hour, regress: true},
		seedDrill{kind: audit.KindDrillSuperseded, outcome: RunSuperseded, total: 800 * time.Millisecond, ago: 48 * time.Hour, failedAt: StepHold},
		seedDrill{kind: audit.KindDrillFailed, outcome: RunRefused, ago: 50 * time.Hour, failedAt: StepCheck},
	)
	seedDrills(t, db, "chat-70b", drills)
	// Another route's drills and a rollback of this one are not its drill
	// history.
	seedDrills(t, db, "embed-small", []seedDrill{{kind: audit.KindDrillCompleted, outcome: RunCompleted, total: time.Second, ago: time.Hour}})
	seedDrills(t, db, "chat-70b", []seedDrill{{kind: audit.KindRollback, outcome: "completed", total: time.Second, ago: time.Hour}})
	ctx := runnerCtx(t)

	pts, err := LoadHistory(ctx, db, "chat-70b", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 16 {
		t.Fatalf("%d points, want 16", len(pts))
	}
	if newest := pts[0]; newest.Total != 2500*time.Millisecond || !newest.Regression || newest.Kind != audit.KindDrillCompleted {
		t.Errorf("newest point %+v", newest)
	}
	if p := pts[2]; p.Outcome != RunRefused || p.FailedAt != StepCheck || p.Total != 0 {
		t.Errorf("refused point %+v", p)
	}

	text := HistoryText(pts, "chat-70b", 90*time.Second)
	wantText(t, text, "drill history of chat-70b: 16 drills", "rollback p50 1.0 s", "over 13 completed", "SLO 90 s",
		"2.5 s", "completed  (v42 → v41)  REGRESSION", "superseded at hold", "refused at check", "failed at verify", "… and 6 earlier",
		pts[0].At.UTC().Format("2006-01-02"))
	if strings.Contains(text, "(0 over it)") {
		t.Errorf("text %s", text)
	}
	t.Logf("history:\n%s", text)

	b, err := HistoryChart(pts, "chat-70b", 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mustPNG(t, b)

	t.Run("RunnerHistory", func(t *testing.T) {
		r := historyRunner(t, db)
		text, png, err := r.History(ctx, "chat-70b")
		if err != nil {
			t.Fatal(err)
		}
		mustPNG(t, png)
		wantText(t, text, "drill history of chat-70b")

		text, png, err = r.History(ctx, "other-route")
		if err != nil || png != nil {
			t.Fatalf("history of a route without drills: %v, %d bytes", err, len(png))
		}
		wantText(t, text, "no drills recorded for other-route")
	})
	t.Run("EveryRoute", func(t *testing.T) {
		all, err := LoadHistory(ctx, db, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 17 {
			t.Fatalf("%d points of every route, want 17", len(all))
		}
		text := HistoryText(all, "", 90*time.Second)
		wantText(t, text, "drill history of all routes: 17 drills", "UTC  embed-small  1.0 s", "UTC  chat-70b  2.5 s")
		b, err := HistoryChart(all, "", 90*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		mustPNG(t, b)
	})
	t.Run("RunnerHistoryWithoutDatabase", func(t *testing.T) {
		r := historyRunner(t, nil)
		_, _, err := r.History(ctx, "chat-70b")
		wantCode(t, err, commands.EUNAVAILABLE, "audit database")
	})
}

// historyRunner is a Runner that only reads history: its etcd and
// commands are never called.
func historyRunner(t *testing.T, db audit.DBTX) *Runner {
	t.Helper()
	return &Runner{cfg: Config{DB: db, SLO: 90 * time.Second}, log: zap.NewNop()}
}

func TestHistoryChart(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name string
		pts  []HistoryPoint
		slo  time.Duration
	}{
		{name: "OneDrill", slo: 90 * time.Second,
			pts: []HistoryPoint{{At: now, Kind: audit.KindDrillCompleted, Outcome: RunCompleted, Total: 40 * time.Millisecond}}},
		{name: "SLOCloseToTheDrillsIsLinear", slo: 2 * time.Second, pts: []HistoryPoint{
			{At: now.Add(-48 * time.Hour), Kind: audit.KindDrillCompleted, Total: time.Second},
			{At: now.Add(-24 * time.Hour), Kind: audit.KindDrillFailed, Total: 3 * time.Second},
			{At: now, Kind: audit.KindDrillCompleted, Total: 1200 * time.Millisecond}}},
		{name: "OnlyFailedDrills", slo: 90 * time.Second, pts: []HistoryPoint{
			{At: now.Add(-time.Hour), Kind: audit.KindDrillFailed, Total: time.Second},
			{At: now, Kind: audit.KindDrillSuperseded, Total: 2 * time.Second}}},
		{name: "NoSLO", pts: []HistoryPoint{
			{At: now.Add(-400 * 24 * time.Hour), Kind: audit.KindDrillCompleted, Total: time.Second},
			{At: now, Kind: audit.KindDrillCompleted, Total: 2 * time.Second}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := HistoryChart(tc.pts, "chat-70b", tc.slo)
			if err != nil {
				t.Fatal(err)
			}
			mustPNG(t, b)
		})
	}
	t.Run("NothingToDraw", func(t *testing.T) {
		if _, err := HistoryChart([]HistoryPoint{{At: now, Kind: audit.KindDrillFailed, Outcome: RunRefused}}, "chat-70b", time.Second); err == nil {
			t.Error("a chart without durations was drawn")
		}
		if _, err := HistoryChart(nil, "chat-70b", time.Second); err == nil {
			t.Error("a chart without points was drawn")
		}
	})
}

func TestHistoryText(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	var pts []HistoryPoint
	// Eight weekly drills getting slower: 1 s … 2.4 s, given oldest first
	// to show the order does not matter.
	for i := range 8 {
		pts = append(pts, HistoryPoint{At: now.Add(time.Duration(i-7) * 7 * 24 * time.Hour), Kind: audit.KindDrillCompleted,
			Outcome: RunCompleted, Total: time.Second + time.Duration(i)*200*time.Millisecond, From: "v42", To: "v41"})
	}
	text := HistoryText(pts, "chat-70b", 90*time.Second)
	lines := strings.Split(text, "\n")
	if len(lines) != 2+8 {
		t.Fatalf("%d lines:\n%s", len(lines), text)
	}
	wantText(t, lines[0], "drill history of chat-70b: 8 drills · rollback p50 1.7 s, p95 2.3 s over 8 completed · SLO 90 s")
	wantText(t, lines[1], "trend: slower (1.6×) — median of the last 4 2.1 s, 1.3 s before")
	wantText(t, lines[2], "2026-03-02 10:00 UTC  2.4 s    completed  (v42 → v41)")
	wantText(t, lines[9], "2026-01-12 10:00 UTC  1.0 s")

	if got := HistoryText(nil, "chat-70b", time.Second); !strings.Contains(got, "no drills recorded for chat-70b") {
		t.Errorf("empty history: %q", got)
	}
}
