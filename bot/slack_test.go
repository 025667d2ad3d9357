package bot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/backflip-dev/backflip/internal/slackfake"
)

const testToken = "xoxb-1234-secret-token-value"

// newTestSlack returns a client for fake with pacing off and short
// backoffs, adjusted by mod.
func newTestSlack(tb testing.TB, fake *slackfake.Server, mod func(*SlackConfig)) *Slack {
	tb.Helper()
	cfg := SlackConfig{
		Token:        testToken,
		APIURL:       fake.APIURL(),
		MinInterval:  -1,
		RetryBackoff: 5 * time.Millisecond,
		Logger:       zaptest.NewLogger(tb),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewSlack(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func mustPostMsg(tb testing.TB, s *Slack, channel, threadTS string, msg Message) string {
	tb.Helper()
	ts, err := s.Post(context.Background(), channel, threadTS, msg)
	if err != nil {
		tb.Fatalf("post to %s: %v", channel, err)
	}
	return ts
}

// fakeClock is a settable clock for the caches.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestSlackPost(t *testing.T) {
	fake := slackfake.New(t)
	s := newTestSlack(t, fake, nil)

	t.Run("RecordedWithUniqueTS", func(t *testing.T) {
		seen := map[string]bool{}
		for i := range 10 {
			ch := fmt.Sprintf("C%d", i%2)
			ts := mustPostMsg(t, s, ch, "", Message{Text: fmt.Sprintf("message %d", i)})
			if seen[ts] {
				t.Fatalf("ts %s handed out twice", ts)
			}
			seen[ts] = true
		}
		if n0, n1 := len(fake.Messages("C0")), len(fake.Messages("C1")); n0 != 5 || n1 != 5 {
			t.Fatalf("channels hold %d and %d messages, want 5 each", n0, n1)
		}
	})

	t.Run("BlocksAndThread", func(t *testing.T) {
		parent := mustPostMsg(t, s, "C2", "", Message{Text: "report"})
		block := slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "*audit*", false, false), nil, nil)
		reply := mustPostMsg(t, s, "C2", parent, Message{Text: "audit", Blocks: []slack.Block{block}})
		msgs := fake.Messages("C2")
		if len(msgs) != 2 || msgs[1].TS != reply || msgs[1].ThreadTS != parent || !bytes.Contains(msgs[1].Blocks, []byte("*audit*")) {
			t.Fatalf("Messages(C2) = %+v", msgs)
		}
	})

	t.Run("SlackRefusalNotRetried", func(t *testing.T) {
		before := fake.Calls("chat.postMessage")
		_, err := s.Post(context.Background(), "C3", "", Message{})
		if err == nil || !strings.Contains(err.Error(), "no_text") {
			t.Fatalf("err = %v, want no_text", err)
		}
		if got := fake.Calls("chat.postMessage") - before; got != 1 {
			t.Fatalf("%d calls, want 1", got)
		}
	})
}

func TestSlackThrottle(t *testing.T) {
	const gap = 150 * time.Millisecond

	t.Run("SpacesPostsPerChannel", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, func(c *SlackConfig) { c.MinInterval = gap })
		var wg sync.WaitGroup
		for _, ch := range []string{"C1", "C2"} {
			wg.Go(func() {
				for i := range 3 {
					if _, err := s.Post(context.Background(), ch, "", Message{Text: fmt.Sprintf("%s %d", ch, i)}); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		posts := fake.Posts()
		var c1, c2 []slackfake.Post
		for _, p := range posts {
			if p.Channel == "C1" {
				c1 = append(c1, p)
			} else {
				c2 = append(c2, p)
			}
		}
		if len(c1) != 3 || len(c2) != 3 {
			t.Fatalf("posts = %+v", posts)
		}
		// Loose bounds: the gap is enforced when the request leaves, and the
		// fake records on arrival, so allow half of it for the network.
		for i := 1; i < 3; i++ {
			for _, ps := range [][]slackfake.Post{c1, c2} {
				if d := ps[i].At.Sub(ps[i-1].At); d < gap/2 {
					t.Errorf("posts %q and %q to one channel %s apart, want about %s", ps[i-1].Text, ps[i].Text, d, gap)
				}
			}
		}
		// Pacing is per channel: the second channel's first post does not
		// wait for the first channel's last one.
		if !c2[0].At.Before(c1[2].At) || !c1[0].At.Before(c2[2].At) {
			t.Errorf("channels were paced together: C1 %v..%v, C2 %v..%v", c1[0].At, c1[2].At, c2[0].At, c2[2].At)
		}
	})

	t.Run("WaitEndsWithContext", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, func(c *SlackConfig) { c.MinInterval = time.Hour })
		mustPostMsg(t, s, "C1", "", Message{Text: "first"})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := s.Post(ctx, "C1", "", Message{Text: "second"}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the deadline", err)
		}
		if n := len(fake.Posts()); n != 1 {
			t.Fatalf("%d posts, want 1", n)
		}
		// Updates are not paced by posts.
		if err := s.Update(context.Background(), "C1", fake.Posts()[0].TS, Message{Text: "edited"}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSlackRateLimited(t *testing.T) {
	t.Run("RetryAfterWaitedOut", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		fake.FailBefore("chat.postMessage", 1, http.StatusTooManyRequests, time.Second)
		start := time.Now()
		mustPostMsg(t, s, "C1", "", Message{Text: "hello"})
		if waited := time.Since(start); waited < 900*time.Millisecond {
			t.Errorf("retried after %s, want Retry-After's 1s", waited)
		}
		if got := fake.Calls("chat.postMessage"); got != 2 {
			t.Fatalf("%d calls, want 2", got)
		}
		if n := len(fake.Messages("C1")); n != 1 {
			t.Fatalf("%d messages, want 1", n)
		}
	})

	t.Run("GivesUpAfterMaxRetries", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, func(c *SlackConfig) { c.MaxRetries = 2 })
		fake.FailBefore("chat.update", 3, http.StatusTooManyRequests, 0)
		ts := mustPostMsg(t, s, "C1", "", Message{Text: "v1"})
		err := s.Update(context.Background(), "C1", ts, Message{Text: "v2"})
		if _, ok := errors.AsType[*slack.RateLimitedError](err); !ok {
			t.Fatalf("err = %v, want a RateLimitedError", err)
		}
		if got := fake.Calls("chat.update"); got != 3 {
			t.Fatalf("%d calls, want 3 (one and two retries)", got)
		}
	})

	t.Run("WaitPastDeadlineFailsAtOnce", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		fake.FailBefore("chat.postMessage", 1, http.StatusTooManyRequests, 30*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := s.Post(ctx, "C1", "", Message{Text: "x"})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the deadline", err)
		}
		if time.Since(start) > 4*time.Second {
			t.Errorf("waited for a Retry-After that could not fit the deadline")
		}
	})
}

func TestSlackPostOutcomeUnknown(t *testing.T) {
	ctx := context.Background()

	t.Run("KeyedPostFoundNotRepeated", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		fake.FailAfter("chat.postMessage", 1, http.StatusInternalServerError)
		ts, err := s.Post(ctx, "C1", "", Message{Text: "chat-70b rolled back · op 1b2c report", Key: "op 1b2c report"})
		if err != nil {
			t.Fatal(err)
		}
		msgs := fake.Messages("C1")
		if len(msgs) != 1 || msgs[0].TS != ts {
			t.Fatalf("Messages = %+v, want exactly one with ts %s", msgs, ts)
		}
		if got := fake.Calls("chat.postMessage"); got != 1 {
			t.Fatalf("%d chat.postMessage calls, want 1", got)
		}
		if fake.Calls("conversations.history") != 1 {
			t.Fatal("the channel was not searched")
		}
	})

	t.Run("KeyedReplyFoundInThread", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		parent := mustPostMsg(t, s, "C1", "", Message{Text: "report"})
		fake.FailAfter("chat.postMessage", 1, http.StatusBadGateway)
		ts, err := s.Post(ctx, "C1", parent, Message{Text: "audit · op 9f report-audit", Key: "op 9f report-audit"})
		if err != nil {
			t.Fatal(err)
		}
		msgs := fake.Messages("C1")
		if len(msgs) != 2 || msgs[1].TS != ts || msgs[1].ThreadTS != parent {
			t.Fatalf("Messages = %+v, want the parent and one reply %s", msgs, ts)
		}
		if fake.Calls("conversations.replies") != 1 {
			t.Fatal("the thread was not searched")
		}
	})

	t.Run("KeyedPostNotFoundPostedAgain", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		fake.FailBefore("chat.postMessage", 1, http.StatusServiceUnavailable, 0)
		ts, err := s.Post(ctx, "C1", "", Message{Text: "op 77 report", Key: "op 77 report"})
		if err != nil {
			t.Fatal(err)
		}
		if msgs := fake.Messages("C1"); len(msgs) != 1 || msgs[0].TS != ts {
			t.Fatalf("Messages = %+v", msgs)
		}
		if got := fake.Calls("chat.postMessage"); got != 2 {
			t.Fatalf("%d calls, want 2", got)
		}
	})

	t.Run("UnkeyedPostNotRetried", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		fake.FailAfter("chat.postMessage", 1, http.StatusInternalServerError)
		if _, err := s.Post(ctx, "C1", "", Message{Text: "progress"}); err == nil {
			t.Fatal("post succeeded, want the 500")
		}
		if got := fake.Calls("chat.postMessage"); got != 1 {
			t.Fatalf("%d calls, want 1", got)
		}
	})

	t.Run("TimeoutWithKey", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, func(c *SlackConfig) { c.HTTPClient = &http.Client{Timeout: 200 * time.Millisecond} })
		fake.Delay("chat.postMessage", 1, 5*time.Second)
		ts, err := s.Post(ctx, "C1", "", Message{Text: "op 5 report", Key: "op 5 report"})
		if err != nil {
			t.Fatal(err)
		}
		if msgs := fake.Messages("C1"); len(msgs) != 1 || msgs[0].TS != ts {
			t.Fatalf("Messages = %+v, want one with ts %s", msgs, ts)
		}
	})
}

func TestSlackUpdateRetries(t *testing.T) {
	fake := slackfake.New(t)
	s := newTestSlack(t, fake, nil)
	block := slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "*running*", false, false), nil, nil)
	ts := mustPostMsg(t, s, "C1", "", Message{Text: "running", Blocks: []slack.Block{block}})
	fake.FailBefore("chat.update", 1, http.StatusInternalServerError, 0)
	fake.FailAfter("chat.update", 1, http.StatusServiceUnavailable)
	if err := s.Update(context.Background(), "C1", ts, Message{Text: "done"}); err != nil {
		t.Fatal(err)
	}
	if got := fake.Calls("chat.update"); got != 3 {
		t.Fatalf("%d calls, want 3", got)
	}
	msgs := fake.Messages("C1")
	if len(msgs) != 1 || msgs[0].Text != "done" || msgs[0].Blocks != nil {
		t.Fatalf("Messages = %+v, want one message saying done, its old blocks gone", msgs)
	}
}

func TestSlackNotInChannel(t *testing.T) {
	ctx := context.Background()

	t.Run("JoinsPublicChannel", func(t *testing.T) {
		fake := slackfake.New(t)
		fake.SetChannel("C1", "inc-42", false, false)
		s := newTestSlack(t, fake, func(c *SlackConfig) { c.JoinChannels = true })
		ts := mustPostMsg(t, s, "C1", "", Message{Text: "hello"})
		if msgs := fake.Messages("C1"); len(msgs) != 1 || msgs[0].TS != ts || !fake.IsMember("C1") {
			t.Fatalf("Messages = %+v, member %v", msgs, fake.IsMember("C1"))
		}
		if got := fake.Calls("conversations.join"); got != 1 {
			t.Fatalf("%d joins, want 1", got)
		}
	})

	t.Run("NoJoinWithoutPermission", func(t *testing.T) {
		fake := slackfake.New(t)
		fake.SetChannel("C1", "inc-42", false, false)
		s := newTestSlack(t, fake, nil)
		if _, err := s.Post(ctx, "C1", "", Message{Text: "hello"}); !errors.Is(err, ErrNotInChannel) {
			t.Fatalf("err = %v, want ErrNotInChannel", err)
		}
		if fake.Calls("conversations.join") != 0 {
			t.Fatal("joined without JoinChannels")
		}
	})

	t.Run("PrivateChannel", func(t *testing.T) {
		fake := slackfake.New(t)
		fake.SetChannel("G1", "inc-secret", true, false)
		s := newTestSlack(t, fake, func(c *SlackConfig) { c.JoinChannels = true })
		_, err := s.Post(ctx, "G1", "", Message{Text: "hello"})
		if !errors.Is(err, ErrNotInChannel) || !strings.Contains(err.Error(), "/invite") {
			t.Fatalf("err = %v, want ErrNotInChannel with an /invite hint", err)
		}
		if err := s.Ephemeral(ctx, "G1", "U1", Message{Text: "psst"}); !errors.Is(err, ErrNotInChannel) {
			t.Fatalf("ephemeral err = %v, want ErrNotInChannel", err)
		}
		if _, _, err := s.ChannelName(ctx, "G1"); !errors.Is(err, ErrNotInChannel) {
			t.Fatalf("ChannelName err = %v, want ErrNotInChannel", err)
		}
		if n := len(fake.Posts()); n != 0 {
			t.Fatalf("%d posts, want none", n)
		}
	})

	t.Run("JoinRefused", func(t *testing.T) {
		fake := slackfake.New(t)
		fake.SetChannel("C1", "inc-42", false, false)
		fake.SlackError("conversations.join", 1, "missing_scope")
		s := newTestSlack(t, fake, func(c *SlackConfig) { c.JoinChannels = true })
		_, err := s.Post(ctx, "C1", "", Message{Text: "hello"})
		if !errors.Is(err, ErrNotInChannel) || !strings.Contains(err.Error(), "channels:join") {
			t.Fatalf("err = %v, want ErrNotInChannel naming channels:join", err)
		}
	})
}

func TestSlackMissingScope(t *testing.T) {
	fake := slackfake.New(t)
	s := newTestSlack(t, fake, nil)
	fake.SetUsergroup("S1", "U1")
	fake.SlackError("usergroups.users.list", 1, "missing_scope")
	_, err := s.IsMember(context.Background(), "U1", "S1")
	scopeErr, ok := errors.AsType[*MissingScopeError](err)
	if !ok || scopeErr.Needed != "usergroups:read" {
		t.Fatalf("err = %v, want a MissingScopeError for usergroups:read", err)
	}
	want := "the Slack app lacks the usergroups:read scope; add it under OAuth & Permissions and reinstall"
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %q, want it to say %q", err, want)
	}
	// The failure is not cached.
	if ok, err := s.IsMember(context.Background(), "U1", "S1"); err != nil || !ok {
		t.Fatalf("IsMember after the scope was added = %v, %v", ok, err)
	}
}

func TestSlackUsergroupCache(t *testing.T) {
	ctx := context.Background()
	fake := slackfake.New(t)
	clock := &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s := newTestSlack(t, fake, func(c *SlackConfig) { c.Now = clock.Now })
	fake.SetUsergroup("S1", "U1", "U2")
	// The first call is slow, so every goroutine below misses together.
	fake.Delay("usergroups.users.list", 1, 100*time.Millisecond)

	var wg sync.WaitGroup
	var wrong atomic.Int32
	for i := range 50 {
		wg.Go(func() {
			user, want := "U1", true
			if i%2 == 1 {
				user, want = "U9", false
			}
			got, err := s.IsMember(ctx, user, "S1")
			if err != nil || got != want {
				wrong.Add(1)
			}
		})
	}
	wg.Wait()
	if wrong.Load() != 0 {
		t.Fatalf("%d wrong answers", wrong.Load())
	}
	if got := fake.Calls("usergroups.users.list"); got != 1 {
		t.Fatalf("%d calls for 50 concurrent misses, want 1", got)
	}

	fake.SetUsergroup("S1", "U1")
	clock.Add(4 * time.Minute)
	if ok, _ := s.IsMember(ctx, "U2", "S1"); !ok || fake.Calls("usergroups.users.list") != 1 {
		t.Fatal("the cache was not used within its TTL")
	}
	clock.Add(time.Minute + time.Second)
	if ok, err := s.IsMember(ctx, "U2", "S1"); ok || err != nil {
		t.Fatalf("U2 still a member after the TTL (%v, %v)", ok, err)
	}
	if got := fake.Calls("usergroups.users.list"); got != 2 {
		t.Fatalf("%d calls, want 2 after the TTL", got)
	}
}

func TestSlackChannelNameCache(t *testing.T) {
	ctx := context.Background()
	fake := slackfake.New(t)
	clock := &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s := newTestSlack(t, fake, func(c *SlackConfig) { c.Now = clock.Now })
	fake.SetChannel("G1", "inc-2026-03-01-gpu", true, true)
	for range 3 {
		name, private, err := s.ChannelName(ctx, "G1")
		if err != nil || name != "inc-2026-03-01-gpu" || !private {
			t.Fatalf("ChannelName = %q, %v, %v", name, private, err)
		}
	}
	if got := fake.Calls("conversations.info"); got != 1 {
		t.Fatalf("%d calls, want 1", got)
	}
	fake.SetChannel("G1", "inc-renamed", true, true)
	clock.Add(10*time.Minute + time.Second)
	if name, _, _ := s.ChannelName(ctx, "G1"); name != "inc-renamed" {
		t.Fatalf("name after the TTL = %q, want the new name", name)
	}
}

func TestSlackUploadPNG(t *testing.T) {
	fake := slackfake.New(t)
	s := newTestSlack(t, fake, nil)
	parent := mustPostMsg(t, s, "C1", "", Message{Text: "report"})
	png := []byte("\x89PNG\r\n\x1a\n picture bytes")
	fake.FailBefore(slackfake.MethodUpload, 1, http.StatusInternalServerError, 0)
	if err := s.UploadPNG(context.Background(), "C1", parent, "timings.png", "Phase timings", png); err != nil {
		t.Fatal(err)
	}
	files := fake.Files()
	if len(files) != 1 {
		t.Fatalf("Files = %+v, want one", files)
	}
	f := files[0]
	if !bytes.Equal(f.Data, png) || f.Name != "timings.png" || f.Title != "Phase timings" || !f.Completed || f.Channel != "C1" || f.ThreadTS != parent {
		t.Fatalf("file = %+v", f)
	}
	if fake.Calls("files.upload") != 0 {
		t.Fatal("the retired files.upload was called")
	}
}

func TestSlackRespond(t *testing.T) {
	ctx := context.Background()

	t.Run("InChannelRecorded", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		if err := s.Respond(ctx, fake.ResponseURL("C1"), Message{Text: "rolling back"}, true, false); err != nil {
			t.Fatal(err)
		}
		p := fake.Posts()
		if len(p) != 1 || p[0].Method != slackfake.MethodResponseURL || p[0].Text != "rolling back" || p[0].ResponseType != "in_channel" || p[0].ReplaceOriginal {
			t.Fatalf("posts = %+v", p)
		}
	})

	t.Run("EphemeralReplace", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		if err := s.Respond(ctx, fake.ResponseURL("C1"), Message{Text: "cancelled"}, false, true); err != nil {
			t.Fatal(err)
		}
		if p := fake.Posts(); len(p) != 1 || p[0].ResponseType != "ephemeral" || !p[0].ReplaceOriginal {
			t.Fatalf("posts = %+v", p)
		}
	})

	t.Run("RetriedOnceAtMost", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		fake.FailBefore(slackfake.MethodResponseURL, 5, http.StatusInternalServerError, 0)
		// A new message might have been posted by a 500: not repeated.
		if err := s.Respond(ctx, fake.ResponseURL("C1"), Message{Text: "new"}, true, false); err == nil {
			t.Fatal("respond succeeded, want the 500")
		}
		if got := fake.Calls(slackfake.MethodResponseURL); got != 1 {
			t.Fatalf("%d calls, want 1", got)
		}
		// Replacing is idempotent: one retry, never more.
		if err := s.Respond(ctx, fake.ResponseURL("C1"), Message{Text: "replace"}, false, true); err == nil {
			t.Fatal("respond succeeded, want the 500")
		}
		if got := fake.Calls(slackfake.MethodResponseURL); got != 3 {
			t.Fatalf("%d calls, want 3", got)
		}
	})

	t.Run("RateLimitRetried", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		fake.FailBefore(slackfake.MethodResponseURL, 1, http.StatusTooManyRequests, 0)
		if err := s.Respond(ctx, fake.ResponseURL("C1"), Message{Text: "x"}, true, false); err != nil {
			t.Fatal(err)
		}
		if n := len(fake.Posts()); n != 1 {
			t.Fatalf("%d posts, want 1", n)
		}
	})

	t.Run("UsedUp", func(t *testing.T) {
		fake := slackfake.New(t)
		s := newTestSlack(t, fake, nil)
		u := fake.ResponseURL("C1")
		for range 5 {
			if err := s.Respond(ctx, u, Message{Text: "x"}, false, false); err != nil {
				t.Fatal(err)
			}
		}
		err := s.Respond(ctx, u, Message{Text: "x"}, false, false)
		if err == nil || !strings.Contains(err.Error(), "used_url") || strings.Contains(err.Error(), "/response/") {
			t.Fatalf("err = %v, want used_url without the URL's path", err)
		}
	})
}

func TestSlackEphemeralAndAuth(t *testing.T) {
	ctx := context.Background()
	fake := slackfake.New(t)
	s := newTestSlack(t, fake, nil)
	fake.FailBefore("chat.postEphemeral", 1, http.StatusBadGateway, 0)
	if err := s.Ephemeral(ctx, "C1", "U1", Message{Text: "only you"}); err != nil {
		t.Fatal(err)
	}
	if p := fake.Posts(); len(p) != 1 || p[0].User != "U1" || p[0].Method != "chat.postEphemeral" {
		t.Fatalf("posts = %+v", p)
	}
	id, err := s.AuthTest(ctx)
	if err != nil || id != slackfake.BotUserID {
		t.Fatalf("AuthTest = %q, %v", id, err)
	}
	fake.SetToken("xoxb-another")
	if _, err := s.AuthTest(ctx); err == nil || !strings.Contains(err.Error(), "BACKFLIP_SLACK_BOT_TOKEN") {
		t.Fatalf("err = %v, want it to point at the token setting", err)
	}
}

func TestSlackNeverLogsToken(t *testing.T) {
	ctx := context.Background()
	fake := slackfake.New(t)
	core, logs := observer.New(zap.DebugLevel)
	s := newTestSlack(t, fake, func(c *SlackConfig) { c.Logger = zap.New(core); c.JoinChannels = true })
	fake.SetChannel("C2", "inc", false, false)
	fake.FailAfter("chat.postMessage", 1, http.StatusInternalServerError)
	fake.FailBefore("chat.update", 1, http.StatusTooManyRequests, 0)
	ts, _ := s.Post(ctx, "C1", "", Message{Text: "k1", Key: "k1"})
	_ = s.Update(ctx, "C1", ts, Message{Text: "k2"})
	_, _ = s.Post(ctx, "C2", "", Message{Text: "joined"})
	fake.SetToken("xoxb-another")
	_, _ = s.AuthTest(ctx)
	if logs.Len() == 0 {
		t.Fatal("nothing was logged; the test checks nothing")
	}
	for _, e := range logs.All() {
		if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, "secret-token") {
			t.Fatalf("the token was logged: %s", line)
		}
	}
}

func TestNewSlackConfig(t *testing.T) {
	if _, err := NewSlack(SlackConfig{}); err == nil || !strings.Contains(err.Error(), "BACKFLIP_SLACK_BOT_TOKEN") {
		t.Fatalf("err = %v, want it to name the missing token", err)
	}
	if _, err := NewSlack(SlackConfig{Token: "x", APIURL: "ftp://x"}); err == nil {
		t.Fatal("an ftp API URL was accepted")
	}
}
