package drills

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// schedClock is a settable clock shared by the stores and schedulers of a
// test; it counts its readers so a test can tell that a scheduler ticked.
type schedClock struct {
	mu sync.Mutex
	t  time.Time
}

func newSchedClock(t time.Time) *schedClock { return &schedClock{t: t} }

func (c *schedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *schedClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func schedCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// schedWantCode fails the test unless err is a *commands.Error with code
// whose message contains every part.
func schedWantCode(t *testing.T, err error, code string, parts ...string) {
	t.Helper()
	var ce *commands.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want a *commands.Error %s", err, err, code)
	}
	if ce.Code != code {
		t.Fatalf("code %s (%s), want %s", ce.Code, ce.Message, code)
	}
	for _, p := range parts {
		if !strings.Contains(ce.Message, p) {
			t.Fatalf("message %q does not contain %q", ce.Message, p)
		}
	}
}

func TestParseCron(t *testing.T) {
	from := utc("2026-01-01T00:00:00Z") // a Thursday
	good := []struct {
		name, expr, zone string
		next             string // first run after from, RFC3339 in UTC
	}{
		{"MondaysUTC", "0 9 * * 1", "UTC", "2026-01-05T09:00:00Z"},
		{"Trimmed", "  0   9 * * 1 ", "UTC", "2026-01-05T09:00:00Z"},
		{"WeekdaysBerlin", "CRON_TZ=Europe/Berlin 0 9 * * 1-5", "Europe/Berlin", "2026-01-01T08:00:00Z"},
		{"TZPrefix", "TZ=America/New_York 30 6 * * *", "America/New_York", "2026-01-01T11:30:00Z"},
		{"PrefixAnyCase", "cron_tz=Europe/Berlin 0 9 * * *", "Europe/Berlin", "2026-01-01T08:00:00Z"},
		{"Names", "0 9 * JAN MON-FRI", "UTC", "2026-01-01T09:00:00Z"},
		{"Hourly", "0 * * * *", "UTC", "2026-01-01T01:00:00Z"},
		{"HourlyDescriptor", "@hourly", "UTC", "2026-01-01T01:00:00Z"},
		{"DailyDescriptor", "@daily", "UTC", "2026-01-02T00:00:00Z"},
		{"DescriptorUpperCase", "@WEEKLY", "UTC", "2026-01-04T00:00:00Z"},
		{"DescriptorInZone", "CRON_TZ=Asia/Tokyo @midnight", "Asia/Tokyo", "2026-01-01T15:00:00Z"},
		{"Monthly", "@monthly", "UTC", "2026-02-01T00:00:00Z"},
		{"LeapDay", "0 0 29 2 *", "UTC", "2028-02-29T00:00:00Z"},
		{"QuestionMark", "0 9 ? * 1", "UTC", "2026-01-05T09:00:00Z"},
		{"EveryOtherHour", "15 */2 * * *", "UTC", "2026-01-01T00:15:00Z"},
		{"ExplicitUTC", "CRON_TZ=UTC 0 9 * * 1", "UTC", "2026-01-05T09:00:00Z"},
	}
	for _, c := range good {
		t.Run(c.name, func(t *testing.T) {
			s, loc, err := ParseCron(c.expr)
			if err != nil {
				t.Fatalf("ParseCron(%q): %v", c.expr, err)
			}
			if loc.String() != c.zone {
				t.Fatalf("zone %s, want %s", loc, c.zone)
			}
			next := NextRuns(s, from, 1)
			if len(next) != 1 || !next[0].Equal(utc(c.next)) {
				t.Fatalf("next run %v, want %s", next, c.next)
			}
			if next[0].Location().String() != c.zone {
				t.Fatalf("next run in %s, want the schedule's zone %s", next[0].Location(), c.zone)
			}
		})
	}

	bad := []struct {
		name, expr string
		parts      []string
	}{
		{"Empty", "", []string{"empty"}},
		{"Blank", " \t ", []string{"empty"}},
		{"TooLong", "0 9 * * " + strings.Repeat("1,", 150) + "1", []string{"at most 200"}},
		{"EveryMinute", "* * * * *", []string{"60 times an hour", "at most hourly", "outage"}},
		{"EveryHalfHour", "*/30 * * * *", []string{"2 times an hour", "aborts"}},
		{"TwoMinutes", "0,30 9 * * *", []string{"2 times an hour"}},
		{"MinuteRange", "0-5 9 * * *", []string{"6 times an hour"}},
		{"Every", "@every 1h", []string{"@every is not supported"}},
		{"EveryBare", "@every", []string{"@every is not supported"}},
		{"Reboot", "@reboot", []string{"not a known descriptor"}},
		{"DescriptorWithMore", "@daily 0 9", []string{"takes nothing after it"}},
		{"SixFields", "0 0 9 * * 1", []string{"6 fields", "no seconds field"}},
		{"FourFields", "0 9 * *", []string{"4 fields", "minute, hour"}},
		{"OneField", "9", []string{"1 field;"}},
		{"ZoneOnly", "CRON_TZ=Europe/Berlin", []string{"no schedule follows"}},
		{"ZoneOnlySpace", "CRON_TZ=Europe/Berlin   ", []string{"no schedule follows"}},
		{"UnknownZone", "CRON_TZ=Mars/Olympus_Mons 0 9 * * *", []string{"not a known time zone", "Europe/Berlin"}},
		{"ZoneWrongCase", "CRON_TZ=europe/berlin 0 9 * * *", []string{"not a known time zone", "case-sensitive"}},
		{"LocalZone", "CRON_TZ=Local 0 9 * * *", []string{"server's settings"}},
		{"EmptyZone", "CRON_TZ= 0 9 * * *", []string{"names no time zone"}},
		{"PathZone", "CRON_TZ=../../etc/passwd 0 9 * * *", []string{"'.'"}},
		{"LongZone", "CRON_TZ=" + strings.Repeat("A", 70) + " 0 9 * * *", []string{"at most 64"}},
		{"ZoneNotFirst", "0 9 * * 1 CRON_TZ=UTC", []string{"must come first"}},
		{"OtherSetting", "SHELL=/bin/sh 0 9 * * 1", []string{"not a setting"}},
		{"MinuteOutOfRange", "70 9 * * *", []string{"not a valid schedule", "minute (0-59)"}},
		{"HourOutOfRange", "0 24 * * *", []string{"not a valid schedule"}},
		{"DowOutOfRange", "0 9 * * 8", []string{"not a valid schedule"}},
		{"ZeroStep", "0 */0 * * *", []string{"not a valid schedule"}},
		{"Garbage", "a b c d e", []string{"not a valid schedule"}},
		{"HugeNumber", "0 99999999999999999999 * * *", []string{"not a valid schedule"}},
		{"NeverRuns", "0 9 31 2 *", []string{"never runs"}},
		{"NeverRunsApril31", "0 9 31 4 *", []string{"never runs"}},
		{"ShellInjection", "0 9 * * 1; rm -rf /", []string{"';'"}},
		{"SmartQuotes", "“0 9 * * 1”", []string{"quote"}},
		{"StraightQuotes", `"0 9 * * 1"`, []string{"quote"}},
		{"NUL", "0 9 * * 1\x00", []string{"no meaning in cron"}},
		{"Newline", "0 9 * * 1\n0 * * * *", []string{"no meaning in cron"}},
		{"ArabicDigits", "٠ 9 * * 1", []string{"no meaning in cron"}},
		{"InvalidUTF8", "0 9 * * \xff", []string{"no meaning in cron"}},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			s, loc, err := ParseCron(c.expr)
			if err == nil {
				t.Fatalf("ParseCron(%q) = %v in %v, want an error", c.expr, s, loc)
			}
			schedWantCode(t, err, commands.EINVALID, append(c.parts, "Examples:", `"0 9 * * 1" (Mondays 09:00 UTC)`)...)
			if u := commands.ErrorUsage(err); u != scheduleUsage {
				t.Fatalf("usage %q, want %q", u, scheduleUsage)
			}
		})
	}
}

// FuzzParseCron: no input panics, and an accepted schedule runs, at most
// hourly by the wall clock.
func FuzzParseCron(f *testing.F) {
	for _, s := range []string{"0 9 * * 1", "CRON_TZ=Europe/Berlin 0 9 * * 1-5", "TZ=America/New_York @daily", "CRON_TZ=Europe/Berlin",
		"@every 1h", "*/5 * * * *", "0 9 31 2 *", "1-2-3 * * * *", "0 9 * * 1/", "0 9 * * MON-", ",,, * * * *", "@", "TZ=", "TZ= ", "CRON_TZ"} {
		f.Add(s)
	}
	from := utc("2026-01-01T00:00:00Z")
	f.Fuzz(func(t *testing.T, expr string) {
		s, loc, err := ParseCron(expr)
		if err != nil {
			if commands.ErrorCode(err) != commands.EINVALID {
				t.Fatalf("ParseCron(%q): %v, want EINVALID", expr, err)
			}
			return
		}
		runs := NextRuns(s, from, 4)
		if len(runs) == 0 {
			t.Fatalf("ParseCron(%q) accepted a schedule that never runs", expr)
		}
		for i := 1; i < len(runs); i++ {
			// The wall clock is at least an hour apart; a zone whose
			// clocks jump by 30 minutes (Australia/Lord_Howe) can bring
			// two runs 30 minutes together in real time.
			if gap := runs[i].Sub(runs[i-1]); gap < 30*time.Minute {
				t.Fatalf("ParseCron(%q) in %s runs %v apart: %v", expr, loc, gap, runs)
			}
		}
	})
}

// TestNextRunsDST pins what happens to drills across the 2026 clock
// changes: a time that does not exist (spring forward) is not run that
// day, and a time that exists twice (fall back) runs once, at its first
// occurrence.
func TestNextRunsDST(t *testing.T) {
	cases := []struct {
		name, expr, after string
		want              []string // in UTC
		wall              []string // the same, as the zone's wall clock
	}{
		{
			name: "BerlinSpringForwardSkipped", expr: "CRON_TZ=Europe/Berlin 30 2 * * *", after: "2026-03-27T12:00:00Z",
			want: []string{"2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"},
			wall: []string{"2026-03-28 02:30 CET", "2026-03-30 02:30 CEST", "2026-03-31 02:30 CEST"},
		},
		{
			name: "BerlinFallBackOnce", expr: "CRON_TZ=Europe/Berlin 30 2 * * *", after: "2026-10-24T12:00:00Z",
			want: []string{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"},
			wall: []string{"2026-10-25 02:30 CEST", "2026-10-26 02:30 CET", "2026-10-27 02:30 CET"},
		},
		{
			name: "BerlinFallBackAskedInsideRepeatedHour", expr: "CRON_TZ=Europe/Berlin 30 2 * * *", after: "2026-10-25T00:45:00Z",
			want: []string{"2026-10-26T01:30:00Z"},
			wall: []string{"2026-10-26 02:30 CET"},
		},
		{
			name: "BerlinHourlyFallBack", expr: "CRON_TZ=Europe/Berlin 30 * * * *", after: "2026-10-24T22:00:00Z",
			want: []string{"2026-10-24T22:30:00Z", "2026-10-24T23:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T02:30:00Z"},
			wall: []string{"2026-10-25 00:30 CEST", "2026-10-25 01:30 CEST", "2026-10-25 02:30 CEST", "2026-10-25 03:30 CET"},
		},
		{
			name: "BerlinHourlySpringForward", expr: "CRON_TZ=Europe/Berlin 30 * * * *", after: "2026-03-28T23:00:00Z",
			want: []string{"2026-03-28T23:30:00Z", "2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"},
			wall: []string{"2026-03-29 00:30 CET", "2026-03-29 01:30 CET", "2026-03-29 03:30 CEST"},
		},
		{
			name: "NewYorkSpringForwardSkipped", expr: "CRON_TZ=America/New_York 30 2 * * *", after: "2026-03-07T12:00:00Z",
			want: []string{"2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"},
			wall: []string{"2026-03-09 02:30 EDT", "2026-03-10 02:30 EDT"},
		},
		{
			name: "NewYorkFallBackOnce", expr: "TZ=America/New_York 30 1 * * *", after: "2026-10-31T12:00:00Z",
			want: []string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"},
			wall: []string{"2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"},
		},
		{
			name: "NewYorkHourlyFallBack", expr: "CRON_TZ=America/New_York 0 * * * *", after: "2026-11-01T03:30:00Z",
			want: []string{"2026-11-01T04:00:00Z", "2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z"},
			wall: []string{"2026-11-01 00:00 EDT", "2026-11-01 01:00 EDT", "2026-11-01 02:00 EST"},
		},
		{
			name: "UTCUnaffected", expr: "30 2 * * *", after: "2026-03-28T12:00:00Z",
			want: []string{"2026-03-29T02:30:00Z", "2026-03-30T02:30:00Z"},
			wall: []string{"2026-03-29 02:30 UTC", "2026-03-30 02:30 UTC"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, _, err := ParseCron(c.expr)
			if err != nil {
				t.Fatal(err)
			}
			got := NextRuns(s, utc(c.after), len(c.want))
			if len(got) != len(c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
			for i := range got {
				if !got[i].Equal(utc(c.want[i])) || got[i].Format("2006-01-02 15:04 MST") != c.wall[i] {
					t.Fatalf("run %d: %s (%s), want %s (%s)", i, got[i].UTC().Format(time.RFC3339), got[i].Format("2006-01-02 15:04 MST"), c.want[i], c.wall[i])
				}
			}
			// runsBetween, which the scheduler uses, agrees.
			between := runsBetween(s, utc(c.after), got[len(got)-1])
			if len(between) != len(got) {
				t.Fatalf("runsBetween: %v, want %v", between, got)
			}
		})
	}
}

// TestRobfigDoublesFallBack pins the robfig/cron behaviour NextRuns
// corrects: if a new version stops returning the repeated time, the
// de-duplication is dead code and this test says so.
func TestRobfigDoublesFallBack(t *testing.T) {
	s, _, err := ParseCron("CRON_TZ=Europe/Berlin 30 2 * * *")
	if err != nil {
		t.Fatal(err)
	}
	first := s.Next(utc("2026-10-24T12:00:00Z"))
	second := s.Next(first)
	if !first.Equal(utc("2026-10-25T00:30:00Z")) || !second.Equal(utc("2026-10-25T01:30:00Z")) {
		t.Fatalf("robfig/cron returned %v then %v; NextRuns's fall-back handling assumes 00:30Z then 01:30Z", first, second)
	}
	if _, ok := s.(*cron.SpecSchedule); !ok {
		t.Fatalf("ParseCron returned %T, want *cron.SpecSchedule", s)
	}
}

// schedStoreEnv is a Store over a real etcd with a settable clock.
type schedStoreEnv struct {
	// prefix is the test's own, so tests sharing an etcd do not meet.
	prefix string
	cli    *clientv3.Client
	clock  *schedClock
	store  *Store
}

func newSchedStoreEnv(t *testing.T, srv *etcdtest.Server, now time.Time) *schedStoreEnv {
	t.Helper()
	cli := srv.Client(t)
	clock := newSchedClock(now)
	prefix := "/" + t.Name()
	e := &schedStoreEnv{prefix: prefix, cli: cli, clock: clock, store: NewStore(cli, prefix, nil, clock.Now)}
	// The routes the store tests schedule: a schedule needs its route.
	for _, route := range []string{"chat-70b", "del-me", "skip-me", "c-notjson", "a-route", "b-route"} {
		if _, err := cli.Put(schedCtx(t), routing.Keyspace{Prefix: prefix}.Route(route), `{"active":"v42","previous":"v41"}`); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// outboxEvents returns every event in the outbox, checking each decodes.
func outboxEvents(t *testing.T, cli *clientv3.Client, prefix string) []audit.Event {
	t.Helper()
	resp, err := cli.Get(schedCtx(t), audit.Keys{Prefix: prefix}.Outbox(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, kv := range resp.Kvs {
		ev, err := audit.DecodeEvent(kv.Value)
		if err != nil {
			t.Fatalf("outbox value at %s: %v", kv.Key, err)
		}
		out = append(out, ev)
	}
	return out
}

func eventsOfKind(evs []audit.Event, kind audit.Kind) []audit.Event {
	var out []audit.Event
	for _, e := range evs {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func TestStore(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx := schedCtx(t)
	monday8 := utc("2026-03-02T08:00:00Z") // a Monday

	t.Run("PutGetAudited", func(t *testing.T) {
		e := newSchedStoreEnv(t, srv, monday8)
		next, err := e.store.Put(ctx, "chat-70b", Schedule{Cron: " 0  9 * * 1 ", CreatedBy: "U0DRILL"})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"2026-03-02T09:00:00Z", "2026-03-09T09:00:00Z", "2026-03-16T09:00:00Z"}
		if len(next) != 3 {
			t.Fatalf("next %v, want %v", next, want)
		}
		for i := range want {
			if !next[i].Equal(utc(want[i])) {
				t.Fatalf("next %v, want %v", next, want)
			}
		}
		sc, rev, err := e.store.Get(ctx, "chat-70b")
		if err != nil {
			t.Fatal(err)
		}
		if rev == 0 || sc.Cron != "0 9 * * 1" || strings.Join(sc.Announce, ",") != "24h,15m" || sc.CreatedBy != "U0DRILL" ||
			!sc.CreatedAt.Equal(monday8) || sc.Skip != 0 {
			t.Fatalf("stored %+v at rev %d", sc, rev)
		}
		evs := eventsOfKind(outboxEvents(t, e.cli, e.prefix), audit.KindDrillScheduled)
		if len(evs) != 1 {
			t.Fatalf("%d drill.scheduled events, want 1", len(evs))
		}
		ev := evs[0]
		if ev.Route != "chat-70b" || ev.Actor != "U0DRILL" || ev.Outcome != "scheduled" || !ev.OccurredAt.Equal(monday8) ||
			!strings.Contains(string(ev.Details), `"cron":"0 9 * * 1"`) || !strings.Contains(string(ev.Details), "2026-03-02T09:00:00Z") {
			t.Fatalf("event %+v details %s", ev, ev.Details)
		}
		// The event was written by the schedule's own transaction.
		resp, err := e.cli.Get(ctx, Keys{Prefix: e.prefix}.Schedule("chat-70b"))
		if err != nil {
			t.Fatal(err)
		}
		ob, err := e.cli.Get(ctx, audit.Keys{Prefix: e.prefix}.Event(ev.OpID, 0))
		if err != nil || len(ob.Kvs) != 1 || ob.Kvs[0].ModRevision != resp.Kvs[0].ModRevision {
			t.Fatalf("outbox event not in the schedule's transaction: %v %v", ob, err)
		}

		// Replacing says what it replaced, and resets a skip.
		if _, err := e.store.SkipNext(ctx, "chat-70b", "U-SKIPPER"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Put(ctx, "chat-70b", Schedule{Cron: "CRON_TZ=Europe/Berlin 30 10 * * 2", Announce: []string{"1h"}, CreatedBy: "U0OTHER"}); err != nil {
			t.Fatal(err)
		}
		sc, _, err = e.store.Get(ctx, "chat-70b")
		if err != nil || sc.Skip != 0 || sc.CreatedBy != "U0OTHER" || strings.Join(sc.Announce, ",") != "1h" {
			t.Fatalf("replaced schedule %+v, %v", sc, err)
		}
		evs = eventsOfKind(outboxEvents(t, e.cli, e.prefix), audit.KindDrillScheduled)
		if len(evs) != 2 {
			t.Fatalf("%d drill.scheduled events, want 2", len(evs))
		}
		var found bool
		for _, ev := range evs {
			found = found || strings.Contains(string(ev.Details), `"replaces":"0 9 * * 1"`)
		}
		if !found {
			t.Fatalf("no event says what was replaced: %v", evs)
		}
	})

	t.Run("PutRefusesBadInput", func(t *testing.T) {
		e := newSchedStoreEnv(t, srv, monday8)
		for _, c := range []struct {
			name, route string
			sc          Schedule
			parts       []string
		}{
			{"ReservedRoute", "status", Schedule{Cron: "0 9 * * 1", CreatedBy: "U1"}, []string{"reserved"}},
			{"BadRoute", "chat 70b", Schedule{Cron: "0 9 * * 1", CreatedBy: "U1"}, []string{"not allowed"}},
			{"BadCron", "chat-70b", Schedule{Cron: "* * * * *", CreatedBy: "U1"}, []string{"at most hourly"}},
			{"ShortOffset", "chat-70b", Schedule{Cron: "0 9 * * 1", Announce: []string{"30s"}, CreatedBy: "U1"}, []string{"outside 1m..168h"}},
			{"LongOffset", "chat-70b", Schedule{Cron: "0 9 * * 1", Announce: []string{"169h"}, CreatedBy: "U1"}, []string{"outside"}},
			{"NotADuration", "chat-70b", Schedule{Cron: "0 9 * * 1", Announce: []string{"tomorrow"}, CreatedBy: "U1"}, []string{"not a duration"}},
			{"TooMany", "chat-70b", Schedule{Cron: "0 9 * * 1", Announce: []string{"1h", "2h", "3h", "4h", "5h", "6h"}, CreatedBy: "U1"}, []string{"at most 5"}},
			{"Twice", "chat-70b", Schedule{Cron: "0 9 * * 1", Announce: []string{"1h", "60m"}, CreatedBy: "U1"}, []string{"twice"}},
			{"NoCreator", "chat-70b", Schedule{Cron: "0 9 * * 1"}, []string{"created it"}},
		} {
			t.Run(c.name, func(t *testing.T) {
				_, err := e.store.Put(ctx, c.route, c.sc)
				schedWantCode(t, err, commands.EINVALID, c.parts...)
			})
		}
		for _, under := range []string{Keys{Prefix: e.prefix}.Schedules(), audit.Keys{Prefix: e.prefix}.Outbox()} {
			resp, err := e.cli.Get(ctx, under, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Count != 0 {
				t.Fatalf("refused schedules wrote %d keys under %s", resp.Count, under)
			}
		}
	})

	t.Run("PutRefusesUnknownRoute", func(t *testing.T) {
		e := newSchedStoreEnv(t, srv, monday8)
		_, err := e.store.Put(ctx, "chat-7b", Schedule{Cron: "0 9 * * 1", CreatedBy: "U1"})
		schedWantCode(t, err, commands.ENOTFOUND, "There is no route chat-7b", "/rollback status")
		for _, under := range []string{Keys{Prefix: e.prefix}.Schedules(), audit.Keys{Prefix: e.prefix}.Outbox()} {
			resp, err := e.cli.Get(ctx, under, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil || resp.Count != 0 {
				t.Fatalf("a schedule of an unknown route wrote %v keys under %s (%v)", resp, under, err)
			}
		}
	})

	t.Run("GetDeleteNotFound", func(t *testing.T) {
		e := newSchedStoreEnv(t, srv, monday8)
		_, _, err := e.store.Get(ctx, "nothing-here")
		schedWantCode(t, err, commands.ENOTFOUND, "no drill schedule")
		schedWantCode(t, e.store.Delete(ctx, "nothing-here"), commands.ENOTFOUND, "no drill schedule to cancel")
		_, err = e.store.SkipNext(ctx, "nothing-here", "U-SKIPPER")
		schedWantCode(t, err, commands.ENOTFOUND)
		if _, err := e.store.Put(ctx, "del-me", Schedule{Cron: "@daily", CreatedBy: "U1"}); err != nil {
			t.Fatal(err)
		}
		if err := e.store.Delete(ctx, "del-me"); err != nil {
			t.Fatal(err)
		}
		_, _, err = e.store.Get(ctx, "del-me")
		schedWantCode(t, err, commands.ENOTFOUND)
		schedWantCode(t, e.store.Delete(ctx, "del-me"), commands.ENOTFOUND)
	})

	t.Run("SkipNext", func(t *testing.T) {
		e := newSchedStoreEnv(t, srv, monday8)
		if _, err := e.store.Put(ctx, "skip-me", Schedule{Cron: "CRON_TZ=Europe/Berlin 0 10 * * 1", CreatedBy: "U1"}); err != nil {
			t.Fatal(err)
		}
		_, rev0, _ := e.store.Get(ctx, "skip-me")
		got, err := e.store.SkipNext(ctx, "skip-me", "U-SKIPPER")
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(utc("2026-03-02T09:00:00Z")) || got.Location().String() != "Europe/Berlin" {
			t.Fatalf("skipped %v, want Monday 10:00 Berlin", got)
		}
		sc, rev1, _ := e.store.Get(ctx, "skip-me")
		if sc.Skip != got.Unix() || rev1 <= rev0 {
			t.Fatalf("stored skip %d at rev %d, want %d after rev %d", sc.Skip, rev1, got.Unix(), rev0)
		}
		// A second skip (a double click) does not reach the week after.
		again, err := e.store.SkipNext(ctx, "skip-me", "U-SKIPPER")
		if err != nil || !again.Equal(got) {
			t.Fatalf("second skip: %v %v, want %v", again, err, got)
		}
		if _, rev2, _ := e.store.Get(ctx, "skip-me"); rev2 != rev1 {
			t.Fatalf("a repeated skip wrote the schedule again (rev %d → %d)", rev1, rev2)
		}
		// Once that run is past, the next skip is the week after.
		e.clock.Set(utc("2026-03-02T09:30:00Z"))
		later, err := e.store.SkipNext(ctx, "skip-me", "U-SKIPPER")
		if err != nil || !later.Equal(utc("2026-03-09T09:00:00Z")) {
			t.Fatalf("skip after the run: %v %v", later, err)
		}
	})

	t.Run("ListWithMalformed", func(t *testing.T) {
		e := newSchedStoreEnv(t, srv, monday8)
		store := e.store
		keys := Keys{Prefix: e.prefix}
		for _, r := range []string{"b-route", "a-route"} {
			if _, err := store.Put(ctx, r, Schedule{Cron: "0 9 * * *", CreatedBy: "U1"}); err != nil {
				t.Fatal(err)
			}
		}
		bad := map[string]string{
			keys.Schedule("c-notjson"):      `{"cron":`,
			keys.Schedule("d-unknown"):      `{"cron":"0 9 * * *","announce":["24h"],"created_by":"U1","color":"red"}`,
			keys.Schedule("e-badcron"):      `{"cron":"* * * * *","announce":["24h"],"created_by":"U1"}`,
			keys.Schedule("f-trailing"):     `{"cron":"0 9 * * *","announce":["24h"],"created_by":"U1"} {}`,
			keys.Schedule("g-nocreator"):    `{"cron":"0 9 * * *","announce":["24h"],"created_by":""}`,
			keys.Schedule("status"):         `{"cron":"0 9 * * *","announce":["24h"],"created_by":"U1"}`,
			keys.Schedule("h-badannounce"):  `{"cron":"0 9 * * *","announce":["1s"],"created_by":"U1"}`,
			keys.Schedule("i-defaultannce"): `{"cron":"0 9 * * *","created_by":"U1"}`,
		}
		for k, v := range bad {
			if _, err := e.cli.Put(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
		listed, err := store.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var routes []string
		for _, l := range listed {
			routes = append(routes, l.Route)
		}
		if strings.Join(routes, ",") != "a-route,b-route,c-notjson,d-unknown,e-badcron,f-trailing,g-nocreator,h-badannounce,i-defaultannce,status" {
			t.Fatalf("listed %v", routes)
		}
		for _, l := range listed {
			switch l.Route {
			case "a-route", "b-route", "i-defaultannce":
				if l.Err != "" || len(l.Next) != 3 || !l.Next[0].Equal(utc("2026-03-02T09:00:00Z")) {
					t.Fatalf("%s: %+v", l.Route, l)
				}
				if l.Route == "i-defaultannce" && strings.Join(l.Schedule.Announce, ",") != "24h,15m" {
					t.Fatalf("a schedule without announce offsets has %v, want the default", l.Schedule.Announce)
				}
			default:
				if l.Err == "" || !strings.Contains(l.Err, keys.Schedule(l.Route)) || len(l.Next) != 0 {
					t.Fatalf("%s: malformed value listed as %+v", l.Route, l)
				}
			}
		}
		_, _, err = store.Get(ctx, "c-notjson")
		schedWantCode(t, err, commands.EREFUSED, keys.Schedule("c-notjson"), "/drill schedule c-notjson", "/drill cancel c-notjson")
		if !errors.Is(err, ErrMalformedSchedule) {
			t.Fatalf("%v is not ErrMalformedSchedule", err)
		}
		_, err = store.SkipNext(ctx, "e-badcron", "U-SKIPPER")
		if !errors.Is(err, ErrMalformedSchedule) {
			t.Fatalf("skip of a malformed schedule: %v", err)
		}
		// A malformed schedule is replaced by a valid one.
		if _, err := store.Put(ctx, "c-notjson", Schedule{Cron: "@weekly", CreatedBy: "U1"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.Get(ctx, "c-notjson"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("EtcdDown", func(t *testing.T) {
		e := newSchedStoreEnv(t, srv, monday8)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := e.store.Put(cctx, "chat-70b", Schedule{Cron: "0 9 * * 1", CreatedBy: "U1"})
		schedWantCode(t, err, commands.EUNAVAILABLE)
		_, err = e.store.List(cctx)
		schedWantCode(t, err, commands.EUNAVAILABLE)
	})
}
