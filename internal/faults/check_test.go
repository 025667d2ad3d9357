package faults

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
)

// settle brings a scenario to rest once its faults are healed and its
// operators have their answers: every op record closed (by a fresh
// replica's recovery; ops left open behind a live replica's lease are
// claimed once that lease is revoked, as a restart of the replica would),
// the traffic stopped, every router on every route's last epoch, the
// ground truth caught up and the audit outbox shipped.
func (e *env) settle() {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*settleTimeout)
	defer cancel()

	janitor := e.replica("janitor", replicaOpts{})
	start := time.Now()
	deadline := start.Add(settleTimeout)
	revoked := false
	for {
		recs, err := e.opRecords(ctx)
		if err != nil {
			t.Fatalf("settle: read op records: %v", err)
		}
		var open []string
		for _, id := range sortedKeys(recs) {
			if recs[id].Phase != commands.OpPhaseDone {
				open = append(open, fmt.Sprintf("%s (%s of %s, phase %s, owner %s)", id, recs[id].Kind, recs[id].Route, recs[id].Phase, recs[id].Owner))
			}
		}
		if len(open) == 0 {
			break
		}
		if !revoked && time.Since(start) > 2*time.Second {
			// Every call has been answered, so no op is still running:
			// these were left behind by a live replica (its final write
			// gave up, or a write it was told failed had landed) and wait
			// for its lease. Recovery takes them once it is gone.
			t.Logf("settle: %d op(s) left open behind a live replica, recovered after its lease is revoked: %s", len(open), strings.Join(open, "; "))
			e.mu.Lock()
			rs := append([]*replica(nil), e.replicas...)
			e.mu.Unlock()
			for _, r := range rs {
				if r != janitor {
					_ = r.sess.Close()
				}
			}
			revoked = true
		}
		if time.Now().After(deadline) {
			t.Fatalf("settle: ops still open after %v: %s", settleTimeout, strings.Join(open, "; "))
		}
		if _, err := janitor.svc.Recover(ctx); err != nil {
			t.Logf("settle: recovery pass: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	e.fleet.StopTraffic()
	if err := e.rec.sync(ctx); err != nil {
		t.Fatalf("settle: %v", err)
	}
	changes, err := e.rec.snapshot()
	if err != nil {
		t.Fatalf("settle: %v", err)
	}
	for _, route := range sortedKeys(changes) {
		cs := changes[route]
		last := cs[len(cs)-1].Config.Epoch
		cctx, ccancel := context.WithTimeout(ctx, settleTimeout)
		c := e.fleet.WaitConverged(cctx, route, last)
		ccancel()
		if !c.Done() {
			t.Errorf("settle: %d of %d routers applied %s epoch %d within %v: the readers did not recover", c.Applied, c.Routers, route, last, settleTimeout)
		}
	}

	for {
		n, err := e.countKeys(ctx, audit.Keys{Prefix: prefix}.Outbox())
		if err != nil {
			t.Fatalf("settle: count outbox: %v", err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline.Add(settleTimeout)) {
			t.Fatalf("settle: %d audit events still in the outbox", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// check runs every check of the suite on the scenario's history.
func (e *env) check() {
	t := e.t
	t.Helper()
	calls := e.hist.all()
	stats := map[string]int{}
	failures := map[string]int{}
	for _, c := range calls {
		if !c.Killed && !c.answered {
			t.Errorf("no answer: %s", c)
		}
		e.classify(c)
		if c.Bad != "" {
			t.Errorf("an answer a correct backflip does not give: %s", c)
		}
		key := string(c.Out.Kind)
		if c.Out.Class != "" {
			key += "/" + c.Out.Class
		}
		stats[key]++
		if (c.Out.Kind == outFailed || c.Out.Kind == outUnknown) && c.Err != nil {
			msg := commands.ErrorMessage(c.Err)
			if i := strings.IndexAny(msg, ";("); i > 0 {
				msg = msg[:i]
			}
			failures[msg]++
		}
	}
	t.Logf("%d calls: %v; %s", len(calls), stats, latencies(calls))
	if len(failures) > 0 {
		t.Logf("failed or unknown: %v", failures)
	}
	checkLinearizable(t, e.hist, calls, e.coldOK)
	changes, err := e.rec.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	flipped := e.checkGroundTruth(calls, changes)
	e.checkAudit(calls, flipped)
	e.checkDone(changes)
	e.checkReaders()
}

// checkGroundTruth checks every route's recorded history: epochs one by
// one, each change made by a request whose operator was told it changed
// the route (or that it may have), each completed request's change there
// exactly once. It returns the ops that changed a route.
func (e *env) checkGroundTruth(calls []*call, changes map[string][]change) map[string]change {
	t := e.t
	byOp := map[string]*call{}
	for _, c := range calls {
		if c.Op != "" {
			byOp[c.Op] = c
		}
	}
	flipped := map[string]change{}
	total := 0
	for _, route := range sortedKeys(changes) {
		cs := changes[route]
		for i := 1; i < len(cs); i++ {
			prev, cur := cs[i-1].Config, cs[i].Config
			total++
			if cur.Epoch != prev.Epoch+1 || cur.From != prev.Active || cur.Previous != prev.Active {
				t.Errorf("%s: change at revision %d (%s) does not follow %s", route, cs[i].Rev, stateOf(cur), stateOf(prev))
			}
			if _, dup := flipped[cur.Op]; dup {
				t.Errorf("%s: op %s changed the route twice", route, cur.Op)
			}
			flipped[cur.Op] = cs[i]
			c := byOp[cur.Op]
			switch {
			case c == nil:
				t.Errorf("%s changed at revision %d by op %s, which no operator asked for", route, cs[i].Rev, cur.Op)
			case c.Out.Kind != outCompleted && c.Out.Kind != outUnknown:
				t.Errorf("%s changed to %s at epoch %d by a request whose operator was told %s: %s", route, cur.Active, cur.Epoch, c.Out.Kind, c)
			case c.Out.Kind == outCompleted && (c.Out.Epoch != cur.Epoch || c.Out.To != cur.Active || c.Res.Revision != cs[i].Rev):
				t.Errorf("%s: the change at revision %d (%s) is not the one reported: %s", route, cs[i].Rev, stateOf(cur), c)
			}
		}
	}
	for _, c := range calls {
		if c.Out.Kind == outCompleted {
			if _, ok := flipped[c.Op]; !ok {
				t.Errorf("completed, but the route never changed: %s", c)
			}
		}
	}
	t.Logf("ground truth: %d route changes", total)
	return flipped
}

// Final outcomes of an op that changed a route, and of one that did not.
var (
	flippedOutcomes   = map[string]bool{commands.OutcomeCompleted: true, commands.OutcomeDegraded: true, commands.OutcomeRecovered: true}
	unflippedOutcomes = map[string]bool{commands.OutcomeRefused: true, commands.OutcomeFailed: true, commands.OutcomeAbandoned: true}
)

// checkAudit checks that the audit trail in Postgres has every op's
// events exactly once: a "flipped" event if and only if the op changed the
// route, exactly one final event for every op that got an op record (and
// its outcome agrees with the record, the route's history and the
// operator's answer), the event each answer reported as queued, and
// nothing from ops nobody asked for; and that the outbox and the
// quarantine are empty.
func (e *env) checkAudit(calls []*call, flipped map[string]change) {
	t := e.t
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := e.auditRows(ctx)
	if err != nil {
		t.Fatalf("read audit_events: %v", err)
	}
	recs, err := e.opRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{audit.Keys{Prefix: prefix}.Outbox(), audit.Keys{Prefix: prefix}.Quarantine()} {
		if n, err := e.countKeys(ctx, p); err != nil || n != 0 {
			t.Errorf("%d keys left under %s (%v)", n, p, err)
		}
	}
	byOp := map[string][]auditRow{}
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.EventID] {
			t.Errorf("event %s recorded twice", r.EventID)
		}
		seen[r.EventID] = true
		byOp[r.OpID] = append(byOp[r.OpID], r)
	}
	asked := map[string]bool{}
	for _, c := range calls {
		if c.Op == "" {
			continue
		}
		asked[c.Op] = true
		var flips, finals []auditRow
		for _, r := range byOp[c.Op] {
			if r.Outcome == "flipped" {
				flips = append(flips, r)
			} else {
				finals = append(finals, r)
			}
		}
		_, didFlip := flipped[c.Op]
		want := map[bool]int{true: 1, false: 0}[didFlip]
		if len(flips) != want {
			t.Errorf("%d flipped events, want %d: %s", len(flips), want, c)
		}
		for _, f := range flips {
			if f.Kind != string(auditKindOf(c.Kind)) || f.Route != c.Route {
				t.Errorf("flipped event %s is %s of %s: %s", f.EventID, f.Kind, f.Route, c)
			}
		}
		rec, hasRec := recs[c.Op]
		switch {
		case hasRec && len(finals) != 1:
			t.Errorf("%d final events for an op with a record (%s, %s): %s", len(finals), rec.Phase, rec.Outcome, c)
		case hasRec && finals[0].Outcome != rec.Outcome:
			t.Errorf("final event says %s, the op record %s: %s", finals[0].Outcome, rec.Outcome, c)
		case !hasRec && len(finals) > 1:
			t.Errorf("%d final events for an op without a record: %s", len(finals), c)
		case !hasRec && didFlip:
			t.Errorf("an op changed the route but has no op record: %s", c)
		}
		if c.Res != nil && c.Res.Audit.Queued {
			found := false
			for _, f := range finals {
				found = found || f.EventID == c.Res.Audit.EventID
			}
			if !found {
				t.Errorf("the answer reported event %s queued, but it is not in Postgres: %s", c.Res.Audit.EventID, c)
			}
		}
		if len(finals) != 1 {
			continue
		}
		f := finals[0]
		switch {
		case didFlip && !flippedOutcomes[f.Outcome]:
			t.Errorf("the op changed the route, but its final event says %s: %s", f.Outcome, c)
		case !didFlip && !unflippedOutcomes[f.Outcome]:
			t.Errorf("the op did not change the route, but its final event says %s: %s", f.Outcome, c)
		case c.Out.Kind == outCompleted && f.Outcome != c.Res.Outcome && f.Outcome != commands.OutcomeRecovered:
			t.Errorf("the operator was told %s, the final event says %s: %s", c.Res.Outcome, f.Outcome, c)
		case (c.Out.Kind == outRefused || c.Out.Kind == outConflict) && f.Outcome != commands.OutcomeRefused && f.Outcome != commands.OutcomeAbandoned:
			t.Errorf("the operator was told %s, the final event says %s: %s", c.Out.Kind, f.Outcome, c)
		case c.Out.Kind == outFailed && f.Outcome != commands.OutcomeFailed && f.Outcome != commands.OutcomeAbandoned:
			t.Errorf("the operator was told it failed, the final event says %s: %s", f.Outcome, c)
		}
	}
	for op, rs := range byOp {
		if !asked[op] {
			t.Errorf("%d audit events of op %s, which no operator asked for: %s", len(rs), op, describe(rs))
		}
	}
	t.Logf("audit: %d events of %d ops, each once", len(rows), len(byOp))
}

func auditKindOf(k callKind) audit.Kind {
	if k == kindPromote {
		return audit.KindPromote
	}
	return audit.KindRollback
}

// checkDone checks that no request passed Done on a version its runtime
// instance had, by then, applied a rollback away from: neither one it
// applied itself, nor one hidden in a jump of epochs (a watch that
// resumed after a compaction, say) when the version was not active again
// after the jump.
func (e *env) checkDone(changes map[string][]change) {
	t := e.t
	rec := e.obs.Record()
	byEpoch := map[string]map[int64]routing.RouteConfig{}
	for route, cs := range changes {
		m := map[int64]routing.RouteConfig{}
		for _, c := range cs {
			m[c.Config.Epoch] = c.Config
		}
		byEpoch[route] = m
	}
	type key struct{ runtime, route string }
	applied := map[key][]routing.View{}
	for id, vs := range rec.Runtimes {
		for _, v := range vs {
			if v.Active != "" {
				applied[key{id, v.Route}] = append(applied[key{id, v.Route}], v)
			}
		}
	}
	passed, refused, violations := 0, 0, 0
	for _, f := range rec.Finishes {
		if f.Err != nil {
			refused++
			continue
		}
		passed++
		prev := f.Epoch
		for _, v := range applied[key{f.Runtime, f.Route}] {
			if v.Epoch <= f.Epoch || v.Epoch > f.Applied {
				continue
			}
			if v.Kind.Aborts() && v.From == f.Version {
				violations++
				t.Errorf("%s: a request on %s@%s (epoch %d) passed Done after its instance applied the %s away from it at epoch %d",
					f.Runtime, f.Route, f.Version, f.Epoch, v.Kind, v.Epoch)
			}
			if v.Epoch > prev+1 && byEpoch[f.Route][f.Applied].Active != f.Version {
				for ep := prev + 1; ep < v.Epoch; ep++ {
					if c := byEpoch[f.Route][ep]; c.Kind.Aborts() && c.From == f.Version {
						violations++
						t.Errorf("%s: a request on %s@%s (epoch %d) passed Done after its instance jumped from epoch %d to %d, over the %s away from it at epoch %d, to %s",
							f.Runtime, f.Route, f.Version, f.Epoch, prev, v.Epoch, c.Kind, ep, byEpoch[f.Route][f.Applied].Active)
					}
				}
			}
			prev = max(prev, v.Epoch)
		}
	}
	if stats := e.fleet.Stats(); stats.CompletedOnRolledBack != 0 {
		t.Errorf("the fleet counted %d requests completed on a rolled-back version", stats.CompletedOnRolledBack)
	}
	t.Logf("Done: %d attempts passed, %d refused (aborted at the final checkpoint); %d on a rolled-back version", passed, refused, violations)
}

// checkReaders checks that every router and runtime applied each route's
// epochs in increasing order (a reader may skip epochs, never go back).
func (e *env) checkReaders() {
	t := e.t
	rec := e.obs.Record()
	for what, byID := range map[string]map[string][]routing.View{"router": rec.Routers, "runtime": rec.Runtimes} {
		for _, id := range sortedKeys(byID) {
			last := map[string]int64{}
			for _, v := range byID[id] {
				if v.Active == "" {
					t.Errorf("%s %s: route %s disappeared", what, id, v.Route)
					continue
				}
				if v.Epoch < last[v.Route] || (what == "router" && v.Epoch == last[v.Route]) {
					t.Errorf("%s %s: %s went from epoch %d to %d", what, id, v.Route, last[v.Route], v.Epoch)
				}
				last[v.Route] = max(last[v.Route], v.Epoch)
			}
		}
	}
}

// latencies summarises how long calls took, for the log only (nothing
// asserts a duration).
func latencies(calls []*call) string {
	by := map[callKind][]time.Duration{}
	var past time.Duration
	for _, c := range calls {
		if c.answered {
			took := time.Duration(c.Return - c.Call)
			by[c.Kind] = append(by[c.Kind], took)
			past = max(past, took-c.Timeout)
		}
	}
	var parts []string
	for _, k := range []callKind{kindRead, kindRollback, kindPromote} {
		ds := by[k]
		if len(ds) == 0 {
			continue
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		parts = append(parts, fmt.Sprintf("%s p50 %v max %v", k, ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond)))
	}
	if past > 0 {
		// The phases after a flip, and the closing of an op record, run to
		// their end whatever the caller's deadline.
		parts = append(parts, fmt.Sprintf("longest past its deadline %v", past.Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}
