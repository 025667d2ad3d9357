package slackfake

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// The identity the fake's token belongs to, as auth.test reports it.
const (
	BotUserID = "U0BACKFLIP"
	BotID     = "B0BACKFLIP"
	TeamID    = "T0BACKFLIP"
)

// Method names for the endpoints that are not Web API methods, for Fail,
// FailAfter, Delay and Calls.
const (
	// MethodResponseURL is every response_url made by ResponseURL.
	MethodResponseURL = "response_url"
	// MethodUpload is the upload URL files.getUploadURLExternal hands out.
	MethodUpload = "upload"
)

// Slack's limits that the fake enforces, so a message Slack would refuse
// is refused in tests too.
const (
	maxBlocks          = 50
	maxSectionText     = 3000
	maxSectionField    = 2000
	maxSectionFields   = 10
	maxHeaderText      = 150
	maxMessageText     = 40000
	responseURLUses    = 5
	defaultPageSize    = 100
	maxPageSize        = 999
	unknownMethodError = "unknown_method"
)

// Post is one recorded write: a chat.postMessage, chat.update or
// chat.postEphemeral call, or a post to a response_url.
type Post struct {
	// Method is the Web API method, or MethodResponseURL.
	Method string
	// Channel is the channel ID; for a response_url post it is the name
	// given to ResponseURL.
	Channel string
	// TS is the message's ts (for chat.update the message updated, for
	// chat.postEphemeral its message_ts; empty for response_url posts).
	TS string
	// ThreadTS is the thread the message is in, "" outside threads.
	ThreadTS string
	// Text and Blocks are the message after the call: for chat.update the
	// whole updated message, not only what the call changed. Blocks is the
	// JSON array, nil when the message has none.
	Text   string
	Blocks json.RawMessage
	// User is the recipient of an ephemeral message and the bot's user ID
	// for channel messages.
	User string
	// ReplaceOriginal and ResponseType are set on response_url posts;
	// ResponseType is "ephemeral" when the post did not say.
	ReplaceOriginal bool
	ResponseType    string
	// At is when the fake recorded the call.
	At time.Time
}

// File is a file uploaded through files.getUploadURLExternal and the
// upload URL, and shared (or not) by files.completeUploadExternal.
type File struct {
	ID    string
	Name  string
	Title string
	// Length is what files.getUploadURLExternal was told; Data is what was
	// uploaded.
	Length int
	Data   []byte
	// Completed is set by files.completeUploadExternal, with the channel
	// and thread the file was shared into (empty when it was completed
	// without sharing).
	Completed bool
	Channel   string
	ThreadTS  string
	// InitialComment is the message posted with the file.
	InitialComment string
}

// Server is a fake Slack Web API. Its methods are safe for concurrent use.
type Server struct {
	srv  *httptest.Server
	mux  *http.ServeMux
	base string

	mu sync.Mutex
	// changed is closed and replaced whenever something is recorded, so
	// WaitFor can sleep until there is news instead of polling.
	changed   chan struct{}
	token     string
	lastTS    int64 // microseconds since the epoch of the last ts handed out
	posts     []Post
	messages  map[string][]*message
	channels  map[string]*channel
	groups    map[string][]string
	faults    map[string][]*fault
	calls     map[string]int
	files     map[string]*File
	fileOrder []string
	responses map[string]int
}

// message is the current state of one channel message.
type message struct {
	ts, threadTS string
	text         string
	blocks       json.RawMessage
	at           time.Time
}

type channel struct {
	id, name        string
	private, member bool
	created         int64
}

type faultKind int

const (
	faultBefore faultKind = iota
	faultAfter
	faultSlackError
	faultDelay
)

type fault struct {
	kind       faultKind
	left       int
	status     int
	retryAfter time.Duration
	code       string
	delay      time.Duration
}

// reply is the fields of a Web API answer besides "ok".
type reply = map[string]any

// apiFunc serves one Web API method, called with the server locked. It
// returns the answer's fields, or a Slack error code.
type apiFunc func(form url.Values) (reply, string)

// New starts a fake Slack and closes it when the test ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		mux:       http.NewServeMux(),
		changed:   make(chan struct{}),
		messages:  map[string][]*message{},
		channels:  map[string]*channel{},
		groups:    map[string][]string{},
		faults:    map[string][]*fault{},
		calls:     map[string]int{},
		files:     map[string]*File{},
		responses: map[string]int{},
	}
	for method, fn := range map[string]apiFunc{
		"auth.test":                    s.authTest,
		"chat.postMessage":             s.postMessage,
		"chat.update":                  s.update,
		"chat.postEphemeral":           s.postEphemeral,
		"conversations.join":           s.join,
		"conversations.info":           s.info,
		"conversations.history":        s.history,
		"conversations.replies":        s.replies,
		"usergroups.users.list":        s.usergroupUsers,
		"files.getUploadURLExternal":   s.getUploadURL,
		"files.completeUploadExternal": s.completeUpload,
	} {
		s.HandleMethod(method, fn)
	}
	s.mux.Handle("POST /upload/v1/{id}", s.withFaults(MethodUpload, http.HandlerFunc(s.upload)))
	s.mux.Handle("POST /response/{name}", s.withFaults(MethodResponseURL, http.HandlerFunc(s.respond)))
	s.mux.HandleFunc("/", s.unknownMethod)
	s.srv = httptest.NewServer(s.mux)
	s.base = s.srv.URL + "/"
	tb.Cleanup(s.srv.Close)
	return s
}

// APIURL is the base URL of the Web API, ending in "/", for
// slack.OptionAPIURL.
func (s *Server) APIURL() string { return s.base }

// ResponseURL returns a response_url that records what is posted to it
// (Method MethodResponseURL, Channel name). Like Slack's, it accepts five
// posts and answers 404 used_url after that. name is free; the channel ID
// the command came from is a good choice.
func (s *Server) ResponseURL(name string) string {
	return s.base + "response/" + url.PathEscape(name)
}

// HandleFunc serves pattern (an http.ServeMux pattern) on the fake, for
// endpoints this file does not know, such as Socket Mode's.
func (s *Server) HandleFunc(pattern string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, h)
}

// SetToken makes the fake accept only token; by default any non-empty
// token is accepted.
func (s *Server) SetToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
}

// SetUsergroup sets the members of a user group.
func (s *Server) SetUsergroup(id string, members ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups[id] = slices.Clone(members)
}

// SetChannel describes a channel. Channels never set exist as public
// channels named after their ID in lower case, with the bot a member, so
// tests that do not care about membership need not set anything.
func (s *Server) SetChannel(id, name string, private, member bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channelLocked(id)
	c.name, c.private, c.member = name, private, member
}

// IsMember reports whether the bot is a member of the channel (it becomes
// one through conversations.join).
func (s *Server) IsMember(channelID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.channelLocked(channelID).member
}

// Fail makes the next n calls of method answer status without doing
// anything, as FailBefore does.
func (s *Server) Fail(method string, n, status int, retryAfter time.Duration) {
	s.FailBefore(method, n, status, retryAfter)
}

// FailBefore makes the next n calls of method answer status without doing
// anything: nothing is recorded, as when Slack refuses a call at its edge.
// A 429 carries Retry-After (whole seconds, rounded up; 0 is sent as "0");
// other statuses carry an HTML body, as Slack's 5xx pages do.
func (s *Server) FailBefore(method string, n, status int, retryAfter time.Duration) {
	s.addFault(method, &fault{kind: faultBefore, left: n, status: status, retryAfter: retryAfter})
}

// FailAfter makes the next n calls of method do their work (the post is
// recorded, the message exists) and then answer status: the case where the
// caller cannot know whether its call took effect.
func (s *Server) FailAfter(method string, n, status int) {
	s.addFault(method, &fault{kind: faultAfter, left: n, status: status})
}

// SlackError makes the next n calls of method answer 200 with
// {"ok":false,"error":code} and do nothing. For missing_scope the answer
// names the scope the method needs ("needed") and the ones the app has
// ("provided"), as Slack's does.
func (s *Server) SlackError(method string, n int, code string) {
	s.addFault(method, &fault{kind: faultSlackError, left: n, code: code})
}

// Delay makes the next n calls of method do their work and then wait d
// (or until the client goes away) before answering, for client timeouts
// whose outcome is unknown.
func (s *Server) Delay(method string, n int, d time.Duration) {
	s.addFault(method, &fault{kind: faultDelay, left: n, delay: d})
}

func (s *Server) addFault(method string, f *fault) {
	if f.left <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[method] = append(s.faults[method], f)
}

// Calls is how many times method was called, failed calls included.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// Posts returns every recorded chat.postMessage, chat.update,
// chat.postEphemeral and response_url post, in the order they happened.
func (s *Server) Posts() []Post {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.posts)
}

// Messages returns the current state of every message posted to channel
// with chat.postMessage (updates applied, At the time of the last change),
// thread replies included, in the order they were posted. Ephemeral
// messages and response_url posts are not channel state and are left out.
func (s *Server) Messages(channelID string) []Post {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Post, 0, len(s.messages[channelID]))
	for _, m := range s.messages[channelID] {
		out = append(out, Post{
			Method:   "chat.postMessage",
			Channel:  channelID,
			TS:       m.ts,
			ThreadTS: m.threadTS,
			Text:     m.text,
			Blocks:   slices.Clone(m.blocks),
			User:     BotUserID,
			At:       m.at,
		})
	}
	return out
}

// Files returns the uploaded files in upload order.
func (s *Server) Files() []File {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]File, 0, len(s.fileOrder))
	for _, id := range s.fileOrder {
		f := *s.files[id]
		f.Data = slices.Clone(f.Data)
		out = append(out, f)
	}
	return out
}

// WaitFor waits until cond holds for the recorded posts and returns them;
// it fails the test if that takes longer than timeout. Like tb.Fatal, it
// must be called from the test's goroutine.
func (s *Server) WaitFor(tb testing.TB, cond func([]Post) bool, timeout time.Duration) []Post {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		posts, changed := slices.Clone(s.posts), s.changed
		s.mu.Unlock()
		if cond(posts) {
			return posts
		}
		select {
		case <-changed:
		case <-deadline.C:
			var b strings.Builder
			for _, p := range posts {
				fmt.Fprintf(&b, "\n  %s %s ts=%s thread=%s %q", p.Method, p.Channel, p.TS, p.ThreadTS, p.Text)
			}
			tb.Fatalf("slackfake: condition not met within %s; %d posts:%s", timeout, len(posts), b.String())
			return nil
		}
	}
}

// HandleMethod serves a Web API method with the fake's bookkeeping: calls
// are counted, faults applied, the token checked and the answer written as
// Slack writes it. fn runs with the server locked.
func (s *Server) HandleMethod(method string, fn func(form url.Values) (fields map[string]any, errCode string)) {
	s.mux.Handle("/"+method, s.withFaults(method, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		form, err := readForm(r)
		if err != nil {
			writeJSON(w, http.StatusOK, reply{"ok": false, "error": "invalid_form_data"})
			return
		}
		if code := s.authorize(r, form); code != "" {
			writeJSON(w, http.StatusOK, reply{"ok": false, "error": code})
			return
		}
		if code, ok := r.Context().Value(slackErrorKey{}).(string); ok {
			writeJSON(w, http.StatusOK, errorReply(method, code))
			return
		}
		s.mu.Lock()
		fields, code := fn(form)
		s.mu.Unlock()
		if code != "" {
			writeJSON(w, http.StatusOK, errorReply(method, code))
			return
		}
		out := reply{"ok": true}
		maps.Copy(out, fields)
		writeJSON(w, http.StatusOK, out)
	})))
}

// slackErrorKey carries an injected Slack error code from withFaults to
// the method handler, which answers it after checking the token (Slack
// checks authentication first).
type slackErrorKey struct{}

// withFaults counts the call and applies the next injected fault of
// method around h.
func (s *Server) withFaults(method string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls[method]++
		var f *fault
		if q := s.faults[method]; len(q) > 0 {
			f = q[0]
			if f.left--; f.left == 0 {
				s.faults[method] = q[1:]
			}
		}
		s.mu.Unlock()
		if f == nil {
			h.ServeHTTP(w, r)
			return
		}
		switch f.kind {
		case faultBefore:
			_, _ = io.Copy(io.Discard, r.Body)
			writeStatus(w, f.status, f.retryAfter)
		case faultSlackError:
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), slackErrorKey{}, f.code)))
		case faultAfter:
			h.ServeHTTP(discard{header: http.Header{}}, r)
			writeStatus(w, f.status, 0)
		case faultDelay:
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			t := time.NewTimer(f.delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
			maps.Copy(w.Header(), rec.Header())
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
		}
	})
}

// discard is a ResponseWriter that drops the answer of a call whose
// effect is kept but whose answer is replaced by a failure.
type discard struct{ header http.Header }

func (d discard) Header() http.Header         { return d.header }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}

func writeStatus(w http.ResponseWriter, status int, retryAfter time.Duration) {
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter.Seconds()))))
		writeJSON(w, status, reply{"ok": false, "error": "ratelimited"})
		return
	}
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<html><body><h1>%d %s</h1></body></html>\n", status, http.StatusText(status))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// scopes is the scope each method needs, for missing_scope answers.
var scopes = map[string]string{
	"chat.postMessage":             "chat:write",
	"chat.update":                  "chat:write",
	"chat.postEphemeral":           "chat:write",
	"conversations.join":           "channels:join",
	"conversations.info":           "channels:read,groups:read",
	"conversations.history":        "channels:history,groups:history",
	"conversations.replies":        "channels:history,groups:history",
	"usergroups.users.list":        "usergroups:read",
	"files.getUploadURLExternal":   "files:write",
	"files.completeUploadExternal": "files:write",
}

func errorReply(method, code string) reply {
	out := reply{"ok": false, "error": code}
	if code == "missing_scope" {
		out["needed"] = scopes[method]
		out["provided"] = "commands,chat:write"
	}
	return out
}

// authorize returns the Slack error for a missing or wrong token: Slack
// takes it from the Authorization header or, for form posts, the "token"
// field (slack-go sends chat.* and most methods that way).
func (s *Server) authorize(r *http.Request, form url.Values) string {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		token = form.Get("token")
	}
	if token == "" {
		return "not_authed"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && token != s.token {
		return "invalid_auth"
	}
	return ""
}

// readForm reads a call's arguments from the query and a form or JSON
// body, the encodings Slack accepts.
func readForm(r *http.Request) (url.Values, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		var body map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			return nil, err
		}
		form := r.URL.Query()
		for k, raw := range body {
			var str string
			if json.Unmarshal(raw, &str) == nil {
				form.Set(k, str)
			} else {
				form.Set(k, string(raw))
			}
		}
		return form, nil
	case "multipart/form-data":
		if err := r.ParseMultipartForm(10 << 20); err != nil {
			return nil, err
		}
		return r.Form, nil
	default:
		if err := r.ParseForm(); err != nil {
			return nil, err
		}
		return r.Form, nil
	}
}

func (s *Server) unknownMethod(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls[strings.TrimPrefix(r.URL.Path, "/")]++
	s.mu.Unlock()
	writeJSON(w, http.StatusNotFound, reply{"ok": false, "error": unknownMethodError})
}

// notifyLocked wakes WaitFor.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) recordLocked(p Post) {
	p.At = time.Now()
	s.posts = append(s.posts, p)
	s.notifyLocked()
}

// nextTSLocked returns a ts like Slack's ("1732550400.000123"): seconds and
// microseconds, unique and increasing within the server.
func (s *Server) nextTSLocked() string {
	us := max(time.Now().UnixMicro(), s.lastTS+1)
	s.lastTS = us
	return fmt.Sprintf("%d.%06d", us/1e6, us%1e6)
}

func (s *Server) channelLocked(id string) *channel {
	c, ok := s.channels[id]
	if !ok {
		c = &channel{id: id, name: strings.ToLower(id), member: true, created: time.Now().Unix()}
		s.channels[id] = c
	}
	return c
}

// visibleLocked returns the channel if the bot can see it: Slack answers
// channel_not_found for a private channel the bot is not in.
func (s *Server) visibleLocked(id string) (*channel, string) {
	if id == "" {
		return nil, "channel_not_found"
	}
	c := s.channelLocked(id)
	if c.private && !c.member {
		return nil, "channel_not_found"
	}
	return c, ""
}

// memberLocked returns the channel if the bot may post or read there.
func (s *Server) memberLocked(id string) (*channel, string) {
	c, code := s.visibleLocked(id)
	if code != "" {
		return nil, code
	}
	if !c.member {
		return nil, "not_in_channel"
	}
	return c, ""
}

func (s *Server) findLocked(channelID, ts string) *message {
	for _, m := range s.messages[channelID] {
		if m.ts == ts {
			return m
		}
	}
	return nil
}

func (s *Server) authTest(url.Values) (reply, string) {
	return reply{
		"url":     "https://backflip-fake.slack.com/",
		"team":    "backflip-fake",
		"user":    "backflip",
		"team_id": TeamID,
		"user_id": BotUserID,
		"bot_id":  BotID,
	}, ""
}

// content reads and checks a message's text and blocks as Slack does.
func content(form url.Values) (text string, blocks json.RawMessage, code string) {
	text = form.Get("text")
	if utf8.RuneCountInString(text) > maxMessageText {
		return "", nil, "msg_too_long"
	}
	blocks, code = checkBlocks(form.Get("blocks"))
	if code != "" {
		return "", nil, code
	}
	if text == "" && blocks == nil {
		return "", nil, "no_text"
	}
	return text, blocks, ""
}

func (s *Server) postMessage(form url.Values) (reply, string) {
	ch := form.Get("channel")
	if _, code := s.memberLocked(ch); code != "" {
		return nil, code
	}
	text, blocks, code := content(form)
	if code != "" {
		return nil, code
	}
	// Slack threads a reply under the thread's parent and posts a reply
	// to a message it cannot find as a plain message.
	threadTS := ""
	if parent := s.findLocked(ch, form.Get("thread_ts")); parent != nil {
		threadTS = cmp.Or(parent.threadTS, parent.ts)
	}
	m := &message{ts: s.nextTSLocked(), threadTS: threadTS, text: text, blocks: blocks, at: time.Now()}
	s.messages[ch] = append(s.messages[ch], m)
	s.recordLocked(Post{Method: "chat.postMessage", Channel: ch, TS: m.ts, ThreadTS: threadTS, Text: text, Blocks: blocks, User: BotUserID})
	return reply{"channel": ch, "ts": m.ts, "message": s.messageJSONLocked(ch, m)}, ""
}

func (s *Server) update(form url.Values) (reply, string) {
	ch := form.Get("channel")
	if _, code := s.visibleLocked(ch); code != "" {
		return nil, code
	}
	m := s.findLocked(ch, form.Get("ts"))
	if m == nil {
		return nil, "message_not_found"
	}
	_, hasText := form["text"]
	_, hasBlocks := form["blocks"]
	if !hasText && !hasBlocks {
		return nil, "no_text"
	}
	text, blocks := m.text, m.blocks
	if hasText {
		text = form.Get("text")
		if utf8.RuneCountInString(text) > maxMessageText {
			return nil, "msg_too_long"
		}
	}
	if hasBlocks {
		var code string
		if blocks, code = checkBlocks(form.Get("blocks")); code != "" {
			return nil, code
		}
	}
	if text == "" && blocks == nil {
		return nil, "no_text"
	}
	m.text, m.blocks, m.at = text, blocks, time.Now()
	s.recordLocked(Post{Method: "chat.update", Channel: ch, TS: m.ts, ThreadTS: m.threadTS, Text: text, Blocks: blocks, User: BotUserID})
	return reply{"channel": ch, "ts": m.ts, "text": text, "message": s.messageJSONLocked(ch, m)}, ""
}

func (s *Server) postEphemeral(form url.Values) (reply, string) {
	ch := form.Get("channel")
	if _, code := s.memberLocked(ch); code != "" {
		return nil, code
	}
	user := form.Get("user")
	if user == "" {
		return nil, "user_not_found"
	}
	text, blocks, code := content(form)
	if code != "" {
		return nil, code
	}
	ts := s.nextTSLocked()
	s.recordLocked(Post{Method: "chat.postEphemeral", Channel: ch, TS: ts, ThreadTS: form.Get("thread_ts"), Text: text, Blocks: blocks, User: user})
	return reply{"message_ts": ts}, ""
}

func (s *Server) join(form url.Values) (reply, string) {
	id := form.Get("channel")
	if id == "" {
		return nil, "channel_not_found"
	}
	c := s.channelLocked(id)
	if c.private {
		return nil, "method_not_supported_for_channel_type"
	}
	out := reply{}
	if c.member {
		out["warning"] = "already_in_channel"
		out["response_metadata"] = reply{"warnings": []string{"already_in_channel"}}
	}
	c.member = true
	s.notifyLocked()
	out["channel"] = channelJSON(c)
	return out, ""
}

func (s *Server) info(form url.Values) (reply, string) {
	c, code := s.visibleLocked(form.Get("channel"))
	if code != "" {
		return nil, code
	}
	return reply{"channel": channelJSON(c)}, ""
}

func channelJSON(c *channel) reply {
	return reply{
		"id":              c.id,
		"name":            c.name,
		"name_normalized": c.name,
		"is_channel":      true,
		"is_group":        false,
		"is_im":           false,
		"is_private":      c.private,
		"is_member":       c.member,
		"is_archived":     false,
		"created":         c.created,
	}
}

func (s *Server) history(form url.Values) (reply, string) {
	ch := form.Get("channel")
	if _, code := s.memberLocked(ch); code != "" {
		return nil, code
	}
	inclusive := form.Get("inclusive") == "1" || form.Get("inclusive") == "true"
	oldest, latest := form.Get("oldest"), form.Get("latest")
	var top []reply
	msgs := s.messages[ch]
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		if m.threadTS != "" && m.threadTS != m.ts {
			continue
		}
		if !inRange(m.ts, oldest, latest, inclusive) {
			continue
		}
		top = append(top, s.messageJSONLocked(ch, m))
	}
	page, more, next, code := paginate(top, form)
	if code != "" {
		return nil, code
	}
	return reply{"messages": page, "has_more": more, "pin_count": 0, "response_metadata": reply{"next_cursor": next}}, ""
}

func (s *Server) replies(form url.Values) (reply, string) {
	ch := form.Get("channel")
	if _, code := s.memberLocked(ch); code != "" {
		return nil, code
	}
	parent := s.findLocked(ch, form.Get("ts"))
	if parent == nil {
		return nil, "thread_not_found"
	}
	thread := cmp.Or(parent.threadTS, parent.ts)
	// Slack lists a thread oldest first, the parent message first.
	var out []reply
	for _, m := range s.messages[ch] {
		if m.ts == thread || m.threadTS == thread {
			out = append(out, s.messageJSONLocked(ch, m))
		}
	}
	page, more, next, code := paginate(out, form)
	if code != "" {
		return nil, code
	}
	return reply{"messages": page, "has_more": more, "response_metadata": reply{"next_cursor": next}}, ""
}

// inRange reports whether ts lies between oldest and latest (either may be
// empty), comparing the numbers as Slack does.
func inRange(ts, oldest, latest string, inclusive bool) bool {
	t, _ := strconv.ParseFloat(ts, 64)
	if oldest != "" {
		o, _ := strconv.ParseFloat(oldest, 64)
		if t < o || (t == o && !inclusive) {
			return false
		}
	}
	if latest != "" {
		l, _ := strconv.ParseFloat(latest, 64)
		if t > l || (t == l && !inclusive) {
			return false
		}
	}
	return true
}

// paginate cuts a list by the limit and cursor arguments; cursors are
// opaque base64 like Slack's.
func paginate(all []reply, form url.Values) (page []reply, more bool, next string, code string) {
	limit := defaultPageSize
	if l := form.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, false, "", "invalid_limit"
		}
		if n > 0 {
			limit = min(n, maxPageSize)
		}
	}
	start := 0
	if c := form.Get("cursor"); c != "" {
		b, err := base64.StdEncoding.DecodeString(c)
		if err != nil {
			return nil, false, "", "invalid_cursor"
		}
		n, ok := strings.CutPrefix(string(b), "offset:")
		if start, err = strconv.Atoi(n); !ok || err != nil || start < 0 || start > len(all) {
			return nil, false, "", "invalid_cursor"
		}
	}
	end := min(start+limit, len(all))
	page = all[start:end]
	if page == nil {
		page = []reply{}
	}
	if end < len(all) {
		return page, true, base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "offset:%d", end)), ""
	}
	return page, false, "", ""
}

func (s *Server) messageJSONLocked(ch string, m *message) reply {
	out := reply{
		"type":    "message",
		"user":    BotUserID,
		"bot_id":  BotID,
		"team":    TeamID,
		"text":    m.text,
		"ts":      m.ts,
		"channel": ch,
	}
	if m.blocks != nil {
		out["blocks"] = m.blocks
	}
	if m.threadTS != "" {
		out["thread_ts"] = m.threadTS
	}
	if m.threadTS == "" || m.threadTS == m.ts {
		n, latest := 0, ""
		for _, r := range s.messages[ch] {
			if r.threadTS == m.ts && r.ts != m.ts {
				n, latest = n+1, r.ts
			}
		}
		if n > 0 {
			out["thread_ts"], out["reply_count"], out["latest_reply"] = m.ts, n, latest
		}
	}
	return out
}

func (s *Server) usergroupUsers(form url.Values) (reply, string) {
	members, ok := s.groups[form.Get("usergroup")]
	if !ok {
		return nil, "no_such_subteam"
	}
	return reply{"users": append([]string{}, members...)}, ""
}

func (s *Server) getUploadURL(form url.Values) (reply, string) {
	name := form.Get("filename")
	length, err := strconv.Atoi(form.Get("length"))
	if name == "" || err != nil || length <= 0 {
		return nil, "invalid_arguments"
	}
	id := fmt.Sprintf("F%09d", len(s.fileOrder)+1)
	s.files[id] = &File{ID: id, Name: name, Length: length}
	s.fileOrder = append(s.fileOrder, id)
	return reply{"upload_url": s.base + "upload/v1/" + id, "file_id": id}, ""
}

// upload receives a file's bytes, as a multipart "file" field (what
// slack-go sends) or as the raw body; both are accepted by Slack. The
// upload URL carries its own authority, so no token is checked.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	data, err := readUpload(r)
	if err != nil {
		http.Error(w, "bad upload: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	f, ok := s.files[id]
	if ok {
		f.Data = data
		s.notifyLocked()
	}
	s.mu.Unlock()
	if !ok {
		http.Error(w, "unknown upload URL", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "OK - %d", len(data))
}

func readUpload(r *http.Request) ([]byte, error) {
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "multipart/form-data" {
		return io.ReadAll(r.Body)
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			return nil, fmt.Errorf("no file part: %w", err)
		}
		if part.FormName() == "file" {
			return io.ReadAll(part)
		}
	}
}

func (s *Server) completeUpload(form url.Values) (reply, string) {
	var list []struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	}
	if err := json.Unmarshal([]byte(form.Get("files")), &list); err != nil || len(list) == 0 {
		return nil, "invalid_arguments"
	}
	ch, threadTS := form.Get("channel_id"), form.Get("thread_ts")
	if ch != "" {
		if _, code := s.memberLocked(ch); code != "" {
			return nil, code
		}
	}
	for _, it := range list {
		if f, ok := s.files[it.ID]; !ok || f.Data == nil || f.Completed {
			return nil, "file_not_found"
		}
	}
	out := make([]reply, 0, len(list))
	for _, it := range list {
		f := s.files[it.ID]
		f.Completed, f.Title, f.Channel, f.ThreadTS = true, cmp.Or(it.Title, f.Name), ch, threadTS
		f.InitialComment = form.Get("initial_comment")
		out = append(out, reply{"id": f.ID, "title": f.Title})
	}
	s.notifyLocked()
	return reply{"files": out}, ""
}

func (s *Server) respond(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var body struct {
		Text            string          `json:"text"`
		Blocks          json.RawMessage `json:"blocks"`
		ResponseType    string          `json:"response_type"`
		ReplaceOriginal jsonBool        `json:"replace_original"`
		DeleteOriginal  jsonBool        `json:"delete_original"`
		ThreadTS        string          `json:"thread_ts"`
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		writeJSON(w, http.StatusBadRequest, reply{"ok": false, "error": "invalid_payload"})
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, reply{"ok": false, "error": "invalid_payload"})
		return
	}
	if code, ok := r.Context().Value(slackErrorKey{}).(string); ok {
		writeJSON(w, http.StatusBadRequest, reply{"ok": false, "error": code})
		return
	}
	blocks, code := checkBlocks(string(body.Blocks))
	if code == "" && body.Text == "" && blocks == nil && !body.DeleteOriginal {
		code = "no_text"
	}
	if code != "" {
		writeJSON(w, http.StatusBadRequest, reply{"ok": false, "error": code})
		return
	}
	s.mu.Lock()
	used := s.responses[name]
	if used < responseURLUses {
		s.responses[name] = used + 1
		s.recordLocked(Post{
			Method:          MethodResponseURL,
			Channel:         name,
			ThreadTS:        body.ThreadTS,
			Text:            body.Text,
			Blocks:          blocks,
			ReplaceOriginal: bool(body.ReplaceOriginal),
			ResponseType:    cmp.Or(body.ResponseType, "ephemeral"),
		})
	}
	s.mu.Unlock()
	if used >= responseURLUses {
		writeJSON(w, http.StatusNotFound, reply{"ok": false, "error": "used_url"})
		return
	}
	writeJSON(w, http.StatusOK, reply{"ok": true})
}

// jsonBool accepts true and "true": Slack's examples send both.
type jsonBool bool

func (b *jsonBool) UnmarshalJSON(data []byte) error {
	s := string(bytes.Trim(data, `"`))
	v, err := strconv.ParseBool(cmp.Or(s, "false"))
	*b = jsonBool(v)
	return err
}

// checkBlocks parses a blocks argument and applies Slack's limits: at most
// 50 blocks, section text up to 3000 characters (fields 2000, at most 10),
// header text up to 150, unique block_ids and action_ids. It returns the
// compacted array, nil for none.
func checkBlocks(raw string) (json.RawMessage, string) {
	if strings.TrimSpace(raw) == "" || raw == "null" {
		return nil, ""
	}
	var blocks []json.RawMessage
	if err := json.Unmarshal([]byte(raw), &blocks); err != nil {
		return nil, "invalid_blocks_format"
	}
	if len(blocks) == 0 {
		return nil, ""
	}
	if len(blocks) > maxBlocks {
		return nil, "invalid_blocks"
	}
	blockIDs, actionIDs := map[string]bool{}, map[string]bool{}
	for _, b := range blocks {
		var blk struct {
			Type    string `json:"type"`
			BlockID string `json:"block_id"`
			Text    *struct {
				Text string `json:"text"`
			} `json:"text"`
			Fields []struct {
				Text string `json:"text"`
			} `json:"fields"`
			Elements  []actionElement `json:"elements"`
			Accessory *actionElement  `json:"accessory"`
			Element   *actionElement  `json:"element"`
		}
		if err := json.Unmarshal(b, &blk); err != nil || blk.Type == "" || blockIDs[blk.BlockID] {
			return nil, "invalid_blocks"
		}
		if blk.BlockID != "" {
			blockIDs[blk.BlockID] = true
		}
		switch blk.Type {
		case "section":
			if blk.Text == nil && len(blk.Fields) == 0 {
				return nil, "invalid_blocks"
			}
			if blk.Text != nil && utf8.RuneCountInString(blk.Text.Text) > maxSectionText {
				return nil, "invalid_blocks"
			}
			if len(blk.Fields) > maxSectionFields {
				return nil, "invalid_blocks"
			}
			for _, f := range blk.Fields {
				if utf8.RuneCountInString(f.Text) > maxSectionField {
					return nil, "invalid_blocks"
				}
			}
		case "header":
			if blk.Text == nil || utf8.RuneCountInString(blk.Text.Text) > maxHeaderText {
				return nil, "invalid_blocks"
			}
		}
		// Only an actions block's elements are interactive; a context
		// block's elements are text and images.
		var els []actionElement
		if blk.Type == "actions" {
			els = blk.Elements
		}
		for _, e := range []*actionElement{blk.Accessory, blk.Element} {
			if e != nil {
				els = append(els, *e)
			}
		}
		for _, e := range els {
			if e.ActionID == "" {
				continue
			}
			if actionIDs[e.ActionID] {
				return nil, "invalid_blocks"
			}
			actionIDs[e.ActionID] = true
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(raw)); err != nil {
		return nil, "invalid_blocks_format"
	}
	return buf.Bytes(), ""
}

// actionElement is an interactive element, for its action_id.
type actionElement struct {
	ActionID string `json:"action_id"`
}
