package fleetapi

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"Hostname", "gpu-node-17.dc1.example.com", true},
		{"Short", "n1", true},
		{"Empty", "", false},
		{"Slash", "a/b", false},
		{"LeadingDot", ".a", false},
		{"TrailingDash", "a-", false},
		{"Space", "a b", false},
		{"TooLong", strings.Repeat("a", MaxNodeLen+1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateNode(tc.in); (err == nil) != tc.ok {
				t.Fatalf("ValidateNode(%q) = %v", tc.in, err)
			}
		})
	}
}

func TestDecodeNodeRecord(t *testing.T) {
	k := Keys{Prefix: "/backflip"}
	key := k.Node("gpu-1")
	good := `{"node":"gpu-1","url":"https://gpu-1:9090","serving":{"chat-70b":{"v41":4,"v42":4}}}`
	n, err := DecodeNodeRecord(k, key, []byte(good))
	if err != nil || n.GPUs("chat-70b", "v41") != 4 || n.GPUs("chat-70b", "v40") != 0 {
		t.Fatalf("good record: %+v %v", n, err)
	}
	for name, bad := range map[string]string{
		"Garbage":        `{"node":`,
		"UnknownField":   `{"node":"gpu-1","url":"http://x:1","serving":{},"extra":1}`,
		"NodeMismatch":   `{"node":"gpu-2","url":"http://x:1","serving":{}}`,
		"BadURL":         `{"node":"gpu-1","url":"ftp://x","serving":{}}`,
		"URLWithUser":    `{"node":"gpu-1","url":"http://u:p@x:1","serving":{}}`,
		"BadRoute":       `{"node":"gpu-1","url":"http://x:1","serving":{"a/b":{"v1":1}}}`,
		"ReservedRoute":  `{"node":"gpu-1","url":"http://x:1","serving":{"status":{"v1":1}}}`,
		"BadVersion":     `{"node":"gpu-1","url":"http://x:1","serving":{"r":{"v 1":1}}}`,
		"NegativeGPUs":   `{"node":"gpu-1","url":"http://x:1","serving":{"r":{"v1":-1}}}`,
		"AbsurdGPUs":     `{"node":"gpu-1","url":"http://x:1","serving":{"r":{"v1":100000}}}`,
		"Trailing":       good + `x`,
		"TooBig":         `{"node":"gpu-1","url":"http://x:1","serving":{},"pad":"` + strings.Repeat("x", MaxRecordBytes) + `"}`,
		"FractionalGPUs": `{"node":"gpu-1","url":"http://x:1","serving":{"r":{"v1":1.5}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeNodeRecord(k, key, []byte(bad)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := DecodeNodeRecord(k, "/backflip/fleet/nodes/a/b", []byte(good)); err == nil {
		t.Fatal("accepted a record under a nested key")
	}
}

func TestDecodeWarmReply(t *testing.T) {
	good := `{"node":"gpu-1","route":"chat-70b","version":"v41","kind":"openai","served":true,"loaded":true,"ready":true,"warm":true,"gpus":4,"canary_ms":38.5,"inflight":3,"observed_at":"2026-11-25T10:00:00Z","age_ms":1200}`
	w, err := DecodeWarmReply(strings.NewReader(good), "gpu-1", "chat-70b", "v41")
	if err != nil || !w.Warm || w.GPUs != 4 || w.InFlight == nil || *w.InFlight != 3 {
		t.Fatalf("good reply: %+v %v", w, err)
	}
	for _, tc := range []struct {
		name, body, node, route, version string
	}{
		{"WrongNode", good, "gpu-2", "chat-70b", "v41"},
		{"WrongVersion", good, "gpu-1", "chat-70b", "v42"},
		{"Garbage", `<html>502 Bad Gateway</html>`, "gpu-1", "chat-70b", "v41"},
		{"Huge", `{"node":"` + strings.Repeat("a", MaxReplyBytes) + `"}`, "gpu-1", "chat-70b", "v41"},
		{"WarmButNotLoaded", strings.Replace(good, `"loaded":true`, `"loaded":false`, 1), "gpu-1", "chat-70b", "v41"},
		{"NegativeGPUs", strings.Replace(good, `"gpus":4`, `"gpus":-4`, 1), "gpu-1", "chat-70b", "v41"},
		{"NegativeInflight", strings.Replace(good, `"inflight":3`, `"inflight":-3`, 1), "gpu-1", "chat-70b", "v41"},
		{"UnknownField", strings.Replace(good, `"gpus":4`, `"gpus":4,"x":1`, 1), "gpu-1", "chat-70b", "v41"},
		{"HugeError", strings.Replace(good, `"gpus":4`, `"gpus":4,"error":"`+strings.Repeat("e", MaxErrorLen+1)+`"`, 1), "gpu-1", "chat-70b", "v41"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeWarmReply(strings.NewReader(tc.body), tc.node, tc.route, tc.version)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) && !strings.Contains(err.Error(), "invalid") {
				t.Fatalf("error %v does not say the reply was invalid", err)
			}
		})
	}
}

func TestDecodeStatusReply(t *testing.T) {
	good := `{"node":"gpu-1","at":"2026-11-25T10:00:00Z","versions":[{"route":"chat-70b","version":"v41","served":true,"loaded":false,"ready":true,"warm":false,"gpus":4,"canary_ms":0,"error":"model not loaded","observed_at":"2026-11-25T10:00:00Z","age_ms":10}]}`
	s, err := DecodeStatusReply(strings.NewReader(good))
	if err != nil || len(s.Versions) != 1 || s.Versions[0].Error != "model not loaded" {
		t.Fatalf("good status: %+v %v", s, err)
	}
	if _, err := DecodeStatusReply(strings.NewReader(strings.Replace(good, `"route":"chat-70b"`, `"route":"../x"`, 1))); err == nil {
		t.Fatal("accepted a bad route name")
	}
}
