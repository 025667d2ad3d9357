package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

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

func runMain(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	env := map[string]string{}
	m := Main{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = m.Run(ctx, args)
	return code, out.String(), errOut.String()
}

// TestDevEndToEnd drives `backflip dev` as a user piping commands into it:
// the seeded routes, a rollback seen by every router, the refusal of a
// second default rollback, an explicit undo, a promotion, and bad input.
func TestDevEndToEnd(t *testing.T) {
	state := t.TempDir()
	script := strings.Join([]string{
		"status",
		"rollback chat-70b latency spike after v42",
		"rollback chat-70b still bad",
		"rollback chat-70b --to v42 false alarm",
		"promote embed-small v8 new embedding model",
		"promote embed-small v8 again",
		"rollback ../etc --to v1 hack",
		"rollback chat-70b",
		"rollback embed-small bad embeddings",
		"rollback embed-small --to v6 worse",
		"rollback embed-small --to v6 --force-cold worse",
		"sim all chat-70b v41 sideways",
		"status embed-small",
		"frobnicate",
	}, "\n") + "\n"
	code, out, errOut := runMain(t, script, "dev", "--state-dir", state, "--routers", "3")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"chat-70b     v42     v41",
		"chat-70b rolled back v42 → v41",
		"warm ",
		"(8/8 nodes, 32/32 GPUs warm)",
		"(3/3)",
		"error: chat-70b was rolled back from v42 by cli:",
		"to undo, use --to v42",
		"chat-70b rolled back v41 → v42",
		"embed-small promoted v7 → v8",
		"error: route embed-small is on v8: route is already on that version",
		`error: invalid: route name "../etc"`,
		"error: a reason is required",
		"error: refused: embed-small → v6: NOT warm, 0/8 nodes, 0/8 GPUs warm",
		"cold        gpu-01 (1 GPUs): GET /info: serving model",
		"embed-small rolled back v8 → v7",
		"embed-small rolled back v7 → v6",
		"warm check skipped (--force-cold)",
		`error: unknown behaviour "sideways"`,
		"embed-small  v6      v7        5",
		`error: unknown command "frobnicate"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}

	// State survives a restart in the same folder.
	code, out, _ = runMain(t, "status chat-70b\n", "dev", "--state-dir", state, "--routers", "1")
	if code != 0 || !strings.Contains(out, "chat-70b  v42     v41       4") {
		t.Fatalf("after restart (exit %d):\n%s", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"NoCommand", nil, 2, "usage: backflip"},
		{"UnknownCommand", []string{"frob"}, 2, `unknown command "frob"`},
		{"BadFlag", []string{"dev", "--nope"}, 2, "flag provided but not defined"},
		{"TooManyRouters", []string{"dev", "--routers", "0"}, 2, "--routers wants 1 to 1000"},
		{"TooManyNodes", []string{"dev", "--nodes", "500"}, 2, "--nodes wants 1 to 99"},
		{"StrayArgument", []string{"dev", "extra"}, 2, "dev takes no arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runMain(t, "", tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
	if code, out, _ := runMain(t, "", "version"); code != 0 || !strings.HasPrefix(out, "backflip ") {
		t.Fatalf("version: %d %q", code, out)
	}
}
