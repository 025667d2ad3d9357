package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
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

func runMain(t *testing.T, env map[string]string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code = newMain(env, strings.NewReader(stdin), &out, &errOut).Run(ctx, args)
	return code, out.String(), errOut.String()
}

func newMain(env map[string]string, stdin io.Reader, stdout, stderr io.Writer) Main {
	return Main{Stdin: stdin, Stdout: stdout, Stderr: stderr,
		Getenv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
}

// TestDevEndToEnd drives `backflip dev` as a user piping commands into it:
// a pre-flight card confirmed, which rolls chat-70b back under live traffic
// through the same use case as Slack and backflipctl; the refusals of a
// second default rollback and of a cold target; a forced cold rollback; bad
// input; a promotion; status and history; and a restart that keeps the
// state.
func TestDevEndToEnd(t *testing.T) {
	state := t.TempDir()
	script := strings.Join([]string{
		"/rollback status",
		"/rollback chat-70b latency spike after v42",
		"confirm",
		"rollback chat-70b still bad",
		"/rollback embed-small bad embeddings",
		"/rollback embed-small --now --force-cold worse",
		"/rollback ../etc --to v1 hack",
		"rollback chat-70b",
		"promote chat-70b v42 fixed in v42.1",
		"status",
		"history chat-70b",
		"sim all chat-70b v41 sideways",
		"confirm",
		"frobnicate",
		"quit",
		"status",
	}, "\n") + "\n"
	code, out, errOut := runMain(t, nil, script, "dev", "--state-dir", state, "--routers", "3", "--nodes", "4", "--rps", "10")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"backflip dev is running.",
		"backflip> /rollback status\nchat-70b: v42 (promote by dev-seed",
		"rollback target v41 warm (4/4 nodes, 16/16 GPUs)",
		"pre-flight: chat-70b would roll back v42 → v41 · warm ",
		"in flight would be aborted and re-issued",
		"type `confirm` to roll back (expires in 10m) or `cancel`",
		"backflip> confirm\n  resolve ",
		"4/4 nodes, 16/16 GPUs warm",
		"3/3 routers converged",
		"chat-70b rolled back v42 → v41 in ",
		"· routers ",
		"(3/3) · in-flight ",
		" · audit ✓",
		"refused: chat-70b was already rolled back from v42 by dev:",
		"To go back to v42, use --to v42",
		"refused: embed-small@v6 is not warm",
		"Use --force-cold to roll back anyway",
		"embed-small rolled back v7 → v6 in ",
		"FORCED COLD",
		`bad input: "../etc" is not a valid route name`,
		"usage: /rollback <route> [--to <version>]",
		"bad input: a reason is required",
		"chat-70b promoted v41 → v42 in ",
		"chat-70b: v42 (promote by dev:",
		"embed-small: v6 (rollback by dev:",
		"note: audit database unavailable; showing only events not yet shipped",
		"model.promote  chat-70b v41 → v42  completed",
		`"latency spike after v42"`,
		`unknown behaviour "sideways"`,
		"nothing to confirm",
		`unknown command "frobnicate"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// The rollback under traffic reports what the runtimes acknowledged;
	// how many requests were in flight depends on the machine's speed.
	if !regexp.MustCompile(`chat-70b rolled back v42 → v41 .* in-flight \d+ aborted, \d+ re-issued`).MatchString(out) {
		t.Errorf("the rollback's report lacks the in-flight counts")
	}
	// quit stops reading: the status after it never runs.
	if n := strings.Count(out, "chat-70b: v42 (promote by dev:"); n != 1 {
		t.Errorf("the status after quit ran (%d)", n)
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}

	// State survives a restart in the same folder: the route, and the
	// audit events still queued in etcd.
	code, out, _ = runMain(t, nil, "status chat-70b\nhistory\n", "dev", "--state-dir", state, "--routers", "1", "--nodes", "2", "--rps", "0")
	if code != 0 || !strings.Contains(out, "chat-70b: v42 (promote by dev:") || !strings.Contains(out, "epoch 4,") ||
		!strings.Contains(out, "model.rollback  embed-small v7 → v6  completed") {
		t.Fatalf("after restart (exit %d):\n%s", code, out)
	}
}

// TestDevPreflightCard types at `backflip dev` the way a person does, one
// line after the other, and checks that a pre-flight card changes nothing
// unless it is confirmed in time: an expired card, a cancelled one, a
// confirm with no card, and a card left open when the input ends.
func TestDevPreflightCard(t *testing.T) {
	in, typist := io.Pipe()
	t.Cleanup(func() { _ = typist.Close() })
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m := newMain(map[string]string{"BACKFLIP_CARD_TTL": "300ms"}, in, &out, &errOut)
	done := make(chan int, 1)
	go func() {
		done <- m.Run(ctx, []string{"dev", "--state-dir", t.TempDir(), "--routers", "1", "--nodes", "2", "--rps", "0"})
	}()

	// say types a line and waits until the output has grown by want.
	say := func(line, want string) {
		t.Helper()
		before := strings.Count(out.String(), want)
		if _, err := io.WriteString(typist, line+"\n"); err != nil {
			t.Fatalf("type %q: %v", line, err)
		}
		for strings.Count(out.String(), want) == before {
			select {
			case code := <-done:
				t.Fatalf("backflip dev ended (exit %d) before answering %q with %q:\n%s\n%s", code, line, want, out.String(), errOut.String())
			case <-ctx.Done():
				t.Fatalf("no %q after %q:\n%s\n%s", want, line, out.String(), errOut.String())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	say("/rollback chat-70b latency spike", "type `confirm` to roll back (expires in 300ms) or `cancel`")
	// Past the card's validity, whatever the machine's speed: a confirm
	// now is refused and changes nothing.
	time.Sleep(time.Second)
	say("confirm", "the pre-flight card for chat-70b expired")
	say("confirm", "nothing to confirm")

	say("/rollback chat-70b latency spike", "type `confirm` to roll back")
	say("cancel", "cancelled: chat-70b stays on v42; nothing changed")
	say("confirm", "nothing to confirm")
	say("cancel", "nothing to cancel")

	say("/rollback status chat-70b", "chat-70b: v42 (promote by dev-seed")
	say("/rollback chat-70b latency spike", "type `confirm` to roll back")
	if err := typist.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d:\n%s\n%s", code, out.String(), errOut.String())
		}
	case <-ctx.Done():
		t.Fatalf("backflip dev did not stop at the end of its input:\n%s", out.String())
	}
	got := out.String()
	if !strings.Contains(got, "the pre-flight card for chat-70b was not confirmed; nothing changed") {
		t.Errorf("the card left open at the end of input is not mentioned:\n%s", got)
	}
	if strings.Contains(got, "rolled back v42") {
		t.Errorf("an unconfirmed card rolled back:\n%s", got)
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
		{"NegativeRPS", []string{"dev", "--rps", "-1"}, 2, "--rps wants 0 to 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runMain(t, nil, "", tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
	t.Run("MalformedSetting", func(t *testing.T) {
		code, _, errOut := runMain(t, map[string]string{"BACKFLIP_CARD_TTL": "later"}, "", "dev", "--state-dir", t.TempDir())
		if code != 2 || !strings.Contains(errOut, "BACKFLIP_CARD_TTL") {
			t.Fatalf("exit %d, stderr %q; want 2 and the variable named", code, errOut)
		}
	})
	if code, out, _ := runMain(t, nil, "", "version"); code != 0 || !strings.HasPrefix(out, "backflip ") {
		t.Fatalf("version: %d %q", code, out)
	}
}
