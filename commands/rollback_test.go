package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/routing"
)

func mustCode(t *testing.T, err error, code string, contains ...string) {
	t.Helper()
	if got := ErrorCode(err); got != code {
		t.Fatalf("error code %q (%v), want %q", got, err, code)
	}
	msg := ErrorMessage(err)
	for _, c := range contains {
		if !strings.Contains(msg, c) {
			t.Errorf("message %q lacks %q", msg, c)
		}
	}
}

// TestRollbackEndToEnd runs the whole sequence on a simulated fleet with
// live traffic: resolve, warm, flip, routers, in-flight, audit, then ships
// the audit events to Postgres.
func TestRollbackEndToEnd(t *testing.T) {
	e := newFleetEnv(t, fleetOpts{rps: 40})
	r := e.replica(t, "bot-1")
	ctx := testCtx(t)
	before := e.route(t, "chat-70b")
	time.Sleep(300 * time.Millisecond) // let requests be in flight

	var pl progressLog
	res, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "chat-70b", Reason: "latency spike after v42"}, pl.add)
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if res.Outcome != OutcomeCompleted {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Report())
	}
	want := "resolve:running resolve:done warm:running warm:done flip:running flip:done routers:running routers:done inflight:running inflight:done audit:running audit:done"
	if got := pl.phases(); got != want {
		t.Errorf("progress:\n got %s\nwant %s", got, want)
	}
	if res.From != "v42" || res.To != "v41" || res.ExpectRev != before.ModRevision || res.Epoch != before.Config.Epoch+1 {
		t.Errorf("result %+v", res)
	}
	if res.Warm == nil || !res.Warm.Warm || res.Warm.WarmNodes != 4 {
		t.Errorf("warm report %+v", res.Warm)
	}
	if res.Routers.Expected != 3 || res.Routers.Converged != 3 {
		t.Errorf("routers %+v", res.Routers)
	}
	if res.InFlight == nil || !res.InFlight.Complete || res.InFlight.Expected != 2 || res.InFlight.Aborted != res.InFlight.Reissued {
		t.Errorf("in-flight %+v", res.InFlight)
	}
	if !res.Audit.Queued {
		t.Errorf("audit not queued: %+v", res.Audit)
	}
	for _, p := range []Phase{PhaseResolve, PhaseWarm, PhaseFlip, PhaseRouters, PhaseInFlight} {
		if res.Timing(p) <= 0 {
			t.Errorf("phase %s has no timing", p)
		}
	}
	report := res.Report()
	for _, w := range []string{"chat-70b rolled back v42 → v41 in ", "(4/4 nodes, 16/16 GPUs)", fmt.Sprintf("(rev %d)", res.Revision), "(3/3)", "audit ✓"} {
		if !strings.Contains(report, w) {
			t.Errorf("report %q lacks %q", report, w)
		}
	}
	t.Logf("report: %s", report)

	after := e.route(t, "chat-70b")
	if after.Config.Active != "v41" || after.Config.Previous != "v42" || after.Config.Kind != routing.KindRollback || after.Config.Op != res.Op || after.ModRevision != res.Revision {
		t.Errorf("route after: %+v at %d", after.Config, after.ModRevision)
	}
	rec := e.opRecord(t, res.Op)
	if rec.Phase != OpPhaseDone || rec.Outcome != OutcomeCompleted || rec.Rev != res.Revision || rec.Channel != incident {
		t.Errorf("op record %+v", rec)
	}
	evs := e.outbox(t)[res.Op]
	if got := kinds(evs); got != "model.rollback/completed model.rollback/flipped" {
		t.Errorf("outbox events of the op: %s", got)
	}

	e.ship(t)
	rows, err := audit.Op(ctx, e.db, mustUUID(t, res.Op))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[1].Outcome != OutcomeCompleted || rows[1].Timings["total"] <= 0 || rows[1].EtcdRevision != res.Revision {
		t.Errorf("audit rows: %+v", rows)
	}
	e.fleet.StopTraffic()
	if st := e.fleet.Stats(); st.CompletedOnRolledBack != 0 {
		t.Errorf("requests completed on the rolled-back version after the flip: %+v", st)
	}
}

func TestRollbackRefusals(t *testing.T) {
	e := newFleetEnv(t, fleetOpts{})
	r := e.replica(t, "bot-1")
	ctx := testCtx(t)

	t.Run("ColdTargetRefused", func(t *testing.T) {
		before := e.route(t, "embed-small")
		res, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "embed-small", Reason: "bad embeddings"}, nil)
		mustCode(t, err, EREFUSED, "v6 is not warm", "--force-cold", "gpu-01")
		if res.Warm == nil || res.Warm.Warm {
			t.Errorf("warm report %+v", res.Warm)
		}
		if got := res.Report(); !strings.HasPrefix(got, "embed-small not rolled back (v7 → v6): refused") {
			t.Errorf("report of a refusal: %q", got)
		}
		if after := e.route(t, "embed-small"); after.ModRevision != before.ModRevision {
			t.Error("route changed")
		}
		if got := kinds(e.outbox(t)[res.Op]); got != "rollback.refused/refused" {
			t.Errorf("audit: %s", got)
		}
		if rec := e.opRecord(t, res.Op); rec.Outcome != OutcomeRefused {
			t.Errorf("op record %+v", rec)
		}
	})
	t.Run("PreflightRefusalAudited", func(t *testing.T) {
		res, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "embed-small", Reason: "card", Preflight: true}, nil)
		mustCode(t, err, EREFUSED, "not warm")
		if got := kinds(e.outbox(t)[res.Op]); got != "rollback.refused/refused" {
			t.Errorf("a pre-flight refusal was not audited: %q", got)
		}
	})
	t.Run("UnknownTargetVersionRefusedEvenForced", func(t *testing.T) {
		_, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "chat-70b", To: "v30", ForceCold: true, Reason: "x"}, nil)
		mustCode(t, err, EREFUSED, "no node serves chat-70b@v30")
	})
	t.Run("DryRunChangesNothing", func(t *testing.T) {
		before := e.route(t, "chat-70b")
		res, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "chat-70b", Reason: "check", DryRun: true}, nil)
		if err != nil || res.Outcome != OutcomeDryRun || res.To != "v41" || res.Warm == nil || !res.Warm.Warm {
			t.Fatalf("dry run: %v %+v", err, res)
		}
		if !strings.Contains(res.Report(), "would roll back v42 → v41") {
			t.Errorf("report %q", res.Report())
		}
		if after := e.route(t, "chat-70b"); after.ModRevision != before.ModRevision {
			t.Error("route changed")
		}
		if len(e.outbox(t)[res.Op]) != 0 {
			t.Error("a dry run was audited as an op")
		}
	})
	t.Run("Unauthorized", func(t *testing.T) {
		res, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(mallory), Route: "chat-70b", Reason: "x"}, nil)
		mustCode(t, err, EUNAUTHORIZED, "<@"+alice+">")
		if got := kinds(e.outbox(t)[res.Op]); got != "rollback.refused/refused" {
			t.Errorf("refusal audit: %q", got)
		}
	})
	t.Run("WrongChannel", func(t *testing.T) {
		o := from(alice)
		o.Channel = Channel{ID: "C0RANDOM", Name: "random"}
		_, err := r.svc.Rollback(ctx, RollbackRequest{Origin: o, Route: "chat-70b", Reason: "x"}, nil)
		mustCode(t, err, EUNAUTHORIZED, "inc-*")
	})
	t.Run("BadInput", func(t *testing.T) {
		for name, req := range map[string]RollbackRequest{
			"NoReason":     {Origin: from(alice), Route: "chat-70b"},
			"BadRoute":     {Origin: from(alice), Route: "../x", Reason: "x"},
			"ReservedName": {Origin: from(alice), Route: "status", Reason: "x"},
			"BadVersion":   {Origin: from(alice), Route: "chat-70b", To: "v4 2", Reason: "x"},
			"BadIdemKey":   {Origin: Origin{Actor: Actor{ID: alice}, Channel: Channel{ID: incident}, IdemKey: "a/b"}, Route: "chat-70b", Reason: "x"},
			"NoActor":      {Route: "chat-70b", Reason: "x"},
			"BadOpID":      {Origin: from(alice), Route: "chat-70b", Reason: "x", Op: "not-a-uuid"},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := r.svc.Rollback(ctx, req, nil)
				mustCode(t, err, EINVALID)
			})
		}
	})
	t.Run("UnknownRoute", func(t *testing.T) {
		_, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "nope", Reason: "x"}, nil)
		mustCode(t, err, ENOTFOUND, "nope")
	})
	t.Run("AlreadyOnTarget", func(t *testing.T) {
		_, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "chat-70b", To: "v42", Reason: "x"}, nil)
		mustCode(t, err, EREFUSED, "already on v42")
	})
	t.Run("StaleExpectedRevision", func(t *testing.T) {
		cur := e.route(t, "chat-70b")
		_, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "chat-70b", Reason: "x", ExpectRev: cur.ModRevision - 1}, nil)
		mustCode(t, err, ECONFLICT, "changed since you looked", "Nothing changed")
	})
	t.Run("SecondDefaultRollbackRefused", func(t *testing.T) {
		cur := e.route(t, "chat-70b")
		res, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "chat-70b", Reason: "first", ExpectRev: cur.ModRevision}, nil)
		if err != nil {
			t.Fatalf("first rollback: %v", err)
		}
		_, err = r.svc.Rollback(ctx, RollbackRequest{Origin: from(bob), Route: "chat-70b", Reason: "second"}, nil)
		mustCode(t, err, EREFUSED, "rolled back from v42 by <@"+alice+">", "--to v42")
		if after := e.route(t, "chat-70b"); after.ModRevision != res.Revision {
			t.Error("the second rollback changed the route")
		}
		// Undoing explicitly is allowed.
		undo, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(bob), Route: "chat-70b", To: "v42", Reason: "undo"}, nil)
		if err != nil || undo.To != "v42" {
			t.Fatalf("explicit undo: %v", err)
		}
	})
	t.Run("ForceColdAudited", func(t *testing.T) {
		res, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "embed-small", Reason: "forced", ForceCold: true}, nil)
		if err != nil {
			t.Fatalf("forced rollback: %v", err)
		}
		if !res.ForcedCold || !strings.Contains(res.Report(), "FORCED COLD") {
			t.Errorf("forced: %+v %s", res.ForcedCold, res.Report())
		}
		evs := e.outbox(t)[res.Op]
		if len(evs) != 2 || !strings.Contains(string(evs[0].Details), `"forced_cold":true`) {
			t.Errorf("audit of a forced rollback: %+v", evs)
		}
	})
}

// TestConcurrentRollbacksOneFlips: 50 operators roll back the same route
// at once: exactly one flips; the 49 others are told who did.
func TestConcurrentRollbacksOneFlips(t *testing.T) {
	e := newFleetEnv(t, fleetOpts{})
	r := e.replica(t, "bot-1")
	ctx := testCtx(t)
	before := e.route(t, "chat-70b")
	const n = 50
	var wg sync.WaitGroup
	results := make([]*Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := alice
			if i%2 == 1 {
				user = bob
			}
			results[i], errs[i] = r.svc.Rollback(ctx, RollbackRequest{Origin: from(user), Route: "chat-70b", Reason: fmt.Sprintf("operator %d", i)}, nil)
		}()
	}
	wg.Wait()
	var winners []*Result
	for i, err := range errs {
		if err == nil {
			winners = append(winners, results[i])
			continue
		}
		code := ErrorCode(err)
		if code != ECONFLICT && code != EREFUSED {
			t.Errorf("operator %d: %s: %v", i, code, err)
		}
		if msg := ErrorMessage(err); !strings.Contains(msg, "rolled back") || !strings.Contains(msg, "v42 → v41") && !strings.Contains(msg, "from v42") {
			t.Errorf("operator %d was not told who rolled back: %s", i, msg)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d rollbacks flipped, want 1", len(winners))
	}
	after := e.route(t, "chat-70b")
	if after.Config.Epoch != before.Config.Epoch+1 || after.Config.Op != winners[0].Op {
		t.Errorf("route epoch %d → %d, op %s (winner %s)", before.Config.Epoch, after.Config.Epoch, after.Config.Op, winners[0].Op)
	}
	flips := 0
	for _, evs := range e.outbox(t) {
		for _, ev := range evs {
			if ev.Kind == audit.KindRollback && ev.Outcome == "flipped" {
				flips++
			}
		}
	}
	if flips != 1 {
		t.Errorf("%d flip events queued", flips)
	}
}

// TestIdempotentAcrossReplicas: the same request (one idempotency key)
// handled by two bot replicas at once flips once, and both answer with the
// same op.
func TestIdempotentAcrossReplicas(t *testing.T) {
	e := newFleetEnv(t, fleetOpts{})
	r1, r2 := e.replica(t, "bot-1"), e.replica(t, "bot-2")
	ctx := testCtx(t)
	before := e.route(t, "chat-70b")
	o := from(alice)
	o.IdemKey = "slack:trigger.1234.5678"
	req := RollbackRequest{Origin: o, Route: "chat-70b", Reason: "double click", ExpectRev: before.ModRevision}
	var wg sync.WaitGroup
	var res [2]*Result
	var errs [2]error
	for i, r := range []*replica{r1, r2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = r.svc.Rollback(ctx, req, nil)
		}()
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Errorf("replica %d: %v", i+1, errs[i])
		}
	}
	if res[0] == nil || res[1] == nil || res[0].Op != res[1].Op {
		t.Fatalf("answers name different ops: %+v / %+v", res[0], res[1])
	}
	if res[0].Replayed == res[1].Replayed {
		t.Errorf("exactly one answer should be a replay: %v %v", res[0].Replayed, res[1].Replayed)
	}
	if after := e.route(t, "chat-70b"); after.Config.Epoch != before.Config.Epoch+1 {
		t.Errorf("epoch %d → %d", before.Config.Epoch, after.Config.Epoch)
	}
	// A retry long after gets the same answer, and nothing flips.
	again, err := r2.svc.Rollback(ctx, req, nil)
	if err != nil || again.Op != res[0].Op || !again.Replayed || again.Outcome != OutcomeCompleted {
		t.Fatalf("retry: %v %+v", err, again)
	}
	if !strings.Contains(again.Report(), "rolled back v42 → v41") {
		t.Errorf("replayed report %q", again.Report())
	}
}

func TestPromote(t *testing.T) {
	e := newFleetEnv(t, fleetOpts{})
	r := e.replica(t, "bot-1")
	ctx := testCtx(t)
	o := Origin{Actor: Actor{ID: "cli:deploy@ci"}, Transport: TransportCLI, Trusted: true}

	t.Run("ForwardToWarmVersion", func(t *testing.T) {
		// chat-70b v41 is warm on every node: a promote back to it is a
		// forward move as far as routing is concerned.
		before := e.route(t, "chat-70b")
		res, err := r.svc.Promote(ctx, PromoteRequest{Origin: o, Route: "chat-70b", Version: "v41", Reason: "deploy", ExpectRev: before.ModRevision}, nil)
		if err != nil {
			t.Fatalf("promote: %v", err)
		}
		if res.InFlight != nil {
			t.Error("a promotion must not abort requests")
		}
		after := e.route(t, "chat-70b")
		if after.Config.Kind != routing.KindPromote || after.Config.Active != "v41" || after.Config.Previous != "v42" {
			t.Errorf("route after promote %+v", after.Config)
		}
		if got := kinds(e.outbox(t)[res.Op]); got != "model.promote/completed model.promote/flipped" {
			t.Errorf("audit %s", got)
		}
	})
	t.Run("ColdVersionRefused", func(t *testing.T) {
		_, err := r.svc.Promote(ctx, PromoteRequest{Origin: o, Route: "embed-small", Version: "v6", Reason: "deploy"}, nil)
		mustCode(t, err, EREFUSED, "not warm")
	})
	t.Run("NewRouteWithoutNodesRefused", func(t *testing.T) {
		// No node serves this route: even a new route needs a warm
		// version to route to.
		_, err := r.svc.Promote(ctx, PromoteRequest{Origin: o, Route: "brand-new", Version: "v1", Reason: "launch"}, nil)
		mustCode(t, err, EREFUSED, "no node")
	})
	t.Run("NewRouteCreated", func(t *testing.T) {
		// The fleet serves embed-small; without its routing config the
		// first promote creates it.
		if _, err := e.cli.Delete(ctx, routing.Keyspace{Prefix: fleetPrefix}.Route("embed-small")); err != nil {
			t.Fatal(err)
		}
		res, err := r.svc.Promote(ctx, PromoteRequest{Origin: o, Route: "embed-small", Version: "v7", Reason: "launch"}, nil)
		if err != nil {
			t.Fatalf("first promote: %v", err)
		}
		if res.From != "" || res.Warm == nil || !res.Warm.Warm || !strings.Contains(res.Report(), "promoted (new route) → v7") {
			t.Errorf("result %+v: %s", res, res.Report())
		}
		after := e.route(t, "embed-small")
		if after.Config.Epoch != 1 || after.Config.Active != "v7" || after.Config.Previous != "" || after.Config.Kind != routing.KindPromote {
			t.Errorf("created route %+v", after.Config)
		}
		_, err = r.svc.Promote(ctx, PromoteRequest{Origin: o, Route: "embed-small", Version: "v7", Reason: "again"}, nil)
		mustCode(t, err, EREFUSED, "already on v7")
	})
	t.Run("StaleRevision", func(t *testing.T) {
		_, err := r.svc.Promote(ctx, PromoteRequest{Origin: o, Route: "chat-70b", Version: "v42", Reason: "x", ExpectRev: 1}, nil)
		mustCode(t, err, ECONFLICT)
	})
}

func TestRollbackCancelledBeforeFlipChangesNothing(t *testing.T) {
	e := newFleetEnv(t, fleetOpts{})
	r := e.replica(t, "bot-1")
	before := e.route(t, "chat-70b")
	ctx, cancel := context.WithCancel(context.Background())
	res, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "chat-70b", Reason: "x"}, func(p Progress) {
		if p.Phase == PhaseWarm && p.State == StateRunning {
			cancel()
		}
	})
	if err == nil || errors.Is(err, nil) {
		t.Fatalf("a cancelled rollback succeeded: %+v", res)
	}
	if after := e.route(t, "chat-70b"); after.ModRevision != before.ModRevision {
		t.Error("route changed")
	}
	if rec := e.opRecord(t, res.Op); rec.Phase != OpPhaseDone || rec.Outcome != OutcomeFailed {
		t.Errorf("op record of a cancelled rollback: %+v", rec)
	}
}
