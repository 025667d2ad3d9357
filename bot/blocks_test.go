package bot

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/slack-go/slack"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// update rewrites the golden files: go test ./bot/ -run Golden -update
var updateGolden = flag.Bool("update", false, "rewrite the golden Block Kit files under testdata/golden")

// renderNow is the fixed "now" of every rendering in these tests.
var renderNow = time.Date(2025, 6, 3, 14, 3, 7, 0, time.UTC)

const (
	renderOp    = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
	renderUser  = "U024BE7LH"
	renderRoute = "chat-70b"
)

// hostileReason is 1000 bytes of what someone could type as a reason: a
// broadcast, a link, formatting, an entity and a bare @here.
func hostileReason() string {
	const unit = "<!channel> *bold* <https://evil.example|click> & @here _x_ "
	s := strings.Repeat(unit, 1000/len(unit)+1)
	return s[:routing.MaxReasonLen]
}

// warmReport is a check of target v41 on n nodes of 4 GPUs, of which the
// first cold are not warm, each with reason.
func fixtureWarm(n, cold int, reason string) *warm.Report {
	r := &warm.Report{
		Route: renderRoute, Active: "v42", Target: "v41",
		Quorum: 1.0, QuorumFrom: "default", Baseline: warm.BaselineActive,
		BaselineGPUs: 4 * n, ActiveNodes: n, ActiveGPUs: 4 * n, NeededGPUs: 4 * n,
		TargetNodes: n, TargetGPUs: 4 * n,
		Revision: 5119, CheckedAt: renderNow.Add(-2 * time.Second), Duration: 180 * time.Millisecond,
	}
	for i := range n {
		nd := warm.NodeResult{
			Node: fmt.Sprintf("gpu-%02d", i+1), URL: fmt.Sprintf("https://gpu-%02d:9443", i+1),
			State: warm.StateWarm, GPUs: 4, WarmGPUs: 4, CanaryMS: 140, Latency: 12 * time.Millisecond,
		}
		if i < cold {
			nd.State, nd.WarmGPUs, nd.Reason = warm.StateCold, 0, reason
		}
		r.Nodes = append(r.Nodes, nd)
	}
	r.WarmNodes, r.WarmGPUs = n-cold, 4*(n-cold)
	r.Warm = cold == 0
	if !r.Warm {
		r.Reason = fmt.Sprintf("%d GPUs warm, %d needed", r.WarmGPUs, r.NeededGPUs)
	}
	return r
}

func phaseTimings(d ...time.Duration) []commands.PhaseTiming {
	phases := []commands.Phase{commands.PhaseResolve, commands.PhaseWarm, commands.PhaseFlip,
		commands.PhaseRouters, commands.PhaseInFlight, commands.PhaseAudit}
	var out []commands.PhaseTiming
	for i, took := range d {
		out = append(out, commands.PhaseTiming{Phase: phases[i], Took: took})
	}
	return out
}

// completedRollback is a rollback that went as it should.
func completedRollback() *commands.Result {
	return &commands.Result{
		Op: renderOp, Kind: routing.KindRollback, Route: renderRoute, From: "v42", To: "v41",
		Reason:    "latency spike after v42 rollout",
		Actor:     commands.Actor{ID: renderUser, Name: "ana"},
		Channel:   commands.Channel{ID: "C0INC2291", Name: "inc-2291"},
		ExpectRev: 5120, Revision: 5121, Epoch: 13,
		Warm:           fixtureWarm(24, 0, ""),
		InFlightBefore: 37,
		Routers:        &commands.RouterResult{Expected: 200, Converged: 200, Took: 31 * time.Millisecond},
		InFlight: &runtime.Result{Expected: 4, Acked: 4, Complete: true, InFlight: 37, Aborted: 37, Reissued: 37,
			Drain: 1100 * time.Millisecond},
		Audit:      commands.AuditState{Queued: true, EventID: "0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e"},
		Timings:    phaseTimings(1200*time.Microsecond, 180*time.Millisecond, 2*time.Millisecond, 31*time.Millisecond, 1100*time.Millisecond, 3*time.Millisecond),
		Total:      1420 * time.Millisecond,
		Outcome:    commands.OutcomeCompleted,
		StartedAt:  renderNow.Add(-1420 * time.Millisecond),
		FinishedAt: renderNow,
	}
}

// degradedRollback flipped, but routers and runtimes did not all confirm.
func degradedRollback() *commands.Result {
	r := completedRollback()
	r.Routers = &commands.RouterResult{Expected: 200, Converged: 196, Took: 5 * time.Second,
		Lost: []string{"router-eu-3"}, Pending: []string{"router-us-7", "router-us-8", "router-us-9"}}
	r.InFlight = &runtime.Result{Expected: 4, Acked: 2, InFlight: 37, Aborted: 30, Reissued: 28, Drain: 10 * time.Second,
		Missing: []string{"runtime-b"}, PendingReissue: []string{"runtime-c"},
		DeliveryErrors: map[string]string{"runtime-b": "dial tcp 10.0.0.4:8443: connection refused"}}
	r.Timings = phaseTimings(1200*time.Microsecond, 180*time.Millisecond, 2*time.Millisecond, 5*time.Second, 10*time.Second, 3*time.Millisecond)
	r.Total = 15200 * time.Millisecond
	r.Outcome = commands.OutcomeDegraded
	return r
}

// refusedCold is a rollback refused because the target is not warm; the
// agents' error text quotes what an inference server said.
func refusedCold() *commands.Result {
	return &commands.Result{
		Op: "2c3d4e5f-6071-4b8c-9d0e-1f2a3b4c5d6e", Kind: routing.KindRollback, Route: renderRoute, From: "v42", To: "v41",
		Reason: "latency spike after v42 rollout", Actor: commands.Actor{ID: renderUser, Name: "ana"},
		ExpectRev: 5120,
		Warm:      fixtureWarm(24, 8, "canary: 503 from vLLM: <!here> model not loaded & OOM"),
		Audit:     commands.AuditState{Queued: true},
		Timings:   phaseTimings(time.Millisecond, 2100*time.Millisecond),
		Total:     2101 * time.Millisecond,
		Outcome:   commands.OutcomeRefused,
		StartedAt: renderNow.Add(-2101 * time.Millisecond),
	}
}

// dryRun is the dry run behind a pre-flight card.
func dryRun() *commands.Result {
	return &commands.Result{
		Op: renderOp, Kind: routing.KindRollback, Route: renderRoute, From: "v42", To: "v41",
		Reason: "latency spike after v42 rollout", Actor: commands.Actor{ID: renderUser, Name: "ana"},
		ExpectRev: 5120, DryRun: true,
		Warm:           fixtureWarm(24, 0, ""),
		InFlightBefore: 37,
		LastDrill:      &commands.DrillInfo{At: renderNow.Add(-75 * time.Hour), Count: 12, P50: 1200 * time.Millisecond, P95: 1900 * time.Millisecond},
		Timings:        phaseTimings(time.Millisecond, 180*time.Millisecond),
		Outcome:        commands.OutcomeDryRun,
	}
}

// promotion is a promote of v43: requests finish where they started.
func promotion() *commands.Result {
	return &commands.Result{
		Op: "3d4e5f60-7182-4c9d-8e0f-2a3b4c5d6e7f", Kind: routing.KindPromote, Route: renderRoute, From: "v41", To: "v43",
		Reason: "release 43", Actor: commands.Actor{ID: "cli:ana@ops-1", Name: "deployer"},
		ExpectRev: 5121, Revision: 5130, Epoch: 14,
		Warm:       fixtureWarm(24, 0, ""),
		Routers:    &commands.RouterResult{Expected: 200, Converged: 200, Took: 28 * time.Millisecond},
		Audit:      commands.AuditState{Queued: true},
		Timings:    phaseTimings(time.Millisecond, 170*time.Millisecond, 2*time.Millisecond, 28*time.Millisecond),
		Total:      210 * time.Millisecond,
		Outcome:    commands.OutcomeCompleted,
		StartedAt:  renderNow.Add(-210 * time.Millisecond),
		FinishedAt: renderNow,
	}
}

func fixtureCard(reason string, forceCold bool) Card {
	return Card{ID: renderOp, Route: renderRoute, From: "v42", To: "v41", Rev: 5120,
		Exp: renderNow.Add(10 * time.Minute).Unix(), ForceCold: forceCold, Reason: reason, By: renderUser}
}

func fixtureRouteStatus(name string, cold bool, now time.Time) commands.RouteStatus {
	rs := commands.RouteStatus{
		Route: name,
		Config: routing.RouteConfig{Route: name, Active: "v42", Previous: "v41", Kind: routing.KindPromote, From: "v41",
			Epoch: 12, Op: renderOp, Reason: "release", Actor: renderUser, At: now.Add(-3 * time.Minute)},
		Revision:  5121,
		LastDrill: &commands.DrillInfo{At: now.Add(-75 * time.Hour), Count: 12, P50: 1200 * time.Millisecond},
		InFlight:  map[string]int{"v42": 30, "v41": 7},
	}
	w := fixtureWarm(24, 0, "")
	if cold {
		w = fixtureWarm(24, 8, "not loaded")
	}
	rs.Readiness = commands.Readiness{Target: "v41", Warm: w.Warm, Summary: w.Summary(), Reason: w.Reason, Report: w}
	return rs
}

func fixtureStatus(n int) commands.StatusReport {
	rep := commands.StatusReport{Revision: 5121, At: renderNow}
	for i := range n {
		rep.Routes = append(rep.Routes, fixtureRouteStatus(fmt.Sprintf("route-%04d", i), i%97 == 5, renderNow))
	}
	return rep
}

func fixtureHistoryItem(i int, reason string) commands.HistoryItem {
	total := 1420.0 + float64(i)
	it := commands.HistoryItem{
		Event: audit.Event{
			EventID: uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "event %d", i)),
			OpID:    uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "op %d", i)),
			Kind:    audit.KindRollback, Route: renderRoute, FromVersion: "v42", ToVersion: "v41",
			Actor: renderUser, ActorName: "ana", Channel: "C0INC2291", Reason: reason,
			Outcome: commands.OutcomeCompleted, Timings: map[string]float64{"total": total},
			EtcdRevision: int64(5121 - i), SchemaVersion: audit.SchemaVersion,
			OccurredAt: renderNow.Add(-time.Duration(i) * time.Hour),
		},
		Row: int64(1234 - i),
	}
	if i == 0 {
		it.Row, it.Pending = 0, true
	}
	if i%3 == 1 {
		it.Actor, it.ActorName = "cli:ana@ops-1", "deployer"
		it.Kind, it.FromVersion, it.ToVersion = audit.KindPromote, "v41", "v42"
	}
	return it
}

func fixtureHistory(n int, reason string) commands.HistoryReport {
	rep := commands.HistoryReport{Route: renderRoute}
	for i := range n {
		rep.Items = append(rep.Items, fixtureHistoryItem(i, reason))
	}
	return rep
}

func fixtureProgress() ProgressView {
	return ProgressView{
		Op: renderOp, Route: renderRoute, From: "v42", To: "v41", Kind: routing.KindRollback,
		Actor: commands.Actor{ID: renderUser, Name: "ana"}, Reason: "latency spike after v42 rollout",
		Started: renderNow.Add(-time.Second),
		Phases: []commands.Progress{
			{Op: renderOp, Route: renderRoute, Phase: commands.PhaseResolve, State: commands.StateDone, Took: 1200 * time.Microsecond},
			{Op: renderOp, Route: renderRoute, Phase: commands.PhaseWarm, State: commands.StateDone, Took: 180 * time.Millisecond, Detail: "24/24 nodes, 96/96 GPUs warm"},
			{Op: renderOp, Route: renderRoute, Phase: commands.PhaseFlip, State: commands.StateDone, Took: 2 * time.Millisecond, Detail: "rev 5121"},
			{Op: renderOp, Route: renderRoute, Phase: commands.PhaseRouters, State: commands.StateRunning, Detail: "150/200 converged"},
		},
	}
}

func fixtureWarmEvent(cold int, reason string) warm.Event {
	w := fixtureWarm(24, cold, reason)
	return warm.Event{Route: renderRoute, Target: "v41", Active: "v42", State: warm.EventCold, At: renderNow,
		Revision: 6001, Report: *w}
}

// goldenCase is one rendering checked against testdata/golden/<name>.json.
type goldenCase struct {
	name string
	msg  Message
}

func goldenCases() []goldenCase {
	notWarm := &commands.Error{Code: commands.EREFUSED,
		Message: "chat-70b: target v41 is not warm: 16/24 nodes, 64/96 GPUs warm; rolled back from v42 by <@U024BE7LH> 40 s ago"}
	badInput := &commands.Error{Code: commands.EINVALID, Message: `unknown flag "--fast"`, Usage: commands.RollbackUsage}
	forced := dryRun()
	forced.Warm = fixtureWarm(24, 8, "canary: 503 from vLLM: model not loaded")
	warmAgain := fixtureWarmEvent(0, "")
	warmAgain.State, warmAgain.ColdSince = warm.EventWarmAgain, renderNow.Add(-42*time.Minute)
	recovered := degradedRollback()
	recovered.Outcome = commands.OutcomeRecovered
	failedProgress := fixtureProgress()
	failedProgress.Phases[3] = commands.Progress{Phase: commands.PhaseRouters, State: commands.StateFailed, Took: 5 * time.Second, Detail: "196/200 converged, 1 lost"}
	failedProgress.Phases = append(failedProgress.Phases, commands.Progress{Phase: commands.PhaseInFlight, State: commands.StateSkipped, Detail: "no runtime instances"})
	oneRoute := fixtureStatus(1)
	oneRoute.Routes[0].Config.Kind, oneRoute.Routes[0].Config.From = routing.KindRollback, "v41"
	oneRoute.Routes[0].Readiness = commands.Readiness{Target: "v41", Error: "etcd could not be read: no answer in time"}
	oneRoute.Routes[0].LastDrill = nil
	degradedStatus := fixtureStatus(3)
	degradedStatus.Malformed = []string{`routes/bad: invalid character '<' looking for beginning of value`}
	for i := range degradedStatus.Routes {
		degradedStatus.Routes[i].LastDrill = nil
		degradedStatus.Routes[i].DrillError = "audit database unavailable: no answer in time"
	}
	pgDown := fixtureHistory(3, "latency spike")
	pgDown.AuditError = "audit database unavailable; showing only events not yet shipped (no answer in time)"
	pgDown.Malformed = 1

	return []goldenCase{
		{"help_rollback", HelpMessage(false)},
		{"help_drill", HelpMessage(true)},
		{"error_refused", ErrorReply(fmt.Errorf("rollback: %w", notWarm))},
		{"error_invalid", ErrorReply(badInput)},
		{"error_unauthorized", ErrorReply(&commands.Error{Code: commands.EUNAUTHORIZED, Message: "<@U0ALICE01> may not roll back chat-70b here"})},
		{"error_conflict", ErrorReply(&commands.Error{Code: commands.ECONFLICT, Message: "chat-70b changed since revision 5120: now v41 (epoch 13, rollback by <@U024BE7LH>)"})},
		{"error_internal", ErrorReply(errors.New("pq: password authentication failed for user backflip"))},
		{"card", CardMessage(dryRun(), fixtureCard("latency spike after v42 rollout", false), renderNow)},
		{"card_force_cold", CardMessage(forced, fixtureCard("latency spike after v42 rollout", true), renderNow)},
		{"card_hostile_reason", CardMessage(dryRun(), fixtureCard(hostileReason(), false), renderNow)},
		{"card_closed", CardClosedMessage(fixtureCard("latency spike after v42 rollout", false), "Cancelled by <@U024BE7LH>; nothing changed.")},
		{"progress_running", ProgressMessage(fixtureProgress())},
		{"progress_failed", ProgressMessage(failedProgress)},
		{"report_completed", ReportMessage(completedRollback())},
		{"report_degraded", ReportMessage(degradedRollback())},
		{"report_refused_cold", ReportMessage(refusedCold())},
		{"report_promote", ReportMessage(promotion())},
		{"audit_summary", AuditSummaryMessage(completedRollback(), 1234)},
		{"audit_summary_pending", AuditSummaryMessage(degradedRollback(), 0)},
		{"status_one_route", StatusMessage(oneRoute)},
		{"status_three_routes_pg_down", StatusMessage(degradedStatus)},
		{"status_empty", StatusMessage(commands.StatusReport{Revision: 7, At: renderNow})},
		{"history", HistoryMessage(fixtureHistory(5, "latency spike after v42 rollout"))},
		{"history_pg_down", HistoryMessage(pgDown)},
		{"history_empty", HistoryMessage(commands.HistoryReport{Route: renderRoute})},
		{"notice_recovered", NoticeMessage(commands.Notice{Op: renderOp, Route: renderRoute, Outcome: commands.OutcomeRecovered, Result: recovered,
			Text: "op " + renderOp + " (rollback of chat-70b v42 → v41 by <@U024BE7LH>, rev 5121) was interrupted after its flip; this replica finished it"})},
		{"notice_abandoned", NoticeMessage(commands.Notice{Op: renderOp, Route: renderRoute, Outcome: commands.OutcomeAbandoned,
			Text: "op " + renderOp + " (rollback of chat-70b to v41 by <@U024BE7LH>) was abandoned: the backflip replica running it stopped before the flip. Nothing changed."})},
		{"warmkeep_cold", WarmKeepMessage(fixtureWarmEvent(8, "canary 2.1s over 800ms budget"))},
		{"warmkeep_warm_again", WarmKeepMessage(warmAgain)},
		{"drill_reply", DrillReplyMessage(commands.DrillReply{Text: "drill of chat-70b: rolled back v42 → v41 in 1.38 s, returned in 1.41 s\nverify: 0 errors in 30 s\nno regression (p50 1.2 s over 12 drills)"})},
	}
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			mustValidMessage(t, tc.msg)
			got := goldenJSON(t, tc.msg)
			path := filepath.Join("testdata", "golden", tc.name+".json")
			if *updateGolden {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (create it with: go test ./bot/ -run Golden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the rendering (if the change is intended: go test ./bot/ -run Golden -update)\ngot:\n%s", path, got)
			}
		})
	}
}

// goldenJSON is what a golden file holds: the message as it would be
// posted, with its terminal rendering alongside for reviewers.
func goldenJSON(tb testing.TB, m Message) []byte {
	tb.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(struct {
		Text      string        `json:"text"`
		Key       string        `json:"key,omitempty"`
		Blocks    []slack.Block `json:"blocks"`
		PlainText []string      `json:"plain_text"`
	}{m.Text, m.Key, m.Blocks, strings.Split(PlainText(m), "\n")})
	if err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// mustValid fails the test when m breaks a limit.
func mustValidMessage(tb testing.TB, m Message) {
	tb.Helper()
	if err := ValidateMessage(m); err != nil {
		tb.Fatalf("ValidateMessage: %v\nmessage: %s", err, goldenJSON(tb, m))
	}
}

// marshalled is the message as posted, with JSON's HTML escapes undone
// (slack-go's marshallers escape &, < and >), so assertions read like the
// text Slack parses.
func marshalledText(tb testing.TB, m Message) string {
	tb.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.NewReplacer(`\u0026`, "&", `\u003c`, "<", `\u003e`, ">").Replace(string(b))
}

// visibleText is every text of m that Slack parses and shows: the fallback
// and each text object, but not button values, which nobody sees.
func visibleText(tb testing.TB, m Message) string {
	tb.Helper()
	blocks, err := wireBlocks(m)
	if err != nil {
		tb.Fatal(err)
	}
	texts := []string{m.Text}
	addObj := func(t *wireText) {
		if t != nil {
			texts = append(texts, t.Text)
		}
	}
	addElem := func(e wireElement) {
		if t, err := e.textObject(); err == nil {
			addObj(t)
		} else if t, err := e.contextText(); err == nil {
			addObj(t)
		}
		if c := e.Confirm; c != nil {
			addObj(c.Title)
			addObj(c.Text)
			addObj(c.Confirm)
			addObj(c.Deny)
		}
	}
	for _, b := range blocks {
		addObj(b.Text)
		for i := range b.Fields {
			addObj(&b.Fields[i])
		}
		for _, e := range b.Elements {
			addElem(e)
		}
		if b.Accessory != nil {
			addElem(*b.Accessory)
		}
	}
	return strings.Join(texts, "\n")
}

func blocksOfType(tb testing.TB, m Message, typ string) []wireBlock {
	tb.Helper()
	blocks, err := wireBlocks(m)
	if err != nil {
		tb.Fatal(err)
	}
	var out []wireBlock
	for _, b := range blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

func TestRenderHostileReasonIsEscaped(t *testing.T) {
	reason := hostileReason()
	res := completedRollback()
	res.Reason = reason
	res.Actor = commands.Actor{ID: "cli:<!channel>@host", Name: "<https://evil.example|admin>"}
	view := fixtureProgress()
	view.Reason, view.Actor = reason, res.Actor
	msgs := map[string]Message{
		"card":     CardMessage(dryRun(), fixtureCard(reason, false), renderNow),
		"closed":   CardClosedMessage(fixtureCard(reason, false), reason),
		"progress": ProgressMessage(view),
		"report":   ReportMessage(res),
		"audit":    AuditSummaryMessage(res, 0),
		"history":  HistoryMessage(fixtureHistory(50, reason)),
		"error":    ErrorReply(&commands.Error{Code: commands.EINVALID, Message: "bad reason " + reason, Usage: commands.RollbackUsage}),
		"notice":   NoticeMessage(commands.Notice{Op: renderOp, Text: reason}),
		"drill":    DrillReplyMessage(commands.DrillReply{Text: reason}),
		"warmkeep": WarmKeepMessage(fixtureWarmEvent(3, reason)),
	}
	for name, m := range msgs {
		t.Run(name, func(t *testing.T) {
			mustValidMessage(t, m)
			js := visibleText(t, m)
			for _, bad := range []string{"<!channel>", "<https:", "<!here>", "@here", "<@U0ALICE"} {
				if strings.Contains(js, bad) {
					t.Errorf("the message carries %q unescaped", bad)
				}
			}
			if !strings.Contains(js, "&lt;!channel&gt;") {
				t.Errorf("the reason is not shown escaped")
			}
			// The terminal shows what was typed, not markup.
			if plain := PlainText(m); !strings.Contains(plain, "<!channel> *bold* <https://evil.example|click>") &&
				!strings.Contains(plain, "<!channel> bold <https://evil.example|click>") {
				t.Errorf("PlainText does not show the reason as typed:\n%s", plain)
			}
		})
	}
}

func TestRenderCardValueTooLongHasNoButtons(t *testing.T) {
	// JSON escapes '"' as \": 1000 of them do not fit in a button.
	card := fixtureCard(strings.Repeat(`"`, routing.MaxReasonLen), false)
	if _, err := card.Encode(); err == nil {
		t.Fatal("expected the card value not to fit in a button")
	}
	m := CardMessage(dryRun(), card, renderNow)
	mustValidMessage(t, m)
	if n := len(blocksOfType(t, m, "actions")); n != 0 {
		t.Errorf("%d actions blocks, want none", n)
	}
	if !strings.Contains(PlainText(m), "Type the rollback again with --now") {
		t.Errorf("the card does not say why it has no buttons:\n%s", PlainText(m))
	}
}

func TestRenderCardButtons(t *testing.T) {
	card := fixtureCard("latency spike after v42 rollout", false)
	m := CardMessage(dryRun(), card, renderNow)
	mustValidMessage(t, m)
	actions := blocksOfType(t, m, "actions")
	if len(actions) != 1 || len(actions[0].Elements) != 2 {
		t.Fatalf("want one actions block with two buttons, got %+v", actions)
	}
	confirm, cancel := actions[0].Elements[0], actions[0].Elements[1]
	if confirm.ActionID != ActionConfirm || confirm.Style != "danger" || confirm.Confirm == nil {
		t.Errorf("confirm button: %+v", confirm)
	}
	if cancel.ActionID != ActionCancel || cancel.Style != "" {
		t.Errorf("cancel button: %+v", cancel)
	}
	got, err := DecodeCard(confirm.Value)
	if err != nil {
		t.Fatal(err)
	}
	card.V = 1
	if got != card || cancel.Value != confirm.Value {
		t.Errorf("button value decodes to %+v, want %+v", got, card)
	}
	if want := "Roll back chat-70b to v41 now? In-flight requests will be aborted and re-issued."; confirm.Confirm.Text.Text != want {
		t.Errorf("confirm dialog %q, want %q", confirm.Confirm.Text.Text, want)
	}
}

func TestRenderCardExpiry(t *testing.T) {
	for _, tc := range []struct {
		left time.Duration
		want string
	}{
		{10 * time.Minute, "expires in 10 min (14:13 UTC)"},
		{9*time.Minute + 40*time.Second, "expires in 10 min (14:12 UTC)"},
		{20 * time.Second, "expires in less than a minute (14:03 UTC)"},
		{-time.Minute, "expired at 14:02 UTC"},
	} {
		card := fixtureCard("reason", false)
		card.Exp = renderNow.Add(tc.left).Unix()
		m := CardMessage(dryRun(), card, renderNow)
		mustValidMessage(t, m)
		if !strings.Contains(PlainText(m), tc.want) {
			t.Errorf("%s left: want %q in\n%s", tc.left, tc.want, PlainText(m))
		}
	}
}

func TestRenderStatusThousandRoutes(t *testing.T) {
	rep := fixtureStatus(1000)
	m := StatusMessage(rep)
	mustValidMessage(t, m)
	sections := blocksOfType(t, m, "section")
	if len(sections) < 10 {
		t.Errorf("only %d sections for 1000 routes", len(sections))
	}
	plain := PlainText(m)
	if !strings.Contains(plain, "more routes not shown") {
		t.Errorf("no 'more routes' line:\n%s", plain)
	}
	// The routes whose rollback target is cold come first when the list is
	// cut: every one of them (11 of 1000) is shown.
	for i := range rep.Routes {
		if i%97 == 5 && !strings.Contains(plain, rep.Routes[i].Route+" · v42") {
			t.Errorf("cold route %s is not shown", rep.Routes[i].Route)
		}
	}
	if !strings.HasPrefix(sections[0].Text.Text, "*route-0005*") {
		t.Errorf("first section is %q, want the first cold route", firstLine(sections[0].Text.Text))
	}
}

func TestRenderStatusFitsInOrder(t *testing.T) {
	m := StatusMessage(fixtureStatus(6))
	mustValidMessage(t, m)
	sections := blocksOfType(t, m, "section")
	if len(sections) != 6 || !strings.HasPrefix(sections[0].Text.Text, "*route-0000*") || !strings.HasPrefix(sections[5].Text.Text, "*route-0005*") {
		t.Errorf("routes are not in name order when they all fit")
	}
	if strings.Contains(PlainText(m), "more routes") {
		t.Errorf("a complete status says routes were left out")
	}
}

func TestRenderHistoryFiveHundred(t *testing.T) {
	m := HistoryMessage(fixtureHistory(500, hostileReason()))
	mustValidMessage(t, m)
	plain := PlainText(m)
	if !strings.Contains(plain, "of 500 events") {
		t.Errorf("no count of what was left out:\n%s", plain)
	}
	if !strings.Contains(plain, "pending: still in the etcd outbox") {
		t.Errorf("pending is not explained")
	}
	lines := strings.Split(plain, "\n")
	if !strings.HasPrefix(lines[1], "2025-06-03 14:03 UTC · model.rollback chat-70b v42 → v41 · completed · @"+renderUser) {
		t.Errorf("newest event first, got %q", lines[1])
	}
}

func TestRenderHugeWarmReports(t *testing.T) {
	agentText := strings.Repeat("<!channel> & vLLM said: <https://x|y> ", 8) // over 300 bytes, as an agent might quote
	big := fixtureWarm(2000, 1500, agentText)
	for i := range 40 {
		big.Malformed = append(big.Malformed, warm.MalformedRecord{Key: fmt.Sprintf("fleet/nodes/n%d", i), Error: agentText})
	}
	ev := warm.Event{Route: renderRoute, Target: "v41", Active: "v42", State: warm.EventCold, At: renderNow, Report: *big}
	refused := refusedCold()
	refused.Warm = big
	forced := dryRun()
	forced.Warm = big
	rs := fixtureRouteStatus(renderRoute, true, renderNow)
	rs.Readiness.Report, rs.Readiness.Reason = big, agentText
	for name, m := range map[string]Message{
		"warmkeep": WarmKeepMessage(ev),
		"report":   ReportMessage(refused),
		"card":     CardMessage(forced, fixtureCard("cold, but v42 is worse", true), renderNow),
		"status":   StatusMessage(commands.StatusReport{Routes: []commands.RouteStatus{rs}, Revision: 1, At: renderNow}),
		"error":    ErrorReply(&commands.Error{Code: commands.EREFUSED, Message: (&warm.NotWarmError{Report: *big}).Error()}),
	} {
		t.Run(name, func(t *testing.T) {
			mustValidMessage(t, m)
			if strings.Contains(visibleText(t, m), "<!channel>") {
				t.Errorf("agent text is not escaped")
			}
		})
	}
}

func TestRenderLongInputsStayWithinLimits(t *testing.T) {
	long := strings.Repeat("😀<&>", 5000) // characters that count twice and escape long
	res := degradedRollback()
	res.Reason = long
	res.Replayed, res.Text = true, long
	for i := range 5000 {
		res.Routers.Lost = append(res.Routers.Lost, fmt.Sprintf("router-%d-%s", i, long[:40]))
		res.InFlight.Missing = append(res.InFlight.Missing, fmt.Sprintf("runtime-%d", i))
		res.InFlight.DeliveryErrors[fmt.Sprintf("runtime-%d", i)] = long
	}
	view := fixtureProgress()
	for i := range 100 {
		view.Phases = append(view.Phases, commands.Progress{Phase: commands.Phase(long), State: commands.StateDone, Detail: fmt.Sprint(i, long)})
	}
	msgs := map[string]Message{
		"report":   ReportMessage(res),
		"audit":    AuditSummaryMessage(res, 99),
		"progress": ProgressMessage(view),
		"notice":   NoticeMessage(commands.Notice{Op: renderOp, Text: long, Result: res}),
		"drill":    DrillReplyMessage(commands.DrillReply{Text: strings.Repeat(long+"\n", 50)}),
		"closed":   CardClosedMessage(fixtureCard(long[:100], false), long),
		"error":    ErrorReply(&commands.Error{Code: commands.EINVALID, Message: long, Usage: long}),
	}
	for name, m := range msgs {
		t.Run(name, func(t *testing.T) {
			mustValidMessage(t, m)
		})
	}
}

func TestRenderReportKeys(t *testing.T) {
	res := completedRollback()
	for _, tc := range []struct {
		m    Message
		want string
	}{
		{ReportMessage(res), "op " + renderOp + " report"},
		{AuditSummaryMessage(res, 1234), "op " + renderOp + " audit"},
	} {
		mustValidMessage(t, tc.m) // checks that Key is in Text
		if tc.m.Key != tc.want {
			t.Errorf("Key %q, want %q", tc.m.Key, tc.want)
		}
	}
	res.Op = ""
	if m := ReportMessage(res); m.Key != "" {
		t.Errorf("a result without an op id has key %q", m.Key)
	}
}

func TestRenderErrorReplyPrefixes(t *testing.T) {
	for code, want := range map[string]string{
		commands.EREFUSED:      "⛔ Refused: ",
		commands.EINVALID:      "⚠️ Bad input: ",
		commands.EUNAUTHORIZED: "🔒 Not allowed: ",
		commands.ECONFLICT:     "🔀 Conflict: ",
		commands.ENOTFOUND:     "🔍 Not found: ",
		commands.EUNAVAILABLE:  "❌ Failed: ",
	} {
		m := ErrorReply(&commands.Error{Code: code, Message: "what happened", Usage: commands.RollbackUsage})
		mustValidMessage(t, m)
		plain := PlainText(m)
		if !strings.HasPrefix(plain, want+"what happened") {
			t.Errorf("%s: got %q, want prefix %q", code, plain, want)
		}
		if hasUsage := strings.Contains(plain, "/rollback <route> [--to <version>]"); hasUsage != (code == commands.EINVALID) {
			t.Errorf("%s: usage shown %v", code, hasUsage)
		}
	}
	m := ErrorReply(errors.New("dial tcp 10.1.2.3:5432: secret detail"))
	if strings.Contains(marshalledText(t, m), "secret detail") {
		t.Errorf("an internal error's detail reached the reply")
	}
}

func TestPlainTextCardReadsWell(t *testing.T) {
	m := CardMessage(dryRun(), fixtureCard("latency spike after v42 rollout", false), renderNow)
	plain := PlainText(m)
	for _, want := range []string{
		"Roll back chat-70b v42 → v41?",
		"Requested by @" + renderUser,
		"Reason: latency spike after v42 rollout",
		"Target: v41 (active now: v42)",
		"Warm: ✅ 24/24 nodes, 96/96 GPUs warm",
		"In flight: 37 requests will be aborted at their next checkpoint and re-issued on v41",
		"Last drill: 3 days ago, p50 1.2 s",
		"Route revision: 5120",
		"[Confirm] [Cancel]",
		"expires in 10 min (14:13 UTC) · op " + renderOp,
	} {
		if !strings.Contains(plain, want) {
			t.Errorf("card text lacks %q:\n%s", want, plain)
		}
	}
	for _, bad := range []string{"*", "&lt;", "<@", ":white_check_mark:"} {
		if strings.Contains(plain, bad) {
			t.Errorf("card text shows markup %q:\n%s", bad, plain)
		}
	}
}

func TestPlainTextForceColdCard(t *testing.T) {
	res := dryRun()
	res.Warm = fixtureWarm(24, 8, "not loaded")
	res.LastDrill = nil
	plain := PlainText(CardMessage(res, fixtureCard("reason", true), renderNow))
	for _, want := range []string{"FORCE COLD: 16/24 nodes, 64/96 GPUs warm", "Not warm on: gpu-01 cold (not loaded)", "never drilled"} {
		if !strings.Contains(plain, want) {
			t.Errorf("forced card lacks %q:\n%s", want, plain)
		}
	}
}

func TestPlainTextReportReadsWell(t *testing.T) {
	plain := PlainText(ReportMessage(completedRollback()))
	want := "✅ chat-70b rolled back v42 → v41 in 1.42 s · warm 180 ms (24/24 nodes, 96/96 GPUs) · flip 2.0 ms (rev 5121) · " +
		"routers 31 ms (200/200) · in-flight 37 aborted, 37 re-issued (1.10 s) · audit ✓\n" +
		"op " + renderOp + " · by @" + renderUser + " · reason: latency spike after v42 rollout · started 14:03:05 UTC"
	if plain != want {
		t.Errorf("report reads\n%s\nwant\n%s", plain, want)
	}
	degraded := PlainText(ReportMessage(degradedRollback()))
	for _, w := range []string{
		"⚠️ chat-70b rolled back v42 → v41",
		"Routers lost before confirming (1): router-eu-3",
		"Routers that did not confirm in time (3): router-us-7, router-us-8, router-us-9",
		"Runtimes that did not acknowledge (1): runtime-b",
		"Signal not delivered (1): runtime-b: dial tcp 10.0.0.4:8443: connection refused",
	} {
		if !strings.Contains(degraded, w) {
			t.Errorf("degraded report lacks %q:\n%s", w, degraded)
		}
	}
	refused := PlainText(ReportMessage(refusedCold()))
	for _, w := range []string{"⛔ chat-70b not rolled back (v42 → v41): refused",
		"Not warm on: gpu-01 cold (canary: 503 from vLLM: <!here> model not loaded & OOM)"} {
		if !strings.Contains(refused, w) {
			t.Errorf("refused report lacks %q:\n%s", w, refused)
		}
	}
}

func TestPlainTextMrkdwn(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"*Reason:* x", "Reason: x"},
		{"a *b c* d", "a b c d"},
		{"`0 10 * * TUE`", "`0 10 * * TUE`"},
		{"2 * 3 * 4", "2 * 3 * 4"},
		{"by <@U024BE7LH>", "by @U024BE7LH"},
		{"&lt;!channel&gt; &amp; &amp;lt;", "<!channel> & &lt;"},
		{"@\u2060here", "@here"},
		{"*Usage*\n```/rollback help\n/rollback status```", "Usage\n/rollback help\n/rollback status"},
		{":white_check_mark: done at 10:00 :x:", "✅ done at 10:00 ❌"},
		{":not_an_emoji: kept", ":not_an_emoji: kept"},
		{"<https://example.com|docs> and <#C1|inc-1>", "docs (https://example.com) and #inc-1"},
		{"“*quoted*”", "“quoted”"},
	} {
		if got := mrkdwnToText(tc.in); got != tc.want {
			t.Errorf("mrkdwnToText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPlainTextWithoutBlocks(t *testing.T) {
	if got := PlainText(Message{Text: "a &lt;b&gt; <@U1>"}); got != "a <b> @U1" {
		t.Errorf("got %q", got)
	}
}

func TestRenderEscapingAndClipping(t *testing.T) {
	alphabet := []string{"&", "<", ">", "@here", "a", "😀", "<@U024BE7LH>", "é", "\n", "\u202e", "*"}
	// Every combination of a few pieces, clipped at every length: the result
	// stays escaped and within the limit, whatever is cut.
	var inputs []string
	for _, a := range alphabet {
		for _, b := range alphabet {
			for _, c := range alphabet {
				inputs = append(inputs, a+b+c+a+b)
			}
		}
	}
	for _, in := range inputs {
		for _, esc := range []string{md(in, 1000), escapeKeepMentions(cleanLines(in))} {
			if err := checkEscaped(esc); err != nil {
				t.Fatalf("escape(%q) = %q: %v", in, esc, err)
			}
			for max := 1; max <= textLen(esc)+1; max++ {
				got := clipMrkdwn(esc, max)
				if textLen(got) > max {
					t.Fatalf("clipMrkdwn(%q, %d) = %q is %d long", esc, max, got, textLen(got))
				}
				if err := checkEscaped(got); err != nil {
					t.Fatalf("clipMrkdwn(%q, %d) = %q: %v", esc, max, got, err)
				}
			}
		}
	}
	if got := md("a\nb\u202ec\x00d", 100); got != "a b c d" {
		t.Errorf("control characters: got %q", got)
	}
	if got := escapeKeepMentions("<@U024BE7LH> <@u1> <@U1|x> <!channel>"); got != "<@U024BE7LH> &lt;@u1&gt; &lt;@U1|x&gt; &lt;!channel&gt;" {
		t.Errorf("escapeKeepMentions: got %q", got)
	}
}

func TestRenderFitLines(t *testing.T) {
	lines := []string{strings.Repeat("r", 5000), "timings: resolve 1.0 ms", "etcd revision 5121"}
	got := fitLines(lines, 3000)
	if textLen(got) > 3000 {
		t.Fatalf("fitLines is %d long", textLen(got))
	}
	if !strings.HasSuffix(got, "\ntimings: resolve 1.0 ms\netcd revision 5121") {
		t.Errorf("short lines were clipped: %q", got[len(got)-80:])
	}
	if got := fitLines([]string{"a", "b"}, 10); got != "a\nb" {
		t.Errorf("lines that fit changed: %q", got)
	}
}

func TestRenderDrillReplyLong(t *testing.T) {
	var b strings.Builder
	for i := range 10000 {
		fmt.Fprintf(&b, "run %d: rolled back in 1.%02d s\n", i, i%100)
	}
	m := DrillReplyMessage(commands.DrillReply{Text: b.String()})
	mustValidMessage(t, m)
	if !strings.Contains(PlainText(m), "more lines not shown") {
		t.Errorf("a cut drill answer does not say so")
	}
	if got := PlainText(DrillReplyMessage(commands.DrillReply{})); got != "done" {
		t.Errorf("an empty drill answer reads %q", got)
	}
}
