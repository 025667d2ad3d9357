package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestReceiver(t *testing.T) {
	var calls atomic.Int32
	rc := NewReceiver(sigTestSecret, func(_ context.Context, s AbortSignal) (int, int) {
		calls.Add(1)
		if s.Route == "bad-counts" {
			return 1, 2
		}
		return 37, 36
	})
	ts := time.Now().Unix()
	for _, tc := range []struct {
		name      string
		req       *http.Request
		want      int
		wantCalls int32
	}{
		{"Valid", signedPost(AbortPath, sigTestSecret, ts, vectorBody), http.StatusOK, 1},
		{"Replayed", signedPost(AbortPath, sigTestSecret, ts, vectorBody), http.StatusUnauthorized, 0},
		{"RetryWithNewTimestamp", signedPost(AbortPath, sigTestSecret, ts+1, vectorBody), http.StatusOK, 1},
		{"Forged", signedPost(AbortPath, []byte("guess"), 0, vectorBody), http.StatusUnauthorized, 0},
		{"Stale", signedPost(AbortPath, sigTestSecret, time.Now().Add(-MaxSkew-time.Second).Unix(), vectorBody), http.StatusUnauthorized, 0},
		{"Oversized", signedPost(AbortPath, sigTestSecret, 0, strings.Repeat(" ", MaxBodyBytes+1)), http.StatusRequestEntityTooLarge, 0},
		{"InvalidSignal", signedPost(AbortPath, sigTestSecret, 0, strings.Replace(vectorBody, `"epoch":7`, `"epoch":0`, 1)), http.StatusBadRequest, 0},
		{"InconsistentCallback", signedPost(AbortPath, sigTestSecret, 0, strings.Replace(vectorBody, "chat-70b", "bad-counts", 1)), http.StatusInternalServerError, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := calls.Load()
			w := serve(rc, tc.req)
			if w.Code != tc.want || calls.Load()-before != tc.wantCalls {
				t.Fatalf("status %d (want %d), %d calls (want %d): %s", w.Code, tc.want, calls.Load()-before, tc.wantCalls, w.Body)
			}
			if w.Code == http.StatusOK {
				var reply AbortReply
				if err := Decode(w.Body.Bytes(), &reply); err != nil || reply != (AbortReply{InFlight: 37, Aborted: 36}) {
					t.Fatalf("reply %s: %v", w.Body, err)
				}
			}
		})
	}
}

// TestProtocolDocShellRecipe runs the signing line PROTOCOL.md shows
// operators and checks it computes what Sign computes.
func TestProtocolDocShellRecipe(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		// The recipe is what operators paste; it must be checked, not skipped.
		t.Fatal("openssl not installed: this test runs PROTOCOL.md's shell recipe; install the openssl package (.ci/run does)")
	}
	f, err := os.Open("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recipe string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if line := sc.Text(); strings.HasPrefix(line, `sig="v1=$(printf`) {
			recipe = line
		}
	}
	if recipe == "" {
		t.Fatal("PROTOCOL.md has no sig=... line")
	}
	for _, tc := range []struct {
		name, secret, body string
		ts                 int64
	}{
		{"Signal", vectorSecret, vectorBody, vectorTS},
		{"Heartbeat", "another secret with spaces", `{"id":"wf-1","url":"http://10.0.0.5:9000","inflight":{"chat-70b":{"v42":37}}}`, 1764072345},
		{"AckWithPercent", "k%s", `{"op":"op-1","instance":"wf-1","reissued":37}`, 1700000000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sh", "-c", recipe+`; printf '%s' "$sig"`)
			cmd.Env = append(os.Environ(), "RUNTIME_SECRET="+tc.secret)
			cmd.Env = append(cmd.Env, "ts="+jsonNum(tc.ts), "body="+tc.body)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("shell: %v", err)
			}
			if want := Sign([]byte(tc.secret), tc.ts, []byte(tc.body)); string(out) != want {
				t.Fatalf("shell %s, Sign %s", out, want)
			}
		})
	}
}

func jsonNum(n int64) string { b, _ := json.Marshal(n); return string(b) }
