package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// fleetWorld is a simulated fleet (real agents over simulated inference
// servers, real routers, a real runtime SDK instance with traffic) on an
// embedded etcd, and the environment that points backflipctl at it.
func fleetWorld(t *testing.T) *world {
	t.Helper()
	srv := etcdtest.Start(t)
	w := &world{cli: srv.Client(t)}
	f, err := simfleet.Start(testCtx(t), simfleet.Config{Client: w.cli, Prefix: prefix, Nodes: 3,
		Routes: simfleet.DemoRoutes(), Routers: 2, Runtimes: 1, Traffic: simfleet.Traffic{RPS: 20}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	w.env = map[string]string{
		"BACKFLIP_ETCD_ENDPOINTS": srv.Endpoint(),
		"BACKFLIP_AGENT_TOKEN":    f.AgentToken(),
		"BACKFLIP_RUNTIME_SECRET": string(f.RuntimeSecret()),
		"USER":                    "ana",
	}
	return w
}

// TestRollback drives backflipctl as an operator in an incident: a dry
// run, a rollback to the warm previous version, the refusal of a second default
// rollback, a stale --expect-rev, the undo with --to, and a rollback to a
// cold version refused.
func TestRollback(t *testing.T) {
	w := fleetWorld(t)
	before := w.get(t, "chat-70b")

	t.Run("DryRun", func(t *testing.T) {
		code, stdout, stderr := runCtl(t, w.env, "rollback", "chat-70b", "--dry-run", "what", "if")
		if code != exitOK || !strings.HasPrefix(stdout, "chat-70b would roll back v42 → v41") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if got := w.get(t, "chat-70b"); got.ModRevision != before.ModRevision {
			t.Fatalf("a dry run moved the route: %+v", got)
		}
	})

	code, stdout, stderr := runCtl(t, w.env, "rollback", "chat-70b", "latency", "spike", "after", "v42")
	if code != exitOK {
		t.Fatalf("rollback: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	after := w.get(t, "chat-70b")
	if after.Config.Active != "v41" || after.Config.Previous != "v42" || after.Config.Reason != "latency spike after v42" ||
		!strings.HasPrefix(after.Config.Actor, "cli:") {
		t.Fatalf("route after the rollback: %+v", after.Config)
	}
	if !strings.HasPrefix(stdout, "chat-70b rolled back v42 → v41 in ") || !strings.Contains(stdout, "(3/3 nodes, 12/12 GPUs)") ||
		!strings.Contains(stdout, fmt.Sprintf("(rev %d)", after.ModRevision)) || !strings.Contains(stdout, "routers ") {
		t.Errorf("report:\n%s", stdout)
	}
	for _, phase := range []string{"warm", "flip", "routers"} {
		if !strings.Contains(stderr, "  "+phase+" ") {
			t.Errorf("progress lacks %s:\n%s", phase, stderr)
		}
	}

	t.Run("SecondDefaultRollbackRefused", func(t *testing.T) {
		code, stdout, stderr := runCtl(t, w.env, "rollback", "chat-70b", "still", "bad")
		if code != exitRefused || !strings.Contains(stderr, "--to v42") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if got := w.get(t, "chat-70b"); got.ModRevision != after.ModRevision {
			t.Fatalf("the route moved: %+v", got)
		}
	})
	t.Run("StaleExpectRevRefused", func(t *testing.T) {
		code, stdout, stderr := runCtl(t, w.env, "rollback", "chat-70b", "--to", "v42",
			"--expect-rev", fmt.Sprint(before.ModRevision), "--reason", "undo")
		if code != exitRefused {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if got := w.get(t, "chat-70b"); got.ModRevision != after.ModRevision {
			t.Fatalf("the route moved: %+v", got)
		}
	})
	t.Run("UndoWithJSON", func(t *testing.T) {
		code, stdout, stderr := runCtl(t, w.env, "--json", "rollback", "chat-70b", "--to", "v42",
			"--expect-rev", fmt.Sprint(after.ModRevision), "--reason", "false alarm")
		if code != exitOK || strings.Count(stdout, "\n") != 1 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		var res commands.Result
		if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Route != "chat-70b" || res.From != "v41" || res.To != "v42" ||
			res.ExpectRev != after.ModRevision || (res.Outcome != commands.OutcomeCompleted && res.Outcome != commands.OutcomeDegraded) {
			t.Fatalf("JSON result: %s (%v)", stdout, err)
		}
		if got := w.get(t, "chat-70b"); got.Config.Active != "v42" {
			t.Fatalf("route: %+v", got.Config)
		}
	})
	t.Run("ColdTargetRefused", func(t *testing.T) {
		code, stdout, stderr := runCtl(t, w.env, "rollback", "embed-small", "bad", "embeddings")
		if code != exitRefused || !strings.Contains(stdout+stderr, "not warm") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if stdout != "" {
			t.Errorf("a refused rollback printed a report of a change that did not happen:\n%s", stdout)
		}
		code, stdout, _ = runCtl(t, w.env, "rollback", "embed-small", "bad", "embeddings", "--json")
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
			Result *commands.Result `json:"result"`
		}
		if code != exitRefused || json.Unmarshal([]byte(stdout), &e) != nil || e.Error.Code != commands.EREFUSED ||
			e.Result == nil || e.Result.Warm == nil || e.Result.Warm.Warm || e.Result.Warm.TargetNodes != 3 {
			t.Fatalf("JSON refusal: exit %d, %s", code, stdout)
		}
		if got := w.get(t, "embed-small"); got.Config.Active != "v7" {
			t.Fatalf("route: %+v", got.Config)
		}
	})
}

// TestPromote: a promotion to a version every node has warm, then one to
// a version no node serves, refused.
func TestPromote(t *testing.T) {
	w := fleetWorld(t)
	cur := w.get(t, "chat-70b")
	code, stdout, stderr := runCtl(t, w.env, "promote", "chat-70b", "v41", "--expect-rev", fmt.Sprint(cur.ModRevision), "--reason", "pin v41")
	if code != exitOK || !strings.HasPrefix(stdout, "chat-70b promoted v42 → v41 in ") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if got := w.get(t, "chat-70b"); got.Config.Active != "v41" || got.Config.Kind != "promote" || got.Config.Previous != "v42" {
		t.Fatalf("route: %+v", got.Config)
	}
	code, stdout, stderr = runCtl(t, w.env, "promote", "chat-70b", "v43", "deploy", "v43")
	if code != exitRefused {
		t.Fatalf("promote to an unserved version: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if got := w.get(t, "chat-70b"); got.Config.Active != "v41" {
		t.Fatalf("route: %+v", got.Config)
	}
}
