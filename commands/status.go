package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// statusWarmWorkers bounds the warm checks one status runs at once. Each
// check fans out to every node of its target under its own deadline
// (WARM_TIMEOUT), so a handful in parallel keeps a status of many routes
// within a few deadlines without asking every agent of the fleet at once.
const statusWarmWorkers = 4

// StatusReport is what `status` answers: every route asked for, as read at
// one etcd revision.
type StatusReport struct {
	Routes []RouteStatus `json:"routes"`
	// Malformed lists stored values that could not be used (a hand-edited
	// route key, a bad runtime instance record); the rest is still shown.
	Malformed []string `json:"malformed,omitempty"`
	// Revision is the etcd revision the routes were read at.
	Revision int64 `json:"revision"`
	// At is when the status was read; String shows ages relative to it.
	At time.Time `json:"at"`
}

// RouteStatus is one route's state and how ready its rollback is.
type RouteStatus struct {
	Route  string              `json:"route"`
	Config routing.RouteConfig `json:"config"`
	// Revision is the route key's ModRevision: what --expect-rev takes.
	Revision int64 `json:"revision"`
	// Readiness says whether the rollback target (Config.Previous) is warm
	// at the route's quorum.
	Readiness Readiness `json:"readiness"`
	// LastDrill is the route's latest completed drill; nil when none is
	// recorded or the audit database could not be read (see DrillError).
	LastDrill *DrillInfo `json:"last_drill,omitempty"`
	// DrillError says why drills could not be looked up ("audit database
	// unavailable: ..."); "" when they were.
	DrillError string `json:"drill_error,omitempty"`
	// InFlight is version → requests in flight on the route, summed over
	// the runtime instance records.
	InFlight map[string]int `json:"inflight"`
}

// Readiness is the warm check of a route's rollback target.
type Readiness struct {
	// Target is the version a default rollback goes to (the route's
	// previous version); "" when the route has none, and then nothing else
	// is set.
	Target string `json:"target"`
	Warm   bool   `json:"warm"`
	// Summary is the short form, e.g. "24/24 nodes, 96/96 GPUs warm".
	Summary string `json:"summary,omitempty"`
	// Reason says why the target is not warm ("" when it is).
	Reason string       `json:"reason,omitempty"`
	Report *warm.Report `json:"report,omitempty"`
	// Error says why the check could not be made (etcd, a malformed
	// policy); the other fields are then unset.
	Error string `json:"error,omitempty"`
}

// DrillInfo summarises a route's completed drills.
type DrillInfo struct {
	// At is when the latest one happened.
	At time.Time `json:"at"`
	// Count is how many are recorded.
	Count int `json:"count"`
	// P50 and P95 are of their total durations.
	P50 time.Duration `json:"p50_ns"`
	P95 time.Duration `json:"p95_ns"`
}

// Status reports every route (route "") or one: its active and previous
// versions, the revision to pass as --expect-rev, whether its rollback
// target is warm, its last drill and its requests in flight. Reading never
// needs authorization.
//
// Only etcd is required. A warm check that cannot be made is reported in
// that route's Readiness.Error, and an audit database that is not configured
// or does not answer in each route's DrillError; neither fails the status.
func (s *Service) Status(ctx context.Context, o Origin, route string) (StatusReport, error) {
	if route != "" {
		if err := routing.ValidateRoute(route); err != nil {
			return StatusReport{}, Errorf(EINVALID, "%s", invalidText(err))
		}
	}
	entries, malformed, rev, err := s.routes.List(ctx)
	if err != nil {
		return StatusReport{}, unavailable(err, "etcd could not be read: %s", causeText(err))
	}
	rep := StatusReport{Routes: []RouteStatus{}, Revision: rev, At: s.now()}
	for _, m := range malformed {
		var me *routing.MalformedError
		if route != "" && errors.As(m, &me) && me.Key != s.routes.Keys().Route(route) {
			continue
		}
		rep.Malformed = append(rep.Malformed, m.Error())
	}
	for _, e := range entries {
		if route == "" || e.Config.Route == route {
			rep.Routes = append(rep.Routes, RouteStatus{Route: e.Config.Route, Config: e.Config, Revision: e.ModRevision})
		}
	}
	if route != "" && len(rep.Routes) == 0 {
		if len(rep.Malformed) > 0 {
			// The route exists but its value is unusable: that is the
			// answer, and the report says what is wrong with it.
			return rep, nil
		}
		return StatusReport{}, notFound(route, entries)
	}
	slices.SortFunc(rep.Routes, func(a, b RouteStatus) int { return strings.Compare(a.Route, b.Route) })

	inflight, bad, err := s.inflightByRoute(ctx, rev)
	if err != nil {
		return StatusReport{}, unavailable(err, "etcd could not be read (runtime instances): %s", causeText(err))
	}
	rep.Malformed = append(rep.Malformed, bad...)
	for i := range rep.Routes {
		rep.Routes[i].InFlight = inflight[rep.Routes[i].Route]
		if rep.Routes[i].InFlight == nil {
			rep.Routes[i].InFlight = map[string]int{}
		}
	}

	// The warm checks ask agents over the network; the drill statistics
	// are Postgres queries. They do not depend on each other, so the
	// queries run while the checks do.
	var wg sync.WaitGroup
	sem := make(chan struct{}, statusWarmWorkers)
	for i := range rep.Routes {
		rs := &rep.Routes[i]
		rs.Readiness.Target = rs.Config.Previous
		if rs.Readiness.Target == "" {
			continue
		}
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				rs.Readiness.Error = "warm check not made: " + causeText(ctx.Err())
				return
			}
			warmRep, err := s.cfg.Warm.Check(ctx, rs.Route, rs.Readiness.Target)
			rs.Readiness = readinessOf(rs.Readiness.Target, warmRep, err)
		})
	}
	s.drillStats(ctx, rep.Routes)
	wg.Wait()
	s.log.Debug("status", zap.String("actor", o.Actor.ID), zap.String("route", route),
		zap.Int("routes", len(rep.Routes)), zap.Int64("revision", rev))
	return rep, nil
}

// readinessOf turns a warm check's answer into a Readiness.
func readinessOf(target string, rep warm.Report, err error) Readiness {
	r := Readiness{Target: target}
	switch {
	case err == nil:
		r.Warm = true
	case errors.Is(err, warm.ErrTargetNotWarm):
		r.Reason = rep.Reason
	default:
		r.Error = causeText(err)
		return r
	}
	r.Summary = rep.Summary()
	r.Report = &rep
	return r
}

// inflightByRoute reads every runtime instance record and sums their in-flight
// counts by route and version. Records that cannot be decoded are returned
// as text and count for nothing.
func (s *Service) inflightByRoute(ctx context.Context, rev int64) (map[string]map[string]int, []string, error) {
	keys := runtime.Keys{Prefix: s.cfg.Prefix}
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		// The same revision as the routes, so the counts belong to the
		// versions shown.
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.etcd.Get(ctx, keys.Instances(), opts...)
	if err != nil {
		return nil, nil, err
	}
	sums := map[string]map[string]int{}
	var bad []string
	for _, kv := range resp.Kvs {
		var rec runtime.InstanceRecord
		if err := runtime.Decode(kv.Value, &rec); err != nil {
			bad = append(bad, fmt.Sprintf("runtime instance record %s: %v", kv.Key, err))
			continue
		}
		for route, versions := range rec.InFlight {
			for version, n := range versions {
				if n == 0 {
					continue
				}
				if sums[route] == nil {
					sums[route] = map[string]int{}
				}
				sums[route][version] += n
			}
		}
	}
	return sums, bad, nil
}

// drillStats fills in each route's last drill. The queries run one after
// the other (s.cfg.DB may be a single connection); after the first failure
// the rest are not tried, so a Postgres that is down costs one connect
// timeout, not one per route.
func (s *Service) drillStats(ctx context.Context, routes []RouteStatus) {
	if s.cfg.DB == nil {
		for i := range routes {
			routes[i].DrillError = "audit database unavailable: none is configured"
		}
		return
	}
	ctx, cancel := sourceContext(ctx)
	defer cancel()
	var failed string
	for i := range routes {
		if failed != "" {
			routes[i].DrillError = failed
			continue
		}
		st, err := audit.DrillStatsOf(ctx, s.cfg.DB, routes[i].Route)
		if err != nil {
			s.log.Warn("status: drill statistics unavailable", zap.String("route", routes[i].Route), zap.Error(err))
			failed = "audit database unavailable: " + causeText(err)
			routes[i].DrillError = failed
			continue
		}
		if st.Count > 0 {
			routes[i].LastDrill = &DrillInfo{
				At:    st.LastRun,
				Count: st.Count,
				P50:   msDuration(st.Total.P50),
				P95:   msDuration(st.Total.P95),
			}
		}
	}
}

// lastDrill reads a route's drill summary for a pre-flight card: nil when
// there is no database, none was recorded, or the database did not answer
// in a second (a card must not wait on the audit database).
func (s *Service) lastDrill(ctx context.Context, route string) *DrillInfo {
	if s.cfg.DB == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := audit.DrillStatsOf(ctx, s.cfg.DB, route)
	if err != nil || st.Count == 0 {
		return nil
	}
	return &DrillInfo{At: st.LastRun, Count: st.Count, P50: msDuration(st.Total.P50), P95: msDuration(st.Total.P95)}
}

func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// String renders the report for a person at a terminal: one block per route,
// its first line e.g.
//
//	chat-70b: v42 (promote by X 3m ago, epoch 12, rev 5121) · rollback target v41 warm (24/24 nodes, 96/96 GPUs) · last drill 3 days ago (p50 1.2 s) · 37 in flight
//
// and, when it matters, indented lines with what is cold, why and how to
// undo the last rollback. Free text read from etcd (actors, agents' errors)
// is cleaned of control characters.
func (r *StatusReport) String() string {
	var b strings.Builder
	// An audit database that is down is down for every route: said once
	// at the end rather than under each route.
	shared := ""
	if len(r.Routes) > 1 {
		shared = r.Routes[0].DrillError
		for _, rs := range r.Routes[1:] {
			if rs.DrillError != shared {
				shared = ""
				break
			}
		}
	}
	for _, rs := range r.Routes {
		rs.write(&b, r.At, shared == "")
	}
	if len(r.Routes) == 0 && len(r.Malformed) == 0 {
		b.WriteString("no routes yet: a route is created by its first promote\n")
	}
	if shared != "" {
		fmt.Fprintf(&b, "note: last drills unknown: %s\n", plainText(shared, 300))
	}
	for _, m := range r.Malformed {
		fmt.Fprintf(&b, "warning: %s\n", plainText(m, 300))
	}
	fmt.Fprintf(&b, "(etcd revision %d)\n", r.Revision)
	return b.String()
}

// write renders one route's block; drillDetail says whether a DrillError
// is explained under the route.
func (rs *RouteStatus) write(b *strings.Builder, now time.Time, drillDetail bool) {
	c := rs.Config
	fmt.Fprintf(b, "%s: %s (%s by %s %s, epoch %d, rev %d)", rs.Route, c.Active, c.Kind,
		plainText(c.Actor, 60), Ago(now, c.At), c.Epoch, rs.Revision)

	rd := rs.Readiness
	var detail []string
	switch {
	case rd.Target == "":
		b.WriteString(" · no rollback target (no previous version)")
	case rd.Error != "":
		fmt.Fprintf(b, " · rollback target %s: warm check failed", rd.Target)
		detail = append(detail, "warm check: "+plainText(rd.Error, 300))
	case rd.Report != nil && rd.Warm:
		fmt.Fprintf(b, " · rollback target %s warm (%s)", rd.Target, warmCounts(rd.Report))
	case rd.Report != nil:
		fmt.Fprintf(b, " · rollback target %s NOT warm (%s)", rd.Target, warmCounts(rd.Report))
		detail = append(detail, "not warm: "+plainText(rd.Reason, 300))
		if cold := coldList(rd.Report); cold != "" {
			detail = append(detail, cold)
		}
	default:
		fmt.Fprintf(b, " · rollback target %s", rd.Target)
	}

	switch {
	case rs.DrillError != "":
		b.WriteString(" · last drill unknown")
		if drillDetail {
			detail = append(detail, "drills: "+plainText(rs.DrillError, 300))
		}
	case rs.LastDrill != nil:
		fmt.Fprintf(b, " · last drill %s (p50 %s)", Ago(now, rs.LastDrill.At), seconds1(rs.LastDrill.P50))
	default:
		b.WriteString(" · never drilled")
	}

	fmt.Fprintf(b, " · %s\n", inflightText(rs.InFlight))

	// Only after a rollback (or a drill still holding) is a default
	// rollback refused: a drill's return is back where the route was.
	if (c.Kind == routing.KindRollback || c.Kind == routing.KindDrill) && c.From != "" && c.From == c.Previous {
		detail = append(detail, fmt.Sprintf("the last change was a %s from %s: a rollback without --to is refused; --to %s undoes it",
			c.Kind, c.From, c.From))
	}
	for _, d := range detail {
		fmt.Fprintf(b, "    %s\n", d)
	}
}

// warmCounts is "24/24 nodes, 96/96 GPUs".
func warmCounts(r *warm.Report) string {
	return fmt.Sprintf("%d/%d nodes, %d/%d GPUs", r.WarmNodes, r.TargetNodes, r.WarmGPUs, r.TargetGPUs)
}

// coldList names up to five nodes that are not warm, with their reasons.
func coldList(r *warm.Report) string {
	var parts []string
	n := 0
	for _, nd := range r.Nodes {
		if nd.State == warm.StateWarm {
			continue
		}
		n++
		if len(parts) < 5 {
			part := fmt.Sprintf("%s %s", plainText(nd.Node, 60), nd.State)
			if nd.Reason != "" {
				part += " (" + plainText(nd.Reason, 100) + ")"
			}
			parts = append(parts, part)
		}
	}
	if n == 0 {
		return ""
	}
	s := "not warm on: " + strings.Join(parts, ", ")
	if n > len(parts) {
		s += fmt.Sprintf(" and %d more", n-len(parts))
	}
	return s
}

// inflightText is "37 in flight", with a breakdown when more than one
// version has requests: "37 in flight (v42 30, v41 7)".
func inflightText(m map[string]int) string {
	total := 0
	versions := make([]string, 0, len(m))
	for v, n := range m {
		total += n
		versions = append(versions, v)
	}
	if len(versions) < 2 {
		return fmt.Sprintf("%d in flight", total)
	}
	slices.SortFunc(versions, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(versions))
	for i, v := range versions {
		parts[i] = fmt.Sprintf("%s %d", v, m[v])
	}
	return fmt.Sprintf("%d in flight (%s)", total, strings.Join(parts, ", "))
}

// seconds1 formats a drill duration: "1.2 s", "0.4 s".
func seconds1(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// plainText makes free text read from etcd, Postgres or an agent safe to
// print on one terminal line: control and bidirectional-override characters
// become spaces, and it is clipped to max bytes on a character boundary.
func plainText(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}

// invalidText is a validation error without its sentinel's prefix
// ("invalid: route name ..." reads as "route name ...").
func invalidText(err error) string {
	return strings.TrimPrefix(err.Error(), routing.ErrInvalid.Error()+": ")
}

// causeText is the short cause shown with an EUNAVAILABLE error: what the
// dependency said, without the wrapping a person does not need.
func causeText(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer in time"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return plainText(err.Error(), 300)
}

// unavailable is an EUNAVAILABLE error with err as its cause.
func unavailable(err error, format string, args ...any) *Error {
	return wrapf(err, EUNAVAILABLE, format, args...)
}

// notFound is the ENOTFOUND answer for a route that has no config, naming
// the routes there are.
func notFound(route string, entries []routing.Entry) *Error {
	if len(entries) == 0 {
		return Errorf(ENOTFOUND, "route %s does not exist; there are no routes yet", route)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Config.Route
	}
	slices.Sort(names)
	const most = 20
	list := strings.Join(names[:min(len(names), most)], ", ")
	if len(names) > most {
		list += fmt.Sprintf(" and %d more", len(names)-most)
	}
	return Errorf(ENOTFOUND, "route %s does not exist; routes: %s", route, list)
}
