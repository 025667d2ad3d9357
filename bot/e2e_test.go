package bot

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/slack-go/slack"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/simfleet"
	"github.com/backflip-dev/backflip/internal/slackfake"
)

const (
	e2ePrefix = "/bot"
	alice     = "U0ALICE"
	bob       = "U0BOB"
	mallory   = "U0MALLORY"
	incident  = "C0INC"
	secretKey = "test-signing-secret"
)

// stack is the whole bot over real parts: embedded etcd, a simulated
// fleet, an audit database, the commands Service, the Bot behind the
// signed HTTP transport, and a fake Slack Web API.
type stack struct {
	cli   *clientv3.Client
	fleet *simfleet.Fleet
	slack *slackfake.Server
	bot   *Bot
	srv   *httptest.Server
	db    *pgxpool.Pool
}

func newStack(t *testing.T) *stack {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	etcd := etcdtest.Start(t)
	s := &stack{cli: etcd.Client(t), slack: slackfake.New(t)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := simfleet.Start(ctx, simfleet.Config{Client: s.cli, Prefix: e2ePrefix, Nodes: 4, Routes: simfleet.DemoRoutes(), Routers: 3, Runtimes: 2,
		Traffic: simfleet.Traffic{RPS: 20, Steps: 3, StepDelay: 5 * time.Millisecond}, Logger: log.Named("fleet")})
	if err != nil {
		t.Fatal(err)
	}
	s.fleet = f
	t.Cleanup(f.Close)
	pc, err := pgxpool.ParseConfig("")
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig = pg.NewDatabase(t)
	if s.db, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.db.Close)
	checker, err := warm.NewChecker(warm.Config{KV: s.cli, Prefix: e2ePrefix, AgentToken: f.AgentToken(), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(checker.Close)
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: s.cli, Prefix: e2ePrefix, Secret: f.RuntimeSecret(), AckTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	sl, err := NewSlack(SlackConfig{Token: "xoxb-test", APIURL: s.slack.APIURL(), MinInterval: 10 * time.Millisecond, JoinChannels: true, Logger: log.Named("slack")})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := commands.New(commands.Config{
		Etcd: s.cli, Prefix: e2ePrefix, Warm: checker, Runtime: sig, Owner: sess, DB: s.db, Groups: sl,
		Access: commands.Access{IncidentChannels: []string{incident, "inc-*"}, RollbackUsers: []string{alice, bob}},
		Logger: log.Named("commands"),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.bot, err = New(Config{Service: svc, Poster: sl, Channels: sl, CardTTL: time.Minute, UpdateInterval: 50 * time.Millisecond, OpsChannel: "C0OPS", Logger: log.Named("bot")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.bot.Close(ctx)
	})
	h, err := NewHTTPHandler(HTTPConfig{SigningSecret: []byte(secretKey), Handler: s.bot, Logger: log.Named("http")})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewServer(h)
	t.Cleanup(s.srv.Close)
	s.slack.SetChannel(incident, "inc-2231-latency", false, true)
	return s
}

// send posts a signed form to the bot's Slack endpoint.
func (s *stack) send(t *testing.T, path string, form url.Values, secret string, at time.Time) *http.Response {
	t.Helper()
	body := form.Encode()
	req, err := http.NewRequest(http.MethodPost, s.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%s:%s", ts, body)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (s *stack) slash(t *testing.T, user, channel, text string) (*http.Response, string) {
	t.Helper()
	name := map[string]string{incident: "inc-2231-latency", "G0PRIV": "inc-2232-private"}[channel]
	if name == "" {
		name = "random"
	}
	respURL := s.slack.ResponseURL(fmt.Sprintf("slash-%d", time.Now().UnixNano()))
	resp := s.send(t, "/slack/commands", url.Values{
		"command": {"/rollback"}, "text": {text}, "user_id": {user}, "user_name": {strings.ToLower(user)},
		"channel_id": {channel}, "channel_name": {name}, "team_id": {"T0"},
		"response_url": {respURL}, "trigger_id": {fmt.Sprintf("1.%d.abc", time.Now().UnixNano())},
	}, secretKey, time.Now())
	return resp, respURL
}

func (s *stack) route(t *testing.T) routing.Entry {
	t.Helper()
	e, err := routing.NewStore(s.cli, e2ePrefix, nil).Get(context.Background(), "chat-70b")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// messageWith waits for a message in channel whose text contains want.
func (s *stack) messageWith(t *testing.T, channel, want string) slackfake.Post {
	t.Helper()
	var found slackfake.Post
	s.slack.WaitFor(t, func([]slackfake.Post) bool {
		for _, p := range s.slack.Messages(channel) {
			if strings.Contains(p.Text, want) || strings.Contains(string(p.Blocks), want) {
				found = p
				return true
			}
		}
		return false
	}, 20*time.Second)
	return found
}

// cardValue finds the confirm button's value in a card message.
func cardValue(t *testing.T, p slackfake.Post) string {
	t.Helper()
	var blocks slack.Blocks
	if err := json.Unmarshal(p.Blocks, &blocks); err != nil {
		t.Fatalf("card blocks: %v", err)
	}
	for _, b := range blocks.BlockSet {
		if ab, ok := b.(*slack.ActionBlock); ok {
			for _, el := range ab.Elements.ElementSet {
				if btn, ok := el.(*slack.ButtonBlockElement); ok && btn.ActionID == ActionConfirm {
					return btn.Value
				}
			}
		}
	}
	t.Fatalf("no confirm button in %s", p.Blocks)
	return ""
}

func (s *stack) click(t *testing.T, user, actionID, value, messageTS string) *http.Response {
	t.Helper()
	payload := map[string]any{
		"type": "block_actions", "trigger_id": "2.3.xyz",
		"user":         map[string]any{"id": user, "username": strings.ToLower(user)},
		"channel":      map[string]any{"id": incident, "name": "inc-2231-latency"},
		"container":    map[string]any{"type": "message", "message_ts": messageTS, "channel_id": incident},
		"message":      map[string]any{"ts": messageTS},
		"response_url": s.slack.ResponseURL(fmt.Sprintf("click-%d", time.Now().UnixNano())),
		"actions":      []map[string]any{{"action_id": actionID, "block_id": "card", "type": "button", "value": value}},
	}
	b, _ := json.Marshal(payload)
	return s.send(t, "/slack/interactions", url.Values{"payload": {string(b)}}, secretKey, time.Now())
}

func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	b, _ := io.ReadAll(r)
	return string(b)
}

func TestSlashRollbackNow(t *testing.T) {
	s := newStack(t)
	before := s.route(t)
	resp, _ := s.slash(t, alice, incident, "chat-70b --now latency spike after v42")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ack status %d: %s", resp.StatusCode, readAll(t, resp.Body))
	}
	report := s.messageWith(t, incident, "rolled back v42 → v41")
	summary := s.messageWith(t, incident, "audit row")
	if summary.ThreadTS != report.TS {
		t.Errorf("audit summary not in the report's thread: %+v", summary)
	}
	after := s.route(t)
	if after.Config.Active != "v41" || after.Config.Actor != alice || after.Config.Epoch != before.Config.Epoch+1 {
		t.Errorf("route after: %+v", after.Config)
	}
	s.bot.Wait()
	reports := 0
	for _, p := range s.slack.Messages(incident) {
		if strings.Contains(p.Text, "rolled back v42 → v41") {
			reports++
		}
	}
	if reports != 1 {
		t.Errorf("%d report messages, want 1", reports)
	}
}

func TestCardConfirm(t *testing.T) {
	s := newStack(t)
	before := s.route(t)
	s.slash(t, alice, incident, "chat-70b bad deploy")
	card := s.messageWith(t, incident, ActionConfirm)
	value := cardValue(t, card)

	t.Run("UnauthorizedClickRefused", func(t *testing.T) {
		s.click(t, mallory, ActionConfirm, value, card.TS)
		s.slack.WaitFor(t, func(ps []slackfake.Post) bool {
			for _, p := range ps {
				if p.Method == "response_url" && strings.Contains(p.Text, "may not") {
					return true
				}
			}
			return false
		}, 10*time.Second)
		if s.route(t).ModRevision != before.ModRevision {
			t.Fatal("an unauthorized click flipped the route")
		}
	})
	t.Run("ConfirmRollsBackAsClicker", func(t *testing.T) {
		s.click(t, bob, ActionConfirm, value, card.TS)
		s.messageWith(t, incident, "rolled back v42 → v41")
		after := s.route(t)
		if after.Config.Active != "v41" || after.Config.Actor != bob || after.ModRevision == before.ModRevision {
			t.Errorf("route after confirm: %+v", after.Config)
		}
		// A double click answers with the same op and flips nothing.
		s.click(t, bob, ActionConfirm, value, card.TS)
		s.bot.Wait()
		if again := s.route(t); again.ModRevision != after.ModRevision {
			t.Error("a second click flipped again")
		}
	})
}

func TestRefusedRequestsChangeNothing(t *testing.T) {
	s := newStack(t)
	before := s.route(t)
	t.Run("ForgedSignature", func(t *testing.T) {
		resp := s.send(t, "/slack/commands", url.Values{"command": {"/rollback"}, "text": {"chat-70b --now x"}, "user_id": {alice}, "channel_id": {incident}}, "wrong-secret", time.Now())
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("StaleTimestamp", func(t *testing.T) {
		resp := s.send(t, "/slack/commands", url.Values{"command": {"/rollback"}, "text": {"chat-70b --now x"}, "user_id": {alice}, "channel_id": {incident}}, secretKey, time.Now().Add(-6*time.Minute))
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("WrongChannel", func(t *testing.T) {
		s.slack.SetChannel("C0RANDOM", "random", false, true)
		_, respURL := s.slash(t, alice, "C0RANDOM", "chat-70b --now x")
		s.slack.WaitFor(t, func(ps []slackfake.Post) bool {
			for _, p := range ps {
				if p.Channel == respURL || (p.Method == "response_url" && strings.Contains(p.Text, "incident")) {
					return true
				}
			}
			return false
		}, 10*time.Second)
	})
	t.Run("UnauthorizedUser", func(t *testing.T) {
		s.slash(t, mallory, incident, "chat-70b --now x")
		s.slack.WaitFor(t, func(ps []slackfake.Post) bool {
			for _, p := range ps {
				if p.Method == "response_url" && strings.Contains(p.Text, "may not") {
					return true
				}
			}
			return false
		}, 10*time.Second)
	})
	s.bot.Wait()
	if after := s.route(t); after.ModRevision != before.ModRevision {
		t.Errorf("a refused request changed the route: %+v", after.Config)
	}
	for _, p := range s.slack.Messages(incident) {
		if strings.Contains(p.Text, "rolled back") {
			t.Errorf("a refused request posted %q", p.Text)
		}
	}
}

func TestNotInChannelFallsBackToResponseURL(t *testing.T) {
	s := newStack(t)
	s.slack.SetChannel("G0PRIV", "inc-2232-private", true, false)
	s.slash(t, alice, "G0PRIV", "chat-70b bad deploy")
	s.slack.WaitFor(t, func(ps []slackfake.Post) bool {
		for _, p := range ps {
			if p.Method == "response_url" && p.ResponseType == "in_channel" && strings.Contains(p.Text, "/invite @backflip") {
				return true
			}
		}
		return false
	}, 20*time.Second)
}

func TestSlackErrorsDuringRollback(t *testing.T) {
	s := newStack(t)
	s.slack.Fail("chat.update", 2, http.StatusTooManyRequests, time.Second)
	s.slack.FailAfter("chat.postMessage", 1, http.StatusInternalServerError)
	s.slash(t, alice, incident, "chat-70b --now latency")
	s.messageWith(t, incident, "rolled back v42 → v41")
	s.bot.Wait()
	if s.route(t).Config.Active != "v41" {
		t.Fatal("not rolled back")
	}
	reports, summaries := 0, 0
	for _, p := range s.slack.Messages(incident) {
		if strings.Contains(p.Text, "rolled back v42 → v41") && p.ThreadTS == "" {
			reports++
		}
		if p.ThreadTS != "" && strings.Contains(p.Text, "audit row") {
			summaries++
		}
	}
	if reports != 1 || summaries != 1 {
		t.Errorf("%d reports and %d audit summaries, want 1 each", reports, summaries)
	}
	_ = audit.KindRollback
}

// TestSocketModeEndToEnd: the same rollback through Socket Mode — a fake
// apps.connections.open hands out a loopback WebSocket, a slash command
// envelope arrives, the Bot acknowledges it and the rollback reports in
// the channel.
func TestSocketModeEndToEnd(t *testing.T) {
	s := newStack(t)
	sock := slackfake.NewSocket(t, s.slack)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunSocket(ctx, SocketConfig{AppToken: "xapp-test", BotToken: "xoxb-test", APIURL: s.slack.APIURL(), Handler: s.bot})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunSocket: %v", err)
		}
	}()
	sock.WaitConnections(t, 1, 20*time.Second)
	id := sock.SendSlashCommand(t, slack.SlashCommand{
		Command: "/rollback", Text: "chat-70b --now socket mode works", UserID: alice, UserName: "alice",
		ChannelID: incident, ChannelName: "inc-2231-latency", ResponseURL: s.slack.ResponseURL("socket"), TriggerID: "9.9.sock",
	})
	if ack := sock.WaitAck(t, id, 10*time.Second); !strings.Contains(string(ack), "Rolling back chat-70b") {
		t.Errorf("ack payload %s", ack)
	}
	s.messageWith(t, incident, "rolled back v42 → v41")
	s.bot.Wait()

	// Slack refreshes connections now and then: the bot reconnects and
	// keeps answering.
	sock.Disconnect(t)
	sock.WaitOpened(t, 2, 30*time.Second)
	sock.WaitConnections(t, 1, 30*time.Second)
	id = sock.SendSlashCommand(t, slack.SlashCommand{Command: "/rollback", Text: "help", UserID: alice, ChannelID: incident, ChannelName: "inc-2231-latency", TriggerID: "9.9.help"})
	if ack := sock.WaitAck(t, id, 10*time.Second); !strings.Contains(string(ack), "/rollback") {
		t.Errorf("help ack after the reconnect: %s", ack)
	}
}

func TestExpiredCardChangesNothing(t *testing.T) {
	s := newStack(t)
	before := s.route(t)
	s.slash(t, alice, incident, "chat-70b bad deploy")
	card := s.messageWith(t, incident, ActionConfirm)
	c, err := DecodeCard(cardValue(t, card))
	if err != nil {
		t.Fatal(err)
	}
	c.Exp = time.Now().Add(-time.Second).Unix()
	expired, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	s.click(t, bob, ActionConfirm, expired, card.TS)
	s.messageWith(t, incident, "expired")
	s.bot.Wait()
	if s.route(t).ModRevision != before.ModRevision {
		t.Error("an expired card flipped the route")
	}
}
