package slackfake

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
)

// AppID is the app the fake's Socket Mode connections belong to.
const AppID = "A0BACKFLIP"

// MethodConnectionsOpen is the Web API method that opens a Socket Mode
// connection, for Fail, SlackError, Delay and Calls.
const MethodConnectionsOpen = "apps.connections.open"

// Envelope types Slack sends over Socket Mode.
const (
	EnvelopeSlashCommands = "slash_commands"
	EnvelopeInteractive   = "interactive"
	EnvelopeEventsAPI     = "events_api"
)

const (
	// defaultPingInterval is how often the fake pings a connection.
	// slack-go reconnects when no ping arrives for 30 s, so the fake pings
	// well within that, as Slack does.
	defaultPingInterval = 10 * time.Second
	// connectWait is how long Send waits for the bot to connect: a test
	// usually starts the bot and sends at once.
	connectWait = 10 * time.Second
	writeWait   = 5 * time.Second
)

// Socket is the Socket Mode side of a fake Slack: apps.connections.open,
// which hands out a loopback ws:// URL, and the WebSocket behind it, which
// says hello, pings, carries the envelopes a test sends and records the
// bot's acknowledgements. Its methods are safe for concurrent use.
//
// Like Slack, it delivers each envelope over one open connection, expects
// an ack carrying the envelope_id, and accepts a response payload only
// where Slack does (slash commands). It does not redeliver unacked
// envelopes by itself; a test does that with SendEnvelope and a retry
// attempt.
type Socket struct {
	srv      *Server
	upgrader websocket.Upgrader
	ping     time.Duration

	mu sync.Mutex
	// changed is closed and replaced whenever something changes, so waits
	// sleep until there is news instead of polling.
	changed  chan struct{}
	appToken string
	tickets  map[string]bool
	conns    []*socketConn
	opened   int
	acks     map[string][]json.RawMessage
	closed   bool
	// wg counts the connections' handlers, which Close waits for.
	wg sync.WaitGroup
}

// socketConn is one open WebSocket connection. gorilla/websocket allows
// one writer at a time (control frames excepted), hence wmu.
type socketConn struct {
	ws  *websocket.Conn
	wmu sync.Mutex
}

func (c *socketConn) writeJSON(v any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return err
	}
	return c.ws.WriteJSON(v)
}

// NewSocket adds Socket Mode to srv and closes its connections when the
// test ends (before srv itself closes). Call it once per Server. By
// default any app-level token (xapp-…) is accepted.
func NewSocket(tb testing.TB, srv *Server) *Socket {
	tb.Helper()
	k := &Socket{
		srv:     srv,
		ping:    defaultPingInterval,
		changed: make(chan struct{}),
		tickets: map[string]bool{},
		acks:    map[string][]json.RawMessage{},
		// Slack's clients send an Origin of their own; the fake serves
		// loopback only, so every origin is accepted.
		upgrader: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
	}
	srv.mux.Handle("/"+MethodConnectionsOpen, srv.withFaults(MethodConnectionsOpen, http.HandlerFunc(k.open)))
	srv.mux.HandleFunc("GET /link/", k.link)
	tb.Cleanup(k.Close)
	return k
}

// SetAppToken makes apps.connections.open accept only token.
func (k *Socket) SetAppToken(token string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.appToken = token
}

// SetPingInterval changes how often connections opened from now on are
// pinged. A long interval makes slack-go's ping timeout reconnect.
func (k *Socket) SetPingInterval(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ping = d
}

// open serves apps.connections.open: Slack takes the app-level token from
// the Authorization header only, refuses other token types with
// not_allowed_token_type, and answers a single-use wss URL.
func (k *Socket) open(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusOK, reply{"ok": false, "error": "invalid_request"})
		return
	}
	// "Bearer " with an empty token arrives as "Bearer": header values
	// lose their trailing space.
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		token = ""
	}
	k.mu.Lock()
	want := k.appToken
	k.mu.Unlock()
	switch {
	case token == "":
		writeJSON(w, http.StatusOK, reply{"ok": false, "error": "not_authed"})
		return
	case !strings.HasPrefix(token, "xapp-"):
		writeJSON(w, http.StatusOK, reply{"ok": false, "error": "not_allowed_token_type"})
		return
	case want != "" && token != want:
		writeJSON(w, http.StatusOK, reply{"ok": false, "error": "invalid_auth"})
		return
	}
	if code, ok := r.Context().Value(slackErrorKey{}).(string); ok {
		writeJSON(w, http.StatusOK, errorReply(MethodConnectionsOpen, code))
		return
	}
	ticket := uuid.NewString()
	k.mu.Lock()
	k.tickets[ticket] = true
	k.mu.Unlock()
	u := url.URL{Scheme: "ws", Host: r.Host, Path: "/link/", RawQuery: url.Values{"ticket": {ticket}, "app_id": {AppID}}.Encode()}
	writeJSON(w, http.StatusOK, reply{"ok": true, "url": u.String()})
}

// link serves the WebSocket: it redeems the ticket, says hello, pings and
// records acks until the connection closes.
func (k *Socket) link(w http.ResponseWriter, r *http.Request) {
	ticket := r.URL.Query().Get("ticket")
	k.mu.Lock()
	valid := k.tickets[ticket] && !k.closed
	delete(k.tickets, ticket)
	if valid {
		k.wg.Add(1)
	}
	ping := k.ping
	k.mu.Unlock()
	if !valid {
		http.Error(w, "invalid or used ticket", http.StatusUnauthorized)
		return
	}
	defer k.wg.Done()
	ws, err := k.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the client.
	}
	c := &socketConn{ws: ws}
	defer ws.Close()

	// hello is sent before the connection is listed, so that no envelope
	// can overtake it.
	if err := c.writeJSON(reply{
		"type":            "hello",
		"num_connections": 1,
		"debug_info":      reply{"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
		"connection_info": reply{"app_id": AppID},
	}); err != nil {
		return
	}
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.conns = append(k.conns, c)
	k.opened++
	k.notifyLocked()
	k.mu.Unlock()
	defer k.remove(c)

	stop := make(chan struct{})
	var pinger sync.WaitGroup
	defer pinger.Wait()
	defer close(stop)
	pinger.Go(func() {
		// The first ping goes out at once: slack-go counts the interval
		// from the last ping, and has seen none yet.
		t := time.NewTicker(ping)
		defer t.Stop()
		for {
			if err := ws.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(writeWait)); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})

	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var ack struct {
			EnvelopeID string          `json:"envelope_id"`
			Payload    json.RawMessage `json:"payload"`
		}
		if json.Unmarshal(data, &ack) != nil || ack.EnvelopeID == "" {
			continue // Slack ignores what is not an ack.
		}
		k.mu.Lock()
		k.acks[ack.EnvelopeID] = append(k.acks[ack.EnvelopeID], ack.Payload)
		k.notifyLocked()
		k.mu.Unlock()
	}
}

func (k *Socket) remove(c *socketConn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, o := range k.conns {
		if o == c {
			k.conns = append(k.conns[:i:i], k.conns[i+1:]...)
			break
		}
	}
	k.notifyLocked()
}

func (k *Socket) notifyLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}

// wait waits until cond (called with k locked) holds, failing the test
// after timeout with what describes the wait.
func (k *Socket) wait(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		k.mu.Lock()
		ok, changed := cond(), k.changed
		k.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("slackfake socket: %s within %s", what, timeout)
		}
	}
}

// Connections is how many Socket Mode connections are open.
func (k *Socket) Connections() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.conns)
}

// WaitConnections waits until exactly n connections are open (0 to see the
// bot go away), failing the test after timeout.
func (k *Socket) WaitConnections(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	k.wait(tb, timeout, fmt.Sprintf("not %d open connections", n), func() bool { return len(k.conns) == n })
}

// Opened is how many connections have been opened (hello sent) since the
// fake started, the closed ones included.
func (k *Socket) Opened() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.opened
}

// WaitOpened waits until at least n connections have been opened in all,
// failing the test after timeout. After Disconnect, waiting for one more
// than before makes sure the next envelope goes over the new connection.
func (k *Socket) WaitOpened(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	k.wait(tb, timeout, fmt.Sprintf("fewer than %d connections opened", n), func() bool { return k.opened >= n })
}

// SendEnvelope sends a request over the most recent connection, waiting
// up to 10 s for one to open, and returns its envelope_id. payload is
// marshalled as the envelope's payload; retryAttempt is what Slack sets
// when it redelivers an envelope that was not acked.
func (k *Socket) SendEnvelope(tb testing.TB, typ string, payload any, retryAttempt int) string {
	tb.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		tb.Fatalf("slackfake socket: marshal %s payload: %v", typ, err)
	}
	var c *socketConn
	k.wait(tb, connectWait, "no connection open", func() bool {
		if len(k.conns) > 0 {
			c = k.conns[len(k.conns)-1]
		}
		return c != nil
	})
	id := uuid.NewString()
	env := reply{
		"envelope_id": id,
		"type":        typ,
		"payload":     json.RawMessage(raw),
		// Slack takes a response payload in the ack of a slash command
		// only; for clicks and events it must come another way.
		"accepts_response_payload": typ == EnvelopeSlashCommands,
	}
	if retryAttempt > 0 {
		env["retry_attempt"] = retryAttempt
		env["retry_reason"] = "timeout"
	}
	if err := c.writeJSON(env); err != nil {
		tb.Fatalf("slackfake socket: send %s envelope: %v", typ, err)
	}
	return id
}

// SendSlashCommand sends a slash command as Slack does over Socket Mode,
// every field a string, and returns its envelope_id. cmd.Text is what the
// person typed: it is sent escaped (&amp; &lt; &gt;) as Slack sends it.
// Empty TeamID, APIAppID and TriggerID get the fake's values.
func (k *Socket) SendSlashCommand(tb testing.TB, cmd slack.SlashCommand) string {
	tb.Helper()
	return k.SendEnvelope(tb, EnvelopeSlashCommands, slashPayload(cmd), 0)
}

// slashPayload is a slash command's Socket Mode payload.
func slashPayload(cmd slack.SlashCommand) map[string]string {
	or := cmp.Or[string]
	return map[string]string{
		"token":                 or(cmd.Token, "deprecated-verification-token"),
		"team_id":               or(cmd.TeamID, TeamID),
		"team_domain":           or(cmd.TeamDomain, "backflip-fake"),
		"channel_id":            cmd.ChannelID,
		"channel_name":          cmd.ChannelName,
		"user_id":               cmd.UserID,
		"user_name":             cmd.UserName,
		"command":               cmd.Command,
		"text":                  EscapeText(cmd.Text),
		"api_app_id":            or(cmd.APIAppID, AppID),
		"is_enterprise_install": fmt.Sprint(cmd.IsEnterpriseInstall),
		"response_url":          cmd.ResponseURL,
		"trigger_id":            or(cmd.TriggerID, "13345224609.738474920.8088930838d88f008e0"),
	}
}

// EscapeText escapes text the way Slack does in what people type: &, <
// and > only.
func EscapeText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// SendBlockAction sends a block_actions interaction (Type is set when
// empty) and returns its envelope_id.
func (k *Socket) SendBlockAction(tb testing.TB, payload slack.InteractionCallback) string {
	tb.Helper()
	if payload.Type == "" {
		payload.Type = slack.InteractionTypeBlockActions
	}
	if payload.APIAppID == "" {
		payload.APIAppID = AppID
	}
	// InteractionCallback marshals its state through a pointer method.
	return k.SendEnvelope(tb, EnvelopeInteractive, &payload, 0)
}

// Disconnect asks every open connection to reconnect, as Slack does
// before it retires a connection (type "disconnect", reason
// "refresh_requested"). Slack then closes the connection; the fake lets
// the client do it, and closes what is left when the test ends.
func (k *Socket) Disconnect(tb testing.TB) {
	tb.Helper()
	k.mu.Lock()
	conns := append([]*socketConn(nil), k.conns...)
	k.mu.Unlock()
	for _, c := range conns {
		if err := c.writeJSON(reply{
			"type":       "disconnect",
			"reason":     "refresh_requested",
			"debug_info": reply{"host": "applink-fake"},
		}); err != nil {
			tb.Errorf("slackfake socket: send disconnect: %v", err)
		}
	}
	// Slack closes the connection soon after the warning; so does the
	// fake, so a client that ignored the message still has to reconnect.
	time.Sleep(100 * time.Millisecond)
	for _, c := range conns {
		_ = c.ws.Close()
	}
}

// WaitAck waits for the ack of envelopeID and returns its payload (nil
// for an ack without one), failing the test after timeout. Like tb.Fatal,
// it must be called from the test's goroutine.
func (k *Socket) WaitAck(tb testing.TB, envelopeID string, timeout time.Duration) json.RawMessage {
	tb.Helper()
	var payload json.RawMessage
	k.wait(tb, timeout, "no ack for envelope "+envelopeID, func() bool {
		acks, ok := k.acks[envelopeID]
		if ok {
			payload = acks[0]
		}
		return ok
	})
	if len(payload) == 0 || string(payload) == "null" {
		return nil
	}
	return append(json.RawMessage(nil), payload...)
}

// Acks is how many times envelopeID was acknowledged (one is right; Slack
// ignores the others).
func (k *Socket) Acks(envelopeID string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.acks[envelopeID])
}

// Close closes every connection and waits for their handlers. Later
// connection attempts are refused. It is called when the test ends.
func (k *Socket) Close() {
	k.mu.Lock()
	k.closed = true
	conns := append([]*socketConn(nil), k.conns...)
	k.mu.Unlock()
	for _, c := range conns {
		msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "fake closing")
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		_ = c.ws.Close()
	}
	k.wg.Wait()
}
