package runtime

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// signedPost builds a request signed at ts (zero: now).
func signedPost(path string, secret []byte, ts int64, body string) *http.Request {
	if ts == 0 {
		ts = time.Now().Unix()
	}
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	r.Header.Set(HeaderSignature, Sign(secret, ts, []byte(body)))
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func prefixCount(tb testing.TB, c *clientv3.Client, prefix string) int64 {
	tb.Helper()
	resp, err := c.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		tb.Fatal(err)
	}
	return resp.Count
}

func TestRuntimeEndpointsRefuse(t *testing.T) {
	c := etcdtest.Start(t).Client(t)
	const prefix = "/t-refuse"
	cfg := HandlerConfig{Etcd: c, Prefix: prefix, Secret: sigTestSecret}
	hb, err := NewHeartbeatHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	acks, err := NewAcksHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hbBody := `{"id":"wf-1","url":"http://127.0.0.1:1","inflight":{"chat-70b":{"v42":3}}}`
	ackBody := `{"op":"op-1","instance":"wf-1","reissued":1}`
	huge := `{"id":"wf-1","inflight":{},"pad":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	for _, ep := range []struct {
		name string
		path string
		h    http.Handler
		body string
	}{
		{"Heartbeat", HeartbeatPath, hb, hbBody},
		{"Acks", AcksPath, acks, ackBody},
	} {
		for _, tc := range []struct {
			name string
			req  func() *http.Request
			want int
		}{
			{"ForgedSignature", func() *http.Request { return signedPost(ep.path, []byte("not-the-secret"), 0, ep.body) }, http.StatusUnauthorized},
			{"StaleTimestamp", func() *http.Request {
				return signedPost(ep.path, sigTestSecret, time.Now().Add(-MaxSkew-time.Minute).Unix(), ep.body)
			}, http.StatusUnauthorized},
			{"FutureTimestamp", func() *http.Request {
				return signedPost(ep.path, sigTestSecret, time.Now().Add(MaxSkew+time.Minute).Unix(), ep.body)
			}, http.StatusUnauthorized},
			{"Unsigned", func() *http.Request { return httptest.NewRequest(http.MethodPost, ep.path, strings.NewReader(ep.body)) }, http.StatusUnauthorized},
			{"TamperedBody", func() *http.Request {
				r := signedPost(ep.path, sigTestSecret, 0, ep.body)
				r.Body = httpBody(strings.Replace(ep.body, "wf-1", "wf-2", 1))
				return r
			}, http.StatusUnauthorized},
			{"OversizedBody", func() *http.Request { return signedPost(ep.path, sigTestSecret, 0, huge) }, http.StatusRequestEntityTooLarge},
			{"WrongMethod", func() *http.Request { return httptest.NewRequest(http.MethodGet, ep.path, nil) }, http.StatusMethodNotAllowed},
			{"UnknownField", func() *http.Request {
				return signedPost(ep.path, sigTestSecret, 0, strings.Replace(ep.body, `{`, `{"x":1,`, 1))
			}, http.StatusBadRequest},
		} {
			t.Run(ep.name+"/"+tc.name, func(t *testing.T) {
				w := serve(ep.h, tc.req())
				if w.Code != tc.want {
					t.Fatalf("status %d, want %d (%s)", w.Code, tc.want, w.Body)
				}
				if tc.want == http.StatusUnauthorized && strings.TrimSpace(w.Body.String()) != "unauthorized" {
					t.Fatalf("refusal has detail: %q", w.Body)
				}
				if n := prefixCount(t, c, prefix); n != 0 {
					t.Fatalf("%d keys written", n)
				}
			})
		}
	}

	t.Run("Heartbeat/Replayed", func(t *testing.T) {
		ts := time.Now().Unix()
		if w := serve(hb, signedPost(HeartbeatPath, sigTestSecret, ts, hbBody)); w.Code != http.StatusNoContent {
			t.Fatalf("first: %d %s", w.Code, w.Body)
		}
		rev := mustRev(t, c)
		if w := serve(hb, signedPost(HeartbeatPath, sigTestSecret, ts, hbBody)); w.Code != http.StatusUnauthorized {
			t.Fatalf("replay: %d", w.Code)
		}
		if got := mustRev(t, c); got != rev {
			t.Fatalf("replay wrote: revision %d → %d", rev, got)
		}
	})
	t.Run("Acks/Replayed", func(t *testing.T) {
		putAck(t, c, prefix, "op-1", "wf-1", 1, 0)
		ts := time.Now().Unix()
		if w := serve(acks, signedPost(AcksPath, sigTestSecret, ts, ackBody)); w.Code != http.StatusNoContent {
			t.Fatalf("first: %d %s", w.Code, w.Body)
		}
		rev := mustRev(t, c)
		if w := serve(acks, signedPost(AcksPath, sigTestSecret, ts, ackBody)); w.Code != http.StatusUnauthorized {
			t.Fatalf("replay: %d", w.Code)
		}
		if got := mustRev(t, c); got != rev {
			t.Fatalf("replay wrote: revision %d → %d", rev, got)
		}
	})
}

func httpBody(s string) *readCloser { return &readCloser{strings.NewReader(s)} }

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

func mustRev(tb testing.TB, c *clientv3.Client) int64 {
	tb.Helper()
	resp, err := c.Get(context.Background(), "/", clientv3.WithCountOnly())
	if err != nil {
		tb.Fatal(err)
	}
	return resp.Header.Revision
}

func putAck(tb testing.TB, c *clientv3.Client, prefix, op, id string, aborted int, lease clientv3.LeaseID) {
	tb.Helper()
	val, _ := json.Marshal(AckRecord{InFlight: aborted, Aborted: aborted, AppliedRev: 7, At: time.Now()})
	if _, err := c.Put(context.Background(), Keys{Prefix: prefix}.Ack(op, id), string(val), clientv3.WithLease(lease)); err != nil {
		tb.Fatal(err)
	}
}

func getRecord[T any](tb testing.TB, c *clientv3.Client, key string) (T, *clientv3.GetResponse) {
	tb.Helper()
	var v T
	resp, err := c.Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		tb.Fatalf("get %s: %v (%d keys)", key, err, len(resp.Kvs))
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		tb.Fatal(err)
	}
	return v, resp
}

func TestHeartbeatHandler(t *testing.T) {
	c := etcdtest.Start(t).Client(t)
	const prefix = "/t-hb"
	hb, err := NewHeartbeatHandler(HandlerConfig{Etcd: c, Prefix: prefix, Secret: sigTestSecret, InstanceTTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bot := httptest.NewServer(hb)
	t.Cleanup(bot.Close)
	key := Keys{Prefix: prefix}.Instance("wf-1")
	beat := func(t *testing.T, n int) {
		t.Helper()
		rec := InstanceRecord{ID: "wf-1", URL: "http://10.0.0.5:9000", InFlight: map[string]map[string]int{"chat-70b": {"v42": n}}}
		if err := (&BotClient{BotURL: bot.URL, Secret: sigTestSecret}).Heartbeat(context.Background(), rec); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}

	var first clientv3.LeaseID
	t.Run("CreatesRecordUnderLease", func(t *testing.T) {
		beat(t, 3)
		rec, resp := getRecord[InstanceRecord](t, c, key)
		if rec.InFlight["chat-70b"]["v42"] != 3 || rec.URL != "http://10.0.0.5:9000" {
			t.Fatalf("record %+v", rec)
		}
		first = clientv3.LeaseID(resp.Kvs[0].Lease)
		ttl, err := c.TimeToLive(context.Background(), first)
		if err != nil || first == 0 || ttl.GrantedTTL != 30 || ttl.TTL <= 0 {
			t.Fatalf("lease %x: %+v %v", first, ttl, err)
		}
	})
	t.Run("RefreshesLeaseAndRecord", func(t *testing.T) {
		time.Sleep(1100 * time.Millisecond)
		before, _ := c.TimeToLive(context.Background(), first)
		beat(t, 5)
		rec, resp := getRecord[InstanceRecord](t, c, key)
		after, err := c.TimeToLive(context.Background(), first)
		if err != nil || clientv3.LeaseID(resp.Kvs[0].Lease) != first || rec.InFlight["chat-70b"]["v42"] != 5 {
			t.Fatalf("lease %x (first %x), record %+v, %v", resp.Kvs[0].Lease, first, rec, err)
		}
		if after.TTL <= before.TTL {
			t.Fatalf("lease not refreshed: TTL %d before, %d after", before.TTL, after.TTL)
		}
		if hb.Tracked() != 1 {
			t.Fatalf("tracking %d leases", hb.Tracked())
		}
	})
	t.Run("ExpiredLeaseReplaced", func(t *testing.T) {
		if _, err := c.Revoke(context.Background(), first); err != nil {
			t.Fatal(err)
		}
		if n := prefixCount(t, c, key); n != 0 {
			t.Fatal("record survived its lease")
		}
		beat(t, 1)
		_, resp := getRecord[InstanceRecord](t, c, key)
		if l := clientv3.LeaseID(resp.Kvs[0].Lease); l == 0 || l == first {
			t.Fatalf("lease %x after expiry of %x", l, first)
		}
	})
	t.Run("InvalidRecordRefused", func(t *testing.T) {
		w := serve(hb, signedPost(HeartbeatPath, sigTestSecret, 0, `{"id":"wf/1","inflight":{}}`))
		if w.Code != http.StatusBadRequest || prefixCount(t, c, Keys{Prefix: prefix}.Instance("wf/1")) != 0 {
			t.Fatalf("status %d", w.Code)
		}
	})
}

func TestAcksHandler(t *testing.T) {
	c := etcdtest.Start(t).Client(t)
	const prefix = "/t-acks"
	acks, err := NewAcksHandler(HandlerConfig{Etcd: c, Prefix: prefix, Secret: sigTestSecret})
	if err != nil {
		t.Fatal(err)
	}
	bot := httptest.NewServer(acks)
	t.Cleanup(bot.Close)
	// One client, as a runtime keeps: it never reuses a (timestamp,
	// signature) pair, so an identical report in the same second is not
	// refused as a replay.
	cl := &BotClient{BotURL: bot.URL, Secret: sigTestSecret, MaxAttempts: 2}
	report := func(op, id string, n int) error {
		return cl.ReportAcks(context.Background(), AckReport{Op: op, Instance: id, Reissued: n})
	}
	lease, err := c.Grant(context.Background(), 3600)
	if err != nil {
		t.Fatal(err)
	}
	putAck(t, c, prefix, "op-1", "wf-1", 37, lease.ID)
	key := Keys{Prefix: prefix}.Ack("op-1", "wf-1")

	t.Run("SetsReissuedKeepingLease", func(t *testing.T) {
		if err := report("op-1", "wf-1", 37); err != nil {
			t.Fatal(err)
		}
		rec, resp := getRecord[AckRecord](t, c, key)
		if rec.Reissued == nil || *rec.Reissued != 37 || rec.Aborted != 37 || rec.AppliedRev != 7 {
			t.Fatalf("ack %+v", rec)
		}
		if clientv3.LeaseID(resp.Kvs[0].Lease) != lease.ID {
			t.Fatalf("lease %x, want %x", resp.Kvs[0].Lease, lease.ID)
		}
	})
	t.Run("RepeatIsIdempotent", func(t *testing.T) {
		rev := mustRev(t, c)
		if err := report("op-1", "wf-1", 37); err != nil {
			t.Fatal(err)
		}
		if mustRev(t, c) != rev {
			t.Fatal("repeat wrote again")
		}
	})
	t.Run("UnknownAckIs404", func(t *testing.T) {
		w := serve(acks, signedPost(AcksPath, sigTestSecret, 0, `{"op":"op-2","instance":"wf-1","reissued":2}`))
		if w.Code != http.StatusNotFound {
			t.Fatalf("status %d", w.Code)
		}
		if err := report("op-2", "wf-1", 1); err == nil || !strings.Contains(err.Error(), ErrNoAck.Error()) {
			t.Fatalf("client: %v", err)
		}
		if prefixCount(t, c, Keys{Prefix: prefix}.Acks("op-2")) != 0 {
			t.Fatal("ack created")
		}
	})
	t.Run("MoreThanAbortedRefused", func(t *testing.T) {
		w := serve(acks, signedPost(AcksPath, sigTestSecret, 0, `{"op":"op-1","instance":"wf-1","reissued":38}`))
		if w.Code != http.StatusBadRequest {
			t.Fatalf("status %d", w.Code)
		}
	})
}

func TestReplayCacheBounded(t *testing.T) {
	rc := NewReplayCache(2)
	now := time.Unix(1764072000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	for i, want := range []error{nil, nil, errReplayFull} {
		if err := rc.Check(now, ts, "v1="+strconv.Itoa(i)); err != want {
			t.Fatalf("entry %d: %v, want %v", i, err, want)
		}
	}
	if err := rc.Check(now, ts, "v1=0"); err != ErrReplayed {
		t.Fatalf("replay: %v", err)
	}
	// Once the window has passed the old pairs make room.
	later := now.Add(MaxSkew + 2*time.Second)
	if err := rc.Check(later, strconv.FormatInt(later.Unix(), 10), "v1=new"); err != nil || rc.Len() != 1 {
		t.Fatalf("after expiry: %v, %d entries", err, rc.Len())
	}
}
