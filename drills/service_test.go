package drills

import (
	"strings"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/commands"
)

// TestDrillVerbsThroughCommands drives the /drill verbs the way the bot
// does: parsed by commands, authorized by commands, run by this Service.
func TestDrillVerbsThroughCommands(t *testing.T) {
	e := newRunnerEnv(t)
	ds, err := New(Config{
		Etcd: e.cli, Prefix: runnerPrefix, Commands: e.svc, Warm: e.checker, Owner: e.sess, DB: e.db,
		VerifyWindow: 300 * time.Millisecond, QuietPeriod: time.Hour, AnnounceChannel: "C0ANNOUNCE",
		Logger: e.log.Named("drills"), Now: func() time.Time { return time.Now().Add(2 * time.Hour) },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.svc.SetDrills(ds)
	ctx := runnerCtx(t)
	do := func(origin commands.Origin, text string) (commands.DrillReply, error) {
		t.Helper()
		cmd, err := commands.Parse("/drill", text)
		if err != nil {
			t.Fatalf("parse %q: %v", text, err)
		}
		return e.svc.Drill(ctx, origin, cmd.(commands.DrillCommand), nil)
	}

	r, err := do(drillOrigin(), `schedule chat-70b "CRON_TZ=Europe/Berlin 0 9 * * 1"`)
	if err != nil {
		t.Fatalf("schedule: %v", err)
	}
	wantText(t, r.Text, "Drills of chat-70b scheduled", "Next:", "<#C0ANNOUNCE>")
	r, err = do(drillOrigin(), "list")
	if err != nil {
		t.Fatal(err)
	}
	wantText(t, r.Text, "chat-70b: CRON_TZ=Europe/Berlin 0 9 * * 1")
	r, err = do(drillOrigin(), "skip chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	wantText(t, r.Text, "will not run")
	if _, err := do(drillOrigin(), `schedule chat-70b "* * * * *"`); commands.ErrorCode(err) != commands.EINVALID {
		t.Errorf("an every-minute schedule: %v", err)
	}

	// Someone not in BACKFLIP_DRILL_USERS may read but not act.
	other := drillOrigin()
	other.Actor = commands.Actor{ID: "U0NOBODY"}
	if _, err := do(other, "run chat-70b"); commands.ErrorCode(err) != commands.EUNAUTHORIZED {
		t.Errorf("a drill by someone not allowed: %v", err)
	}
	if _, err := do(other, "list"); err != nil {
		t.Errorf("list by anyone: %v", err)
	}

	before := e.route(t, "chat-70b")
	r, err = do(drillOrigin(), "run chat-70b")
	if err != nil {
		t.Fatalf("drill run: %v", err)
	}
	if r.Result == nil || r.Result.Outcome != RunCompleted || !strings.Contains(r.Text, "v42 → v41") {
		t.Fatalf("drill reply %+v", r)
	}
	if after := e.route(t, "chat-70b"); after.Config.Active != before.Config.Active || after.Config.Epoch != before.Config.Epoch+2 {
		t.Errorf("route after the drill: %+v", after.Config)
	}
	e.ship(t)
	r, err = do(drillOrigin(), "history chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Chart) == 0 || !strings.HasPrefix(string(r.Chart), "\x89PNG") {
		t.Errorf("history chart: %d bytes", len(r.Chart))
	}
	if _, err := do(drillOrigin(), "cancel chat-70b"); err != nil {
		t.Fatal(err)
	}
	if _, err := do(drillOrigin(), "cancel chat-70b"); commands.ErrorCode(err) != commands.ENOTFOUND {
		t.Errorf("cancelling twice: %v", err)
	}
}
