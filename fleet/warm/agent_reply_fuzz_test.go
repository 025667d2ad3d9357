package warm

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
)

// replyAgent is an agent reduced to its answers: the first GET /v1/warm
// gets status1/body1, a fresh=1 one status2/body2. "{{auth}}" in a body
// is replaced by the Authorization header the request carried, as an agent
// (or a proxy in front of it) whose error pages echo the request does.
type replyAgent struct {
	status1, status2 int
	body1, body2     []byte
}

func (a *replyAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	status, body := a.status1, a.body1
	if r.URL.Query().Get("fresh") == "1" {
		status, body = a.status2, a.body2
	}
	body = bytes.ReplaceAll(body, []byte("{{auth}}"), []byte(r.Header.Get("Authorization")))
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Request: r}, nil
}

// noKV is the etcd of a Checker that only asks agents: asking a node reads
// nothing from etcd.
type noKV struct{ t *testing.T }

func (k noKV) Get(context.Context, string, ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.t.Fatal("askNode read etcd")
	return nil, nil
}

// FuzzAgentWarmReply asks one node through the Checker's real request and
// decision code, with the agent answering anything (status and body of the
// first request and of the fresh=1 one). Whatever it answers:
//   - the node's reason, which the bot shows in Slack and logs, is valid
//     UTF-8 without control characters, bounded in length, and never holds
//     BACKFLIP_AGENT_TOKEN, even from an agent that echoes the request;
//   - the node counts as warm only when a 200 reply about this node, route
//     and version says served, loaded, ready and warm, and never with more
//     GPUs than that reply nor than the node's record registers.
func FuzzAgentWarmReply(f *testing.F) {
	warmNow := `{"node":"gpu-1","route":"chat-70b","version":"v41","kind":"openai","served":true,"loaded":true,"ready":true,"warm":true,"gpus":4,"canary_ms":38.5,"inflight":3,"observed_at":"2026-11-25T10:00:00Z","age_ms":1200}`
	old := strings.Replace(warmNow, `"age_ms":1200`, `"age_ms":60000`, 1)
	cold := `{"node":"gpu-1","route":"chat-70b","version":"v41","kind":"openai","served":true,"loaded":true,"ready":true,"warm":false,"gpus":4,"canary_ms":2100,"error":"canary took 2.1s, budget 800ms","observed_at":"2026-11-25T10:00:00Z","age_ms":900}`
	for _, s := range []struct {
		s1     uint16
		b1     string
		s2     uint16
		b2     string
		record uint16
	}{
		{200, warmNow, 200, warmNow, 4},
		{200, warmNow, 200, warmNow, 2},
		{200, cold, 200, cold, 4},
		{200, old, 200, warmNow, 4},
		{200, old, 200, old, 4},
		{200, old, 503, "upstream connect error or disconnect/reset before headers", 4},
		{200, strings.Replace(warmNow, `"gpus":4`, `"gpus":400`, 1), 200, warmNow, 8},
		{200, strings.Replace(warmNow, `"node":"gpu-1"`, `"node":"gpu-2"`, 1), 200, warmNow, 4},
		{200, strings.Replace(cold, `canary took 2.1s, budget 800ms`, `\u001b[31mCUDA error\u001b[0m\nout of memory\u0000`, 1), 200, cold, 4},
		{200, strings.Replace(warmNow, `"served":true`, `"served":false`, 1), 200, warmNow, 4},
		{401, `{"error":"bad token"}`, 200, warmNow, 4},
		{404, `404 page not found`, 200, warmNow, 4},
		{302, ``, 200, warmNow, 4},
		{500, "<html><title>500</title><pre>Traceback (most recent call last):\n  File \"agent.py\"\nKeyError: 'x'</pre></html>", 200, warmNow, 4},
		{502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>", 200, warmNow, 4},
		{200, `<html>502</html>`, 200, warmNow, 4},
		{200, warmNow + `{}`, 200, warmNow, 4},
		{200, `{"node":"gpu-1","route":"chat-70b","version":"v41","served":true,"loaded":true,"ready":true,"warm":true,"gpus":4,"x":"{{auth}}"}`, 200, warmNow, 4},
		{599, "\xff\xfe\x00", 0, "", 0},
	} {
		f.Add(s.s1, []byte(s.b1), s.s2, []byte(s.b2), s.record)
	}
	const token = "s3cr3t-agent-token-0123456789abcdef"
	f.Fuzz(func(t *testing.T, s1 uint16, b1 []byte, s2 uint16, b2 []byte, record uint16) {
		agent := &replyAgent{status1: 100 + int(s1)%500, status2: 100 + int(s2)%500, body1: b1, body2: b2}
		hc := NewHTTPClient(nil)
		hc.Transport = agent
		c, err := NewChecker(Config{KV: noKV{t}, HTTPClient: hc, AgentToken: token, Timeout: time.Second, MaxAge: 15 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		gpus := int(record) % (fleetapi.MaxGPUs + 1)
		res := c.askNode(context.Background(), "chat-70b", "v41", targetNode{node: "gpu-1", url: "http://gpu-1.dc1:9090", gpus: gpus})

		if !utf8.ValidString(res.Reason) || strings.IndexFunc(res.Reason, unicode.IsControl) >= 0 {
			t.Fatalf("reason is not clean text: %q", res.Reason)
		}
		if len(res.Reason) > 2*maxReasonText+200 {
			t.Fatalf("reason is %d bytes: %q", len(res.Reason), res.Reason)
		}
		if strings.Contains(res.Reason, token) {
			t.Fatalf("reason holds the agent token: %q", res.Reason)
		}
		switch res.State {
		case StateWarm, StateCold, StateStale, StateNotServing, StateUnreachable:
		default:
			t.Fatalf("unknown state %q", res.State)
		}
		if res.State != StateWarm {
			if res.WarmGPUs != 0 {
				t.Fatalf("%d warm GPUs in state %s", res.WarmGPUs, res.State)
			}
			return
		}
		// Warm: one of the answers, decoded on its own, must say so.
		said := -1 // the most GPUs a warm answer reported
		for _, a := range []struct {
			status int
			body   []byte
		}{{agent.status1, b1}, {agent.status2, b2}} {
			if a.status != http.StatusOK {
				continue
			}
			w, err := fleetapi.DecodeWarmReply(bytes.NewReader(bytes.ReplaceAll(a.body, []byte("{{auth}}"), []byte("Bearer "+token))), "gpu-1", "chat-70b", "v41")
			if err == nil && w.Served && w.Loaded && w.Ready && w.Warm {
				said = max(said, w.GPUs)
			}
		}
		if said < 0 {
			t.Fatalf("warm without a warm answer: %+v", res)
		}
		if res.WarmGPUs > gpus || res.WarmGPUs > said {
			t.Fatalf("%d warm GPUs; the record registers %d, the agent said %d", res.WarmGPUs, gpus, said)
		}
	})
}
