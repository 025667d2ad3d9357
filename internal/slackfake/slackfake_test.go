package slackfake_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/backflip-dev/backflip/internal/slackfake"
)

// newClient returns a slack-go client for the fake: the tests below check
// that what the fake answers is what slack-go decodes.
func newClient(tb testing.TB, s *slackfake.Server, opts ...slack.Option) *slack.Client {
	tb.Helper()
	return slack.New("xoxb-test-token", append([]slack.Option{slack.OptionAPIURL(s.APIURL())}, opts...)...)
}

func mustPost(tb testing.TB, api *slack.Client, channel string, opts ...slack.MsgOption) string {
	tb.Helper()
	_, ts, err := api.PostMessageContext(context.Background(), channel, opts...)
	if err != nil {
		tb.Fatalf("post to %s: %v", channel, err)
	}
	return ts
}

func slackCode(err error) string {
	if e, ok := errors.AsType[slack.SlackErrorResponse](err); ok {
		return e.Err
	}
	return ""
}

var tsPattern = regexp.MustCompile(`^\d{10}\.\d{6}$`)

func TestPostMessage(t *testing.T) {
	ctx := context.Background()
	s := slackfake.New(t)
	api := newClient(t, s)

	t.Run("UniqueIncreasingTS", func(t *testing.T) {
		var last string
		seen := map[string]bool{}
		for i := range 20 {
			ts := mustPost(t, api, "C1", slack.MsgOptionText(fmt.Sprintf("m%d", i), false))
			if !tsPattern.MatchString(ts) {
				t.Fatalf("ts %q does not look like Slack's", ts)
			}
			if seen[ts] || ts <= last {
				t.Fatalf("ts %q not unique and increasing after %q", ts, last)
			}
			seen[ts], last = true, ts
		}
		if got := len(s.Messages("C1")); got != 20 {
			t.Fatalf("Messages(C1) has %d messages, want 20", got)
		}
	})

	t.Run("BlocksRecorded", func(t *testing.T) {
		block := slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "*hi*", false, false), nil, nil)
		ts := mustPost(t, api, "C2", slack.MsgOptionText("hi", false), slack.MsgOptionBlocks(block))
		msgs := s.Messages("C2")
		if len(msgs) != 1 || msgs[0].TS != ts || !bytes.Contains(msgs[0].Blocks, []byte(`"*hi*"`)) {
			t.Fatalf("Messages(C2) = %+v", msgs)
		}
	})

	t.Run("UpdateApplied", func(t *testing.T) {
		ts := mustPost(t, api, "C3", slack.MsgOptionText("before", false))
		if _, _, _, err := api.UpdateMessageContext(ctx, "C3", ts, slack.MsgOptionText("after", false)); err != nil {
			t.Fatal(err)
		}
		msgs := s.Messages("C3")
		if len(msgs) != 1 || msgs[0].Text != "after" {
			t.Fatalf("Messages(C3) = %+v, want one message saying after", msgs)
		}
		posts := s.Posts()
		if last := posts[len(posts)-1]; last.Method != "chat.update" || last.TS != ts || last.Text != "after" {
			t.Fatalf("last post = %+v", last)
		}
		if _, _, _, err := api.UpdateMessageContext(ctx, "C3", "1.000001", slack.MsgOptionText("x", false)); slackCode(err) != "message_not_found" {
			t.Fatalf("update of an unknown message: %v, want message_not_found", err)
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		if _, _, err := api.PostMessageContext(ctx, "C4"); slackCode(err) != "no_text" {
			t.Fatalf("empty message: %v, want no_text", err)
		}
		many := make([]slack.Block, 51)
		for i := range many {
			many[i] = slack.NewDividerBlock()
		}
		if _, _, err := api.PostMessageContext(ctx, "C4", slack.MsgOptionBlocks(many...)); slackCode(err) != "invalid_blocks" {
			t.Fatalf("51 blocks: %v, want invalid_blocks", err)
		}
		long := slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, strings.Repeat("x", 3001), false, false), nil, nil)
		if _, _, err := api.PostMessageContext(ctx, "C4", slack.MsgOptionBlocks(long)); slackCode(err) != "invalid_blocks" {
			t.Fatalf("3001-character section: %v, want invalid_blocks", err)
		}
		b1 := slack.NewButtonBlockElement("same", "1", slack.NewTextBlockObject(slack.PlainTextType, "a", false, false))
		b2 := slack.NewButtonBlockElement("same", "2", slack.NewTextBlockObject(slack.PlainTextType, "b", false, false))
		if _, _, err := api.PostMessageContext(ctx, "C4", slack.MsgOptionBlocks(slack.NewActionBlock("", b1, b2))); slackCode(err) != "invalid_blocks" {
			t.Fatalf("duplicate action_id: %v, want invalid_blocks", err)
		}
		if n := len(s.Messages("C4")); n != 0 {
			t.Fatalf("%d refused messages were kept", n)
		}
	})
}

func TestThreadsAndHistory(t *testing.T) {
	ctx := context.Background()
	s := slackfake.New(t)
	api := newClient(t, s)
	parent := mustPost(t, api, "C1", slack.MsgOptionText("parent", false))
	r1 := mustPost(t, api, "C1", slack.MsgOptionText("reply 1", false), slack.MsgOptionTS(parent))
	other := mustPost(t, api, "C1", slack.MsgOptionText("other", false))
	// A reply to a reply lands in the parent's thread, as in Slack.
	r2 := mustPost(t, api, "C1", slack.MsgOptionText("reply 2", false), slack.MsgOptionTS(r1))

	hist, err := api.GetConversationHistoryContext(ctx, &slack.GetConversationHistoryParameters{ChannelID: "C1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := tsList(hist.Messages); got != other+" "+parent {
		t.Fatalf("history = %s, want top-level messages newest first: %s %s", got, other, parent)
	}
	if hist.Messages[1].ReplyCount != 2 || hist.Messages[1].ThreadTimestamp != parent {
		t.Fatalf("parent in history = %+v, want reply_count 2", hist.Messages[1].Msg)
	}

	msgs, _, _, err := api.GetConversationRepliesContext(ctx, &slack.GetConversationRepliesParameters{ChannelID: "C1", Timestamp: parent})
	if err != nil {
		t.Fatal(err)
	}
	if got := tsList(msgs); got != parent+" "+r1+" "+r2 {
		t.Fatalf("replies = %s, want parent first then replies oldest first", got)
	}

	t.Run("Pagination", func(t *testing.T) {
		for i := range 5 {
			mustPost(t, api, "C2", slack.MsgOptionText(fmt.Sprint(i), false))
		}
		var texts []string
		cursor := ""
		for {
			page, err := api.GetConversationHistoryContext(ctx, &slack.GetConversationHistoryParameters{ChannelID: "C2", Limit: 2, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range page.Messages {
				texts = append(texts, m.Text)
			}
			if !page.HasMore {
				break
			}
			cursor = page.ResponseMetaData.NextCursor
		}
		if got := strings.Join(texts, ""); got != "43210" {
			t.Fatalf("paged history = %q, want 43210", got)
		}
	})

	t.Run("UnknownParentPostsUnthreaded", func(t *testing.T) {
		mustPost(t, api, "C3", slack.MsgOptionText("orphan", false), slack.MsgOptionTS("1000000000.000001"))
		if m := s.Messages("C3"); len(m) != 1 || m[0].ThreadTS != "" {
			t.Fatalf("Messages(C3) = %+v, want one unthreaded message", m)
		}
		if _, _, _, err := api.GetConversationRepliesContext(ctx, &slack.GetConversationRepliesParameters{ChannelID: "C3", Timestamp: "1000000000.000001"}); slackCode(err) != "thread_not_found" {
			t.Fatalf("replies of an unknown thread: %v, want thread_not_found", err)
		}
	})
}

func tsList(msgs []slack.Message) string {
	var ts []string
	for _, m := range msgs {
		ts = append(ts, m.Timestamp)
	}
	return strings.Join(ts, " ")
}

func TestMembership(t *testing.T) {
	ctx := context.Background()
	s := slackfake.New(t)
	api := newClient(t, s)
	s.SetChannel("C1", "inc-public", false, false)
	s.SetChannel("G1", "inc-private", true, false)

	t.Run("PublicNotInChannel", func(t *testing.T) {
		if _, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("x", false)); slackCode(err) != "not_in_channel" {
			t.Fatalf("post: %v, want not_in_channel", err)
		}
		ch, err := api.GetConversationInfoContext(ctx, &slack.GetConversationInfoInput{ChannelID: "C1"})
		if err != nil || ch.Name != "inc-public" || ch.IsPrivate || ch.IsMember {
			t.Fatalf("info = %+v, %v", ch, err)
		}
		ch, _, _, err = api.JoinConversationContext(ctx, "C1")
		if err != nil || !ch.IsMember || !s.IsMember("C1") {
			t.Fatalf("join = %+v, %v", ch, err)
		}
		mustPost(t, api, "C1", slack.MsgOptionText("x", false))
	})

	t.Run("PrivateInvisible", func(t *testing.T) {
		// Slack hides a private channel from a bot that was not invited.
		if _, _, err := api.PostMessageContext(ctx, "G1", slack.MsgOptionText("x", false)); slackCode(err) != "channel_not_found" {
			t.Fatalf("post: %v, want channel_not_found", err)
		}
		if _, err := api.GetConversationInfoContext(ctx, &slack.GetConversationInfoInput{ChannelID: "G1"}); slackCode(err) != "channel_not_found" {
			t.Fatalf("info: %v, want channel_not_found", err)
		}
		if _, _, _, err := api.JoinConversationContext(ctx, "G1"); slackCode(err) != "method_not_supported_for_channel_type" {
			t.Fatalf("join: %v, want method_not_supported_for_channel_type", err)
		}
		s.SetChannel("G1", "inc-private", true, true) // invited
		ch, err := api.GetConversationInfoContext(ctx, &slack.GetConversationInfoInput{ChannelID: "G1"})
		if err != nil || !ch.IsPrivate || ch.Name != "inc-private" {
			t.Fatalf("info after invite = %+v, %v", ch, err)
		}
		mustPost(t, api, "G1", slack.MsgOptionText("x", false))
	})

	t.Run("Usergroups", func(t *testing.T) {
		s.SetUsergroup("S1", "U1", "U2")
		users, err := api.GetUserGroupMembersContext(ctx, "S1")
		if err != nil || strings.Join(users, ",") != "U1,U2" {
			t.Fatalf("members = %v, %v", users, err)
		}
		if _, err := api.GetUserGroupMembersContext(ctx, "S9"); slackCode(err) != "no_such_subteam" {
			t.Fatalf("unknown group: %v, want no_such_subteam", err)
		}
	})
}

func TestEphemeralAndAuth(t *testing.T) {
	ctx := context.Background()
	s := slackfake.New(t)
	api := newClient(t, s)
	ts, err := api.PostEphemeralContext(ctx, "C1", "U1", slack.MsgOptionText("only you", false))
	if err != nil || !tsPattern.MatchString(ts) {
		t.Fatalf("ephemeral = %q, %v", ts, err)
	}
	if p := s.Posts(); len(p) != 1 || p[0].Method != "chat.postEphemeral" || p[0].User != "U1" || p[0].Text != "only you" {
		t.Fatalf("posts = %+v", p)
	}
	if len(s.Messages("C1")) != 0 {
		t.Fatal("an ephemeral message became channel state")
	}

	who, err := api.AuthTestContext(ctx)
	if err != nil || who.UserID != slackfake.BotUserID || who.BotID != slackfake.BotID {
		t.Fatalf("auth.test = %+v, %v", who, err)
	}

	t.Run("TokenChecked", func(t *testing.T) {
		resp, err := http.PostForm(s.APIURL()+"auth.test", url.Values{})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.OK || body.Error != "not_authed" {
			t.Fatalf("no token: %+v, %v", body, err)
		}
		s.SetToken("xoxb-right")
		if _, err := api.AuthTestContext(ctx); slackCode(err) != "invalid_auth" {
			t.Fatalf("wrong token: %v, want invalid_auth", err)
		}
		if _, err := newClient(t, s, slack.OptionHTTPClient(http.DefaultClient)).AuthTestContext(ctx); slackCode(err) != "invalid_auth" {
			t.Fatalf("wrong token: %v, want invalid_auth", err)
		}
		if _, err := slack.New("xoxb-right", slack.OptionAPIURL(s.APIURL())).AuthTestContext(ctx); err != nil {
			t.Fatalf("right token: %v", err)
		}
	})
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	s := slackfake.New(t)
	api := newClient(t, s)

	t.Run("RateLimited", func(t *testing.T) {
		s.FailBefore("chat.postMessage", 1, http.StatusTooManyRequests, 1500*time.Millisecond)
		_, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("x", false))
		rl, ok := errors.AsType[*slack.RateLimitedError](err)
		if !ok || rl.RetryAfter != 2*time.Second {
			t.Fatalf("err = %v, want a RateLimitedError retrying after 2s (1.5s rounded up)", err)
		}
		if len(s.Posts()) != 0 {
			t.Fatal("a refused call was recorded")
		}
		mustPost(t, api, "C1", slack.MsgOptionText("x", false))
		if got := s.Calls("chat.postMessage"); got != 2 {
			t.Fatalf("Calls = %d, want 2", got)
		}
	})

	t.Run("FailAfterRecords", func(t *testing.T) {
		s.FailAfter("chat.postMessage", 1, http.StatusInternalServerError)
		_, _, err := api.PostMessageContext(ctx, "C2", slack.MsgOptionText("maybe", false))
		if sc, ok := errors.AsType[slack.StatusCodeError](err); !ok || sc.Code != 500 {
			t.Fatalf("err = %v, want a 500", err)
		}
		if m := s.Messages("C2"); len(m) != 1 || m[0].Text != "maybe" {
			t.Fatalf("Messages(C2) = %+v, want the message despite the 500", m)
		}
	})

	t.Run("FailBeforeDoesNothing", func(t *testing.T) {
		s.Fail("chat.update", 2, http.StatusServiceUnavailable, 0)
		ts := mustPost(t, api, "C3", slack.MsgOptionText("v1", false))
		for range 2 {
			if _, _, _, err := api.UpdateMessageContext(ctx, "C3", ts, slack.MsgOptionText("v2", false)); err == nil {
				t.Fatal("update succeeded, want a 503")
			}
		}
		if m := s.Messages("C3"); m[0].Text != "v1" {
			t.Fatalf("a refused update changed the message: %+v", m)
		}
		if _, _, _, err := api.UpdateMessageContext(ctx, "C3", ts, slack.MsgOptionText("v2", false)); err != nil {
			t.Fatalf("third update: %v", err)
		}
	})

	t.Run("MissingScope", func(t *testing.T) {
		s.SlackError("usergroups.users.list", 1, "missing_scope")
		_, err := api.GetUserGroupMembersContext(ctx, "S1")
		e, ok := errors.AsType[slack.SlackErrorResponse](err)
		if !ok || e.Err != "missing_scope" || e.Needed != "usergroups:read" {
			t.Fatalf("err = %#v, want missing_scope needing usergroups:read", err)
		}
	})

	t.Run("DelayOutlastsClientTimeout", func(t *testing.T) {
		s.Delay("chat.postMessage", 1, 5*time.Second)
		short := newClient(t, s, slack.OptionHTTPClient(&http.Client{Timeout: 100 * time.Millisecond}))
		if _, _, err := short.PostMessageContext(ctx, "C5", slack.MsgOptionText("slow", false)); err == nil {
			t.Fatal("post succeeded, want a client timeout")
		}
		if m := s.Messages("C5"); len(m) != 1 {
			t.Fatalf("Messages(C5) = %+v, want the message that timed out", m)
		}
	})
}

func TestUploadExternal(t *testing.T) {
	ctx := context.Background()
	s := slackfake.New(t)
	api := newClient(t, s)
	parent := mustPost(t, api, "C1", slack.MsgOptionText("report", false))
	png := []byte("\x89PNG\r\n\x1a\nfake picture")
	f, err := api.UploadFileContext(ctx, slack.UploadFileParameters{
		Reader: bytes.NewReader(png), FileSize: len(png), Filename: "timings.png", Title: "Phase timings",
		Channel: "C1", ThreadTimestamp: parent,
	})
	if err != nil {
		t.Fatal(err)
	}
	files := s.Files()
	if len(files) != 1 {
		t.Fatalf("Files = %+v, want one", files)
	}
	got := files[0]
	if got.ID != f.ID || got.Title != "Phase timings" || got.Name != "timings.png" || !bytes.Equal(got.Data, png) ||
		got.Length != len(png) || !got.Completed || got.Channel != "C1" || got.ThreadTS != parent {
		t.Fatalf("file = %+v", got)
	}
	if _, err := api.CompleteUploadExternalContext(ctx, slack.CompleteUploadExternalParameters{Files: []slack.FileSummary{{ID: f.ID}}, Channel: "C1"}); slackCode(err) != "file_not_found" {
		t.Fatalf("second completion: %v, want file_not_found", err)
	}
}

func TestResponseURL(t *testing.T) {
	s := slackfake.New(t)
	u := s.ResponseURL("C1")
	post := func(body string) (int, string) {
		t.Helper()
		resp, err := http.Post(u, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(`{"text":"hello","response_type":"in_channel","replace_original":"true"}`); code != 200 || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("first post: %d %s", code, body)
	}
	p := s.Posts()
	if len(p) != 1 || p[0].Method != slackfake.MethodResponseURL || p[0].Channel != "C1" || p[0].Text != "hello" ||
		p[0].ResponseType != "in_channel" || !p[0].ReplaceOriginal {
		t.Fatalf("posts = %+v", p)
	}
	for range 4 {
		if code, body := post(`{"text":"again"}`); code != 200 {
			t.Fatalf("post: %d %s", code, body)
		}
	}
	if code, body := post(`{"text":"sixth"}`); code != http.StatusNotFound || !strings.Contains(body, "used_url") {
		t.Fatalf("sixth post: %d %s, want 404 used_url", code, body)
	}
	if p := s.Posts(); len(p) != 5 || p[4].ResponseType != "ephemeral" {
		t.Fatalf("posts = %+v, want five, the last ephemeral by default", p)
	}
}

func TestWaitFor(t *testing.T) {
	s := slackfake.New(t)
	api := newClient(t, s)
	done := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _, err := api.PostMessageContext(context.Background(), "C1", slack.MsgOptionText("late", false))
		done <- err
	}()
	posts := s.WaitFor(t, func(p []slackfake.Post) bool { return len(p) == 1 }, 10*time.Second)
	if posts[0].Text != "late" {
		t.Fatalf("posts = %+v", posts)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
