package bot

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"go.uber.org/zap/zaptest"
)

// transportHandler is a Handler that records what a transport hands it and
// answers with fixed replies: the transports are the units under test, and
// what they must get right is what reaches the Handler and what goes back.
type transportHandler struct {
	slashReply  *Reply
	actionReply *Reply
	panics      bool

	mu       sync.Mutex
	slashes  []SlashCommand
	actions  []Action
	contexts []context.Context
}

func (h *transportHandler) Slash(ctx context.Context, cmd SlashCommand) *Reply {
	h.mu.Lock()
	h.slashes = append(h.slashes, cmd)
	h.contexts = append(h.contexts, ctx)
	h.mu.Unlock()
	if h.panics {
		panic("handler bug")
	}
	return h.slashReply
}

func (h *transportHandler) Action(ctx context.Context, act Action) *Reply {
	h.mu.Lock()
	h.actions = append(h.actions, act)
	h.contexts = append(h.contexts, ctx)
	h.mu.Unlock()
	return h.actionReply
}

func (h *transportHandler) recorded() ([]SlashCommand, []Action, []context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]SlashCommand(nil), h.slashes...), append([]Action(nil), h.actions...),
		append([]context.Context(nil), h.contexts...)
}

func (h *transportHandler) calls() int {
	s, a, _ := h.recorded()
	return len(s) + len(a)
}

var _ Handler = (*transportHandler)(nil)

const httpTestSecret = "8f742231b10e8888abcd99yyyzzz85a5"

// httpTestNow is the fixed clock of the HTTP tests, so that "six minutes
// old" means exactly that.
func httpTestNow() time.Time { return time.Unix(1_732_550_400, 0) }

func newTestHTTPHandler(t *testing.T, h Handler) http.Handler {
	t.Helper()
	hh, err := NewHTTPHandler(HTTPConfig{
		SigningSecret: []byte(httpTestSecret),
		Handler:       h,
		Logger:        zaptest.NewLogger(t),
		Now:           httpTestNow,
	})
	if err != nil {
		t.Fatal(err)
	}
	return hh
}

// signedRequest builds a request signed as Slack signs it, with the
// secret and timestamp given.
func signedRequest(path, body, secret string, ts time.Time) *http.Request {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("X-Slack-Request-Timestamp", strconv.FormatInt(ts.Unix(), 10))
	r.Header.Set("X-Slack-Signature", Sign([]byte(secret), ts.Unix(), []byte(body)))
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// slashForm is a slash command as Slack posts it: the text arrives with
// &, < and > escaped.
func slashForm() url.Values {
	return url.Values{
		"token":        {"gIkuvaNzQIHg97ATvDxqgjtO"},
		"team_id":      {"T0001"},
		"team_domain":  {"example"},
		"channel_id":   {"C2147483705"},
		"channel_name": {"privategroup"},
		"user_id":      {"U2147483697"},
		"user_name":    {"steve"},
		"command":      {"/rollback"},
		"text":         {"chat-70b --to v41 latency &gt; 2s &amp; errors &lt;5% (typed &amp;lt;)"},
		"api_app_id":   {"A123456"},
		"response_url": {"https://hooks.slack.com/commands/1234/5678"},
		"trigger_id":   {"13345224609.738474920.8088930838d88f008e0"},
	}
}

func TestHTTPSlashCommand(t *testing.T) {
	blocks := []slack.Block{slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "*pre-flight*", false, false), nil, nil)}
	tests := []struct {
		name  string
		reply *Reply
		want  string
	}{
		{"EphemeralReply", &Reply{Message: Message{Text: "checking", Blocks: blocks}},
			`{"response_type":"ephemeral","text":"checking","blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*pre-flight*"}}]}`},
		{"InChannelReply", &Reply{InChannel: true, Message: Message{Text: "rolling back"}},
			`{"response_type":"in_channel","text":"rolling back"}`},
		{"NoReply", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &transportHandler{slashReply: tt.reply}
			ctx, cancel := context.WithCancel(context.Background())
			r := signedRequest("/slack/commands", slashForm().Encode(), httpTestSecret, httpTestNow()).WithContext(ctx)
			before := time.Now()
			w := serve(newTestHTTPHandler(t, h), r)
			// The request is over: a handler context tied to it would end
			// here and stop the work the command started.
			cancel()

			if w.Code != http.StatusOK {
				t.Fatalf("status %d, want 200 (body %q)", w.Code, w.Body)
			}
			if got := w.Body.String(); tt.want == "" && got != "" {
				t.Errorf("body %q, want empty", got)
			} else if tt.want != "" {
				if ct := w.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q, want application/json", ct)
				}
				assertJSONEqual(t, got, tt.want)
			}
			cmds, acts, ctxs := h.recorded()
			if len(cmds) != 1 || len(acts) != 0 {
				t.Fatalf("handler got %d commands and %d actions, want 1 and 0", len(cmds), len(acts))
			}
			cmd := cmds[0]
			if cmd.Received.Before(before) || cmd.Received.After(time.Now()) {
				t.Errorf("Received %v is not when the request was read", cmd.Received)
			}
			cmd.Received = time.Time{}
			want := SlashCommand{
				Command:     "/rollback",
				Text:        "chat-70b --to v41 latency > 2s & errors <5% (typed &lt;)",
				UserID:      "U2147483697",
				UserName:    "steve",
				ChannelID:   "C2147483705",
				ChannelName: "privategroup",
				TeamID:      "T0001",
				ResponseURL: "https://hooks.slack.com/commands/1234/5678",
				TriggerID:   "13345224609.738474920.8088930838d88f008e0",
			}
			if cmd != want {
				t.Errorf("command\n got %+v\nwant %+v", cmd, want)
			}
			if err := ctxs[0].Err(); err != nil {
				t.Errorf("handler context ended with the request: %v", err)
			}
		})
	}
}

func TestHTTPRetryHeader(t *testing.T) {
	h := &transportHandler{}
	r := signedRequest("/slack/commands", slashForm().Encode(), httpTestSecret, httpTestNow())
	r.Header.Set("X-Slack-Retry-Num", "2")
	r.Header.Set("X-Slack-Retry-Reason", "http_timeout")
	if w := serve(newTestHTTPHandler(t, h), r); w.Code != http.StatusOK {
		t.Fatalf("status %d, want 200", w.Code)
	}
	if cmds, _, _ := h.recorded(); len(cmds) != 1 || cmds[0].Retry != 2 {
		t.Fatalf("commands %+v, want one with Retry 2", cmds)
	}
}

// TestHTTPSignatureRefused covers every way a request can fail
// authentication: each is an empty 401 and never reaches the Handler, on
// every path.
func TestHTTPSignatureRefused(t *testing.T) {
	body := slashForm().Encode()
	tests := []struct {
		name    string
		request func(path string) *http.Request
		now     time.Time
	}{
		{"ForgedSignature", func(p string) *http.Request {
			r := signedRequest(p, body, httpTestSecret, httpTestNow())
			r.Header.Set("X-Slack-Signature", "v0="+strings.Repeat("ab", 32))
			return r
		}, httpTestNow()},
		{"WrongSecret", func(p string) *http.Request {
			return signedRequest(p, body, "not-the-secret", httpTestNow())
		}, httpTestNow()},
		{"BodyChangedAfterSigning", func(p string) *http.Request {
			r := signedRequest(p, body, httpTestSecret, httpTestNow())
			r.Body = io.NopCloser(strings.NewReader(strings.Replace(body, "steve", "mallory", 1)))
			return r
		}, httpTestNow()},
		{"TimestampChangedAfterSigning", func(p string) *http.Request {
			r := signedRequest(p, body, httpTestSecret, httpTestNow())
			r.Header.Set("X-Slack-Request-Timestamp", strconv.FormatInt(httpTestNow().Unix()+1, 10))
			return r
		}, httpTestNow()},
		{"MissingSignature", func(p string) *http.Request {
			r := signedRequest(p, body, httpTestSecret, httpTestNow())
			r.Header.Del("X-Slack-Signature")
			return r
		}, httpTestNow()},
		{"MissingTimestamp", func(p string) *http.Request {
			r := signedRequest(p, body, httpTestSecret, httpTestNow())
			r.Header.Del("X-Slack-Request-Timestamp")
			return r
		}, httpTestNow()},
		{"MissingBothHeaders", func(p string) *http.Request {
			return httptest.NewRequest(http.MethodPost, p, strings.NewReader(body))
		}, httpTestNow()},
		{"NotVersionZero", func(p string) *http.Request {
			r := signedRequest(p, body, httpTestSecret, httpTestNow())
			r.Header.Set("X-Slack-Signature", strings.Replace(r.Header.Get("X-Slack-Signature"), "v0=", "v1=", 1))
			return r
		}, httpTestNow()},
		{"SignatureNotHex", func(p string) *http.Request {
			r := signedRequest(p, body, httpTestSecret, httpTestNow())
			r.Header.Set("X-Slack-Signature", "v0="+strings.Repeat("zz", 32))
			return r
		}, httpTestNow()},
		{"SignatureTruncated", func(p string) *http.Request {
			r := signedRequest(p, body, httpTestSecret, httpTestNow())
			r.Header.Set("X-Slack-Signature", r.Header.Get("X-Slack-Signature")[:40])
			return r
		}, httpTestNow()},
		{"TimestampNotANumber", func(p string) *http.Request {
			r := signedRequest(p, body, httpTestSecret, httpTestNow())
			r.Header.Set("X-Slack-Request-Timestamp", "yesterday")
			return r
		}, httpTestNow()},
		{"SixMinutesOld", func(p string) *http.Request {
			return signedRequest(p, body, httpTestSecret, httpTestNow().Add(-6*time.Minute))
		}, httpTestNow()},
		{"SixMinutesInTheFuture", func(p string) *http.Request {
			return signedRequest(p, body, httpTestSecret, httpTestNow().Add(6*time.Minute))
		}, httpTestNow()},
		// A request captured in flight and sent again later carries a
		// valid signature; only the window stops it.
		{"ReplayedOutsideWindow", func(p string) *http.Request {
			return signedRequest(p, body, httpTestSecret, httpTestNow())
		}, httpTestNow().Add(5*time.Minute + time.Second)},
	}
	for _, tt := range tests {
		for _, path := range []string{"/slack/commands", "/slack/interactions", "/slack/events"} {
			t.Run(tt.name+path, func(t *testing.T) {
				h := &transportHandler{slashReply: &Reply{Message: Message{Text: "must not be sent"}}}
				hh, err := NewHTTPHandler(HTTPConfig{
					SigningSecret: []byte(httpTestSecret),
					Handler:       h,
					Logger:        zaptest.NewLogger(t),
					Now:           func() time.Time { return tt.now },
				})
				if err != nil {
					t.Fatal(err)
				}
				w := serve(hh, tt.request(path))
				if w.Code != http.StatusUnauthorized {
					t.Errorf("status %d, want 401", w.Code)
				}
				if w.Body.Len() != 0 {
					t.Errorf("body %q, want empty: a refusal tells the sender nothing", w.Body)
				}
				if n := h.calls(); n != 0 {
					t.Errorf("handler called %d times", n)
				}
			})
		}
	}
}

// TestHTTPSignatureWindowEdges checks that requests just inside the
// five-minute window, either way, are accepted, so the refusals above are
// the window and not something else.
func TestHTTPSignatureWindowEdges(t *testing.T) {
	for _, skew := range []time.Duration{-5 * time.Minute, 5 * time.Minute, -299 * time.Second, 299 * time.Second} {
		h := &transportHandler{}
		w := serve(newTestHTTPHandler(t, h), signedRequest("/slack/commands", slashForm().Encode(), httpTestSecret, httpTestNow().Add(skew)))
		if w.Code != http.StatusOK || h.calls() != 1 {
			t.Errorf("skew %s: status %d, %d calls; want 200 and 1", skew, w.Code, h.calls())
		}
	}
}

func TestHTTPOversizedBody(t *testing.T) {
	form := slashForm()
	form.Set("text", strings.Repeat("x", defaultMaxBody))
	body := form.Encode()
	for _, chunked := range []bool{false, true} {
		t.Run("Chunked"+strconv.FormatBool(chunked), func(t *testing.T) {
			h := &transportHandler{}
			r := signedRequest("/slack/commands", body, httpTestSecret, httpTestNow())
			if chunked {
				// Without a length the limit is found while reading.
				r.ContentLength = -1
			}
			w := serve(newTestHTTPHandler(t, h), r)
			if w.Code != http.StatusRequestEntityTooLarge {
				t.Errorf("status %d, want 413", w.Code)
			}
			if n := h.calls(); n != 0 {
				t.Errorf("handler called %d times", n)
			}
		})
	}
}

func TestHTTPMethodNotAllowed(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		h := &transportHandler{}
		r := signedRequest("/slack/commands", slashForm().Encode(), httpTestSecret, httpTestNow())
		r.Method = method
		w := serve(newTestHTTPHandler(t, h), r)
		if w.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s: status %d, want 405", method, w.Code)
		}
		if allow := w.Header().Get("Allow"); allow != http.MethodPost {
			t.Errorf("%s: Allow %q, want POST", method, allow)
		}
		if n := h.calls(); n != 0 {
			t.Errorf("%s: handler called %d times", method, n)
		}
	}
}

func TestHTTPMalformedPayload(t *testing.T) {
	noCommand := slashForm()
	noCommand.Del("command")
	tests := []struct {
		name, path, body string
	}{
		{"CommandBadEscape", "/slack/commands", "command=%2Frollback&text=%zz"},
		{"CommandMissing", "/slack/commands", noCommand.Encode()},
		{"InteractionNoPayload", "/slack/interactions", "token=x"},
		{"InteractionNotJSON", "/slack/interactions", url.Values{"payload": {"{not json"}}.Encode()},
		{"InteractionWrongShape", "/slack/interactions", url.Values{"payload": {`{"type":"block_actions","actions":{"a":1}}`}}.Encode()},
		{"EventNotJSON", "/slack/events", "challenge=abc"},
		{"ChallengeMissing", "/slack/events", `{"type":"url_verification"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &transportHandler{}
			w := serve(newTestHTTPHandler(t, h), signedRequest(tt.path, tt.body, httpTestSecret, httpTestNow()))
			if w.Code != http.StatusBadRequest {
				t.Errorf("status %d, want 400", w.Code)
			}
			if got := strings.TrimSpace(w.Body.String()); got != "malformed request" {
				t.Errorf("body %q, want the generic text", got)
			}
			if n := h.calls(); n != 0 {
				t.Errorf("handler called %d times", n)
			}
		})
	}
}

// blockActionsPayload is a block_actions payload in the shape of Slack's
// documented example, for a click on a pre-flight card's button.
func blockActionsPayload(actionID string) string {
	return `{
  "type": "block_actions",
  "user": {"id": "U0CA5", "username": "amy", "name": "amy", "team_id": "T3MDE"},
  "api_app_id": "A0CA5",
  "token": "Shh_its_a_seekrit",
  "container": {"type": "message", "message_ts": "1548261231.000200", "channel_id": "C0CA5", "is_ephemeral": false},
  "trigger_id": "12466734323.1395872398",
  "team": {"id": "T0CA5", "domain": "pocket-calculator"},
  "enterprise": null,
  "is_enterprise_install": false,
  "channel": {"id": "C0CA5", "name": "inc-42"},
  "message": {"type": "message", "user": "U0BACKFLIP", "ts": "1548261231.000200", "text": "pre-flight"},
  "state": {"values": {}},
  "response_url": "https://hooks.slack.com/actions/T0CA5/1234/abcd",
  "actions": [{
    "action_id": "` + actionID + `",
    "block_id": "card",
    "text": {"type": "plain_text", "text": "Roll back", "emoji": true},
    "value": "{\"v\":1,\"id\":\"card-1\"}",
    "style": "danger",
    "type": "button",
    "action_ts": "1548426417.840180"
  }]
}`
}

func TestHTTPBlockActions(t *testing.T) {
	for _, id := range []string{ActionConfirm, ActionCancel} {
		t.Run(id, func(t *testing.T) {
			h := &transportHandler{actionReply: &Reply{Message: Message{Text: "confirmed"}}}
			body := url.Values{"payload": {blockActionsPayload(id)}}.Encode()
			r := signedRequest("/slack/interactions", body, httpTestSecret, httpTestNow())
			r.Header.Set("X-Slack-Retry-Num", "1")
			w := serve(newTestHTTPHandler(t, h), r)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d, want 200", w.Code)
			}
			assertJSONEqual(t, w.Body.String(), `{"response_type":"ephemeral","text":"confirmed"}`)
			_, acts, _ := h.recorded()
			if len(acts) != 1 {
				t.Fatalf("handler got %d actions, want 1", len(acts))
			}
			act := acts[0]
			if act.Received.IsZero() {
				t.Error("Received is not set")
			}
			act.Received = time.Time{}
			want := Action{
				ActionID:    id,
				Value:       `{"v":1,"id":"card-1"}`,
				UserID:      "U0CA5",
				UserName:    "amy",
				ChannelID:   "C0CA5",
				ChannelName: "inc-42",
				MessageTS:   "1548261231.000200",
				ResponseURL: "https://hooks.slack.com/actions/T0CA5/1234/abcd",
				TriggerID:   "12466734323.1395872398",
				Retry:       1,
			}
			if act != want {
				t.Errorf("action\n got %+v\nwant %+v", act, want)
			}
		})
	}
}

func TestHTTPInteractionsIgnored(t *testing.T) {
	tests := []struct{ name, payload string }{
		{"OtherActionID", blockActionsPayload("someone.else")},
		{"NotBlockActions", `{"type":"view_submission","user":{"id":"U1"},"view":{"id":"V1"}}`},
		{"Shortcut", `{"type":"shortcut","callback_id":"x","trigger_id":"t"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &transportHandler{actionReply: &Reply{Message: Message{Text: "must not be sent"}}}
			body := url.Values{"payload": {tt.payload}}.Encode()
			w := serve(newTestHTTPHandler(t, h), signedRequest("/slack/interactions", body, httpTestSecret, httpTestNow()))
			if w.Code != http.StatusOK || w.Body.Len() != 0 {
				t.Errorf("status %d body %q, want an empty 200", w.Code, w.Body)
			}
			if n := h.calls(); n != 0 {
				t.Errorf("handler called %d times", n)
			}
		})
	}
}

func TestHTTPEvents(t *testing.T) {
	t.Run("URLVerification", func(t *testing.T) {
		h := &transportHandler{}
		body := `{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`
		w := serve(newTestHTTPHandler(t, h), signedRequest("/slack/events", body, httpTestSecret, httpTestNow()))
		if w.Code != http.StatusOK {
			t.Fatalf("status %d, want 200", w.Code)
		}
		assertJSONEqual(t, w.Body.String(), `{"challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}`)
	})
	t.Run("EventCallbackAcknowledged", func(t *testing.T) {
		h := &transportHandler{}
		body := `{"token":"x","team_id":"T1","api_app_id":"A1","type":"event_callback","event_id":"Ev123","event_time":1,"event":{"type":"app_mention","user":"U1","text":"hi","ts":"1.2","channel":"C1"}}`
		r := signedRequest("/slack/events", body, httpTestSecret, httpTestNow())
		r.Header.Set("X-Slack-Retry-Num", "1")
		w := serve(newTestHTTPHandler(t, h), r)
		if w.Code != http.StatusOK || w.Body.Len() != 0 {
			t.Errorf("status %d body %q, want an empty 200", w.Code, w.Body)
		}
		if n := h.calls(); n != 0 {
			t.Errorf("handler called %d times", n)
		}
	})
}

func TestHTTPHandlerPanic(t *testing.T) {
	h := &transportHandler{panics: true}
	w := serve(newTestHTTPHandler(t, h), signedRequest("/slack/commands", slashForm().Encode(), httpTestSecret, httpTestNow()))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, want 200", w.Code)
	}
	var got replyPayload
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.ResponseType != "ephemeral" || !strings.Contains(got.Text, "failed") {
		t.Errorf("reply %q (%v), want an ephemeral apology", w.Body, err)
	}
}

func TestHTTPConfig(t *testing.T) {
	h := &transportHandler{}
	tests := []struct {
		name string
		cfg  HTTPConfig
	}{
		{"NoSecret", HTTPConfig{Handler: h}},
		{"NoHandler", HTTPConfig{SigningSecret: []byte("s")}},
		{"NegativeMaxBody", HTTPConfig{SigningSecret: []byte("s"), Handler: h, MaxBody: -1}},
	}
	for _, tt := range tests {
		if _, err := NewHTTPHandler(tt.cfg); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}

// TestHTTPUnescape checks that only what Slack escapes is unescaped.
func TestHTTPUnescape(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		"plain":                  "plain",
		"a &lt;b&gt; &amp; c":    "a <b> & c",
		"&amp;lt; stays escaped": "&lt; stays escaped",
		"&quot;typed&quot;":      "&quot;typed&quot;",
		"&amp;amp;":              "&amp;",
	} {
		if got := unescapeSlack(in); got != want {
			t.Errorf("unescapeSlack(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzHTTPRequests sends arbitrary signed bodies to every path: the
// transport must answer 200 or 400 and never panic.
func FuzzHTTPRequests(f *testing.F) {
	f.Add(0, slashForm().Encode())
	f.Add(1, url.Values{"payload": {blockActionsPayload(ActionConfirm)}}.Encode())
	f.Add(1, url.Values{"payload": {`{"type":"block_actions","actions":[{"action_id":"backflip.cancel"}]}`}}.Encode())
	f.Add(2, `{"type":"url_verification","challenge":"c"}`)
	f.Add(2, `{"type":"event_callback","event":{"type":"x"}}`)
	paths := []string{"/slack/commands", "/slack/interactions", "/slack/events"}
	f.Fuzz(func(t *testing.T, path int, body string) {
		h := &transportHandler{slashReply: &Reply{Message: Message{Text: "ok"}}}
		hh, err := NewHTTPHandler(HTTPConfig{
			SigningSecret: []byte(httpTestSecret),
			Handler:       h,
			Now:           httpTestNow,
		})
		if err != nil {
			t.Fatal(err)
		}
		p := paths[uint(path)%uint(len(paths))]
		w := serve(hh, signedRequest(p, body, httpTestSecret, httpTestNow()))
		if w.Code != http.StatusOK && w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: status %d", p, w.Code)
		}
	})
}

func assertJSONEqual(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("body %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %q is not JSON: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("body\n got %s\nwant %s", gb, wb)
	}
}
