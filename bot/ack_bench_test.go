package bot

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/runtime"
	"github.com/backflip-dev/backflip/fleet/warm"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/simfleet"
)

// BenchmarkSlashAck measures the acknowledgement of a slash command as
// Slack sees it, minus the internet: a signed POST to /slack/commands over
// a real loopback HTTP server (keep-alive, as Slack's deliveries are),
// through signature and timestamp checks and form decoding, to a Handler
// that answers an ephemeral reply at once, and back. Slack's limit is
// 3 s; backflip aims at 50 ms for the whole ack including the Handler, so
// this is the transport's share of it. BenchmarkSlashAckFloor is the same
// round trip to a handler that does nothing but write the reply: the
// ratio of the two is the transport's cost on the machine at hand.
//
//	go test -run '^$' -bench 'BenchmarkSlashAck' -benchtime 5000x ./bot/
func BenchmarkSlashAck(b *testing.B) {
	h, err := NewHTTPHandler(HTTPConfig{
		SigningSecret: []byte(httpTestSecret),
		Handler:       &benchHandler{reply: &Reply{Message: Message{Text: benchReplyText}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkAck(b, h, nil)
}

// BenchmarkSlashAckBot is BenchmarkSlashAck with the real handler behind
// the transport: the Bot over a commands Service on a real embedded etcd
// and a small simulated fleet (4 nodes, 3 routers, 2 runtimes). The command
// is /rollback without --now, so the ack is the real one: parse, start the
// pre-flight card's work (authorization, warm check, in-flight count) in
// the background, answer "Checking chat-70b before rolling back…". The
// card's work is not part of the ack: between two commands the benchmark
// waits for it, untimed, so each ack meets an idle bot. The Bot's messages
// go to a recording Poster, not to a Slack fake with Slack's rate limits.
//
//	go test -run '^$' -bench 'BenchmarkSlashAckBot' -benchtime 2000x ./bot/
func BenchmarkSlashAckBot(b *testing.B) {
	bt := benchBot(b)
	h, err := NewHTTPHandler(HTTPConfig{SigningSecret: []byte(httpTestSecret), Handler: bt})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkAck(b, h, bt.Wait)
}

// benchBot is a Bot over real parts, posting to a recording Poster.
func benchBot(b *testing.B) *Bot {
	b.Helper()
	etcd := etcdtest.Start(b)
	cli := etcd.Client(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const prefix = "/bench"
	f, err := simfleet.Start(ctx, simfleet.Config{Client: cli, Prefix: prefix, Nodes: 4, Routes: simfleet.DemoRoutes(), Routers: 3, Runtimes: 2})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.Close)
	checker, err := warm.NewChecker(warm.Config{KV: cli, Prefix: prefix, AgentToken: f.AgentToken(), Timeout: 2 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(checker.Close)
	sig, err := runtime.NewSignaller(runtime.SignallerConfig{Etcd: cli, Prefix: prefix, Secret: f.RuntimeSecret(), AckTimeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sess.Close() })
	form := slashForm()
	svc, err := commands.New(commands.Config{
		Etcd: cli, Prefix: prefix, Warm: checker, Runtime: sig, Owner: sess,
		Access: commands.Access{IncidentChannels: []string{form.Get("channel_id")}, RollbackUsers: []string{form.Get("user_id")}},
	})
	if err != nil {
		b.Fatal(err)
	}
	bt, err := New(Config{Service: svc, Poster: &benchPoster{}, CardTTL: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = bt.Close(ctx)
	})
	return bt
}

// benchPoster accepts every message at once and counts them.
type benchPoster struct{ n atomic.Int64 }

func (p *benchPoster) Post(context.Context, string, string, Message) (string, error) {
	return strconv.FormatInt(p.n.Add(1), 10) + ".000100", nil
}

func (p *benchPoster) Update(context.Context, string, string, Message) error {
	p.n.Add(1)
	return nil
}

func (p *benchPoster) Ephemeral(context.Context, string, string, Message) error {
	p.n.Add(1)
	return nil
}

func (p *benchPoster) Respond(context.Context, string, Message, bool, bool) error {
	p.n.Add(1)
	return nil
}

// BenchmarkSlashAckFloor is BenchmarkSlashAck's floor: the loopback HTTP
// round trip with the same request and answer and no work in between.
func BenchmarkSlashAckFloor(b *testing.B) {
	body := []byte(`{"response_type":"ephemeral","text":"` + benchReplyText + `"}`)
	benchmarkAck(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}), nil)
}

const benchReplyText = "Usage: /rollback <route> <reason ...>"

// benchmarkAck posts b.N signed slash commands to h over loopback, one at
// a time, and reports the 50th and 99th percentile round trips. between,
// if set, runs untimed after each.
func benchmarkAck(b *testing.B, h http.Handler, between func()) {
	secret := []byte(httpTestSecret)
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	endpoint := srv.URL + "/slack/commands"
	body := slashForm().Encode()

	lat := make([]time.Duration, 0, b.N)
	for b.Loop() {
		// Signing is Slack's work, not the bot's, so it is outside the
		// measured time.
		b.StopTimer()
		ts := time.Now().Unix()
		req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Slack-Request-Timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("X-Slack-Signature", Sign(secret, ts, []byte(body)))
		b.StartTimer()

		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		d := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d, read error %v", resp.StatusCode, err)
		}
		lat = append(lat, d)
		if between != nil {
			b.StopTimer()
			between()
			b.StartTimer()
		}
	}
	slices.Sort(lat)
	b.ReportMetric(ackMillis(ackPercentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ackMillis(ackPercentile(lat, 0.99)), "p99-ms")
}

// benchHandler answers every command with the same reply, as a Handler
// that refuses bad input does: the cheapest real answer.
type benchHandler struct{ reply *Reply }

func (h *benchHandler) Slash(context.Context, SlashCommand) *Reply { return h.reply }
func (h *benchHandler) Action(context.Context, Action) *Reply      { return nil }

// ackPercentile returns the p-quantile of sorted durations (nearest rank).
func ackPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ackMillis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
