package bot

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/backflip-dev/backflip/internal/slackfake"
)

const (
	socketTestAppToken = "xapp-1-A0BACKFLIP-1-abcdef"
	// socketWait bounds each wait on the fake. It is generous because it
	// only matters when something is broken.
	socketWait = 10 * time.Second
)

// startSocket runs RunSocket against fake and returns stop, which cancels
// its context and returns its result. stop also runs when the test ends,
// so that RunSocket is gone before its logger (the test's) is.
func startSocket(t *testing.T, fake *slackfake.Server, h Handler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunSocket(ctx, SocketConfig{
			AppToken: socketTestAppToken,
			BotToken: "xoxb-test",
			APIURL:   fake.APIURL(),
			Handler:  h,
			Logger:   zaptest.NewLogger(t),
		})
	}()
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(socketWait):
			return errors.New("RunSocket did not return after its context ended")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return stop
}

func TestSocketSlashCommand(t *testing.T) {
	fake := slackfake.New(t)
	sock := slackfake.NewSocket(t, fake)
	sock.SetAppToken(socketTestAppToken)
	h := &transportHandler{slashReply: &Reply{Message: Message{
		Text:   "checking chat-70b",
		Blocks: []slack.Block{slack.NewDividerBlock()},
	}}}
	startSocket(t, fake, h)

	id := sock.SendSlashCommand(t, slack.SlashCommand{
		Command:     "/rollback",
		Text:        "chat-70b --to v41 p99 > 2s & <rising>",
		UserID:      "U2147483697",
		UserName:    "steve",
		ChannelID:   "G0PRIVATE",
		ChannelName: "privategroup",
		ResponseURL: fake.ResponseURL("G0PRIVATE"),
		TriggerID:   "trigger-1",
	})
	payload := sock.WaitAck(t, id, socketWait)
	assertJSONEqual(t, string(payload), `{"response_type":"ephemeral","text":"checking chat-70b","blocks":[{"type":"divider"}]}`)

	cmds, _, ctxs := h.recorded()
	if len(cmds) != 1 {
		t.Fatalf("handler got %d commands, want 1", len(cmds))
	}
	cmd := cmds[0]
	if cmd.Received.IsZero() {
		t.Error("Received is not set")
	}
	cmd.Received = time.Time{}
	want := SlashCommand{
		Command:     "/rollback",
		Text:        "chat-70b --to v41 p99 > 2s & <rising>",
		UserID:      "U2147483697",
		UserName:    "steve",
		ChannelID:   "G0PRIVATE",
		ChannelName: "privategroup",
		TeamID:      slackfake.TeamID,
		ResponseURL: fake.ResponseURL("G0PRIVATE"),
		TriggerID:   "trigger-1",
	}
	if cmd != want {
		t.Errorf("command\n got %+v\nwant %+v", cmd, want)
	}

	// A redelivery carries its attempt number to the Handler, which
	// decides what a retry means.
	retried := sock.SendEnvelope(t, slackfake.EnvelopeSlashCommands, map[string]string{
		"command": "/rollback", "text": "status", "user_id": "U1", "channel_id": "C1",
	}, 2)
	sock.WaitAck(t, retried, socketWait)
	if cmds, _, _ := h.recorded(); len(cmds) != 2 || cmds[1].Retry != 2 {
		t.Errorf("commands %+v, want a second one with Retry 2", cmds)
	}
	if sock.Acks(id) != 1 {
		t.Errorf("envelope acked %d times, want once", sock.Acks(id))
	}
	for _, ctx := range ctxs {
		if ctx.Err() != nil {
			t.Errorf("handler context ended: %v", ctx.Err())
		}
	}
}

func TestSocketBlockAction(t *testing.T) {
	fake := slackfake.New(t)
	sock := slackfake.NewSocket(t, fake)
	// The reply is dropped: Slack takes no payload in the ack of a click.
	h := &transportHandler{actionReply: &Reply{Message: Message{Text: "ignored by Slack"}}}
	startSocket(t, fake, h)

	var ic slack.InteractionCallback
	if err := json.Unmarshal([]byte(blockActionsPayload(ActionConfirm)), &ic); err != nil {
		t.Fatal(err)
	}
	id := sock.SendBlockAction(t, ic)
	if payload := sock.WaitAck(t, id, socketWait); payload != nil {
		t.Errorf("ack payload %s, want none", payload)
	}
	_, acts, _ := h.recorded()
	if len(acts) != 1 {
		t.Fatalf("handler got %d actions, want 1", len(acts))
	}
	act := acts[0]
	act.Received = time.Time{}
	want := Action{
		ActionID:    ActionConfirm,
		Value:       `{"v":1,"id":"card-1"}`,
		UserID:      "U0CA5",
		UserName:    "amy",
		ChannelID:   "C0CA5",
		ChannelName: "inc-42",
		MessageTS:   "1548261231.000200",
		ResponseURL: "https://hooks.slack.com/actions/T0CA5/1234/abcd",
		TriggerID:   "12466734323.1395872398",
	}
	if act != want {
		t.Errorf("action\n got %+v\nwant %+v", act, want)
	}

	// Someone else's button is acknowledged and not handled.
	other := ic
	other.ActionCallback.BlockActions = []*slack.BlockAction{{ActionID: "someone.else", BlockID: "b", Value: "v"}}
	sock.WaitAck(t, sock.SendBlockAction(t, other), socketWait)
	if _, acts, _ := h.recorded(); len(acts) != 1 {
		t.Errorf("handler got %d actions, want still 1", len(acts))
	}
}

func TestSocketEventsAcknowledged(t *testing.T) {
	fake := slackfake.New(t)
	sock := slackfake.NewSocket(t, fake)
	h := &transportHandler{}
	startSocket(t, fake, h)

	id := sock.SendEnvelope(t, slackfake.EnvelopeEventsAPI, map[string]any{
		"token": "x", "team_id": slackfake.TeamID, "api_app_id": slackfake.AppID, "type": "event_callback",
		"event_id": "Ev1", "event_time": 1, "event": map[string]any{"type": "app_mention", "user": "U1", "text": "hi", "ts": "1.2", "channel": "C1"},
	}, 0)
	if payload := sock.WaitAck(t, id, socketWait); payload != nil {
		t.Errorf("ack payload %s, want none", payload)
	}
	if n := h.calls(); n != 0 {
		t.Errorf("handler called %d times", n)
	}
}

// TestSocketReconnect checks that the connection survives what Slack does
// to it: a failed apps.connections.open and a disconnect request.
func TestSocketReconnect(t *testing.T) {
	fake := slackfake.New(t)
	sock := slackfake.NewSocket(t, fake)
	fake.Fail(slackfake.MethodConnectionsOpen, 1, 503, 0)
	h := &transportHandler{slashReply: &Reply{Message: Message{Text: "ok"}}}
	startSocket(t, fake, h)

	sock.WaitOpened(t, 1, socketWait)
	sock.Disconnect(t)
	sock.WaitOpened(t, 2, socketWait)
	id := sock.SendSlashCommand(t, slack.SlashCommand{Command: "/rollback", Text: "status", UserID: "U1", ChannelID: "C1"})
	if payload := sock.WaitAck(t, id, socketWait); !strings.Contains(string(payload), `"ok"`) {
		t.Errorf("ack payload %s, want the reply", payload)
	}
	if n := fake.Calls(slackfake.MethodConnectionsOpen); n != 3 {
		t.Errorf("apps.connections.open called %d times, want 3 (failed, first, after disconnect)", n)
	}
}

// TestSocketShutdown checks that cancelling the context ends RunSocket
// with nil, closes the connection, and leaves no goroutine behind.
func TestSocketShutdown(t *testing.T) {
	fake := slackfake.New(t)
	sock := slackfake.NewSocket(t, fake)
	ignore := goleak.IgnoreCurrent()
	stop := startSocket(t, fake, &transportHandler{})
	sock.WaitConnections(t, 1, socketWait)

	if err := stop(); err != nil {
		t.Fatalf("RunSocket returned %v, want nil", err)
	}
	sock.WaitConnections(t, 0, socketWait)
	goleak.VerifyNone(t, ignore)
}

func TestSocketRefused(t *testing.T) {
	fake := slackfake.New(t)
	sock := slackfake.NewSocket(t, fake)
	sock.SetAppToken("xapp-1-the-right-one")
	h := &transportHandler{}
	tests := []struct {
		name string
		cfg  SocketConfig
	}{
		// Slack's answer to a wrong token cannot change by retrying.
		{"WrongAppToken", SocketConfig{AppToken: "xapp-1-wrong", APIURL: fake.APIURL(), Handler: h}},
		{"BotTokenAsAppToken", SocketConfig{AppToken: "xoxb-1-bot", APIURL: fake.APIURL(), Handler: h}},
		{"NoHandler", SocketConfig{AppToken: "xapp-1-the-right-one", APIURL: fake.APIURL()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), socketWait)
			defer cancel()
			tt.cfg.Logger = zaptest.NewLogger(t)
			if err := RunSocket(ctx, tt.cfg); err == nil || ctx.Err() != nil {
				t.Errorf("RunSocket returned %v (context %v), want an error at once", err, ctx.Err())
			}
		})
	}
}

// TestSocketAckFallbacks checks the acks that must not be lost: a reply
// over Slack's 20 KB ack limit goes as its text alone, and a Handler that
// panics still gets the person an answer.
func TestSocketAckFallbacks(t *testing.T) {
	big := make([]slack.Block, 0, 40)
	for range 40 {
		big = append(big, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, strings.Repeat("x", 600), false, false), nil, nil))
	}
	tests := []struct {
		name    string
		handler *transportHandler
		want    string
	}{
		{"ReplyTooLarge", &transportHandler{slashReply: &Reply{Message: Message{Text: "report", Blocks: big}}},
			`{"response_type":"ephemeral","text":"report"}`},
		{"HandlerPanics", &transportHandler{panics: true},
			`{"response_type":"ephemeral","text":"Sorry, backflip failed to handle this. The details are in its logs."}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := slackfake.New(t)
			sock := slackfake.NewSocket(t, fake)
			startSocket(t, fake, tt.handler)
			id := sock.SendSlashCommand(t, slack.SlashCommand{Command: "/rollback", Text: "history", UserID: "U1", ChannelID: "C1"})
			assertJSONEqual(t, string(sock.WaitAck(t, id, socketWait)), tt.want)
			if n := sock.Acks(id); n != 1 {
				t.Errorf("envelope acked %d times, want once", n)
			}
		})
	}
}
