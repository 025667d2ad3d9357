package audit

import (
	"math"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestHistory(t *testing.T) {
	t.Parallel()
	conn := mustConnect(t, pg.NewDatabase(t))
	var events []Event
	// chat-70b at 0..4 s, embed-small at 0.5..2.5 s; two chat-70b events
	// share an instant, so the later-recorded one must come first.
	for i := range 5 {
		events = append(events, testEvent(uuid.New(), KindRollback, "chat-70b", time.Duration(i)*time.Second))
	}
	events = append(events, testEvent(uuid.New(), KindPromote, "chat-70b", 4*time.Second))
	for i := range 3 {
		events = append(events, testEvent(uuid.New(), KindPromote, "embed-small", time.Duration(i)*time.Second+500*time.Millisecond))
	}
	// Inserted out of time order: history orders by occurred_at, not by arrival.
	shuffled := []Event{events[3], events[0], events[6], events[4], events[5], events[8], events[1], events[7], events[2]}
	if _, err := InsertEvents(t.Context(), conn, shuffled); err != nil {
		t.Fatal(err)
	}
	ids := func(rows []Row) []uuid.UUID {
		var out []uuid.UUID
		for _, r := range rows {
			out = append(out, r.EventID)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		route string
		limit int
		want  []Event
	}{
		{"RouteNewestFirst", "chat-70b", 10, []Event{events[5], events[4], events[3], events[2], events[1], events[0]}},
		{"RouteLimited", "chat-70b", 2, []Event{events[5], events[4]}},
		{"OtherRoute", "embed-small", 10, []Event{events[8], events[7], events[6]}},
		{"AllRoutes", "", 4, []Event{events[5], events[4], events[3], events[8]}},
		{"LimitBelowOneIsOne", "", 0, []Event{events[5]}},
		{"LimitAboveMaxIsMax", "", 100000, []Event{events[5], events[4], events[3], events[8], events[2], events[7], events[1], events[6], events[0]}},
		{"UnknownRoute", "nope", 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := History(t.Context(), conn, tc.route, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			got := ids(rows)
			var want []uuid.UUID
			for _, e := range tc.want {
				want = append(want, e.EventID)
			}
			if len(got) != len(want) {
				t.Fatalf("got %d rows, want %d", len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("row %d is %s, want %s", i, got[i], want[i])
				}
			}
		})
	}
}

func TestDrillStats(t *testing.T) {
	t.Parallel()
	conn := mustConnect(t, pg.NewDatabase(t))
	drill := func(route string, kind Kind, at time.Duration, timings map[string]float64) Event {
		e := testEvent(uuid.New(), kind, route, at)
		e.Timings = timings
		return e
	}
	events := []Event{
		drill("chat-70b", KindDrillCompleted, 1*time.Hour, map[string]float64{"total": 300, "warm": 30}),
		drill("chat-70b", KindDrillCompleted, 2*time.Hour, map[string]float64{"total": 100, "warm": 10, "flip": 3}),
		drill("chat-70b", KindDrillCompleted, 5*time.Hour, map[string]float64{"total": 1000, "warm": 50}),
		drill("chat-70b", KindDrillCompleted, 3*time.Hour, map[string]float64{"total": 400, "warm": 40, "flip": 1}),
		drill("chat-70b", KindDrillCompleted, 4*time.Hour, map[string]float64{"total": 200, "warm": 20}),
		// Not counted: another kind, another route.
		drill("chat-70b", KindDrillFailed, 6*time.Hour, map[string]float64{"total": 99999, "warm": 99999}),
		drill("embed-small", KindDrillCompleted, 7*time.Hour, map[string]float64{"total": 7, "warm": 7}),
	}
	if _, err := InsertEvents(t.Context(), conn, events); err != nil {
		t.Fatal(err)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }

	t.Run("HandComputedPercentiles", func(t *testing.T) {
		st, err := DrillStatsOf(t.Context(), conn, "chat-70b")
		if err != nil {
			t.Fatal(err)
		}
		if st.Count != 5 || !st.LastRun.Equal(baseTime.Add(5*time.Hour)) {
			t.Fatalf("count %d last %v, want 5 and %v", st.Count, st.LastRun, baseTime.Add(5*time.Hour))
		}
		// Sorted totals 100 200 300 400 1000: p50 is the middle one; p95
		// sits at rank 0.95·4 = 3.8, so 400 + 0.8·(1000−400) = 880.
		if st.Total.N != 5 || !near(st.Total.P50, 300) || !near(st.Total.P95, 880) {
			t.Errorf("total = %+v, want N 5, p50 300, p95 880", st.Total)
		}
		// warm 10..50: p50 30, p95 40 + 0.8·10 = 48. flip 1, 3: p50 2,
		// p95 1 + 0.95·2 = 2.9. "total" is not repeated among the phases.
		want := map[string]Percentiles{"warm": {N: 5, P50: 30, P95: 48}, "flip": {N: 2, P50: 2, P95: 2.9}}
		if len(st.Phases) != len(want) {
			t.Fatalf("phases %v, want %v", st.Phases, want)
		}
		for phase, w := range want {
			g := st.Phases[phase]
			if g.N != w.N || !near(g.P50, w.P50) || !near(g.P95, w.P95) {
				t.Errorf("phase %s = %+v, want %+v", phase, g, w)
			}
		}
	})

	t.Run("NoDrillsIsEmpty", func(t *testing.T) {
		st, err := DrillStatsOf(t.Context(), conn, "never-drilled")
		if err != nil {
			t.Fatal(err)
		}
		if st.Count != 0 || !st.LastRun.IsZero() || st.Total != (Percentiles{}) || len(st.Phases) != 0 {
			t.Fatalf("stats = %+v, want empty", st)
		}
	})

	t.Run("AllRoutes", func(t *testing.T) {
		st, err := DrillStatsOf(t.Context(), conn, "")
		if err != nil || st.Count != 6 || st.Phases["warm"].N != 6 {
			t.Fatalf("stats = %+v, %v; want 6 drills", st, err)
		}
	})
}
