package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/bot"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) != "" {
		// A subprocess of TestDevProcess: backflip itself.
		main()
		return
	}
	etcdtest.VerifyTestMain(m)
}

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

// sharedTempDir is a temporary folder the postgres OS user can reach, for
// a dev stack that keeps its Postgres data in it: when the tests run as
// root, Postgres runs as that user, and t.TempDir's folders are private.
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "backflip-devtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newMain(env map[string]string, stdin io.Reader, stdout, stderr io.Writer) Main {
	return Main{Stdin: stdin, Stdout: stdout, Stderr: stderr,
		Getenv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
}

// TestDevEndToEnd drives `backflip dev` as a user piping commands into it:
// the bot answers on the terminal chat as it answers Slack. A pre-flight
// card confirmed rolls chat-70b back under live traffic, with its progress
// as a growing list, the timing report and the audit summary in its
// thread; then the refusals of a second default rollback and of a cold
// target; a forced cold rollback; bad input; a promotion; status and
// history; the dev-only verbs; and a restart that keeps the state.
func TestDevEndToEnd(t *testing.T) {
	state := sharedTempDir(t)
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
		"sim gpu-01 chat-70b v41 warm",
		"confirm",
		"frobnicate",
		`/drill schedule chat-70b "0 9 * * 1"`,
		"/drill list",
		"help",
		"quit",
		"status",
	}, "\n") + "\n"
	code, out, errOut := runMain(t, nil, script, "dev", "--state-dir", state, "--routers", "3", "--nodes", "4", "--rps", "10")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"backflip dev is running.",
		"slack (http)        http://127.0.0.1:",
		// Drills are scheduled and listed from the same chat.
		"Drills of chat-70b scheduled (0 9 * * 1). Next: Mon ",
		"chat-70b: 0 9 * * 1 · next Mon ",
		"backflip> /rollback status\n(only you) chat-70b · v42 · promote by dev-seed",
		"✅ rollback target v41 warm (4/4 nodes, 16/16 GPUs)",
		// The card, as PlainText.
		"backflip> /rollback chat-70b latency spike after v42\n(only you) Checking chat-70b before rolling back…\nRoll back chat-70b v42 → v41?\n",
		"Reason: latency spike after v42",
		"Warm: ✅ 4/4 nodes, 16/16 GPUs warm",
		"In flight: ",
		"[Confirm] [Cancel]\nexpires in 10 min (",
		// The confirm: progress, report, audit summary in the thread.
		"backflip> confirm\n⏳ Rolling back chat-70b",
		"✅ chat-70b rolled back v42 → v41 in ",
		"(3/3) · in-flight ",
		" · audit ✓\nop ",
		"\n    📝 Audit summary\n    op ",
		"\n    timings: resolve ",
		// Refusals and bad input, to the requester only.
		"(only you) ⛔ Refused: chat-70b was already rolled back from v42 by dev:",
		"To go back to v42, use --to v42",
		"(only you) ⛔ Refused: embed-small@v6 is not warm",
		"Use --force-cold to roll back anyway",
		"⏳ Rolling back embed-small · ⚠️ FORCED COLD",
		"✅ embed-small rolled back v7 → v6 in ",
		"FORCED COLD",
		`(only you) ⚠️ Bad input: "../etc" is not a valid route name`,
		"\n/rollback <route> [--to <version>] [--now]",
		"(only you) ⚠️ Bad input: a reason is required",
		// The dev-only verbs.
		"chat-70b promoted v41 → v42 in ",
		"backflip> status\n(only you) chat-70b · v42 · promote by dev:",
		"embed-small · v6 · rollback by dev:",
		"model.promote chat-70b v41 → v42 · completed",
		"“latency spike after v42”",
		`unknown behaviour "sideways"`,
		"chat-70b v41 now warm on 1 node(s); the agents report",
		"backflip> confirm\nnothing to confirm",
		`unknown command "frobnicate"`,
		"(only you) /rollback: roll a model back",
		"confirm | cancel      click the buttons of the last pre-flight card",
		"dev-only commands:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Live progress prints as a list of phases. Which states show depends
	// on the machine's speed (updates are coalesced), not that some do.
	if !regexp.MustCompile(`backflip> confirm\n⏳ Rolling back chat-70b[^\n]*\n(.*\n)*?(⏳|✅) (resolve|warm|flip|routers|in-flight|audit)\b`).MatchString(out) {
		t.Errorf("the confirm shows no phase of the rollback")
	}
	// The rollback under traffic reports what the runtimes acknowledged;
	// how many requests were in flight depends on the machine's speed.
	if !regexp.MustCompile(`✅ chat-70b rolled back v42 → v41 .* in-flight \d+ aborted, \d+ re-issued`).MatchString(out) {
		t.Errorf("the rollback's report lacks the in-flight counts")
	}
	// A piped script reads in order: the report and its audit summary come
	// before the next command.
	report, summary, next := strings.Index(out, "rolled back v42 → v41 in"), strings.Index(out, "📝 Audit summary"), strings.Index(out, "backflip> rollback chat-70b still bad")
	if report < 0 || summary < report || next < summary {
		t.Errorf("the confirm's report (%d) and summary (%d) do not come before the next command (%d)", report, summary, next)
	}
	// The audit summary names the row once the shipper has stored it in
	// the dev stack's Postgres, or says it is still queued.
	if !regexp.MustCompile(`audit row (\d+|pending \(queued in etcd\)) · outcome completed`).MatchString(out) {
		t.Errorf("the audit summary names neither a row nor a queued event")
	}
	if strings.Contains(out, "audit database unavailable") {
		t.Errorf("history says the dev stack's audit database is unavailable")
	}
	// quit stops reading: the status after it never runs.
	if n := strings.Count(out, "chat-70b · v42 · promote by dev:"); n != 1 {
		t.Errorf("the status after quit ran (%d)", n)
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}

	// State survives a restart in the same folder: the route, and the
	// audit history in the dev stack's Postgres.
	code, out, _ = runMain(t, nil, "status chat-70b\nhistory\n", "dev", "--state-dir", state, "--routers", "1", "--nodes", "2", "--rps", "0")
	if code != 0 || !strings.Contains(out, "chat-70b · v42 · promote by dev:") || !strings.Contains(out, "· epoch 4 ·") ||
		!strings.Contains(out, "model.rollback embed-small v7 → v6 · completed") {
		t.Fatalf("after restart (exit %d):\n%s", code, out)
	}
}

// devSession is `backflip dev` running with a pipe as its standard input,
// typed into line by line as a person would.
type devSession struct {
	t      *testing.T
	ctx    context.Context
	out    *syncBuffer
	errOut *syncBuffer
	typist *io.PipeWriter
	done   chan int
}

func startDev(t *testing.T, env map[string]string, args ...string) *devSession {
	t.Helper()
	in, typist := io.Pipe()
	t.Cleanup(func() { _ = typist.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s := &devSession{t: t, ctx: ctx, out: &syncBuffer{}, errOut: &syncBuffer{}, typist: typist, done: make(chan int, 1)}
	m := newMain(env, in, s.out, s.errOut)
	go func() { s.done <- m.Run(ctx, append([]string{"dev"}, args...)) }()
	return s
}

// waitFor waits until the output holds want at least n times.
func (s *devSession) waitFor(want string, n int) {
	s.t.Helper()
	for strings.Count(s.out.String(), want) < n {
		select {
		case code := <-s.done:
			s.t.Fatalf("backflip dev ended (exit %d) before printing %q:\n%s\n%s", code, want, s.out.String(), s.errOut.String())
		case <-s.ctx.Done():
			s.t.Fatalf("no %q:\n%s\n%s", want, s.out.String(), s.errOut.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// say types a line and waits until the output has grown by want.
func (s *devSession) say(line, want string) {
	s.t.Helper()
	before := strings.Count(s.out.String(), want)
	if _, err := io.WriteString(s.typist, line+"\n"); err != nil {
		s.t.Fatalf("type %q: %v", line, err)
	}
	s.waitFor(want, before+1)
}

// end closes the input and returns what was printed once dev exits.
func (s *devSession) end() string {
	s.t.Helper()
	if err := s.typist.Close(); err != nil {
		s.t.Fatal(err)
	}
	select {
	case code := <-s.done:
		if code != 0 {
			s.t.Fatalf("exit %d:\n%s\n%s", code, s.out.String(), s.errOut.String())
		}
	case <-s.ctx.Done():
		s.t.Fatalf("backflip dev did not stop at the end of its input:\n%s", s.out.String())
	}
	return s.out.String()
}

// TestDevPreflightCard types at `backflip dev` the way a person does, one
// line after the other, and checks that a pre-flight card changes nothing
// unless it is confirmed in time: an expired card, a cancelled one, a
// confirm with no card, and a card left open when the input ends.
func TestDevPreflightCard(t *testing.T) {
	s := startDev(t, map[string]string{"BACKFLIP_CARD_TTL": "300ms"}, "--state-dir", t.TempDir(), "--routers", "1", "--nodes", "2", "--rps", "0")
	s.waitFor("backflip dev is running.", 1)

	s.say("/rollback chat-70b latency spike", "[Confirm] [Cancel]")
	// Past the card's validity, whatever the machine's speed: a confirm
	// now is refused and changes nothing.
	time.Sleep(time.Second)
	s.say("confirm", "(only you) ⛔ Refused: this card expired; nothing was changed.")
	s.waitFor("; nothing was changed. Run /rollback chat-70b again for a fresh check.", 1)
	s.say("confirm", "nothing to confirm")

	s.say("/rollback chat-70b latency spike", "[Confirm] [Cancel]")
	s.say("cancel", "Cancelled by dev:")
	s.say("confirm", "nothing to confirm")
	s.say("cancel", "nothing to cancel")

	s.say("/rollback status chat-70b", "(only you) chat-70b · v42 · promote by dev-seed")
	s.say("/rollback chat-70b latency spike", "[Confirm] [Cancel]")
	got := s.end()
	if !strings.Contains(got, "Roll back chat-70b v42 → v41\nThis card expired at ") {
		t.Errorf("the expired card is not shown closed:\n%s", got)
	}
	if !strings.Contains(got, "the pre-flight card for chat-70b was not confirmed; nothing changed") {
		t.Errorf("the card left open at the end of input is not mentioned:\n%s", got)
	}
	if strings.Contains(got, "rolled back v42") {
		t.Errorf("an unconfirmed card rolled back:\n%s", got)
	}
}

// TestDevSlackEndpoint plays Slack against the loopback endpoints `backflip
// dev` prints: the curl of its banner, a card requested over HTTP and
// confirmed at the terminal, another user's command, and a request signed
// with the wrong secret.
func TestDevSlackEndpoint(t *testing.T) {
	s := startDev(t, nil, "--state-dir", t.TempDir(), "--routers", "1", "--nodes", "2", "--rps", "0")
	s.waitFor("Ctrl-C or \"quit\" stops everything.", 1)
	banner := s.out.String()
	curl := regexp.MustCompile(`curl -sS (http://127\.0\.0\.1:\d+/slack/commands) -H 'X-Slack-Request-Timestamp: (\d+)' -H 'X-Slack-Signature: (v0=[0-9a-f]{64})' --data '([^']+)'`).FindStringSubmatch(banner)
	secret := regexp.MustCompile(`signing secret ([0-9a-f]{32}) `).FindStringSubmatch(banner)
	me := regexp.MustCompile(`you +(dev:\S+) in channel #dev`).FindStringSubmatch(banner)
	if curl == nil || secret == nil || me == nil {
		t.Fatalf("the banner lacks the endpoint, its secret, a curl or who you are:\n%s", banner)
	}
	endpoint := curl[1]
	client := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	post := func(ts, sig, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Slack-Request-Timestamp", ts)
		req.Header.Set("X-Slack-Signature", sig)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	signed := func(secret string, form url.Values) (int, string) {
		t.Helper()
		body := form.Encode()
		now := time.Now().Unix()
		return post(strconv.FormatInt(now, 10), bot.Sign([]byte(secret), now, []byte(body)), body)
	}
	slash := func(user, text string) url.Values {
		return url.Values{"command": {"/rollback"}, "text": {text}, "user_id": {user}, "user_name": {"someone"},
			"channel_id": {"dev"}, "channel_name": {"dev"}, "trigger_id": {"t-" + strconv.FormatInt(time.Now().UnixNano(), 36)}}
	}

	// The banner's curl, as pasted: the answer shows at the terminal.
	if code, _ := post(curl[2], curl[3], curl[4]); code != http.StatusOK {
		t.Fatalf("the banner's curl got %d", code)
	}
	s.waitFor("(only you) chat-70b · v42 · promote by dev-seed", 1)

	// A card asked for over HTTP shows at the terminal, and confirm there
	// clicks it.
	code, ack := signed(secret[1], slash(me[1], "chat-70b latency spike from slack"))
	if code != http.StatusOK || !strings.Contains(ack, "Checking chat-70b before rolling back") {
		t.Fatalf("the slash command got %d %q", code, ack)
	}
	s.waitFor("[Confirm] [Cancel]", 1)
	s.say("confirm", "📝 Audit summary")
	if got := s.out.String(); !strings.Contains(got, "Reason: latency spike from slack") || !strings.Contains(got, "✅ chat-70b rolled back v42 → v41 in ") {
		t.Fatalf("the card from Slack was not confirmed at the terminal:\n%s", got)
	}

	// Someone else's command is theirs alone.
	if code, _ := signed(secret[1], slash("U0BOB", "status chat-70b")); code != http.StatusOK {
		t.Fatalf("status from U0BOB got %d", code)
	}
	s.waitFor("(only U0BOB) chat-70b · v41 · rollback by "+me[1], 1)

	// A request signed with another secret is refused before the bot sees
	// it.
	if code, _ := signed(strings.Repeat("0", 32), slash(me[1], "chat-70b --to v42 --now forged")); code != http.StatusUnauthorized {
		t.Fatalf("a forged request got %d", code)
	}
	got := s.end()
	if strings.Contains(got, "forged") {
		t.Fatalf("a forged request reached the bot:\n%s", got)
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

// TestDevRecoveryNotice leaves an op behind as a dead `backflip dev` would
// (started, its owner's lease gone) and checks that op recovery closes it
// and the notice reaches the terminal through the bot, in the op's thread.
func TestDevRecoveryNotice(t *testing.T) {
	s := startDev(t, nil, "--state-dir", t.TempDir(), "--routers", "1", "--nodes", "2", "--rps", "0")
	s.waitFor(`Ctrl-C or "quit" stops everything.`, 1)
	ep := regexp.MustCompile(`etcd \(embedded\) +(http://127\.0\.0\.1:\d+)`).FindStringSubmatch(s.out.String())
	if ep == nil {
		t.Fatalf("the banner lacks the etcd endpoint:\n%s", s.out.String())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep[1]}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	op := uuid.NewString()
	rec, err := json.Marshal(commands.OpRecord{Kind: routing.KindRollback, Route: "chat-70b", From: "v42", To: "v41",
		Phase: commands.OpPhaseStarted, Actor: "dev:someone", Reason: "left behind", Channel: "dev", TS: "1.000001",
		Owner: "7fffffff", Started: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(s.ctx, "/backflip/ops/"+op, string(rec)); err != nil {
		t.Fatal(err)
	}
	s.waitFor("op "+op+" · finished by op recovery on another backflip replica", 1)
	got := s.end()
	if !regexp.MustCompile(`\n    ℹ️ [^\n]*\n    op ` + op).MatchString(got) {
		t.Fatalf("the recovery notice is not a reply in the op's thread:\n%s", got)
	}
}
