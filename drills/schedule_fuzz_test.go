package drills

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// FuzzDecodeSchedule: drills/schedules/<route> drives the leader's drill
// scheduler, which aborts the route's in-flight requests twice per run. A
// value the scheduler accepts has a cron expression ParseCron accepts (at
// most hourly, runs within five years), one to MaxAnnouncements distinct
// announcement offsets within 1m..7d, a non-blank creator and bounded actor
// ids; re-encoded, it decodes to the same schedule with the same next runs.
// A refused value is an ErrMalformedSchedule error naming the key.
func FuzzDecodeSchedule(f *testing.F) {
	for _, s := range []string{
		// As Put writes them (the contract's shape plus created_at, skip).
		`{"cron":"0 9 * * 1","announce":["24h","15m"],"created_by":"U2147483697","created_at":"2026-11-25T10:00:00Z"}`,
		`{"cron":"CRON_TZ=Europe/Berlin 30 2 * * *","announce":["24h","15m"],"created_by":"U1","created_at":"2026-11-25T10:00:00.123456789Z","skip":1795000000,"skipped_by":"U2"}`,
		`{"cron":"TZ=America/New_York @daily","announce":["1h"],"created_by":"cli:alice@ops-1"}`,
		`{"cron":"0 9 * * 1","announce":null,"created_by":"U1"}`,
		`{"cron":"0 9 * * 1","announce":[],"created_by":"U1"}`,
		// Hostile or broken ones.
		`{"cron":"*/5 * * * *","announce":["24h"],"created_by":"U1"}`,
		`{"cron":"@every 1h","announce":["24h"],"created_by":"U1"}`,
		`{"cron":"0 9 31 2 *","announce":["24h"],"created_by":"U1"}`,
		`{"cron":"CRON_TZ=Local 0 9 * * 1","announce":["24h"],"created_by":"U1"}`,
		`{"cron":"0 9 * * 1","announce":["24h","24h"],"created_by":"U1"}`,
		`{"cron":"0 9 * * 1","announce":["30s"],"created_by":"U1"}`,
		`{"cron":"0 9 * * 1","announce":["1h","2h","3h","4h","5h","6h"],"created_by":"U1"}`,
		`{"cron":"0 9 * * 1","announce":[" 24h "],"created_by":"U1"}`,
		`{"cron":"0 9 * * 1","announce":["24h"],"created_by":"   "}`,
		`{"cron":"0 9 * * 1","announce":["24h"],"created_by":"U1","skip":-1}`,
		`{"cron":"\u201c0 9 * * 1\u201d","created_by":"U1"}`,
		`{"cron":"0 9 * * 1","created_by":"U1","warm_quorum":1}`,
		`{"cron":"0 9 * * 1","created_by":"U1"} {}`,
		`null`, `{}`, `[]`,
	} {
		f.Add("chat-70b", []byte(s))
	}
	from := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, route string, value []byte) {
		key := Keys{Prefix: "/backflip"}.Schedule(route)
		sc, sched, loc, offsets, err := decodeSchedule(key, value)
		if err != nil {
			if !errors.Is(err, ErrMalformedSchedule) || !strings.Contains(err.Error(), key) {
				t.Fatalf("refusal %v is not ErrMalformedSchedule naming %s", err, key)
			}
			return
		}
		if _, _, err := ParseCron(sc.Cron); err != nil {
			t.Fatalf("accepted cron %q that ParseCron refuses: %v", sc.Cron, err)
		}
		if sched == nil || loc == nil {
			t.Fatalf("accepted %q without a schedule or zone", value)
		}
		runs := NextRuns(sched, from, 3)
		if len(runs) == 0 {
			t.Fatalf("accepted cron %q never runs", sc.Cron)
		}
		for i := 1; i < len(runs); i++ {
			if runs[i].Sub(runs[i-1]) < 30*time.Minute {
				t.Fatalf("accepted cron %q runs %v apart", sc.Cron, runs[i].Sub(runs[i-1]))
			}
		}
		if len(offsets) < 1 || len(offsets) > MaxAnnouncements || len(offsets) != len(sc.Announce) {
			t.Fatalf("accepted %d offsets (%q)", len(offsets), sc.Announce)
		}
		seen := map[time.Duration]bool{}
		for _, d := range offsets {
			if d < MinAnnounceOffset || d > MaxAnnounceOffset || seen[d] {
				t.Fatalf("accepted offsets %v", offsets)
			}
			seen[d] = true
		}
		if strings.TrimSpace(sc.CreatedBy) == "" || len(sc.CreatedBy) > routing.MaxActorLen || len(sc.SkippedBy) > routing.MaxActorLen {
			t.Fatalf("accepted actors %q, %q", sc.CreatedBy, sc.SkippedBy)
		}

		enc, err := json.Marshal(sc)
		if err != nil {
			t.Fatal(err)
		}
		again, sched2, loc2, offsets2, err := decodeSchedule(key, enc)
		if err != nil {
			t.Fatalf("re-encoded schedule %s refused: %v", enc, err)
		}
		if !again.CreatedAt.Equal(sc.CreatedAt) {
			t.Fatalf("round trip moved created_at from %v to %v", sc.CreatedAt, again.CreatedAt)
		}
		again.CreatedAt = sc.CreatedAt
		if !reflect.DeepEqual(again, sc) || loc2.String() != loc.String() || !reflect.DeepEqual(offsets2, offsets) {
			t.Fatalf("round trip changed the schedule:\n%+v\n%+v", sc, again)
		}
		if runs2 := NextRuns(sched2, from, 3); !reflect.DeepEqual(runs2, runs) {
			t.Fatalf("round trip changed the runs: %v, then %v", runs, runs2)
		}
	})
}
