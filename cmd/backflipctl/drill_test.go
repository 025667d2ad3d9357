package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/drills"
)

// TestDrill drives `backflipctl drill` against a simulated fleet: bad
// command lines, a schedule (refused for an unknown route and a bad cron),
// list, skip, cancel, a drill run to the end and back, the cold route's
// finding, and the history with its chart once the events are in Postgres.
func TestDrill(t *testing.T) {
	w := fleetWorld(t)
	w.env["BACKFLIP_DRILL_VERIFY_WINDOW"] = "300ms"
	w.env["BACKFLIP_DRILL_QUIET_PERIOD"] = "1ms"

	t.Run("BadCommandLines", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"drill"}, "drill needs a subcommand"},
			{[]string{"drill", "bogus"}, `unknown drill subcommand "bogus"`},
			{[]string{"drill", "run"}, "drill run takes one route"},
			{[]string{"drill", "run", "a", "b"}, "drill run takes one route, got 2"},
			{[]string{"drill", "schedule", "chat-70b"}, "needs a route and a cron expression"},
			{[]string{"drill", "list", "--dry-run"}, "only drill run takes --dry-run"},
			{[]string{"drill", "run", "chat-70b", "--chart", "x.png"}, "only drill history takes --chart"},
			{[]string{"drill", "history", "a", "b"}, "at most one route"},
			{[]string{"status", "--chart", "x.png"}, "status does not take --chart"},
		} {
			code, stdout, stderr := runCtl(t, w.env, c.args...)
			if code != exitInput || !strings.Contains(stderr, c.want) || stdout != "" {
				t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, stdout, stderr, c.want)
			}
		}
	})

	t.Run("Schedules", func(t *testing.T) {
		code, stdout, stderr := runCtl(t, w.env, "drill", "schedule", "chat-70b", "CRON_TZ=Europe/Berlin 0 9 * * 1")
		if code != exitOK || !strings.HasPrefix(stdout, "Drills of chat-70b scheduled (CRON_TZ=Europe/Berlin 0 9 * * 1). Next: ") ||
			strings.Count(stdout, "09:00 CE") != 3 {
			t.Fatalf("schedule: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		var sc drills.Schedule
		w.getJSON(t, drills.Keys{Prefix: prefix}.Schedule("chat-70b"), &sc)
		if !strings.HasPrefix(sc.CreatedBy, "cli:") || strings.Join(sc.Announce, ",") != "24h,15m" {
			t.Fatalf("stored schedule %+v", sc)
		}
		// The cron may also come as separate words.
		if code, stdout, stderr := runCtl(t, w.env, "drill", "schedule", "embed-small", "0", "10", "*", "*", "2"); code != exitOK {
			t.Fatalf("schedule in words: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}

		code, stdout, stderr = runCtl(t, w.env, "drill", "schedule", "chat-7b", "0 9 * * 1")
		if code != exitInput || !strings.Contains(stderr, "There is no route chat-7b") || stdout != "" {
			t.Fatalf("unknown route: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		code, _, stderr = runCtl(t, w.env, "drill", "schedule", "chat-70b", "* * * * *")
		if code != exitInput || !strings.Contains(stderr, "at most hourly") {
			t.Fatalf("every minute: exit %d, stderr:\n%s", code, stderr)
		}

		code, stdout, _ = runCtl(t, w.env, "drill", "list")
		if code != exitOK || !strings.Contains(stdout, "chat-70b: CRON_TZ=Europe/Berlin 0 9 * * 1 · next ") ||
			!strings.Contains(stdout, "embed-small: 0 10 * * 2 · next ") {
			t.Fatalf("list: exit %d\n%s", code, stdout)
		}
		code, stdout, stderr = runCtl(t, w.env, "drill", "skip", "chat-70b")
		if code != exitOK || !strings.Contains(stdout, "will not run; the schedule stays") {
			t.Fatalf("skip: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		w.getJSON(t, drills.Keys{Prefix: prefix}.Schedule("chat-70b"), &sc)
		if sc.Skip == 0 || !strings.HasPrefix(sc.SkippedBy, "cli:") {
			t.Fatalf("skip not recorded with who asked: %+v", sc)
		}
		for _, route := range []string{"chat-70b", "embed-small"} {
			if code, stdout, stderr := runCtl(t, w.env, "drill", "cancel", route); code != exitOK || !strings.Contains(stdout, "cancelled") {
				t.Fatalf("cancel %s: exit %d\nstdout:\n%s\nstderr:\n%s", route, code, stdout, stderr)
			}
		}
		code, stdout, _ = runCtl(t, w.env, "--json", "drill", "list")
		var out drillOut
		if code != exitOK || json.Unmarshal([]byte(stdout), &out) != nil || !strings.HasPrefix(out.Text, "No drills are scheduled") {
			t.Fatalf("list after cancel: exit %d\n%s", code, stdout)
		}
		if code, _, stderr := runCtl(t, w.env, "drill", "cancel", "chat-70b"); code != exitInput || !strings.Contains(stderr, "no drill schedule") {
			t.Fatalf("second cancel: exit %d, stderr %s", code, stderr)
		}
	})

	t.Run("Run", func(t *testing.T) {
		before := w.get(t, "chat-70b")
		code, stdout, stderr := runCtl(t, w.env, "--json", "drill", "run", "chat-70b")
		var out drillOut
		if err := json.Unmarshal([]byte(stdout), &out); code != exitOK || err != nil || out.Result == nil ||
			out.Result.Outcome != drills.RunCompleted || out.Result.Rollback == nil || out.Result.Return == nil ||
			out.Result.Rollback.To != "v41" || out.Result.Return.To != "v42" {
			t.Fatalf("drill run: exit %d (%v)\nstdout:\n%s\nstderr:\n%s", code, err, stdout, stderr)
		}
		if !strings.HasPrefix(out.Text, "drill of chat-70b completed in ") || !strings.Contains(stderr, "  flip ") {
			t.Fatalf("report:\n%s\nprogress:\n%s", out.Text, stderr)
		}
		after := w.get(t, "chat-70b")
		if after.Config.Active != "v42" || after.Config.Previous != "v41" || after.Config.Kind != "drill_return" ||
			after.ModRevision <= before.ModRevision || !strings.HasPrefix(after.Config.Actor, "cli:") {
			t.Fatalf("route after the drill: %+v", after.Config)
		}

		// The cold previous version of embed-small is a finding: nothing
		// flips, and the answer says what is cold.
		cold := w.get(t, "embed-small")
		code, stdout, stderr = runCtl(t, w.env, "drill", "run", "embed-small")
		if code == exitOK || !strings.Contains(stdout+stderr, "not warm") {
			t.Fatalf("cold drill: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if got := w.get(t, "embed-small"); got.ModRevision != cold.ModRevision {
			t.Fatalf("a cold drill moved the route: %+v", got.Config)
		}
	})

	t.Run("History", func(t *testing.T) {
		code, _, stderr := runCtl(t, w.env, "drill", "history", "chat-70b")
		if code != exitFailed || !strings.Contains(stderr, "BACKFLIP_DATABASE_URL") {
			t.Fatalf("history without a database: exit %d, stderr %s", code, stderr)
		}
		// Ship the drill events to a database the way the bot's shipper
		// does, then ask again with a chart.
		db := pgServer.NewDatabase(t)
		conn, err := pgx.ConnectConfig(testCtx(t), db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		resp, err := w.cli.Get(testCtx(t), audit.Keys{Prefix: prefix}.Outbox(), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		var evs []audit.Event
		kinds := map[audit.Kind]int{}
		for _, kv := range resp.Kvs {
			ev, err := audit.DecodeEvent(kv.Value)
			if err != nil {
				t.Fatal(err)
			}
			kinds[ev.Kind]++
			evs = append(evs, ev)
		}
		if kinds[audit.KindDrillCompleted] != 1 || kinds[audit.KindDrillFailed] != 1 || kinds[audit.KindDrillScheduled] != 2 {
			t.Fatalf("audit events by kind: %v", kinds)
		}
		if _, err := audit.InsertEvents(testCtx(t), conn, evs); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{"BACKFLIP_DATABASE_URL": pgServer.URL(db.Database)}
		for k, v := range w.env {
			env[k] = v
		}
		chart := filepath.Join(t.TempDir(), "trend.png")
		code, stdout, stderr := runCtl(t, env, "drill", "history", "chat-70b", "--chart", chart)
		if code != exitOK || !strings.Contains(stdout, "chat-70b") || !strings.HasSuffix(strings.TrimSpace(stdout), "chart: "+chart) {
			t.Fatalf("history: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		png, err := os.ReadFile(chart)
		if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 1000 {
			t.Fatalf("chart: %d bytes, %v", len(png), err)
		}
	})
}

// getJSON decodes the value at key into v.
func (w *world) getJSON(t *testing.T, key string, v any) {
	t.Helper()
	resp, err := w.cli.Get(testCtx(t), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v %v", key, resp, err)
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		t.Fatalf("decode %s: %v", key, err)
	}
}
