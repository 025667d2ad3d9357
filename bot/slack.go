package bot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/commands"
)

// Defaults of SlackConfig.
const (
	// DefaultMinInterval is Slack's chat.postMessage limit: about one
	// message a second per channel.
	DefaultMinInterval       = time.Second
	DefaultUsergroupCacheTTL = 5 * time.Minute
	DefaultChannelCacheTTL   = 10 * time.Minute
	DefaultMaxRetries        = 3
	DefaultRetryBackoff      = 500 * time.Millisecond
	// defaultHTTPTimeout bounds one call when no HTTPClient is given: long
	// enough for a slow Slack, short enough that a hung connection becomes
	// a retry rather than a stuck report.
	defaultHTTPTimeout = 30 * time.Second
	// maxBackoff caps the doubling waits between retries.
	maxBackoff = 10 * time.Second
	// historyLookback is how many recent channel messages are searched
	// for a Message.Key: reports are looked for seconds after they were
	// posted, and a channel rarely gets 20 messages in that time.
	historyLookback = 20
	// repliesPageSize and repliesPages bound the search of a thread.
	repliesPageSize = 200
	repliesPages    = 5
	// maxResponseURLAttempts: a response_url works 5 times in 30 minutes
	// and the callers use up to 3, so one call never spends more than 2.
	maxResponseURLAttempts = 2
	// maxCacheEntries is when the caches drop expired entries.
	maxCacheEntries = 512
)

// Slack error codes the client acts on.
const (
	codeNotInChannel    = "not_in_channel"
	codeChannelNotFound = "channel_not_found"
	codeMissingScope    = "missing_scope"
	codeThreadNotFound  = "thread_not_found"
)

// SlackConfig configures the Slack Web API client.
type SlackConfig struct {
	// Token is the bot token (xoxb-…, BACKFLIP_SLACK_BOT_TOKEN). It is
	// sent to Slack and never logged.
	Token string
	// APIURL overrides Slack's Web API base URL (BACKFLIP_SLACK_API_URL),
	// for tests; "" is https://slack.com/api/.
	APIURL string
	// HTTPClient makes the calls, response_url posts included; nil is a
	// client with a 30 s timeout.
	HTTPClient *http.Client
	// MinInterval between posts to one channel (default 1s: Slack's
	// chat.postMessage limit); negative turns the pacing off.
	MinInterval time.Duration
	// UsergroupCacheTTL is how long a user group's members are trusted
	// (USERGROUP_CACHE_TTL, default 5m); ChannelCacheTTL the same for a
	// channel's name (default 10m).
	UsergroupCacheTTL, ChannelCacheTTL time.Duration
	// JoinChannels joins public channels on not_in_channel (needs the
	// channels:join scope).
	JoinChannels bool
	// MaxRetries is how many times a call is repeated after a 429, a 5xx
	// or a timeout (default 3; negative: never).
	MaxRetries int
	// RetryBackoff is the first wait before retrying a 5xx or a timeout;
	// it doubles with each attempt (default 500ms).
	RetryBackoff time.Duration
	Logger       *zap.Logger
	// Now is the clock of the caches. Pacing and retry waits use the
	// process's monotonic clock instead, because they space out calls to
	// a real server.
	Now func() time.Time
}

// Slack is the production Poster and commands.GroupMembership: the Slack
// Web API through slack-go, with per-channel pacing, retries that never
// post a keyed message twice, channel joins, and caches of user groups
// and channel names. It starts no goroutines.
type Slack struct {
	api        *slack.Client
	http       *http.Client
	log        *zap.Logger
	join       bool
	minGap     time.Duration
	maxRetries int
	backoff    time.Duration

	mu       sync.Mutex
	nextPost map[string]time.Time // per channel, monotonic

	groups   *flightCache[map[string]bool]
	channels *flightCache[channelInfo]
}

var (
	_ Poster                   = (*Slack)(nil)
	_ commands.GroupMembership = (*Slack)(nil)
)

type channelInfo struct {
	name    string
	private bool
}

// MissingScopeError is Slack's missing_scope: the app was installed
// without a scope a call needs. It says which one and where to add it,
// because only a workspace admin can fix it and the log line is what they
// will see.
type MissingScopeError struct {
	Method string
	// Needed is the scope Slack named (sometimes a comma list of
	// alternatives); Provided are the scopes the token has.
	Needed, Provided string
	Err              error
}

func (e *MissingScopeError) Error() string {
	needed := e.Needed
	if needed == "" {
		needed = "a required"
	}
	return fmt.Sprintf("slack %s: the Slack app lacks the %s scope; add it under OAuth & Permissions and reinstall the app", e.Method, needed)
}

func (e *MissingScopeError) Unwrap() error { return e.Err }

// NewSlack returns a client for the Slack Web API.
func NewSlack(cfg SlackConfig) (*Slack, error) {
	if cfg.Token == "" {
		return nil, errors.New("slack: no bot token (BACKFLIP_SLACK_BOT_TOKEN)")
	}
	apiURL := slack.APIURL
	if cfg.APIURL != "" {
		u, err := url.Parse(cfg.APIURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("slack: API URL %q is not an http(s) URL", cfg.APIURL)
		}
		// slack-go appends method names to the base URL as they are.
		apiURL = strings.TrimSuffix(cfg.APIURL, "/") + "/"
	}
	httpClient := cfg.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Timeout: defaultHTTPTimeout}
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	s := &Slack{
		// No slack.OptionRetry: its retries do not know which calls may
		// be repeated, and would post a report twice after a 5xx.
		api:        slack.New(cfg.Token, slack.OptionAPIURL(apiURL), slack.OptionHTTPClient(httpClient)),
		http:       httpClient,
		log:        log.Named("slack"),
		join:       cfg.JoinChannels,
		minGap:     orDefault(cfg.MinInterval, DefaultMinInterval),
		maxRetries: max(orDefault(cfg.MaxRetries, DefaultMaxRetries), 0),
		backoff:    orDefault(cfg.RetryBackoff, DefaultRetryBackoff),
		nextPost:   map[string]time.Time{},
		groups:     newFlightCache[map[string]bool](orDefault(cfg.UsergroupCacheTTL, DefaultUsergroupCacheTTL), now),
		channels:   newFlightCache[channelInfo](orDefault(cfg.ChannelCacheTTL, DefaultChannelCacheTTL), now),
	}
	return s, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Post sends a message, paced per channel. A 429 is waited out. After a
// 5xx or a timeout the message may or may not exist: with msg.Key set the
// channel (or thread) is searched for it and its ts returned, and it is
// posted again only if it is not there; without a Key the error is
// returned, since posting again could show it twice. not_in_channel joins
// the channel when allowed and tries once more.
func (s *Slack) Post(ctx context.Context, channel, threadTS string, msg Message) (string, error) {
	const method = "chat.postMessage"
	opts := msgOptions(msg, threadTS, false)
	joined := false
	// unknown is set when the last attempt's outcome is unknown.
	unknown := false
	var lastErr error
	for attempt := 0; ; {
		if unknown {
			ts, found, err := s.findKey(ctx, channel, threadTS, msg.Key)
			switch {
			case err == nil && found:
				s.log.Info("found the message a failed post had sent", zap.String("channel", channel), zap.String("ts", ts), zap.NamedError("post_error", lastErr))
				return ts, nil
			case err != nil && !lookupHopeless(err):
				if attempt >= s.maxRetries || ctx.Err() != nil {
					return "", fmt.Errorf("slack %s to %s: outcome unknown (%w), and looking for the message failed: %w", method, channel, lastErr, err)
				}
				attempt++
				if werr := s.sleep(ctx, s.backoffFor(attempt)); werr != nil {
					return "", fmt.Errorf("slack %s to %s: outcome unknown (%w): %w", method, channel, lastErr, werr)
				}
				continue
			case err != nil:
				// The look-up can never work here (a missing history
				// scope, say): a second copy is better than no report.
				s.log.Warn("cannot look for a message whose post failed; posting it again", zap.String("channel", channel), zap.Error(err))
			}
			unknown = false
		}
		if err := s.throttle(ctx, channel); err != nil {
			return "", fmt.Errorf("slack %s to %s: %w", method, channel, err)
		}
		_, ts, err := s.api.PostMessageContext(ctx, channel, opts...)
		if err == nil {
			return ts, nil
		}
		lastErr = err
		code := slackCode(err)
		switch {
		case ctx.Err() != nil:
			return "", fmt.Errorf("slack %s to %s: %w", method, channel, err)
		case code == codeNotInChannel && s.join && !joined:
			joined = true
			if jerr := s.joinChannel(ctx, channel); jerr != nil {
				return "", notInChannel(channel, jerr)
			}
			continue
		case code == codeNotInChannel || code == codeChannelNotFound:
			return "", notInChannel(channel, err)
		}
		wait, retryable := s.retryWait(err, attempt+1)
		switch {
		case !retryable || attempt >= s.maxRetries:
			return "", s.describe(method, err)
		case isRateLimited(err):
			// A 429 means Slack did nothing: just try again.
		case msg.Key == "":
			return "", fmt.Errorf("slack %s to %s: outcome unknown, not retried because the message has no Key: %w", method, channel, err)
		default:
			unknown = true
		}
		attempt++
		s.log.Debug("retrying", zap.String("method", method), zap.String("channel", channel), zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
		if werr := s.sleep(ctx, wait); werr != nil {
			return "", fmt.Errorf("slack %s to %s: %w (waiting to retry after: %v)", method, channel, werr, err)
		}
	}
}

// Update replaces a message. Updating twice to the same content is
// harmless, so 5xx and timeouts are retried too. It is not paced: Slack
// limits chat.update separately and more loosely, and live progress must
// not queue behind reports.
func (s *Slack) Update(ctx context.Context, channel, ts string, msg Message) error {
	opts := msgOptions(msg, "", true)
	return s.call(ctx, "chat.update", true, func() error {
		_, _, _, err := s.api.UpdateMessageContext(ctx, channel, ts, opts...)
		return err
	})
}

// Ephemeral shows a message to one user. It is retried like Update: a
// rare second copy of a private notice is better than none.
func (s *Slack) Ephemeral(ctx context.Context, channel, user string, msg Message) error {
	opts := msgOptions(msg, "", false)
	return s.inChannel(ctx, channel, "chat.postEphemeral", true, func() error {
		_, err := s.api.PostEphemeralContext(ctx, channel, user, opts...)
		return err
	})
}

// responsePayload is what a response_url takes.
type responsePayload struct {
	Text            string        `json:"text"`
	Blocks          []slack.Block `json:"blocks,omitempty"`
	ResponseType    string        `json:"response_type"`
	ReplaceOriginal bool          `json:"replace_original"`
}

// Respond posts to a response_url. A response_url works five times in
// thirty minutes, so a call makes at most two attempts: the second after
// a 429, or after a 5xx or timeout only when replacing the original (an
// idempotent change). The URL is a credential of sorts and is not logged
// or put in errors beyond its host.
func (s *Slack) Respond(ctx context.Context, responseURL string, msg Message, inChannel, replaceOriginal bool) error {
	u, err := url.Parse(responseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("slack response_url: not an http(s) URL")
	}
	payload := responsePayload{Text: msg.Text, Blocks: msg.Blocks, ResponseType: "ephemeral", ReplaceOriginal: replaceOriginal}
	if inChannel {
		payload.ResponseType = "in_channel"
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("slack response_url: encode message: %w", err)
	}
	attempts := min(maxResponseURLAttempts, s.maxRetries+1)
	for attempt := 1; ; attempt++ {
		err := s.respondOnce(ctx, u, body)
		if err == nil {
			return nil
		}
		wait, retryable := s.retryWait(err, attempt)
		if !isRateLimited(err) && !replaceOriginal {
			retryable = false
		}
		if !retryable || attempt >= attempts || ctx.Err() != nil {
			return fmt.Errorf("slack response_url at %s: %w", u.Host, err)
		}
		s.log.Debug("retrying", zap.String("method", "response_url"), zap.String("host", u.Host), zap.Duration("wait", wait), zap.Error(err))
		if werr := s.sleep(ctx, wait); werr != nil {
			return fmt.Errorf("slack response_url at %s: %w (waiting to retry after: %v)", u.Host, werr, err)
		}
	}
}

// respondOnce makes one response_url post and turns its answer into the
// errors slack-go uses for the Web API, so one classification serves both.
func (s *Slack) respondOnce(ctx context.Context, u *url.URL, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := s.http.Do(req)
	if err != nil {
		// *url.Error quotes the whole URL; keep only what it wraps.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			return fmt.Errorf("%s %s: %w", ue.Op, u.Host, ue.Err)
		}
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var decoded struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	isJSON := json.Unmarshal(answer, &decoded) == nil
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return &slack.RateLimitedError{RetryAfter: time.Duration(secs) * time.Second}
	case isJSON && !decoded.OK && decoded.Error != "":
		// Slack's own refusals (used_url, expired_url, invalid_blocks)
		// come with a code, whatever the status.
		return fmt.Errorf("%s: %w", resp.Status, slack.SlackErrorResponse{Err: decoded.Error})
	case resp.StatusCode != http.StatusOK:
		return slack.StatusCodeError{Code: resp.StatusCode, Status: resp.Status}
	case isJSON && decoded.OK, strings.TrimSpace(string(answer)) == "ok":
		return nil
	default:
		return fmt.Errorf("unexpected answer %q", truncate(string(answer), 100))
	}
}

// IsMember reports whether user is in the user group, from a cache of the
// group's members kept for UsergroupCacheTTL; concurrent misses of one
// group make one usergroups.users.list call.
func (s *Slack) IsMember(ctx context.Context, user, group string) (bool, error) {
	members, err := s.groups.get(ctx, group, func(ctx context.Context) (map[string]bool, error) {
		var users []string
		err := s.call(ctx, "usergroups.users.list", true, func() error {
			var err error
			users, err = s.api.GetUserGroupMembersContext(ctx, group)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("members of user group %s: %w", group, err)
		}
		set := make(map[string]bool, len(users))
		for _, u := range users {
			set[u] = true
		}
		return set, nil
	})
	if err != nil {
		return false, err
	}
	return members[user], nil
}

// ChannelName returns a channel's name and whether it is private, from
// conversations.info, cached for ChannelCacheTTL. Slash commands from
// private channels say only "privategroup". A private channel the bot was
// not invited to is invisible to it: the error then wraps ErrNotInChannel.
func (s *Slack) ChannelName(ctx context.Context, id string) (name string, private bool, err error) {
	info, err := s.channels.get(ctx, id, func(ctx context.Context) (channelInfo, error) {
		var ch *slack.Channel
		err := s.call(ctx, "conversations.info", true, func() error {
			var err error
			ch, err = s.api.GetConversationInfoContext(ctx, &slack.GetConversationInfoInput{ChannelID: id})
			return err
		})
		if slackCode(err) == codeChannelNotFound {
			return channelInfo{}, notInChannel(id, err)
		}
		if err != nil {
			return channelInfo{}, err
		}
		return channelInfo{name: ch.Name, private: ch.IsPrivate}, nil
	})
	return info.name, info.private, err
}

// UploadPNG uploads a picture and shares it into a channel or thread, the
// way Slack wants files uploaded now: files.getUploadURLExternal, a POST
// of the bytes to the URL it returns, then files.completeUploadExternal
// (files.upload is retired). The first two steps are retried freely; the
// share is paced like a post and retried only after a 429, because after
// a 5xx it may have been shared already.
func (s *Slack) UploadPNG(ctx context.Context, channel, threadTS, filename, title string, png []byte) error {
	if len(png) == 0 {
		return errors.New("slack upload: empty picture")
	}
	var up *slack.GetUploadURLExternalResponse
	err := s.call(ctx, "files.getUploadURLExternal", true, func() error {
		var err error
		up, err = s.api.GetUploadURLExternalContext(ctx, slack.GetUploadURLExternalParameters{FileName: filename, FileSize: len(png), AltTxt: title})
		return err
	})
	if err != nil {
		return err
	}
	err = s.call(ctx, "files upload", true, func() error {
		return s.api.UploadToURL(ctx, slack.UploadToURLParameters{UploadURL: up.UploadURL, Reader: bytes.NewReader(png), Filename: filename})
	})
	if err != nil {
		return err
	}
	if err := s.throttle(ctx, channel); err != nil {
		return fmt.Errorf("slack files.completeUploadExternal to %s: %w", channel, err)
	}
	return s.inChannel(ctx, channel, "files.completeUploadExternal", false, func() error {
		_, err := s.api.CompleteUploadExternalContext(ctx, slack.CompleteUploadExternalParameters{
			Files:           []slack.FileSummary{{ID: up.FileID, Title: title}},
			Channel:         channel,
			ThreadTimestamp: threadTS,
		})
		return err
	})
}

// AuthTest checks the token and returns the bot's user ID.
func (s *Slack) AuthTest(ctx context.Context) (string, error) {
	var resp *slack.AuthTestResponse
	err := s.call(ctx, "auth.test", true, func() error {
		var err error
		resp, err = s.api.AuthTestContext(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	return resp.UserID, nil
}

// msgOptions renders a Message for chat.postMessage, chat.update and
// chat.postEphemeral. Text goes as it is (the renderers escape &, <, >).
// An update always sends blocks, an empty list included, because Slack
// keeps a message's old blocks when an update leaves them out.
func msgOptions(msg Message, threadTS string, update bool) []slack.MsgOption {
	opts := []slack.MsgOption{slack.MsgOptionText(msg.Text, false)}
	if len(msg.Blocks) > 0 || update {
		opts = append(opts, slack.MsgOptionBlocks(msg.Blocks...))
	}
	if threadTS != "" {
		opts = append(opts, slack.MsgOptionTS(threadTS))
	}
	return opts
}

// call runs one Web API call, waiting out 429s and, when idempotent,
// retrying 5xx answers and timeouts, up to MaxRetries times.
func (s *Slack) call(ctx context.Context, method string, idempotent bool, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		wait, retryable := s.retryWait(err, attempt)
		if !isRateLimited(err) && !idempotent {
			retryable = false
		}
		if !retryable || attempt > s.maxRetries || ctx.Err() != nil {
			return s.describe(method, err)
		}
		s.log.Debug("retrying", zap.String("method", method), zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
		if werr := s.sleep(ctx, wait); werr != nil {
			return fmt.Errorf("slack %s: %w (waiting to retry after: %v)", method, werr, err)
		}
	}
}

// inChannel runs a call that needs the bot in channel, joining it once on
// not_in_channel when allowed.
func (s *Slack) inChannel(ctx context.Context, channel, method string, idempotent bool, fn func() error) error {
	err := s.call(ctx, method, idempotent, fn)
	if slackCode(err) == codeNotInChannel && s.join {
		if jerr := s.joinChannel(ctx, channel); jerr != nil {
			return notInChannel(channel, jerr)
		}
		err = s.call(ctx, method, idempotent, fn)
	}
	if c := slackCode(err); c == codeNotInChannel || c == codeChannelNotFound {
		return notInChannel(channel, err)
	}
	return err
}

func (s *Slack) joinChannel(ctx context.Context, channel string) error {
	err := s.call(ctx, "conversations.join", true, func() error {
		_, _, _, err := s.api.JoinConversationContext(ctx, channel)
		return err
	})
	if err == nil {
		s.log.Info("joined channel", zap.String("channel", channel))
	}
	return err
}

// notInChannel is ErrNotInChannel with Slack's reason. channel_not_found
// is what Slack answers for a private channel the bot was not invited to.
func notInChannel(channel string, cause error) error {
	return fmt.Errorf("channel %s: %w (invite it with /invite @backflip): %w", channel, ErrNotInChannel, cause)
}

// findKey looks for a recent message of the bot containing key: in the
// thread when threadTS is set, else in the channel's latest messages.
func (s *Slack) findKey(ctx context.Context, channel, threadTS, key string) (string, bool, error) {
	if threadTS == "" {
		var resp *slack.GetConversationHistoryResponse
		err := s.call(ctx, "conversations.history", true, func() error {
			var err error
			resp, err = s.api.GetConversationHistoryContext(ctx, &slack.GetConversationHistoryParameters{ChannelID: channel, Limit: historyLookback})
			return err
		})
		if err != nil {
			return "", false, err
		}
		for _, m := range resp.Messages {
			if strings.Contains(m.Text, key) {
				return m.Timestamp, true, nil
			}
		}
		return "", false, nil
	}
	cursor := ""
	for range repliesPages {
		var (
			msgs []slack.Message
			more bool
			next string
		)
		err := s.call(ctx, "conversations.replies", true, func() error {
			var err error
			msgs, more, next, err = s.api.GetConversationRepliesContext(ctx, &slack.GetConversationRepliesParameters{ChannelID: channel, Timestamp: threadTS, Limit: repliesPageSize, Cursor: cursor})
			return err
		})
		if err != nil {
			return "", false, err
		}
		for _, m := range msgs {
			if m.Timestamp != threadTS && strings.Contains(m.Text, key) {
				return m.Timestamp, true, nil
			}
		}
		if !more || next == "" {
			break
		}
		cursor = next
	}
	return "", false, nil
}

// lookupHopeless reports whether a failed search for a keyed message will
// fail again however often it is tried.
func lookupHopeless(err error) bool {
	var scope *MissingScopeError
	if errors.As(err, &scope) {
		return true
	}
	switch slackCode(err) {
	case codeMissingScope, codeNotInChannel, codeChannelNotFound, codeThreadNotFound:
		return true
	}
	return false
}

// throttle waits for the channel's next posting slot. Slots are reserved
// under the lock and waited for by the caller, so waiting costs no
// goroutine and posts to one channel go out in the order they reserved.
func (s *Slack) throttle(ctx context.Context, channel string) error {
	if s.minGap <= 0 {
		return nil
	}
	s.mu.Lock()
	now := time.Now()
	if len(s.nextPost) > maxCacheEntries {
		for ch, t := range s.nextPost {
			if t.Before(now) {
				delete(s.nextPost, ch)
			}
		}
	}
	slot := s.nextPost[channel]
	if slot.Before(now) {
		slot = now
	}
	next := slot.Add(s.minGap)
	s.nextPost[channel] = next
	s.mu.Unlock()
	err := s.sleep(ctx, slot.Sub(now))
	if err != nil {
		// Give the slot back if nobody queued behind it.
		s.mu.Lock()
		if s.nextPost[channel].Equal(next) {
			s.nextPost[channel] = slot
		}
		s.mu.Unlock()
	}
	return err
}

// sleep waits d or until ctx ends. A wait that would outlast the context's
// deadline fails at once rather than at the deadline.
func (s *Slack) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d {
		return fmt.Errorf("waiting %s would pass the deadline: %w", d, context.DeadlineExceeded)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryWait says whether err may be worth another attempt (the attempt-th
// retry) and how long to wait first: Retry-After for a 429, a doubling
// backoff with jitter for 5xx answers and failures to get any answer.
// Whether the call may be repeated at all is the caller's decision.
func (s *Slack) retryWait(err error, attempt int) (time.Duration, bool) {
	if rl, ok := errors.AsType[*slack.RateLimitedError](err); ok {
		return rl.RetryAfter, true
	}
	if sc, ok := errors.AsType[slack.StatusCodeError](err); ok {
		return s.backoffFor(attempt), sc.Code == http.StatusTooManyRequests || sc.Code >= 500
	}
	if slackCode(err) != "" || errors.Is(err, context.Canceled) {
		return 0, false
	}
	// No answer, or one that could not be read: a timeout, a reset
	// connection, a truncated body.
	return s.backoffFor(attempt), true
}

func (s *Slack) backoffFor(attempt int) time.Duration {
	d := s.backoff
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	// Up to a quarter more, so replicas that failed together do not
	// retry together.
	return d + rand.N(d/4+1)
}

func isRateLimited(err error) bool {
	if _, ok := errors.AsType[*slack.RateLimitedError](err); ok {
		return true
	}
	sc, ok := errors.AsType[slack.StatusCodeError](err)
	return ok && sc.Code == http.StatusTooManyRequests
}

// slackCode returns the error code of a Slack refusal ("not_in_channel"),
// or "".
func slackCode(err error) string {
	if e, ok := errors.AsType[slack.SlackErrorResponse](err); ok {
		return e.Err
	}
	return ""
}

// describe wraps a failed call's error with the method and, for the
// refusals an operator must fix, what to do.
func (s *Slack) describe(method string, err error) error {
	e, ok := errors.AsType[slack.SlackErrorResponse](err)
	if !ok {
		return fmt.Errorf("slack %s: %w", method, err)
	}
	switch e.Err {
	case codeMissingScope:
		return &MissingScopeError{Method: method, Needed: e.Needed, Provided: e.Provided, Err: err}
	case "not_authed", "invalid_auth", "token_revoked", "token_expired", "account_inactive":
		return fmt.Errorf("slack %s: Slack refused the bot token (%s); check BACKFLIP_SLACK_BOT_TOKEN: %w", method, e.Err, err)
	}
	return fmt.Errorf("slack %s: %w", method, err)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// flightCache caches one value per key for a TTL. Concurrent misses of a
// key make one fetch, which the first caller runs on its own goroutine;
// the others wait for it. Failures are not cached.
type flightCache[V any] struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[string]*flight[V]
}

type flight[V any] struct {
	done chan struct{}
	// Set before done is closed.
	val V
	err error
	at  time.Time
	// abandoned: the fetch failed because the fetching caller's context
	// ended, which says nothing about the waiters' own chances.
	abandoned bool
}

func newFlightCache[V any](ttl time.Duration, now func() time.Time) *flightCache[V] {
	return &flightCache[V]{ttl: ttl, now: now, m: map[string]*flight[V]{}}
}

func (c *flightCache[V]) get(ctx context.Context, key string, fetch func(context.Context) (V, error)) (V, error) {
	var zero V
	for {
		c.mu.Lock()
		f := c.m[key]
		if f != nil {
			select {
			case <-f.done:
				if f.err == nil && c.now().Sub(f.at) < c.ttl {
					c.mu.Unlock()
					return f.val, nil
				}
				f = nil
			default:
			}
		}
		if f == nil {
			f = &flight[V]{done: make(chan struct{})}
			c.pruneLocked()
			c.m[key] = f
			c.mu.Unlock()
			f.val, f.err = fetch(ctx)
			f.at, f.abandoned = c.now(), f.err != nil && ctx.Err() != nil
			if f.err != nil {
				c.mu.Lock()
				if c.m[key] == f {
					delete(c.m, key)
				}
				c.mu.Unlock()
			}
			close(f.done)
			return f.val, f.err
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
		if !f.abandoned {
			return f.val, f.err
		}
	}
}

// pruneLocked drops expired entries once the cache has grown, so channels
// seen once do not stay forever.
func (c *flightCache[V]) pruneLocked() {
	if len(c.m) < maxCacheEntries {
		return
	}
	now := c.now()
	for k, f := range c.m {
		select {
		case <-f.done:
			if now.Sub(f.at) >= c.ttl {
				delete(c.m, k)
			}
		default:
		}
	}
}
