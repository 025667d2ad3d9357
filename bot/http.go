package bot

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"
	"go.uber.org/zap"
)

// Slack's request-signing headers and the retry header of its HTTP
// deliveries.
const (
	headerSignature   = "X-Slack-Signature"
	headerTimestamp   = "X-Slack-Request-Timestamp"
	headerRetryNum    = "X-Slack-Retry-Num"
	headerRetryReason = "X-Slack-Retry-Reason"
)

const (
	// defaultMaxBody bounds what an unauthenticated sender can make the bot
	// read and hash. Slack's slash commands and block_actions payloads are a
	// few KiB; a pre-flight card's interaction, which carries the whole
	// card message, stays well under this.
	defaultMaxBody = 64 << 10
	// signatureWindow is how far a request's timestamp may be from the
	// bot's clock, either way. It is Slack's own recommendation, and it
	// limits how long a captured request can be replayed.
	signatureWindow = 5 * time.Minute
)

// HTTPConfig configures NewHTTPHandler.
type HTTPConfig struct {
	// SigningSecret is the Slack app's signing secret (required).
	SigningSecret []byte
	// Handler answers commands and clicks (required).
	Handler Handler
	// MaxBody is the largest request body read; larger ones are refused
	// with 413. Zero means 64 KiB.
	MaxBody int64
	// Logger receives refusals (at debug level: they are outside input and
	// must not be able to flood the logs) and handler failures. Nil means
	// no logging.
	Logger *zap.Logger
	// Now is the clock request timestamps are checked against. Nil means
	// time.Now. Can be replaced in tests.
	Now func() time.Time
}

// NewHTTPHandler returns the handler of Slack's HTTP deliveries: POST
// /slack/commands (slash commands), /slack/interactions (button clicks) and
// /slack/events (Events API; only url_verification is answered). Mount it
// on the bot's mux under "/slack/"; it matches the full paths.
//
// Every request must carry a valid v0 signature over its raw body and a
// timestamp within five minutes of Now; anything else is refused with an
// empty 401, whose reason is logged at debug level and never told to the
// sender. The acknowledgement is written as soon as the Handler returns:
// this path does no network I/O of its own, so Slack's three-second limit
// is spent only on the Handler.
func NewHTTPHandler(cfg HTTPConfig) (http.Handler, error) {
	if len(cfg.SigningSecret) == 0 {
		return nil, errors.New("slack http: the signing secret is empty")
	}
	if cfg.Handler == nil {
		return nil, errors.New("slack http: no handler")
	}
	if cfg.MaxBody < 0 {
		return nil, fmt.Errorf("slack http: max body %d is negative", cfg.MaxBody)
	}
	h := &httpHandler{
		// The secret is copied so that a caller reusing its slice cannot
		// change what requests are checked against.
		secret:  append([]byte(nil), cfg.SigningSecret...),
		handler: cfg.Handler,
		maxBody: cfg.MaxBody,
		log:     cfg.Logger,
		now:     cfg.Now,
		mux:     http.NewServeMux(),
	}
	if h.maxBody == 0 {
		h.maxBody = defaultMaxBody
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.now == nil {
		h.now = time.Now
	}
	// Method-qualified patterns make the mux answer 405 (with Allow: POST)
	// to anything but POST before any of the request is read.
	h.mux.HandleFunc("POST /slack/commands", h.signed(h.command))
	h.mux.HandleFunc("POST /slack/interactions", h.signed(h.interaction))
	h.mux.HandleFunc("POST /slack/events", h.signed(h.event))
	return h, nil
}

type httpHandler struct {
	secret  []byte
	handler Handler
	maxBody int64
	log     *zap.Logger
	now     func() time.Time
	mux     *http.ServeMux
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// verifiedRequest is a request whose signature has been checked.
type verifiedRequest struct {
	*http.Request
	body []byte
	// received is when the transport started reading the request.
	received time.Time
	// retry is X-Slack-Retry-Num, 0 on a first delivery.
	retry int
}

// signed reads and authenticates a request before next sees it. The
// headers and the timestamp are checked before the body is read, so an
// unsigned or stale request costs neither the read nor the hash.
func (h *httpHandler) signed(next func(http.ResponseWriter, verifiedRequest)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		received := time.Now()
		refuse := func(reason error) {
			h.log.Debug("slack request refused", zap.String("path", r.URL.Path),
				zap.String("remote", r.RemoteAddr), zap.Error(reason))
			w.WriteHeader(http.StatusUnauthorized)
		}
		ts, sig, err := signatureHeaders(r.Header, h.now())
		if err != nil {
			refuse(err)
			return
		}
		if r.ContentLength > h.maxBody {
			h.tooLarge(w, r)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				h.tooLarge(w, r)
				return
			}
			h.log.Debug("slack request unreadable", zap.String("path", r.URL.Path), zap.Error(err))
			http.Error(w, "unreadable request", http.StatusBadRequest)
			return
		}
		if !hmac.Equal(sig, signature(h.secret, ts, body)) {
			refuse(errors.New("signature does not match"))
			return
		}
		retry, _ := strconv.Atoi(r.Header.Get(headerRetryNum))
		if retry > 0 {
			h.log.Debug("slack retried a delivery", zap.String("path", r.URL.Path),
				zap.Int("retry", retry), zap.String("reason", r.Header.Get(headerRetryReason)))
		}
		next(w, verifiedRequest{Request: r, body: body, received: received, retry: max(retry, 0)})
	}
}

func (h *httpHandler) tooLarge(w http.ResponseWriter, r *http.Request) {
	h.log.Debug("slack request too large", zap.String("path", r.URL.Path),
		zap.String("remote", r.RemoteAddr), zap.Int64("limit", h.maxBody))
	http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
}

// signatureHeaders checks the presence and form of the signing headers and
// the age of the timestamp, returning the timestamp as sent (it is hashed
// as text) and the decoded signature.
func signatureHeaders(hdr http.Header, now time.Time) (ts string, sig []byte, err error) {
	ts, sigHex := hdr.Get(headerTimestamp), hdr.Get(headerSignature)
	if ts == "" || sigHex == "" {
		return "", nil, errors.New("signature headers missing")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		// At most 20 bytes of the header are quoted (found by
		// FuzzSlackSignature): the sender is not authenticated yet, and
		// the whole header, up to the server's 1 MB limit, went to the log.
		if len(ts) > 20 {
			ts = ts[:20] + "…"
		}
		return "", nil, fmt.Errorf("timestamp %q is not unix seconds", ts)
	}
	if skew := now.Sub(time.Unix(sec, 0)).Abs(); skew > signatureWindow {
		return "", nil, fmt.Errorf("timestamp is %s away from now", skew.Round(time.Second))
	}
	hexSig, ok := strings.CutPrefix(sigHex, "v0=")
	if !ok {
		return "", nil, errors.New("signature is not v0")
	}
	sig, err = hex.DecodeString(hexSig)
	if err != nil || len(sig) != sha256.Size {
		return "", nil, errors.New("signature is not 32 hex-encoded bytes")
	}
	// Only the lower-case hex Slack sends is accepted (found by
	// FuzzSlackSignature): DecodeString also reads upper case, so changing
	// the case of any digit of a valid header still verified, giving one
	// request many accepted signature headers.
	if hex.EncodeToString(sig) != hexSig {
		return "", nil, errors.New("signature is not lower-case hex")
	}
	return ts, sig, nil
}

// signature is HMAC-SHA256(secret, "v0:" + timestamp + ":" + body).
func signature(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("v0:" + ts + ":"))
	m.Write(body)
	return m.Sum(nil)
}

// Sign returns the X-Slack-Signature value Slack would send for body at
// timestamp (unix seconds, sent as X-Slack-Request-Timestamp). The bot
// never signs; it exists for tests and for `backflip dev`, which play
// Slack against the real endpoints.
func Sign(secret []byte, timestamp int64, body []byte) string {
	return "v0=" + hex.EncodeToString(signature(secret, strconv.FormatInt(timestamp, 10), body))
}

// command serves a slash command.
func (h *httpHandler) command(w http.ResponseWriter, r verifiedRequest) {
	form, err := url.ParseQuery(string(r.body))
	if err != nil {
		h.malformed(w, r, err)
		return
	}
	cmd := slashCommand(slack.SlashCommand{
		Command:     form.Get("command"),
		Text:        form.Get("text"),
		UserID:      form.Get("user_id"),
		UserName:    form.Get("user_name"),
		ChannelID:   form.Get("channel_id"),
		ChannelName: form.Get("channel_name"),
		TeamID:      form.Get("team_id"),
		ResponseURL: form.Get("response_url"),
		TriggerID:   form.Get("trigger_id"),
	}, r.received, r.retry)
	if cmd.Command == "" || cmd.UserID == "" {
		h.malformed(w, r, errors.New("command or user_id missing"))
		return
	}
	// The handler's context must not end with the request: what it starts
	// in the background (a rollback) has to outlive the acknowledgement.
	// WithoutCancel keeps the request's values and drops its cancellation.
	reply := callSlash(context.WithoutCancel(r.Context()), h.handler, cmd, h.log)
	h.writeReply(w, reply)
}

// interaction serves block_actions; other interaction types are
// acknowledged and ignored, since backflip opens no modals and has no
// shortcuts.
func (h *httpHandler) interaction(w http.ResponseWriter, r verifiedRequest) {
	form, err := url.ParseQuery(string(r.body))
	if err != nil {
		h.malformed(w, r, err)
		return
	}
	payload := form.Get("payload")
	if payload == "" {
		h.malformed(w, r, errors.New("payload missing"))
		return
	}
	var ic slack.InteractionCallback
	if err := json.Unmarshal([]byte(payload), &ic); err != nil {
		h.malformed(w, r, err)
		return
	}
	reply := dispatchActions(context.WithoutCancel(r.Context()), h.handler, ic, r.received, r.retry, h.log)
	h.writeReply(w, reply)
}

// event serves the Events API. backflip subscribes to no events, so only
// the url_verification handshake (sent when the request URL is set in the
// app's settings) is answered; anything else is acknowledged and logged.
func (h *httpHandler) event(w http.ResponseWriter, r verifiedRequest) {
	var ev struct {
		Type      string `json:"type"`
		Challenge string `json:"challenge"`
		EventID   string `json:"event_id"`
		Event     struct {
			Type string `json:"type"`
		} `json:"event"`
	}
	if err := json.Unmarshal(r.body, &ev); err != nil {
		h.malformed(w, r, err)
		return
	}
	if ev.Type == "url_verification" {
		if ev.Challenge == "" {
			h.malformed(w, r, errors.New("url_verification without a challenge"))
			return
		}
		writeJSONBody(w, map[string]string{"challenge": ev.Challenge})
		return
	}
	h.log.Debug("slack event ignored", zap.String("type", ev.Type), zap.String("event_type", ev.Event.Type),
		zap.String("event_id", ev.EventID), zap.Int("retry", r.retry))
	w.WriteHeader(http.StatusOK)
}

// malformed answers a signed request that cannot be decoded. The answer is
// generic: the details are for the logs.
func (h *httpHandler) malformed(w http.ResponseWriter, r verifiedRequest, err error) {
	h.log.Debug("slack request malformed", zap.String("path", r.URL.Path), zap.Error(err))
	http.Error(w, "malformed request", http.StatusBadRequest)
}

// writeReply writes the acknowledgement: the reply as JSON, or an empty
// 200 when there is none.
func (h *httpHandler) writeReply(w http.ResponseWriter, reply *Reply) {
	if reply == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	body, err := encodeReply(reply, h.log)
	if err != nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

func writeJSONBody(w http.ResponseWriter, v map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	// A map of strings always marshals, and a failed write means Slack has
	// gone away: there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// replyPayload is a Reply as Slack reads it in an acknowledgement, over
// HTTP and in a Socket Mode ack alike.
type replyPayload struct {
	ResponseType string        `json:"response_type"`
	Text         string        `json:"text"`
	Blocks       []slack.Block `json:"blocks,omitempty"`
}

func newReplyPayload(r *Reply) replyPayload {
	p := replyPayload{ResponseType: slack.ResponseTypeEphemeral, Text: r.Text, Blocks: r.Blocks}
	if r.InChannel {
		p.ResponseType = slack.ResponseTypeInChannel
	}
	return p
}

// encodeReply marshals a reply. When its blocks do not marshal (a bug, but
// one that must not cost the person their answer in an incident) it falls
// back to the text alone.
func encodeReply(r *Reply, log *zap.Logger) ([]byte, error) {
	p := newReplyPayload(r)
	body, err := json.Marshal(p)
	if err == nil {
		return body, nil
	}
	log.Error("reply blocks do not marshal; answering with the text alone", zap.Error(err))
	p.Blocks = nil
	return json.Marshal(p)
}

// slashCommand converts slack-go's decoded command, which both transports
// produce, to the transport-neutral SlashCommand.
func slashCommand(c slack.SlashCommand, received time.Time, retry int) SlashCommand {
	return SlashCommand{
		Command:     c.Command,
		Text:        unescapeSlack(c.Text),
		UserID:      c.UserID,
		UserName:    c.UserName,
		ChannelID:   c.ChannelID,
		ChannelName: c.ChannelName,
		TeamID:      c.TeamID,
		ResponseURL: c.ResponseURL,
		TriggerID:   c.TriggerID,
		Received:    received,
		Retry:       retry,
	}
}

// unescapeSlack undoes the escaping Slack applies to the text people type:
// only &, < and > are encoded (as &amp; &lt; &gt;), so only those are
// decoded; a general HTML unescape would also change an &quot; the person
// typed. &amp; goes last so that a typed "&lt;" (sent as "&amp;lt;") comes
// back as "&lt;" and not "<".
func unescapeSlack(s string) string {
	if !strings.Contains(s, "&") {
		return s
	}
	s = strings.ReplaceAll(s, "&lt;", "<")
	s = strings.ReplaceAll(s, "&gt;", ">")
	return strings.ReplaceAll(s, "&amp;", "&")
}

// dispatchActions calls the Handler for each of backflip's buttons in a
// block_actions callback and returns the first reply. Other interaction
// types and other elements' actions are ignored: backflip only renders
// its confirm and cancel buttons.
func dispatchActions(ctx context.Context, h Handler, ic slack.InteractionCallback, received time.Time, retry int, log *zap.Logger) *Reply {
	if ic.Type != slack.InteractionTypeBlockActions {
		log.Debug("slack interaction ignored", zap.String("type", string(ic.Type)))
		return nil
	}
	var reply *Reply
	for _, a := range ic.ActionCallback.BlockActions {
		if a == nil || (a.ActionID != ActionConfirm && a.ActionID != ActionCancel) {
			continue
		}
		act := Action{
			ActionID:    a.ActionID,
			Value:       a.Value,
			UserID:      ic.User.ID,
			UserName:    ic.User.Name,
			ChannelID:   ic.Channel.ID,
			ChannelName: ic.Channel.Name,
			MessageTS:   ic.Container.MessageTs,
			ResponseURL: ic.ResponseURL,
			TriggerID:   ic.TriggerID,
			Received:    received,
			Retry:       retry,
		}
		// Older payloads and some containers carry these only on the
		// message or the container.
		if act.MessageTS == "" {
			act.MessageTS = ic.Message.Timestamp
		}
		if act.ChannelID == "" {
			act.ChannelID = ic.Container.ChannelID
		}
		if r := callAction(ctx, h, act, log); reply == nil {
			reply = r
		}
	}
	return reply
}

// internalError is the answer when the Handler panics: the person learns
// that their command was not handled instead of seeing nothing. The panic
// itself goes to the logs.
func internalError() *Reply {
	return &Reply{Message: Message{Text: "Sorry, backflip failed to handle this. The details are in its logs."}}
}

// callSlash calls Handler.Slash, turning a panic into a logged error and
// an apology, so that one bad command neither kills the Socket Mode
// connection (a panic on its goroutine would end the process) nor leaves
// the person without an answer.
func callSlash(ctx context.Context, h Handler, cmd SlashCommand, log *zap.Logger) (reply *Reply) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("slash command handler panicked", zap.String("command", cmd.Command),
				zap.String("user", cmd.UserID), zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
			reply = internalError()
		}
	}()
	return h.Slash(ctx, cmd)
}

// callAction is callSlash for clicks.
func callAction(ctx context.Context, h Handler, act Action, log *zap.Logger) (reply *Reply) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("action handler panicked", zap.String("action", act.ActionID),
				zap.String("user", act.UserID), zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
			reply = internalError()
		}
	}()
	return h.Action(ctx, act)
}
