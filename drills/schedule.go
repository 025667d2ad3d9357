package drills

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/robfig/cron/v3"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/strictjson"
)

// Limits on what a schedule may say. They keep a pasted or hostile value
// from bloating etcd, and keep announcements to a handful of messages per
// drill.
const (
	// maxCronLen bounds a cron expression; the longest sensible one, a
	// zone prefix and five list fields, is well under it.
	maxCronLen = 200
	// maxZoneLen bounds the zone name of a CRON_TZ= prefix (the longest
	// IANA name is about 30 bytes).
	maxZoneLen = 64
	// MaxAnnouncements is how many announcement offsets a schedule may
	// have.
	MaxAnnouncements = 5
	// MinAnnounceOffset and MaxAnnounceOffset bound each offset: less
	// than a minute ahead is no warning, more than a week ahead is noise.
	MinAnnounceOffset = time.Minute
	MaxAnnounceOffset = 7 * 24 * time.Hour
	// maxScheduleValue bounds a stored schedule before it is decoded.
	maxScheduleValue = 16 << 10
	// listNext is how many upcoming runs List reports per schedule.
	listNext = 3
	// maxRunsScan bounds every walk over a schedule's run times, so a
	// long window over an hourly schedule cannot make a tick unbounded.
	maxRunsScan = 1000
)

// scheduleUsage is the usage line shown with errors of /drill schedule.
const scheduleUsage = `/drill schedule <route> "<cron>"`

// cronExamples ends every cron error, so the person who typed a bad
// expression sees two good ones.
const cronExamples = `Examples: "0 9 * * 1" (Mondays 09:00 UTC), "CRON_TZ=Europe/Berlin 0 9 * * 1-5" (weekdays 09:00 Berlin time).`

// defaultAnnounce is the announcement schedule of the contract: a day
// ahead and a quarter of an hour ahead. It is a function so that no caller
// can change a shared slice.
func defaultAnnounce() []string { return []string{"24h", "15m"} }

// ErrMalformedSchedule marks a stored schedule that could not be decoded
// or no longer validates (errors.Is finds it in the chain of the
// *commands.Error that Get returns).
var ErrMalformedSchedule = errors.New("malformed drill schedule in etcd")

// cronError is the EINVALID error of a bad cron expression.
func cronError(format string, args ...any) *commands.Error {
	return &commands.Error{
		Code:    commands.EINVALID,
		Message: fmt.Sprintf(format, args...) + " " + cronExamples,
		Usage:   scheduleUsage,
	}
}

// ParseCron validates a drill schedule and returns it with its time zone.
//
// The grammar is five fields (minute, hour, day of month, month, day of
// week) or a descriptor (@hourly, @daily, @midnight, @weekly, @monthly,
// @yearly, @annually), optionally after a "CRON_TZ=Area/City " (or "TZ=")
// prefix. Without a prefix the schedule is in UTC, never in the bot's own
// zone, so the same expression means the same thing on every replica.
//
// It refuses, with an EINVALID *commands.Error that says what was wrong
// and shows an example:
//   - anything that runs more often than hourly: a drill aborts the
//     route's in-flight requests twice (at the rollback and at the return),
//     so a drill every minute would be an outage;
//   - @every: its times count from whenever the scheduler started, so a run
//     could not be announced in advance nor recorded once across replicas;
//   - expressions that never fire (31 February), unknown zones, the
//     server-dependent zone "Local", seconds fields, and characters that
//     have no place in a cron expression (such as typographic quotes a chat
//     client substituted).
//
// The zone prefix is parsed here rather than by robfig/cron, whose parser
// panics on a prefix with nothing after it.
func ParseCron(expr string) (cron.Schedule, *time.Location, error) {
	e := strings.TrimSpace(expr)
	if e == "" {
		return nil, nil, cronError("The cron expression is empty.")
	}
	if len(e) > maxCronLen {
		return nil, nil, cronError("The cron expression is %d bytes long; at most %d are allowed.", len(e), maxCronLen)
	}
	for _, r := range e {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune(" \t*/,-@=_+?", r):
		case strings.ContainsRune("\"'`“”‘’«»", r):
			return nil, nil, cronError("The cron expression contains the quote %q: type the expression without quotes inside the quotes of the command.", r)
		default:
			return nil, nil, cronError("The cron expression contains %q, which has no meaning in cron (letters, digits, spaces and * / , - @ = _ + ? are allowed).", r)
		}
	}
	fields := strings.Fields(e)
	loc := time.UTC
	if name, ok := zonePrefix(fields[0]); ok {
		var err error
		if loc, err = loadZone(name); err != nil {
			return nil, nil, err
		}
		fields = fields[1:]
		if len(fields) == 0 {
			return nil, nil, cronError("%q names a time zone but no schedule follows it.", e)
		}
	} else if k, _, has := strings.Cut(fields[0], "="); has {
		return nil, nil, cronError("%q is not a setting of a drill schedule: only CRON_TZ= (or TZ=) may come before the schedule.", k+"=")
	}
	for _, f := range fields {
		if _, ok := zonePrefix(f); ok {
			return nil, nil, cronError("The time zone (%s) must come first, before the schedule.", f)
		}
	}

	var spec string
	if strings.HasPrefix(fields[0], "@") {
		d := strings.ToLower(fields[0])
		switch {
		case d == "@every":
			return nil, nil, cronError("@every is not supported: its times count from whenever backflip's scheduler started, so a drill could not be announced ahead of time. Use a cron expression with fixed times.")
		case len(fields) > 1:
			return nil, nil, cronError("%s takes nothing after it, but %q follows.", fields[0], strings.Join(fields[1:], " "))
		}
		switch d {
		case "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly":
		default:
			return nil, nil, cronError("%s is not a known descriptor (known: @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually).", fields[0])
		}
		spec = d
	} else {
		switch n := len(fields); {
		case n == 6:
			return nil, nil, cronError("The expression has 6 fields; drills use 5 (minute, hour, day of month, month, day of week) and no seconds field.")
		case n != 5:
			return nil, nil, cronError("The expression has %d field%s; a drill schedule has 5: minute, hour, day of month, month, day of week.", n, cronPlural(n))
		}
		spec = strings.Join(fields, " ")
	}
	parsed, err := cronParser().Parse(spec)
	if err != nil {
		return nil, nil, cronError("%q is not a valid schedule: %v. The five fields are minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC) and day of week (0-6 or SUN-SAT).", spec, err)
	}
	sched, ok := parsed.(*cron.SpecSchedule)
	if !ok {
		// Only @every yields another type, and it was refused above.
		return nil, nil, cronError("%q is not a calendar schedule.", spec)
	}
	// robfig/cron parsed the fields without the zone; the zone is set
	// here, so "no prefix" means UTC and not the server's local zone.
	sched.Location = loc
	// The top bit of a field marks a "*"; every other bit is one minute.
	if n := bits.OnesCount64(sched.Minute &^ (1 << 63)); n != 1 {
		return nil, nil, cronError("%q runs %d times an hour; drills run at most hourly, because each drill aborts the route's in-flight requests twice (at the rollback and at the return) and a drill every few minutes would be an outage. Pick a single minute.", spec, n)
	}
	// A fixed reference keeps ParseCron a pure function; robfig/cron
	// looks five years ahead, which covers 29 February.
	if sched.Next(time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return nil, nil, cronError("%q never runs (no such date, like 31 February).", spec)
	}
	return sched, loc, nil
}

// zonePrefix returns the zone name of a "CRON_TZ=" or "TZ=" field. The
// prefix is matched without regard to case, as people type it both ways.
func zonePrefix(field string) (string, bool) {
	for _, p := range []string{"CRON_TZ=", "TZ="} {
		if len(field) >= len(p) && strings.EqualFold(field[:len(p)], p) {
			return field[len(p):], true
		}
	}
	return "", false
}

// loadZone loads an IANA zone by name for a schedule.
func loadZone(name string) (*time.Location, error) {
	switch {
	case name == "":
		return nil, cronError("CRON_TZ= names no time zone.")
	case len(name) > maxZoneLen:
		return nil, cronError("The time zone name is %d bytes long; at most %d are allowed.", len(name), maxZoneLen)
	case strings.EqualFold(name, "Local"):
		return nil, cronError("CRON_TZ=Local would depend on the server's settings; name the zone, such as Europe/Berlin or UTC.")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, cronError("%q is not a known time zone; use an IANA name such as Europe/Berlin, America/New_York or UTC (names are case-sensitive).", name)
	}
	return loc, nil
}

// NextRuns returns the next n run times of s after the given time, in the
// schedule's zone.
//
// Across daylight-saving changes it keeps what robfig/cron does in one
// direction and corrects the other, as verified in the tests:
//   - spring forward: a wall-clock time that does not exist that day (02:30
//     in Europe/Berlin on 29 March 2026, or in America/New_York on 8 March
//     2026) is skipped; robfig/cron neither moves it to 03:00 nor runs it
//     twice later, so that day has no run.
//   - fall back: robfig/cron returns a wall-clock time that happens twice
//     (02:30 in Berlin on 25 October 2026, 01:30 in New York on 1 November
//     2026) twice, an hour apart. The second one is dropped here, so the
//     drill runs once, at the first (summer-time) occurrence.
func NextRuns(s cron.Schedule, after time.Time, n int) []time.Time {
	loc := scheduleZone(s, after)
	var out []time.Time
	t := after
	for i := 0; len(out) < n && i < maxRunsScan; i++ {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		if repeatedWallClock(t, loc) {
			continue
		}
		out = append(out, t.In(loc))
	}
	return out
}

// runsBetween returns the run times of s in (from, to], oldest first,
// with the same daylight-saving handling as NextRuns.
func runsBetween(s cron.Schedule, from, to time.Time) []time.Time {
	loc := scheduleZone(s, from)
	var out []time.Time
	t := from
	for range maxRunsScan {
		t = s.Next(t)
		if t.IsZero() || t.After(to) {
			break
		}
		if !repeatedWallClock(t, loc) {
			out = append(out, t.In(loc))
		}
	}
	return out
}

// scheduleZone is the zone a schedule's times are read in.
func scheduleZone(s cron.Schedule, t time.Time) *time.Location {
	if ss, ok := s.(*cron.SpecSchedule); ok && ss.Location != nil && ss.Location != time.Local {
		return ss.Location
	}
	return t.Location()
}

// repeatedWallClock reports whether t's wall-clock time in loc already
// happened earlier, because the clocks were set back between the two:
// t is then the second occurrence of an ambiguous local time.
func repeatedWallClock(t time.Time, loc *time.Location) bool {
	lt := t.In(loc)
	_, offNow := lt.Zone()
	// A shift back is found by comparing with the offset a few hours
	// earlier; no zone changes its offset twice within three hours.
	_, offBefore := t.Add(-3 * time.Hour).In(loc).Zone()
	if offBefore <= offNow {
		return false
	}
	earlier := t.Add(-time.Duration(offBefore-offNow) * time.Second).In(loc)
	y1, m1, d1 := earlier.Date()
	y2, m2, d2 := lt.Date()
	return y1 == y2 && m1 == m2 && d1 == d2 && earlier.Hour() == lt.Hour() &&
		earlier.Minute() == lt.Minute() && earlier.Second() == lt.Second()
}

// parseAnnounce validates announcement offsets and returns them with their
// durations; none means the default.
func parseAnnounce(in []string) ([]string, []time.Duration, error) {
	if len(in) == 0 {
		in = defaultAnnounce()
	}
	if len(in) > MaxAnnouncements {
		return nil, nil, fmt.Errorf("%d announcement offsets; at most %d are allowed", len(in), MaxAnnouncements)
	}
	strs := make([]string, 0, len(in))
	durs := make([]time.Duration, 0, len(in))
	for _, s := range in {
		s = strings.TrimSpace(s)
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, nil, fmt.Errorf("announcement offset %q is not a duration such as 24h or 15m", s)
		}
		if d < MinAnnounceOffset || d > MaxAnnounceOffset {
			return nil, nil, fmt.Errorf("announcement offset %s is outside 1m..168h (7 days)", s)
		}
		if slices.Contains(durs, d) {
			return nil, nil, fmt.Errorf("announcement offset %s is listed twice", s)
		}
		strs = append(strs, s)
		durs = append(durs, d)
	}
	return strs, durs, nil
}

// Store keeps drill schedules in etcd at drills/schedules/<route>.
type Store struct {
	etcd   commands.Etcd
	keys   Keys
	outbox audit.Keys
	log    *zap.Logger
	now    func() time.Time
}

// NewStore returns a Store over etcd under prefix. A nil logger logs
// nothing; a nil now is time.Now. now is what every schedule computation
// ("the next run after now") uses, so tests can move time.
func NewStore(etcd commands.Etcd, prefix string, log *zap.Logger, now func() time.Time) *Store {
	if log == nil {
		log = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	return &Store{etcd: etcd, keys: Keys{Prefix: prefix}, outbox: audit.Keys{Prefix: prefix}, log: log, now: now}
}

// Listed is one schedule as List reports it. Next are the next few runs in
// the schedule's zone (a run skipped with /drill skip is among them; its
// unix time is Schedule.Skip). Err is set, and the rest may be empty, when
// the stored value is malformed.
type Listed struct {
	Route    string
	Schedule Schedule
	Next     []time.Time
	Err      string
}

// schedEntry is a decoded schedule with what the scheduler needs.
type schedEntry struct {
	route   string
	sc      Schedule
	rev     int64
	sched   cron.Schedule
	loc     *time.Location
	offsets []time.Duration
	err     error
}

// decodeSchedule strictly decodes and validates the value at key.
func decodeSchedule(key string, value []byte) (Schedule, cron.Schedule, *time.Location, []time.Duration, error) {
	var sc Schedule
	if len(value) > maxScheduleValue {
		return sc, nil, nil, nil, fmt.Errorf("%w: %s: value is %d bytes, at most %d allowed", ErrMalformedSchedule, key, len(value), maxScheduleValue)
	}
	if err := strictjson.Decode(value, &sc); err != nil {
		return sc, nil, nil, nil, fmt.Errorf("%w: %s: %v", ErrMalformedSchedule, key, err)
	}
	sched, loc, err := ParseCron(sc.Cron)
	if err != nil {
		return sc, nil, nil, nil, fmt.Errorf("%w: %s: %v", ErrMalformedSchedule, key, commands.ErrorMessage(err))
	}
	strs, offsets, err := parseAnnounce(sc.Announce)
	if err != nil {
		return sc, nil, nil, nil, fmt.Errorf("%w: %s: %v", ErrMalformedSchedule, key, err)
	}
	switch {
	case strings.TrimSpace(sc.CreatedBy) == "":
		return sc, nil, nil, nil, fmt.Errorf("%w: %s: created_by is empty", ErrMalformedSchedule, key)
	case len(sc.CreatedBy) > routing.MaxActorLen || len(sc.SkippedBy) > routing.MaxActorLen:
		return sc, nil, nil, nil, fmt.Errorf("%w: %s: created_by or skipped_by is longer than %d bytes", ErrMalformedSchedule, key, routing.MaxActorLen)
	}
	sc.Announce = strs
	return sc, sched, loc, offsets, nil
}

// malformed is the error a person sees for a schedule that cannot be used.
func malformedErr(route string, err error) *commands.Error {
	return &commands.Error{Code: commands.EREFUSED, Err: err, Message: fmt.Sprintf(
		"The drill schedule of %s is stored in a form backflip cannot read (%v). `/drill schedule %s \"<cron>\"` replaces it; `/drill cancel %s` removes it.",
		route, err, route, route)}
}

// unavailable is the error of an etcd call that failed.
func etcdDown(err error, format string, args ...any) *commands.Error {
	return &commands.Error{Code: commands.EUNAVAILABLE, Err: err, Message: fmt.Sprintf(format, args...) + fmt.Sprintf(" (etcd: %v)", err)}
}

// noRoute is the error of a schedule for a route that does not exist: a
// typo would otherwise schedule drills that only ever refuse.
func noRoute(route string) *commands.Error {
	return commands.Errorf(commands.ENOTFOUND, "There is no route %s; `/rollback status` lists the routes. No drill was scheduled.", route)
}

func badRoute(err error) *commands.Error {
	return &commands.Error{Code: commands.EINVALID, Message: strings.TrimPrefix(err.Error(), routing.ErrInvalid.Error()+": "), Usage: commands.DrillUsage, Err: err}
}

// Put stores the schedule of route, replacing any, and queues a
// drill.scheduled audit event (actor sc.CreatedBy) in the same etcd
// transaction, so a schedule never exists without its audit record. It
// validates the route, the cron expression (ParseCron) and the
// announcement offsets (1m to 7 days, at most MaxAnnouncements, default
// 24h and 15m); it sets CreatedAt when zero and clears Skip. It returns the
// next runs, in the schedule's zone.
func (st *Store) Put(ctx context.Context, route string, sc Schedule) ([]time.Time, error) {
	if err := routing.ValidateRoute(route); err != nil {
		return nil, badRoute(err)
	}
	sched, loc, err := ParseCron(sc.Cron)
	if err != nil {
		return nil, err
	}
	strs, _, err := parseAnnounce(sc.Announce)
	if err != nil {
		return nil, &commands.Error{Code: commands.EINVALID, Message: "The drill's announcements: " + err.Error() + ".", Usage: scheduleUsage}
	}
	switch {
	case strings.TrimSpace(sc.CreatedBy) == "":
		return nil, &commands.Error{Code: commands.EINVALID, Message: "A drill schedule needs the person who created it (created_by)."}
	case len(sc.CreatedBy) > routing.MaxActorLen:
		return nil, &commands.Error{Code: commands.EINVALID, Message: fmt.Sprintf("The creator's id is %d bytes long; at most %d are allowed.", len(sc.CreatedBy), routing.MaxActorLen)}
	}
	now := st.now()
	sc.Cron = strings.Join(strings.Fields(sc.Cron), " ")
	sc.Announce = strs
	sc.Skip, sc.SkippedBy = 0, ""
	if sc.CreatedAt.IsZero() {
		sc.CreatedAt = now.UTC()
	}
	next := NextRuns(sched, now, listNext)
	if len(next) == 0 {
		return nil, cronError("%q has no run in the next five years.", sc.Cron)
	}
	val, err := json.Marshal(sc)
	if err != nil {
		return nil, &commands.Error{Code: commands.EINTERNAL, Message: "encode the schedule", Err: err}
	}

	key := st.keys.Schedule(route)
	routeKey := routing.Keyspace{Prefix: st.keys.Prefix}.Route(route)
	cur, err := st.etcd.Txn(ctx).Then(clientv3.OpGet(key), clientv3.OpGet(routeKey, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return nil, etcdDown(err, "The schedule of %s was not saved: etcd did not answer.", route)
	}
	if len(cur.Responses[1].GetResponseRange().Kvs) == 0 {
		return nil, noRoute(route)
	}
	var seenRev int64
	details := map[string]any{"cron": sc.Cron, "zone": loc.String(), "announce": sc.Announce, "next": rfc3339s(next)}
	if kvs := cur.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		seenRev = kvs[0].ModRevision
		var old Schedule
		if strictjson.Decode(kvs[0].Value, &old) == nil {
			details["replaces"] = old.Cron
		} else {
			details["replaces"] = "a malformed schedule"
		}
	}
	ev := audit.Event{
		EventID: uuid.New(), OpID: uuid.New(), Kind: audit.KindDrillScheduled, Route: route,
		Actor: sc.CreatedBy, Outcome: "scheduled", Reason: fmt.Sprintf("drill schedule %q", sc.Cron),
		SchemaVersion: audit.SchemaVersion, OccurredAt: now.UTC(),
	}
	ev.Details, _ = json.Marshal(details)
	put, err := audit.OutboxOp(st.outbox, 0, ev)
	if err != nil {
		return nil, &commands.Error{Code: commands.EINTERNAL, Message: "audit event of the schedule", Err: err}
	}
	resp, err := st.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", seenRev),
			clientv3.Compare(clientv3.CreateRevision(routeKey), ">", 0)).
		Then(clientv3.OpPut(key, string(val)), put).
		Else(clientv3.OpGet(routeKey, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return nil, etcdDown(err, "etcd did not confirm the schedule of %s: it may or may not have been saved; `/drill list` shows what is stored.", route)
	}
	if !resp.Succeeded && len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return nil, noRoute(route)
	}
	if !resp.Succeeded {
		return nil, commands.Errorf(commands.ECONFLICT, "The schedule of %s was changed by someone else at the same moment; nothing was saved. `/drill list` shows what is stored now.", route)
	}
	st.log.Info("drill scheduled", zap.String("route", route), zap.String("cron", sc.Cron),
		zap.String("by", sc.CreatedBy), zap.Time("next", next[0]), zap.Int64("rev", resp.Header.Revision))
	return next, nil
}

// Get returns route's schedule and the ModRevision it was read at. It is
// ENOTFOUND when the route has none and EREFUSED, wrapping
// ErrMalformedSchedule and naming the key, when the stored value cannot be
// used.
func (st *Store) Get(ctx context.Context, route string) (Schedule, int64, error) {
	e, err := st.get(ctx, route)
	if err != nil {
		return Schedule{}, 0, err
	}
	return e.sc, e.rev, nil
}

func (st *Store) get(ctx context.Context, route string) (schedEntry, error) {
	if err := routing.ValidateRoute(route); err != nil {
		return schedEntry{}, badRoute(err)
	}
	key := st.keys.Schedule(route)
	resp, err := st.etcd.Get(ctx, key)
	if err != nil {
		return schedEntry{}, etcdDown(err, "The schedule of %s could not be read.", route)
	}
	if len(resp.Kvs) == 0 {
		return schedEntry{}, commands.Errorf(commands.ENOTFOUND, "%s has no drill schedule; `/drill schedule %s \"<cron>\"` sets one.", route, route)
	}
	e := st.decode(route, key, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	if e.err != nil {
		return schedEntry{}, malformedErr(route, e.err)
	}
	return e, nil
}

func (st *Store) decode(route, key string, value []byte, rev int64) schedEntry {
	e := schedEntry{route: route, rev: rev}
	e.sc, e.sched, e.loc, e.offsets, e.err = decodeSchedule(key, value)
	return e
}

// Delete removes route's schedule (/drill cancel). It is ENOTFOUND when
// there is none. Run and announcement records stay until their lease ends;
// without a schedule nothing reads them.
func (st *Store) Delete(ctx context.Context, route string) error {
	if err := routing.ValidateRoute(route); err != nil {
		return badRoute(err)
	}
	resp, err := st.etcd.Delete(ctx, st.keys.Schedule(route))
	if err != nil {
		return etcdDown(err, "etcd did not confirm the cancellation of the drills of %s: it may or may not have happened; `/drill list` shows what is stored.", route)
	}
	if resp.Deleted == 0 {
		return commands.Errorf(commands.ENOTFOUND, "%s has no drill schedule to cancel.", route)
	}
	st.log.Info("drill schedule cancelled", zap.String("route", route))
	return nil
}

// SkipNext marks the next run of route's schedule after now as skipped
// (/drill skip) and returns its time, in the schedule's zone. Skipping an
// already skipped run again returns the same time: a schedule skips one run
// at a time, and a repeated command (a double click) must not reach further.
// The write is guarded on the schedule's ModRevision, so a concurrent
// /drill schedule is never overwritten with the old expression.
func (st *Store) SkipNext(ctx context.Context, route, by string) (time.Time, error) {
	if strings.TrimSpace(by) == "" || len(by) > routing.MaxActorLen {
		return time.Time{}, commands.Errorf(commands.EINVALID, "A skip needs the id of who asks for it (1 to %d bytes).", routing.MaxActorLen)
	}
	for range 3 {
		e, err := st.get(ctx, route)
		if err != nil {
			return time.Time{}, err
		}
		next := NextRuns(e.sched, st.now(), 1)
		if len(next) == 0 {
			return time.Time{}, commands.Errorf(commands.EREFUSED, "The schedule of %s (%q) has no next run to skip.", route, e.sc.Cron)
		}
		t := next[0]
		if e.sc.Skip == t.Unix() {
			return t, nil
		}
		e.sc.Skip, e.sc.SkippedBy = t.Unix(), by
		val, err := json.Marshal(e.sc)
		if err != nil {
			return time.Time{}, &commands.Error{Code: commands.EINTERNAL, Message: "encode the schedule", Err: err}
		}
		key := st.keys.Schedule(route)
		resp, err := st.etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", e.rev)).
			Then(clientv3.OpPut(key, string(val))).
			Commit()
		if err != nil {
			return time.Time{}, etcdDown(err, "etcd did not confirm skipping the drill of %s at %s: it may or may not be skipped; `/drill list` shows it.", route, runClock(t))
		}
		if resp.Succeeded {
			st.log.Info("drill skipped on request", zap.String("route", route), zap.Time("scheduled", t), zap.String("by", by))
			return t, nil
		}
		// The schedule changed between the read and the write (the
		// scheduler cleared a past skip, or someone rescheduled): read it
		// again and skip the next run of what is stored now.
	}
	return time.Time{}, commands.Errorf(commands.ECONFLICT, "The schedule of %s kept changing while skipping its next run; nothing was skipped. Try again.", route)
}

// List returns every schedule, sorted by route, with its next runs;
// schedules that cannot be used are listed with Err.
func (st *Store) List(ctx context.Context) ([]Listed, error) {
	entries, err := st.list(ctx)
	if err != nil {
		return nil, err
	}
	now := st.now()
	out := make([]Listed, 0, len(entries))
	for _, e := range entries {
		l := Listed{Route: e.route, Schedule: e.sc}
		if e.err != nil {
			l.Err = e.err.Error()
		} else {
			l.Next = NextRuns(e.sched, now, listNext)
		}
		out = append(out, l)
	}
	return out, nil
}

// list reads and decodes every schedule, sorted by route (etcd returns
// keys in order).
func (st *Store) list(ctx context.Context) ([]schedEntry, error) {
	resp, err := st.etcd.Get(ctx, st.keys.Schedules(), clientv3.WithPrefix())
	if err != nil {
		return nil, etcdDown(err, "The drill schedules could not be read.")
	}
	out := make([]schedEntry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		route := strings.TrimPrefix(key, st.keys.Schedules())
		if err := routing.ValidateRoute(route); err != nil {
			out = append(out, schedEntry{route: route, rev: kv.ModRevision, err: fmt.Errorf("%w: %s: the key does not name a valid route: %v", ErrMalformedSchedule, key, err)})
			continue
		}
		out = append(out, st.decode(route, key, kv.Value, kv.ModRevision))
	}
	return out, nil
}

// rfc3339s formats times for audit details.
func rfc3339s(ts []time.Time) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Format(time.RFC3339)
	}
	return out
}

// clock formats a run time for chat in the schedule's zone, e.g.
// "09:00 UTC on Mon 2 Mar".
func runClock(t time.Time) string { return t.Format("15:04 MST on Mon 2 Jan") }

func cronPlural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
