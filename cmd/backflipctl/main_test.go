package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/pgtest"
)

// pgServer returns the package's Postgres. It is set once in TestMain,
// before any test runs, and only read afterwards.
var pgServer *pgtest.Server

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	srv, err := pgtest.Start(ctx, pgtest.Options{Template: func(ctx context.Context, conn *pgx.Conn) error {
		_, err := audit.Migrate(ctx, conn)
		return err
	}})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "backflipctl tests:", err)
		os.Exit(1)
	}
	pgServer = srv
	code := m.Run()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "backflipctl tests: close postgres:", err)
		code = 1
	}
	if code == 0 {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := goleak.Find()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
				code = 1
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	os.Exit(code)
}

const prefix = "/backflip"

// syncBuffer lets the test read what Main writes from its goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runCtl runs backflipctl with env as its whole environment.
func runCtl(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	m := Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = m.Run(ctx, args)
	return code, out.String(), errOut.String()
}

// world is an embedded etcd with routes in it, and the environment that
// points backflipctl at it.
type world struct {
	cli *clientv3.Client
	env map[string]string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	srv := etcdtest.Start(t)
	return &world{cli: srv.Client(t), env: map[string]string{
		"BACKFLIP_ETCD_ENDPOINTS": srv.Endpoint(),
		"BACKFLIP_AGENT_TOKEN":    "test-agent-token",
		"BACKFLIP_RUNTIME_SECRET": "test-runtime-secret",
		"BACKFLIP_WARM_TIMEOUT":   "500ms",
		"USER":                    "ana",
	}}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// promote moves route to version the way a deploy does.
func (w *world) promote(t *testing.T, route, version string) routing.Result {
	t.Helper()
	st := routing.NewStore(w.cli, prefix, nil)
	var rev int64
	if cur, err := st.Get(testCtx(t), route); err == nil {
		rev = cur.ModRevision
	}
	res, err := st.Promote(testCtx(t), routing.Change{Route: route, To: version, ExpectRev: rev, Op: uuid.NewString(),
		Reason: "deploy", Actor: "ci:deploy"})
	if err != nil {
		t.Fatalf("promote %s to %s: %v", route, version, err)
	}
	return res
}

func (w *world) get(t *testing.T, route string) routing.Entry {
	t.Helper()
	e, err := routing.NewStore(w.cli, prefix, nil).Get(testCtx(t), route)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (w *world) node(t *testing.T, rec fleetapi.NodeRecord) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.cli.Put(testCtx(t), fleetapi.Keys{Prefix: prefix}.Node(rec.Node), string(b)); err != nil {
		t.Fatal(err)
	}
}

// seed writes chat-70b (v41 then v42) and embed-small (v7), and two nodes
// whose agents are not running.
func (w *world) seed(t *testing.T) {
	t.Helper()
	w.promote(t, "chat-70b", "v41")
	w.promote(t, "chat-70b", "v42")
	w.promote(t, "embed-small", "v7")
	for _, n := range []string{"gpu-01", "gpu-02"} {
		w.node(t, fleetapi.NodeRecord{Node: n, URL: "http://127.0.0.1:1", Serving: map[string]map[string]int{
			"chat-70b": {"v41": 4, "v42": 4}, "embed-small": {"v7": 1}}})
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"NoCommand", nil, "a command is required"},
		{"UnknownCommand", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"UnknownFlag", []string{"status", "--frob"}, `unknown flag "--frob"`},
		{"FlagOfAnotherCommand", []string{"status", "--limit", "3"}, "status does not take --limit"},
		{"FlagWithoutCommand", []string{"--to", "v41"}, "--to needs a command (rollback)"},
		{"MissingValue", []string{"history", "--limit"}, "--limit needs a value"},
		{"BadLimit", []string{"history", "--limit", "many"}, `--limit wants a whole number from 1, got "many"`},
		{"BadExpectRev", []string{"rollback", "chat-70b", "--expect-rev", "-3", "why"}, "--expect-rev wants the route's revision"},
		{"BadTimeout", []string{"status", "--timeout", "0s"}, "--timeout wants a positive duration"},
		{"BoolWithValue", []string{"status", "--json=yes"}, "--json takes no value"},
		{"RollbackNoRoute", []string{"rollback"}, "rollback needs a route"},
		{"RollbackNoReason", []string{"rollback", "chat-70b", "--to", "v41"}, "rollback needs a reason"},
		{"DryRunNoReason", []string{"rollback", "chat-70b", "--dry-run"}, "rollback needs a reason"},
		{"ReasonTwice", []string{"rollback", "chat-70b", "--reason", "a", "b"}, "give the reason either with --reason or as the remaining words"},
		{"PromoteNoVersion", []string{"promote", "chat-70b"}, "promote needs a route and a version"},
		{"StatusTwoRoutes", []string{"status", "a", "b"}, "status takes at most one route"},
		{"FleetArgs", []string{"fleet", "gpu-01"}, "fleet takes no arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCtl(t, nil, tc.args...)
			if code != exitInput || stdout != "" {
				t.Fatalf("exit %d, stdout %q", code, stdout)
			}
			if !strings.HasPrefix(stderr, "backflipctl: "+tc.want) || !strings.Contains(stderr, "usage: backflipctl") {
				t.Fatalf("stderr:\n%s", stderr)
			}
		})
	}
	t.Run("JSON", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := runCtl(t, nil, "--json", "status", "--frob")
		var e errorJSON
		if code != exitInput || stderr != "" || json.Unmarshal([]byte(stdout), &e) != nil || e.Error.Code != "invalid" ||
			e.Error.Message != `unknown flag "--frob"` || strings.Count(stdout, "\n") != 1 {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}, {"status", "--help"}} {
		code, stdout, stderr := runCtl(t, nil, args...)
		if code != exitOK || stderr != "" {
			t.Fatalf("%q: exit %d, stderr %q", args, code, stderr)
		}
		for _, want := range []string{"usage: backflipctl", "exit codes:", "  3  refused", "BACKFLIP_ETCD_ENDPOINTS", "--json"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%q: usage lacks %q", args, want)
			}
		}
	}
}

// TestConfigErrors: a missing or malformed variable is one line naming it,
// and exit 2; nothing is dialled.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	full := map[string]string{
		"BACKFLIP_ETCD_ENDPOINTS": "127.0.0.1:1",
		"BACKFLIP_AGENT_TOKEN":    "t",
		"BACKFLIP_RUNTIME_SECRET": "s",
	}
	without := func(name string) map[string]string {
		env := map[string]string{}
		for k, v := range full {
			if k != name {
				env[k] = v
			}
		}
		return env
	}
	with := func(k, v string) map[string]string {
		env := without("")
		env[k] = v
		return env
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"NoEndpoints", without("BACKFLIP_ETCD_ENDPOINTS"), []string{"fleet"}, "BACKFLIP_ETCD_ENDPOINTS: required"},
		{"NoAgentToken", without("BACKFLIP_AGENT_TOKEN"), []string{"status"}, "BACKFLIP_AGENT_TOKEN: required by status"},
		{"NoRuntimeSecret", without("BACKFLIP_RUNTIME_SECRET"), []string{"rollback", "chat-70b", "why"}, "BACKFLIP_RUNTIME_SECRET: required by rollback"},
		{"Malformed", with("BACKFLIP_WARM_TIMEOUT", "soon"), []string{"status"}, `BACKFLIP_WARM_TIMEOUT: expected a duration like 2s, got "soon"`},
		{"DatabaseURLNotShown", with("BACKFLIP_DATABASE_URL", "mysql://u:hunter2@db/x"), []string{"history"}, "BACKFLIP_DATABASE_URL: expected a postgres://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCtl(t, tc.env, tc.args...)
			if code != exitInput || stdout != "" || strings.Count(stderr, "\n") != 1 || strings.Contains(stderr, "hunter2") {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
			if !strings.HasPrefix(stderr, "backflipctl: "+tc.want) {
				t.Fatalf("stderr %q does not start with %q", stderr, tc.want)
			}
		})
	}
	// Fleet and history ask no agent and signal nothing: the endpoints are
	// all they need.
	t.Run("FleetNeedsOnlyEtcd", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t)
		code, _, stderr := runCtl(t, map[string]string{"BACKFLIP_ETCD_ENDPOINTS": w.env["BACKFLIP_ETCD_ENDPOINTS"]}, "fleet")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	})
}

func TestStatus(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.seed(t)
	chat := w.get(t, "chat-70b")

	code, stdout, stderr := runCtl(t, w.env, "status")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{
		"chat-70b: v42 (promote by ci:deploy ",
		fmt.Sprintf(", epoch 2, rev %d) · rollback target v41 NOT warm (0/2 nodes, 0/8 GPUs) · last drill unknown · 0 in flight\n", chat.ModRevision),
		"    not warm on: gpu-01 unreachable",
		"embed-small: v7 (promote by ci:deploy",
		"no rollback target (no previous version)",
		"note: last drills unknown: audit database unavailable: none is configured\n",
		"(etcd revision ",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, stdout)
		}
	}

	t.Run("JSON", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := runCtl(t, w.env, "status", "--json", "chat-70b")
		var rep struct {
			Routes []struct {
				Route     string `json:"route"`
				Revision  int64  `json:"revision"`
				Readiness struct {
					Target string `json:"target"`
					Warm   bool   `json:"warm"`
				} `json:"readiness"`
			} `json:"routes"`
			Revision int64 `json:"revision"`
		}
		if code != exitOK || stderr != "" || strings.Count(stdout, "\n") != 1 {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil || len(rep.Routes) != 1 || rep.Routes[0].Route != "chat-70b" ||
			rep.Routes[0].Revision != chat.ModRevision || rep.Routes[0].Readiness.Target != "v41" || rep.Revision == 0 {
			t.Fatalf("JSON: %s (%v)", stdout, err)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := runCtl(t, w.env, "status", "chat-7b")
		if code != exitInput || stdout != "" || stderr != "backflipctl: route chat-7b does not exist; routes: chat-70b, embed-small\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
	t.Run("NotFoundJSON", func(t *testing.T) {
		t.Parallel()
		code, stdout, _ := runCtl(t, w.env, "status", "chat-7b", "--json")
		var e errorJSON
		if code != exitInput || json.Unmarshal([]byte(stdout), &e) != nil || e.Error.Code != "not_found" {
			t.Fatalf("exit %d, stdout %q", code, stdout)
		}
	})
	t.Run("InvalidRoute", func(t *testing.T) {
		t.Parallel()
		code, _, stderr := runCtl(t, w.env, "status", "../etc")
		if code != exitInput || !strings.HasPrefix(stderr, "backflipctl: route name \"../etc\"") {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
	})
}

func TestFleet(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.seed(t)
	code, stdout, stderr := runCtl(t, w.env, "fleet")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{
		"gpu-01  http://127.0.0.1:1  chat-70b v41:4 v42:4 · embed-small v7:1\n",
		"chat-70b v42: 2 nodes, 8 GPUs\n",
		"embed-small v7: 2 nodes, 2 GPUs\n",
		"(2 nodes, etcd revision ",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("fleet lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = runCtl(t, w.env, "--json", "fleet")
	var rep struct {
		Nodes []fleetapi.NodeRecord `json:"nodes"`
	}
	if code != exitOK || json.Unmarshal([]byte(stdout), &rep) != nil || len(rep.Nodes) != 2 || rep.Nodes[1].GPUs("chat-70b", "v42") != 4 {
		t.Fatalf("exit %d, JSON %s", code, stdout)
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	db := pgServer.NewDatabase(t)
	conn, err := pgx.ConnectConfig(testCtx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })

	at := time.Date(2025, 6, 1, 13, 0, 0, 0, time.UTC)
	event := func(kind audit.Kind, from, to string, at time.Time) audit.Event {
		return audit.Event{EventID: uuid.New(), OpID: uuid.New(), Kind: kind, Route: "chat-70b", FromVersion: from, ToVersion: to,
			Actor: "cli:ana@ops-1", Reason: "latency", Outcome: "completed", SchemaVersion: audit.SchemaVersion, OccurredAt: at}
	}
	stored := event(audit.KindPromote, "v41", "v42", at)
	pending := event(audit.KindRollback, "v42", "v41", at.Add(time.Minute))
	if _, err := audit.InsertEvents(testCtx(t), conn, []audit.Event{stored}); err != nil {
		t.Fatal(err)
	}
	op, err := audit.OutboxOp(audit.Keys{Prefix: prefix}, 0, pending)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.cli.Do(testCtx(t), op); err != nil {
		t.Fatal(err)
	}

	withDB := map[string]string{"BACKFLIP_DATABASE_URL": pgServer.URL(db.Database)}
	for k, v := range w.env {
		withDB[k] = v
	}
	code, stdout, stderr := runCtl(t, withDB, "history", "chat-70b", "--limit", "5")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "2025-06-01 13:01:00 UTC  model.rollback  chat-70b v42 → v41  completed  by cli:ana@ops-1") ||
		!strings.HasSuffix(lines[0], "pending (in the etcd outbox)") ||
		!strings.HasPrefix(lines[1], "2025-06-01 13:00:00 UTC  model.promote  chat-70b v41 → v42") || !strings.Contains(lines[1], "  row ") {
		t.Fatalf("history:\n%s", stdout)
	}

	code, stdout, _ = runCtl(t, withDB, "history", "--json", "--limit=1")
	var rep struct {
		Items []struct {
			EventID string `json:"event_id"`
			Pending bool   `json:"pending"`
		} `json:"items"`
	}
	if code != exitOK || json.Unmarshal([]byte(stdout), &rep) != nil || len(rep.Items) != 1 || rep.Items[0].EventID != pending.EventID.String() || !rep.Items[0].Pending {
		t.Fatalf("exit %d, JSON %s", code, stdout)
	}

	// Without BACKFLIP_DATABASE_URL: the outbox only, and it says so.
	code, stdout, stderr = runCtl(t, w.env, "history")
	if code != exitOK || !strings.Contains(stdout, "note: audit database unavailable; showing only events not yet shipped") ||
		strings.Contains(stdout, "model.promote") || !strings.Contains(stdout, "model.rollback") ||
		stderr != "warning: BACKFLIP_DATABASE_URL is not set: only events not yet shipped from etcd to the audit database are shown\n" {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// TestEtcdUnavailable: an etcd that does not answer is a failure (exit 1)
// within --timeout, and the message says etcd could not be read.
func TestEtcdUnavailable(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	proxy.Blackhole()
	env := map[string]string{"BACKFLIP_ETCD_ENDPOINTS": proxy.Endpoint(), "BACKFLIP_AGENT_TOKEN": "t"}
	for _, args := range [][]string{{"status"}, {"fleet"}, {"--json", "fleet"}} {
		start := time.Now()
		code, stdout, stderr := runCtl(t, env, append(args, "--timeout", "1s")...)
		if code != exitFailed || time.Since(start) > 20*time.Second {
			t.Fatalf("%q: exit %d after %s, stdout %q, stderr %q", args, code, time.Since(start), stdout, stderr)
		}
		if args[0] == "--json" {
			var e errorJSON
			if json.Unmarshal([]byte(stdout), &e) != nil || e.Error.Code != "unavailable" || !strings.HasPrefix(e.Error.Message, "etcd could not be read") {
				t.Fatalf("%q: stdout %q", args, stdout)
			}
			continue
		}
		if !strings.HasPrefix(stderr, "backflipctl: etcd could not be read") {
			t.Fatalf("%q: stderr %q", args, stderr)
		}
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	for code, want := range map[string]int{
		"":             exitOK,
		"invalid":      exitInput,
		"not_found":    exitInput,
		"refused":      exitRefused,
		"unauthorized": exitRefused,
		"conflict":     exitRefused,
		"unavailable":  exitFailed,
		"internal":     exitFailed,
		"surprise":     exitFailed,
	} {
		if got := exitCode(code); got != want {
			t.Errorf("exitCode(%q) = %d, want %d", code, got, want)
		}
	}
}
