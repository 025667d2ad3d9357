package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// runMainEnv, when set, makes the test binary run backflip's main: the
// tests start `backflip dev` as its own process, as `make run` does.
const runMainEnv = "BACKFLIP_TEST_RUN_MAIN"

// TestDevProcess runs `backflip dev` as a process of its own with a small
// fleet and types a short session at it through a pipe: status, a rollback
// that lands, one refused for a cold target. The audit rows of both appear
// in the dev stack's own Postgres, and SIGINT stops everything: exit 0,
// Postgres shut down cleanly, nothing left listening.
func TestDevProcess(t *testing.T) {
	state := sharedTempDir(t)
	cmd := exec.Command(os.Args[0], "dev", "--state-dir", state, "--routers", "2", "--nodes", "3", "--rps", "5")
	cmd.Env = append(withoutEnv(os.Environ(), "BACKFLIP_DATABASE_URL"), runMainEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, errOut := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, errOut
	// A process it started that outlived it would hold the output pipes
	// open; Wait then returns anyway (and the checks below fail).
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed once the process has ended, with its error in
	// waitErr.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitOut := func(want string, n int) {
		t.Helper()
		for strings.Count(out.String(), want) < n {
			select {
			case <-exited:
				t.Fatalf("backflip dev exited (%v) before printing %q:\n%s\nstderr:\n%s", waitErr, want, out.String(), errOut.String())
			case <-ctx.Done():
				t.Fatalf("no %q:\n%s\nstderr:\n%s", want, out.String(), errOut.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	say := func(line, want string) {
		t.Helper()
		n := strings.Count(out.String(), want)
		if _, err := io.WriteString(stdin, line+"\n"); err != nil {
			t.Fatal(err)
		}
		waitOut(want, n+1)
	}

	waitOut(`Ctrl-C or "quit" stops everything.`, 1)
	banner := out.String()
	dbURL := regexp.MustCompile(`audit \(postgres\) +(postgres://\S+)`).FindStringSubmatch(banner)
	etcdURL := regexp.MustCompile(`etcd \(embedded\) +(http://127\.0\.0\.1:\d+)`).FindStringSubmatch(banner)
	if dbURL == nil || etcdURL == nil || !strings.Contains(banner, "data in "+filepath.Join(state, "postgres")) {
		t.Fatalf("the banner does not say where the audit database and etcd are:\n%s", banner)
	}

	say("/rollback status", "(only you) chat-70b · v42 · promote by dev-seed")
	say("/rollback chat-70b --now test", "✅ chat-70b rolled back v42 → v41 in ")
	say("/rollback embed-small --now test", "⛔ Refused: embed-small@v6 is not warm")

	conn, err := pgx.Connect(ctx, dbURL[1])
	if err != nil {
		t.Fatalf("connect to the dev audit database at %s: %v", dbURL[1], err)
	}
	defer conn.Close(context.Background())
	// The rollback's final event (its first, "flipped", was written with
	// the flip) and the refusal's.
	for _, ev := range []struct{ kind, route, outcome string }{
		{"model.rollback", "chat-70b", "completed"},
		{"rollback.refused", "embed-small", "refused"},
	} {
		for {
			var n int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE kind = $1 AND route = $2 AND outcome = $3`,
				ev.kind, ev.route, ev.outcome).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				break
			}
			if n > 1 || ctx.Err() != nil {
				t.Fatalf("%d %+v rows in the audit database", n, ev)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	_ = conn.Close(ctx)

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("backflip dev exited with %v on SIGINT\nstderr:\n%s", waitErr, errOut.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("backflip dev did not exit within 60 s of SIGINT\nstdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	// Postgres shut down cleanly (it removes its pid file), and nothing
	// of the stack still listens.
	if _, err := os.Stat(filepath.Join(state, "postgres", "data", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid is still there after exit (%v): Postgres was not shut down", err)
	}
	pgHost := hostPort(t, dbURL[1])
	for _, addr := range []string{pgHost, hostPort(t, etcdURL[1])} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after backflip dev exited", addr)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Logf("dial %s after exit: %v", addr, err)
		}
	}
	if strings.Contains(errOut.String(), "panic") || strings.Contains(errOut.String(), "DATA RACE") {
		t.Errorf("stderr:\n%s", errOut.String())
	}
}

func hostPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// withoutEnv returns env without the variable name.
func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
