package runtime

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	vectorSecret = "s3cret"
	vectorTS     = 1764072000
	vectorBody   = `{"op":"op-1","route":"chat-70b","epoch":7,"active_after":"v41","from":"v42"}`
	// vectorSig was computed in the shell, as the README shows operators:
	//   printf 'v1:%s:%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$secret"
	vectorSig = "v1=e54ce46d7b006dcd2f51f7bcd85302556bfa68191f01a79e878f6ce1fa6a02b2"
)

func TestSignMatchesShellVector(t *testing.T) {
	if got := Sign([]byte(vectorSecret), vectorTS, []byte(vectorBody)); got != vectorSig {
		t.Fatalf("Sign = %s, want %s (openssl)", got, vectorSig)
	}
}

func TestVerify(t *testing.T) {
	secret := []byte(vectorSecret)
	at := time.Unix(vectorTS, 0)
	ts := strconv.Itoa(vectorTS)
	for _, tc := range []struct {
		name     string
		now      time.Time
		ts, sig  string
		body     string
		secret   []byte
		want     error
		wantPass bool
	}{
		{name: "Valid", now: at, ts: ts, sig: vectorSig, body: vectorBody, secret: secret, wantPass: true},
		{name: "ValidNearWindowEdge", now: at.Add(MaxSkew - time.Second), ts: ts, sig: vectorSig, body: vectorBody, secret: secret, wantPass: true},
		{name: "ReplayAfterWindow", now: at.Add(MaxSkew + time.Second), ts: ts, sig: vectorSig, body: vectorBody, secret: secret, want: ErrStale},
		{name: "FromTheFuture", now: at.Add(-MaxSkew - time.Second), ts: ts, sig: vectorSig, body: vectorBody, secret: secret, want: ErrStale},
		{name: "TamperedBody", now: at, ts: ts, sig: vectorSig, body: strings.Replace(vectorBody, "v41", "v40", 1), secret: secret, want: ErrBadSignature},
		{name: "TimestampMovedToFitWindow", now: at.Add(time.Hour), ts: strconv.Itoa(vectorTS + 3600), sig: vectorSig, body: vectorBody, secret: secret, want: ErrBadSignature},
		{name: "WrongSecret", now: at, ts: ts, sig: vectorSig, body: vectorBody, secret: []byte("other"), want: ErrBadSignature},
		{name: "EmptySecretVerifiesNothing", now: at, ts: ts, sig: Sign(nil, vectorTS, []byte(vectorBody)), body: vectorBody, secret: nil, want: ErrBadSignature},
		{name: "Unsigned", now: at, ts: ts, sig: "", body: vectorBody, secret: secret, want: ErrUnsigned},
		{name: "NoTimestamp", now: at, ts: "", sig: vectorSig, body: vectorBody, secret: secret, want: ErrUnsigned},
		{name: "GarbageTimestamp", now: at, ts: "yesterday", sig: vectorSig, body: vectorBody, secret: secret, want: ErrStale},
		{name: "HugeTimestamp", now: at, ts: "99999999999999999999", sig: vectorSig, body: vectorBody, secret: secret, want: ErrStale},
		{name: "UpperCaseHex", now: at, ts: ts, sig: strings.ToUpper(vectorSig), body: vectorBody, secret: secret, want: ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.secret, tc.now, tc.ts, tc.sig, []byte(tc.body))
			if tc.wantPass {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReadSigned(t *testing.T) {
	secret := []byte("k")
	now := time.Unix(vectorTS, 0)
	r := httptest.NewRequest("POST", AbortPath, strings.NewReader(vectorBody))
	SignRequest(r, secret, now, []byte(vectorBody))
	body, err := ReadSigned(r, secret, now)
	if err != nil || string(body) != vectorBody {
		t.Fatalf("ReadSigned: %q %v", body, err)
	}
	huge := bytes.Repeat([]byte("x"), MaxBodyBytes+1)
	r = httptest.NewRequest("POST", AbortPath, bytes.NewReader(huge))
	SignRequest(r, secret, now, huge)
	if _, err := ReadSigned(r, secret, now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("huge body: %v", err)
	}
}

func TestDecode(t *testing.T) {
	var s AbortSignal
	if err := Decode([]byte(vectorBody), &s); err != nil || s.ActiveAfter != "v41" || s.Epoch != 7 {
		t.Fatalf("good signal: %+v %v", s, err)
	}
	for name, bad := range map[string]string{
		"UnknownField":  strings.Replace(vectorBody, `"epoch"`, `"x":1,"epoch"`, 1),
		"Trailing":      vectorBody + "{}",
		"BadRoute":      strings.Replace(vectorBody, "chat-70b", "../etc", 1),
		"SameVersions":  strings.Replace(vectorBody, `"from":"v42"`, `"from":"v41"`, 1),
		"ZeroEpoch":     strings.Replace(vectorBody, `"epoch":7`, `"epoch":0`, 1),
		"OpWithSlash":   strings.Replace(vectorBody, `"op-1"`, `"op/1"`, 1),
		"NotJSON":       "op=op-1",
		"EmptyVersions": strings.Replace(vectorBody, `"v41"`, `""`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			var s AbortSignal
			if err := Decode([]byte(bad), &s); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	var a AbortReply
	if err := Decode([]byte(`{"inflight":3,"aborted":4}`), &a); err == nil {
		t.Fatal("accepted more aborted than in flight")
	}
	var ack AckReport
	if err := Decode([]byte(`{"op":"op-1","instance":"wf-1","reissued":-1}`), &ack); err == nil {
		t.Fatal("accepted a negative re-issue count")
	}
	var rec InstanceRecord
	if err := Decode([]byte(`{"id":"wf-1","url":"file:///etc/passwd","inflight":{}}`), &rec); err == nil {
		t.Fatal("accepted a non-http instance url")
	}
	if err := Decode([]byte(`{"id":"wf-1","url":"http://10.0.0.5:9000","inflight":{"chat-70b":{"v42":37}}}`), &rec); err != nil || rec.InFlight["chat-70b"]["v42"] != 37 {
		t.Fatalf("good record: %+v %v", rec, err)
	}
}

func TestValidateInstance(t *testing.T) {
	for _, ok := range []string{"wf-1", "pod:ns.name_7"} {
		if err := ValidateInstance(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a/b", "a b", strings.Repeat("a", MaxInstanceLen+1)} {
		if err := ValidateInstance(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzDecodeAbortSignal decodes the body a runtime instance receives at
// /backflip/v1/abort: an accepted signal passes Validate, names an op,
// route and two different versions of the contract's shapes at a positive
// epoch, and encodes to a body that decodes to the same signal.
func FuzzDecodeAbortSignal(f *testing.F) {
	f.Add([]byte(vectorBody))
	f.Add([]byte(`{}`))
	for _, s := range []string{
		`{"op":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e11","route":"chat-70b","epoch":9223372036854775807,"active_after":"v41+build.7","from":"v42@sha256:abc"}`,
		`{"op":"op-1","route":"chat-70b","epoch":7,"active_after":"v41","from":"v41"}`,
		`{"op":"op-1","route":"status","epoch":7,"active_after":"v41","from":"v42"}`,
		`{"op":"op-1","route":"chat-70b","epoch":7,"active_after":"previous","from":"v42"}`,
		`{"op":"op-1","route":"chat-70b","epoch":7e0,"active_after":"v41","from":"v42"}`,
		`{"op":"op-1","route":"chat-70b","epoch":7,"active_after":"v41","from":"v42","Op":"op-2"}`,
		`{"op":"op-1","route":"chat-70b","epoch":7,"active_after":"v41","from":"v42"}` + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, func() *AbortSignal { return new(AbortSignal) }, func(s *AbortSignal) {
			for _, name := range []string{s.Op, s.Route, s.ActiveAfter, s.From} {
				checkKeyPart(t, name)
			}
			if s.Epoch < 1 || s.From == s.ActiveAfter {
				t.Fatalf("accepted signal %+v", s)
			}
		})
	})
}
