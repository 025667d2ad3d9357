package routing

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateRoute(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"Simple", "chat-70b", true},
		{"DotsAndUnderscores", "embed_small.v2", true},
		{"MaxLength", strings.Repeat("a", MaxRouteLen), true},
		{"Empty", "", false},
		{"TooLong", strings.Repeat("a", MaxRouteLen+1), false},
		{"Slash", "chat/70b", false},
		{"DotDot", "..", false},
		{"LeadingDash", "-chat", false},
		{"TrailingDot", "chat.", false},
		{"Space", "chat 70b", false},
		{"Unicode", "chät", false},
		{"NulByte", "chat\x00", false},
		{"ReservedStatus", "status", false},
		{"ReservedCaseInsensitive", "HeLp", false},
		{"ReservedList", "list", false},
		{"ColonNotInRoute", "chat:1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateRoute(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateRoute(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
		})
	}
}

func TestValidateVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"Simple", "v42", true},
		{"Digest", "llama-3.1-70b@sha256:abc123", true},
		{"Plus", "1.2.3+build7", true},
		{"Empty", "", false},
		{"Slash", "v4/2", false},
		{"Previous", "previous", false},
		{"PreviousUpper", "PREVIOUS", false},
		{"TooLong", strings.Repeat("9", MaxVersionLen+1), false},
		{"Quote", `v"1`, false},
		{"Newline", "v1\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateVersion(tc.in); (err == nil) != tc.ok {
				t.Fatalf("ValidateVersion(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

func TestValidateOpID(t *testing.T) {
	for _, in := range []string{"", "a/b", "a b", strings.Repeat("x", MaxOpLen+1), "op.1"} {
		if err := ValidateOpID(in); err == nil {
			t.Errorf("ValidateOpID(%q) accepted", in)
		}
	}
	if err := ValidateOpID("7c1e2b7a-0f0e-4c55-9d1f-0b6f0b1c2d3e"); err != nil {
		t.Errorf("uuid refused: %v", err)
	}
}

func validConfigJSON() string {
	return `{"route":"chat-70b","active":"v41","previous":"v42","kind":"rollback","from":"v42","epoch":7,"op":"op-1","reason":"latency","actor":"U1","at":"2026-11-25T10:00:00Z"}`
}

func TestDecodeRouteConfig(t *testing.T) {
	const key = "/backflip/routes/chat-70b"
	good := validConfigJSON()
	c, err := DecodeRouteConfig(key, []byte(good), "chat-70b")
	if err != nil {
		t.Fatalf("valid value refused: %v", err)
	}
	want := RouteConfig{Route: "chat-70b", Active: "v41", Previous: "v42", Kind: KindRollback, From: "v42",
		Epoch: 7, Op: "op-1", Reason: "latency", Actor: "U1", At: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	if c != want {
		t.Fatalf("decoded %+v, want %+v", c, want)
	}
	for _, tc := range []struct {
		name, value, wantInErr string
	}{
		{"NotJSON", `not json`, "invalid character"},
		{"Empty", ``, "EOF"},
		{"UnknownField", strings.Replace(good, `"op"`, `"extra":1,"op"`, 1), "unknown field"},
		{"TrailingData", good + `{}`, "trailing data"},
		{"WrongRoute", strings.Replace(good, `"route":"chat-70b"`, `"route":"other"`, 1), "does not match the key"},
		{"BadKind", strings.Replace(good, `"kind":"rollback"`, `"kind":"yolo"`, 1), "kind"},
		{"ZeroEpoch", strings.Replace(good, `"epoch":7`, `"epoch":0`, 1), "epoch"},
		{"StringEpoch", strings.Replace(good, `"epoch":7`, `"epoch":"7"`, 1), "epoch"},
		{"MissingActive", strings.Replace(good, `"active":"v41",`, ``, 1), "active"},
		{"ActiveWithSlash", strings.Replace(good, `"active":"v41"`, `"active":"../v41"`, 1), "active"},
		{"PreviousEqualsActive", strings.Replace(good, `"previous":"v42"`, `"previous":"v41"`, 1), "previous"},
		{"RollbackWithoutFrom", strings.Replace(good, `"from":"v42"`, `"from":""`, 1), "moved from"},
		{"MissingAt", strings.Replace(good, `,"at":"2026-11-25T10:00:00Z"`, ``, 1), "at is missing"},
		{"Array", `[1,2]`, "cannot unmarshal"},
		{"Huge", `{"route":"` + strings.Repeat("a", maxValueLen) + `"}`, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRouteConfig(key, []byte(tc.value), "chat-70b")
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("error %q should name the key and contain %q", err, tc.wantInErr)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	c, err := DecodeRouteConfig("k", []byte(validConfigJSON()), "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := DecodeRouteConfig("k", b, "chat-70b")
	if err != nil || c2 != c {
		t.Fatalf("round trip: %v %+v", err, c2)
	}
	c.Kind = "bogus"
	if _, err := c.Encode(); err == nil {
		t.Fatal("Encode accepted an invalid config")
	}
}

func TestKindAborts(t *testing.T) {
	if KindPromote.Aborts() {
		t.Error("a promote must not abort in-flight requests")
	}
	for _, k := range []Kind{KindRollback, KindDrill, KindDrillReturn} {
		if !k.Aborts() {
			t.Errorf("%s must abort in-flight requests", k)
		}
	}
}

func TestParsePinFile(t *testing.T) {
	pins, err := ParsePinFile([]byte(`{"reason":"etcd down","actor":"alice","routes":{"chat-70b":"v41"}}`))
	if err != nil || pins["chat-70b"] != "v41" {
		t.Fatalf("good pin file: %v %v", pins, err)
	}
	for name, bad := range map[string]string{
		"NoRoutes":     `{"reason":"x","routes":{}}`,
		"BadRoute":     `{"routes":{"a/b":"v1"}}`,
		"BadVersion":   `{"routes":{"chat":"v 1"}}`,
		"UnknownField": `{"routes":{"chat":"v1"},"ttl":3}`,
		"NotJSON":      `chat=v1`,
		"Trailing":     `{"routes":{"chat":"v1"}} x`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParsePinFile([]byte(bad)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// FuzzDecodeFastAgrees: whatever the fast decoder accepts, the strict
// encoding/json decoder accepts too and decodes to the same config.
func FuzzDecodeFastAgrees(f *testing.F) {
	f.Add([]byte(validConfigJSON()))
	f.Add([]byte(`{"route":"a","epoch":-0}`))
	f.Add([]byte(` { "epoch" : 12 , "at" : "2026-01-02T03:04:05.123456789+02:00" } `))
	f.Add([]byte(`{"route":"a","route":"b"}`))
	f.Add([]byte(`{"epoch":01}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeFast(data)
		if !ok {
			return
		}
		slow, err := decodeStrict(data)
		if err != nil {
			t.Fatalf("fast accepted what encoding/json refuses (%v): %q", err, data)
		}
		if !fast.At.Equal(slow.At) || fast.At.Location().String() != slow.At.Location().String() {
			t.Fatalf("at differs: %v vs %v", fast.At, slow.At)
		}
		fast.At = slow.At
		if fast != slow {
			t.Fatalf("decoded differently:\nfast %+v\nslow %+v\ninput %q", fast, slow, data)
		}
	})
}

func TestDecodeFastTakesTheStoredShape(t *testing.T) {
	c := RouteConfig{Route: "chat-70b", Active: "v41", Previous: "v42", Kind: KindRollback, From: "v42", Epoch: 7,
		Op: "op-1", Reason: "latency spike after v42", Actor: "U1", At: time.Now().UTC()}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, ok := decodeFast(b)
	if !ok || !got.At.Equal(c.At) {
		t.Fatalf("fast path refused what Encode writes: %s", b)
	}
	got.At = c.At
	if got != c {
		t.Fatalf("fast path: %+v, want %+v", got, c)
	}
}
