package fleetapi

import (
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// namePattern is the shape of every route, version and node name the
// contract allows, checked independently of the validators: names become
// parts of etcd keys and are shown in chat as they are.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._:@+-]{0,251}[A-Za-z0-9])?$`)

func checkName(t *testing.T, what, s string) {
	t.Helper()
	if !namePattern.MatchString(s) {
		t.Fatalf("accepted %s %q", what, s)
	}
}

// FuzzDecodeNodeRecord: fleet/nodes/<node> is written by every agent, so
// its value is outside input to the bot. Whatever DecodeNodeRecord accepts
// names the node of its key, passes Validate, points at an http(s) URL
// without credentials, claims 0..MaxGPUs per version under valid names,
// and encodes to a value that decodes to the same record. Whatever it
// refuses is an ErrInvalid error naming the key.
func FuzzDecodeNodeRecord(f *testing.F) {
	for _, s := range []string{
		`{"node":"gpu-node-17.dc1.example.com","url":"https://gpu-node-17.dc1.example.com:9090","serving":{"chat-70b":{"v41":8,"v42":8},"embed-small":{"v7":1}}}`,
		`{"node":"gpu-node-17.dc1.example.com","url":"http://10.0.0.5:9090","serving":{}}`,
		`{"node":"gpu-node-17.dc1.example.com","url":"http://[::1]:9090","serving":null}`,
		`{"node":"gpu-node-17.dc1.example.com","url":"http://u:p@x:1","serving":{}}`,
		`{"node":"gpu-node-17.dc1.example.com","url":"ftp://x","serving":{}}`,
		`{"node":"gpu-node-17.dc1.example.com","url":"http://x:1","serving":{"status":{"v1":1}}}`,
		`{"node":"gpu-node-17.dc1.example.com","url":"http://x:1","serving":{"r":{"previous":1}}}`,
		`{"node":"gpu-node-17.dc1.example.com","url":"http://x:1","serving":{"r":{"v1":1025}}}`,
		`{"node":"gpu-node-17.dc1.example.com","url":"http://x:1","serving":{"r":{"v1":1}},"serving":{"s":{"v2":2}}}`,
		`{"node":"other","url":"http://x:1","serving":{}}`,
		`{"NODE":"gpu-node-17.dc1.example.com","Url":"http://x:1","Serving":{}}`,
		`{"node":"gpu-node-17.dc1.example.com","url":"http://x:1","serving":{}} {}`,
		`{"node":"gpu-node-17.dc1.example.com","url":"http://x\u0000:1","serving":{}}`,
		`null`, `{}`, `[]`,
	} {
		f.Add("gpu-node-17.dc1.example.com", []byte(s))
	}
	f.Add("a/b", []byte(`{"node":"a/b","url":"http://x:1","serving":{}}`))
	f.Add("", []byte(`{"node":"","url":"http://x:1","serving":{}}`))
	k := Keys{Prefix: "/backflip"}
	f.Fuzz(func(t *testing.T, node string, value []byte) {
		key := k.Node(node)
		rec, err := DecodeNodeRecord(k, key, value)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, routing.ErrInvalid) {
				t.Fatalf("refusal %v is neither fleetapi nor routing ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), key) {
				t.Fatalf("refusal %q does not name the key %q", err, key)
			}
			if !reflect.DeepEqual(rec, NodeRecord{}) {
				t.Fatalf("refusal %v with a record %+v", err, rec)
			}
			return
		}
		if rec.Node != node {
			t.Fatalf("record of node %q accepted under the key of %q", rec.Node, node)
		}
		if err := rec.Validate(); err != nil {
			t.Fatalf("accepted an invalid record %+v: %v", rec, err)
		}
		checkName(t, "node", rec.Node)
		u, err := url.Parse(rec.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			t.Fatalf("accepted url %q", rec.URL)
		}
		for route, versions := range rec.Serving {
			checkName(t, "route", route)
			if routing.IsReservedRoute(route) {
				t.Fatalf("accepted reserved route %q", route)
			}
			for version, gpus := range versions {
				checkName(t, "version", version)
				if gpus < 0 || gpus > MaxGPUs {
					t.Fatalf("accepted %d GPUs", gpus)
				}
			}
		}
		enc, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeNodeRecord(k, key, enc)
		if err != nil {
			t.Fatalf("re-encoded record %s refused: %v", enc, err)
		}
		if len(rec.Serving) == 0 && len(again.Serving) == 0 {
			rec.Serving, again.Serving = nil, nil
		}
		if !reflect.DeepEqual(rec, again) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", rec, again)
		}
	})
}

// A realistic /v1/warm reply and /v1/status reply, as the agent writes them.
const (
	fuzzWarmReply   = `{"node":"gpu-1","route":"chat-70b","version":"v41","kind":"openai","served":true,"loaded":true,"ready":true,"warm":true,"gpus":4,"canary_ms":38.5,"inflight":3,"observed_at":"2026-11-25T10:00:00Z","age_ms":1200}`
	fuzzStatusReply = `{"node":"gpu-1","at":"2026-11-25T10:00:00Z","versions":[{"route":"chat-70b","version":"v41","kind":"openai","served":true,"loaded":true,"ready":true,"warm":true,"gpus":4,"canary_ms":38.5,"inflight":3,"observed_at":"2026-11-25T10:00:00Z","age_ms":1200},{"route":"chat-70b","version":"v40","served":true,"loaded":false,"ready":true,"warm":false,"gpus":4,"canary_ms":0,"error":"model not loaded","observed_at":"2026-11-25T09:59:58Z","age_ms":2010}]}`
)

// checkVersionState checks what the bot relies on in an accepted state.
func checkVersionState(t *testing.T, s VersionState) {
	t.Helper()
	checkName(t, "route", s.Route)
	checkName(t, "version", s.Version)
	if s.Warm && (!s.Served || !s.Loaded || !s.Ready) {
		t.Fatalf("accepted warm but not served, loaded and ready: %+v", s)
	}
	if s.GPUs < 0 || s.GPUs > MaxGPUs || s.CanaryMS < 0 || s.AgeMS < 0 || (s.InFlight != nil && *s.InFlight < 0) {
		t.Fatalf("accepted counts out of range: %+v", s)
	}
	if len(s.Error) > MaxErrorLen {
		t.Fatalf("accepted a %d-byte error", len(s.Error))
	}
}

// FuzzDecodeAgentReplies decodes the two replies of an agent as the bot
// reads them (GET /v1/warm in every warm check, GET /v1/status): a reply
// is accepted only when it answers the question asked (that node, route
// and version), with consistent flags and counts in range; the accepted
// reply encodes to one that decodes the same; a refusal says the reply was
// invalid.
func FuzzDecodeAgentReplies(f *testing.F) {
	for _, s := range []string{
		fuzzWarmReply,
		strings.Replace(fuzzWarmReply, `"warm":true`, `"warm":false,"error":"canary took 2.1s, budget 800ms"`, 1),
		strings.Replace(fuzzWarmReply, `"inflight":3,`, ``, 1),
		strings.Replace(fuzzWarmReply, `"loaded":true`, `"loaded":false`, 1),
		strings.Replace(fuzzWarmReply, `"gpus":4`, `"gpus":-4`, 1),
		strings.Replace(fuzzWarmReply, `"canary_ms":38.5`, `"canary_ms":1e309`, 1),
		strings.Replace(fuzzWarmReply, `"node":"gpu-1"`, `"node":"gpu-2"`, 1),
		strings.Replace(fuzzWarmReply, `"version":"v41"`, `"version":"V41"`, 1),
		strings.Replace(fuzzWarmReply, `"observed_at":"2026-11-25T10:00:00Z"`, `"observed_at":"yesterday"`, 1),
		fuzzWarmReply + `{}`,
		`<html><body>502 Bad Gateway</body></html>`,
		`{"node":"gpu-1"}`, `null`, `{}`,
	} {
		f.Add(false, []byte(s))
	}
	for _, s := range []string{
		fuzzStatusReply,
		`{"node":"gpu-1","at":"2026-11-25T10:00:00Z","versions":[]}`,
		`{"node":"gpu-1","at":"2026-11-25T10:00:00Z","versions":null}`,
		`{"node":"-gpu","at":"2026-11-25T10:00:00Z","versions":[]}`,
		strings.Replace(fuzzStatusReply, `"route":"chat-70b"`, `"route":"../x"`, 1),
		strings.Replace(fuzzStatusReply, `"error":"model not loaded"`, `"error":"\u001b[31mred\u0000"`, 1),
	} {
		f.Add(true, []byte(s))
	}
	f.Fuzz(func(t *testing.T, status bool, body []byte) {
		if status {
			s, err := DecodeStatusReply(strings.NewReader(string(body)))
			if err != nil {
				if !strings.Contains(err.Error(), "invalid") {
					t.Fatalf("refusal %v does not say the reply was invalid", err)
				}
				return
			}
			checkName(t, "node", s.Node)
			for _, v := range s.Versions {
				checkVersionState(t, v)
			}
			enc, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			again, err := DecodeStatusReply(strings.NewReader(string(enc)))
			if err != nil {
				t.Fatalf("re-encoded status %s refused: %v", enc, err)
			}
			if !sameJSON(t, s, again) {
				t.Fatalf("round trip changed the status:\n%+v\n%+v", s, again)
			}
			return
		}
		w, err := DecodeWarmReply(strings.NewReader(string(body)), "gpu-1", "chat-70b", "v41")
		if err != nil {
			if !strings.Contains(err.Error(), "invalid") {
				t.Fatalf("refusal %v does not say the reply was invalid", err)
			}
			return
		}
		if w.Node != "gpu-1" || w.Route != "chat-70b" || w.Version != "v41" {
			t.Fatalf("accepted a reply to another question: %+v", w)
		}
		checkVersionState(t, w.VersionState)
		enc, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeWarmReply(strings.NewReader(string(enc)), "gpu-1", "chat-70b", "v41")
		if err != nil {
			t.Fatalf("re-encoded reply %s refused: %v", enc, err)
		}
		if !sameJSON(t, w, again) {
			t.Fatalf("round trip changed the reply:\n%+v\n%+v", w, again)
		}
	})
}

// sameJSON compares two values by their encodings, which is what the bot
// passes on (times compare by instant and zone name, not by pointer).
func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ea, err1 := json.Marshal(a)
	eb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return string(ea) == string(eb)
}
