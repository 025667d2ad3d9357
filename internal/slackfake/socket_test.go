package slackfake

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

const (
	socketTestToken = "xapp-1-A0BACKFLIP-1-secret"
	socketTestWait  = 30 * time.Second
)

// runSocketClient runs slack-go's own Socket Mode client against the fake,
// the client backflip uses, and returns its events. The client stops when
// the test ends.
func runSocketClient(t *testing.T, s *Server, token string) (*socketmode.Client, <-chan socketmode.Event) {
	t.Helper()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	api := slack.New("xoxb-unused", slack.OptionAppLevelToken(token), slack.OptionAPIURL(s.APIURL()),
		slack.OptionHTTPClient(&http.Client{Transport: transport}))
	client := socketmode.New(api)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	events := make(chan socketmode.Event, 100)
	go func() {
		defer close(done)
		// slack-go v0.35 may end RunContext with context.Canceled when a
		// connection drops (its goroutines race to report why); the bot's
		// RunSocket restarts it, and so does this test client.
		for ctx.Err() == nil {
			_ = client.RunContext(ctx)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	go func() {
		for {
			select {
			case evt := <-client.Events:
				select {
				case events <- evt:
				default:
				}
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		transport.CloseIdleConnections()
	})
	return client, events
}

// nextEvent returns the next event of type typ, skipping the others.
func nextEvent(t *testing.T, events <-chan socketmode.Event, typ socketmode.EventType) socketmode.Event {
	t.Helper()
	deadline := time.After(socketTestWait)
	for {
		select {
		case evt := <-events:
			if evt.Type == typ {
				return evt
			}
		case <-deadline:
			t.Fatalf("no %s event within %s", typ, socketTestWait)
		}
	}
}

func TestSocketSlashCommandRoundTrip(t *testing.T) {
	s := New(t)
	sock := NewSocket(t, s)
	sock.SetAppToken(socketTestToken)
	client, events := runSocketClient(t, s, socketTestToken)
	nextEvent(t, events, socketmode.EventTypeHello)

	id := sock.SendSlashCommand(t, slack.SlashCommand{
		Command: "/rollback", Text: "chat-70b <v41> & more", UserID: "U1", UserName: "amy",
		ChannelID: "C1", ChannelName: "inc-1", ResponseURL: s.ResponseURL("C1"),
	})
	evt := nextEvent(t, events, socketmode.EventTypeSlashCommand)
	cmd, ok := evt.Data.(slack.SlashCommand)
	if !ok || evt.Request == nil {
		t.Fatalf("event data %T, request %v", evt.Data, evt.Request)
	}
	if evt.Request.EnvelopeID != id || !evt.Request.AcceptsResponsePayload {
		t.Errorf("request %+v, want envelope %s accepting a payload", evt.Request, id)
	}
	// Slack escapes what people type; the fake must too, or the bot's
	// unescaping is never exercised.
	if cmd.Text != "chat-70b &lt;v41&gt; &amp; more" || cmd.Command != "/rollback" || cmd.UserID != "U1" ||
		cmd.TeamID != TeamID || cmd.APIAppID != AppID || cmd.ResponseURL != s.ResponseURL("C1") {
		t.Errorf("command %+v", cmd)
	}
	if err := client.Ack(*evt.Request, map[string]string{"response_type": "ephemeral", "text": "hi"}); err != nil {
		t.Fatal(err)
	}
	if got := sock.WaitAck(t, id, socketTestWait); string(got) != `{"response_type":"ephemeral","text":"hi"}` {
		t.Errorf("ack payload %s", got)
	}
	if n := sock.Acks(id); n != 1 {
		t.Errorf("%d acks, want 1", n)
	}
}

func TestSocketBlockActionRoundTrip(t *testing.T) {
	s := New(t)
	sock := NewSocket(t, s)
	client, events := runSocketClient(t, s, socketTestToken)
	nextEvent(t, events, socketmode.EventTypeHello)

	id := sock.SendBlockAction(t, slack.InteractionCallback{
		User:        slack.User{ID: "U1", Name: "amy"},
		Container:   slack.Container{Type: "message", MessageTs: "1.000100", ChannelID: "C1"},
		ResponseURL: s.ResponseURL("C1"),
		TriggerID:   "trigger",
		ActionCallback: slack.ActionCallbacks{BlockActions: []*slack.BlockAction{
			{ActionID: "backflip.confirm", BlockID: "card", Value: "v", Type: "button"},
		}},
	})
	evt := nextEvent(t, events, socketmode.EventTypeInteractive)
	ic, ok := evt.Data.(slack.InteractionCallback)
	if !ok || evt.Request == nil {
		t.Fatalf("event data %T", evt.Data)
	}
	if evt.Request.AcceptsResponsePayload {
		t.Error("a block_actions envelope accepts a response payload; Slack's does not")
	}
	if ic.Type != slack.InteractionTypeBlockActions || len(ic.ActionCallback.BlockActions) != 1 ||
		ic.ActionCallback.BlockActions[0].ActionID != "backflip.confirm" || ic.Container.MessageTs != "1.000100" || ic.User.ID != "U1" {
		t.Errorf("interaction %+v", ic)
	}
	if err := client.Ack(*evt.Request); err != nil {
		t.Fatal(err)
	}
	if got := sock.WaitAck(t, id, socketTestWait); got != nil {
		t.Errorf("ack payload %s, want none", got)
	}
}

func TestSocketDisconnectReconnects(t *testing.T) {
	s := New(t)
	sock := NewSocket(t, s)
	_, events := runSocketClient(t, s, socketTestToken)
	nextEvent(t, events, socketmode.EventTypeHello)
	sock.Disconnect(t)
	sock.WaitOpened(t, 2, socketTestWait)
	nextEvent(t, events, socketmode.EventTypeHello)
	sock.WaitConnections(t, 1, socketTestWait)
	if n := s.Calls(MethodConnectionsOpen); n != 2 {
		t.Errorf("apps.connections.open called %d times, want 2", n)
	}
}

// TestSocketOpenRefused checks apps.connections.open's answers to bad
// tokens, as Slack gives them.
func TestSocketOpenRefused(t *testing.T) {
	s := New(t)
	sock := NewSocket(t, s)
	sock.SetAppToken(socketTestToken)
	tests := []struct{ name, token, want string }{
		{"NoToken", "", "not_authed"},
		{"BotToken", "xoxb-1-bot", "not_allowed_token_type"},
		{"WrongAppToken", "xapp-1-other", "invalid_auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			transport := http.DefaultTransport.(*http.Transport).Clone()
			defer transport.CloseIdleConnections()
			api := slack.New("", slack.OptionAppLevelToken(tt.token), slack.OptionAPIURL(s.APIURL()),
				slack.OptionHTTPClient(&http.Client{Transport: transport}))
			_, _, err := api.StartSocketModeContext(context.Background())
			var se slack.SlackErrorResponse
			if !errors.As(err, &se) || se.Err != tt.want {
				t.Errorf("error %v, want %s", err, tt.want)
			}
		})
	}
}

// TestSocketTicketSingleUse checks that a connection URL works once, as
// Slack's do, so a client that reconnects must open a new one.
func TestSocketTicketSingleUse(t *testing.T) {
	s := New(t)
	sock := NewSocket(t, s)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	api := slack.New("", slack.OptionAppLevelToken(socketTestToken), slack.OptionAPIURL(s.APIURL()),
		slack.OptionHTTPClient(&http.Client{Transport: transport}))
	_, wsURL, err := api.StartSocketModeContext(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(wsURL, "ws://127.0.0.1:") {
		t.Errorf("URL %s is not loopback ws://", wsURL)
	}
	conn, resp, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	var hello struct {
		Type           string `json:"type"`
		ConnectionInfo struct {
			AppID string `json:"app_id"`
		} `json:"connection_info"`
	}
	if err := conn.ReadJSON(&hello); err != nil || hello.Type != "hello" || hello.ConnectionInfo.AppID != AppID {
		t.Errorf("first message %+v (%v), want hello", hello, err)
	}
	sock.WaitConnections(t, 1, socketTestWait)

	_, resp, err = websocket.DefaultDialer.Dial(wsURL, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("second dial: %v, want 401", err)
	}
	if resp != nil {
		_ = resp.Body.Close()
	}
	_ = conn.Close()
	sock.WaitConnections(t, 0, socketTestWait)
}

func TestSocketEnvelopeShape(t *testing.T) {
	// The payload Slack sends for a slash command has only string values
	// (is_enterprise_install included), which slack-go must accept.
	raw, err := json.Marshal(slashPayload(slack.SlashCommand{Command: "/drill", Text: "list"}))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range m {
		if _, ok := v.(string); !ok {
			t.Errorf("%s is %T, want a string", k, v)
		}
	}
	var cmd slack.SlashCommand
	if err := json.Unmarshal(raw, &cmd); err != nil || cmd.Command != "/drill" {
		t.Errorf("slack-go decodes %s as %+v (%v)", raw, cmd, err)
	}
}
