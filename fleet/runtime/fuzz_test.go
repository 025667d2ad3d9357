package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// mutateOne changes s by one byte: op%3 picks replace, insert or delete,
// at pos (modulo the length), with b. It reports false when the result is
// s itself (a replace by the same byte), which is no change at all.
func mutateOne(s string, op uint8, pos uint16, b byte) (string, bool) {
	switch op % 3 {
	case 0: // replace
		if s == "" {
			return s, false
		}
		i := int(pos) % len(s)
		if s[i] == b {
			return s, false
		}
		return s[:i] + string([]byte{b}) + s[i+1:], true
	case 1: // insert
		i := int(pos) % (len(s) + 1)
		return s[:i] + string([]byte{b}) + s[i:], true
	default: // delete
		if s == "" {
			return s, false
		}
		i := int(pos) % len(s)
		return s[:i] + s[i+1:], true
	}
}

// fuzzNow is the receivers' clock in the signature fuzz targets.
var fuzzNow = time.Unix(vectorTS, 0)

// FuzzRuntimeSignature checks X-Backflip-Signature in both directions: the
// abort signal an instance receives (Receiver) and the heartbeats and ack
// reports the bot receives (readVerified, the first thing both bot handlers
// do). For any body and any clock skew:
//   - a request signed with the secret verifies exactly when its timestamp
//     is within MaxSkew of the receiver's clock;
//   - any single-byte change (replace, insert, delete) of the body, the
//     timestamp header or the signature header never verifies, nor does
//     the right signature made with another secret;
//   - an accepted request is accepted once: sending it again, as it was or
//     with either header rewritten, is refused, and the receiver's Abort
//     is never called for a refused request;
//   - a refusal's text never holds the secret and never echoes more than a
//     few bytes of the headers, whatever they hold (junkTS, junkSig).
func FuzzRuntimeSignature(f *testing.F) {
	// Realistic bodies of the three messages, at realistic skews.
	f.Add([]byte(vectorBody), int64(0), uint8(0), uint16(0), byte('x'), "", "")
	f.Add([]byte(`{"id":"wf-1","url":"http://10.0.0.5:9000","inflight":{"chat-70b":{"v42":37}}}`), int64(-42), uint8(1), uint16(3), byte('1'), "1764072000", "v1=00")
	f.Add([]byte(`{"op":"op-1","instance":"wf-1","reissued":37}`), int64(299), uint8(2), uint16(70), byte(0), "", "")
	f.Add([]byte(`{"inflight":3,"aborted":3}`), int64(-300), uint8(4), uint16(5), byte('A'), "", "")
	// Hostile ones: outside the window, empty, binary, oversized headers.
	f.Add([]byte(vectorBody), int64(301), uint8(5), uint16(1), byte('f'), "17640720000000000000", strings.Repeat("v1=", 100))
	f.Add([]byte(vectorBody), int64(-100000), uint8(3), uint16(0), byte('0'), "-1", "v1="+strings.Repeat("z", 64))
	f.Add([]byte{}, int64(0), uint8(6), uint16(9), byte(':'), "  1764072000", "V1=")
	f.Add([]byte("\x00\xff{\"op\""), int64(1<<62), uint8(7), uint16(65535), byte(0xff), strings.Repeat("9", 500), "\x00")
	secret := []byte(vectorSecret)
	log := zap.NewNop()
	f.Fuzz(func(t *testing.T, body []byte, skew int64, mut uint8, pos uint16, b byte, junkTS, junkSig string) {
		if len(body) > 4<<10 || len(junkTS) > 1<<10 || len(junkSig) > 1<<10 {
			// Size limits are tested elsewhere; long inputs here only slow
			// the fuzzer down (and its minimizing of new inputs).
			return
		}
		// Skews spread over ±15 minutes, both sides of the window.
		skewSec := skew % (15 * 60)
		ts := fuzzNow.Unix() + skewSec
		tsText := strconv.FormatInt(ts, 10)
		sig := Sign(secret, ts, body)
		inWindow := skewSec >= -int64(MaxSkew/time.Second) && skewSec <= int64(MaxSkew/time.Second)

		err := Verify(secret, fuzzNow, tsText, sig, body)
		if inWindow != (err == nil) {
			t.Fatalf("skew %ds: Verify = %v", skewSec, err)
		}
		if !inWindow && !errors.Is(err, ErrStale) {
			t.Fatalf("skew %ds: %v, want ErrStale", skewSec, err)
		}
		checkRefusalText(t, err, secret)
		if err := Verify([]byte(vectorSecret+"!"), fuzzNow, tsText, Sign([]byte(vectorSecret+"!"), ts, body), body); (err == nil) != inWindow {
			t.Fatalf("another secret's own signature: %v", err)
		}
		if err := Verify([]byte("other"), fuzzNow, tsText, sig, body); err == nil {
			t.Fatal("a signature verified under another secret")
		}

		// One byte changed anywhere must not verify.
		mBody, mTS, mSig := string(body), tsText, sig
		var changed bool
		switch (mut / 3) % 3 {
		case 0:
			mBody, changed = mutateOne(mBody, mut, pos, b)
		case 1:
			mTS, changed = mutateOne(mTS, mut, pos, b)
		default:
			mSig, changed = mutateOne(mSig, mut, pos, b)
		}
		if changed {
			if err := Verify(secret, fuzzNow, mTS, mSig, []byte(mBody)); err == nil {
				t.Fatalf("changed request verified: ts %q sig %q body %q (signed ts %q sig %q body %q)", mTS, mSig, mBody, tsText, sig, body)
			} else {
				checkRefusalText(t, err, secret)
			}
		}
		// Arbitrary headers: refused unless they are exactly the signature,
		// and the refusal stays short.
		if err := Verify(secret, fuzzNow, junkTS, junkSig, body); err == nil {
			if junkTS != tsText || junkSig != sig {
				t.Fatalf("junk headers verified: ts %q sig %q", junkTS, junkSig)
			}
		} else {
			checkRefusalText(t, err, secret)
		}
		// The receivers, with their replay cache: the instance side
		// (Receiver, the abort signal) and the bot side (readVerified).
		var aborts atomic.Int32
		rc := &Receiver{Secret: secret, Replay: NewReplayCache(0), Logger: log, Now: func() time.Time { return fuzzNow },
			Abort: func(context.Context, AbortSignal) (int, int) { aborts.Add(1); return 0, 0 }}
		botReplay := NewReplayCache(0)
		post := func(path, tsH, sigH, body string) *http.Request {
			r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			r.Header.Set(HeaderTimestamp, tsH)
			r.Header.Set(HeaderSignature, sigH)
			return r
		}
		// accepted reports whether each side accepted the request.
		accepted := func(tsH, sigH, body string) (instance, bot bool) {
			before := aborts.Load()
			w := serve(rc, post(AbortPath, tsH, sigH, body))
			instance = w.Code != http.StatusUnauthorized && w.Code != http.StatusRequestEntityTooLarge
			if !instance && aborts.Load() != before {
				t.Fatalf("Abort called for a refused request (status %d)", w.Code)
			}
			if instance && w.Code != http.StatusOK && w.Code != http.StatusBadRequest {
				t.Fatalf("instance answered %d", w.Code)
			}
			_, bot = readVerified(httptest.NewRecorder(), post(AcksPath, tsH, sigH, body), secret, fuzzNow, botReplay, log)
			return instance, bot
		}
		inst, bot := accepted(tsText, sig, string(body))
		if inst != inWindow || bot != inWindow {
			t.Fatalf("skew %ds: instance accepted %v, bot accepted %v", skewSec, inst, bot)
		}
		if inst, bot := accepted(tsText, sig, string(body)); inst || bot {
			t.Fatalf("replay accepted: instance %v, bot %v", inst, bot)
		}
		if changed {
			if inst, bot := accepted(mTS, mSig, mBody); inst || bot {
				t.Fatalf("changed request accepted after the original: ts %q sig %q body %q (signed ts %q)", mTS, mSig, mBody, tsText)
			}
		}
		// The signature covers the timestamp header as sent ("v1:" +
		// timestamp + ":" + body): a header naming the same second in
		// other digits ("+1764072000", "01764072000") is another message,
		// which the signature of the plain decimal one must not verify.
		if n, perr := strconv.ParseInt(junkTS, 10, 64); perr == nil && strconv.FormatInt(n, 10) != junkTS {
			if err := Verify(secret, fuzzNow, junkTS, Sign(secret, n, body), body); err == nil {
				t.Fatalf("timestamp header %q verified with the signature of %d", junkTS, n)
			}
			if inst, bot := accepted(junkTS, Sign(secret, n, body), string(body)); inst || bot {
				t.Fatalf("timestamp header %q accepted with the signature of %d: instance %v, bot %v", junkTS, n, inst, bot)
			}
		}

		if aborts.Load() > 1 {
			t.Fatalf("Abort called %d times for one signed request", aborts.Load())
		}
	})
}

// checkRefusalText fails when a verification error holds the secret or is
// long enough to be carrying the sender's headers into the logs.
func checkRefusalText(t *testing.T, err error, secret []byte) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	if strings.Contains(msg, string(secret)) {
		t.Fatalf("refusal %q holds the secret", msg)
	}
	if len(msg) > 200 {
		t.Fatalf("refusal is %d bytes: %q", len(msg), msg)
	}
}

// FuzzDecodeRuntimeValues decodes what runtimes send the bot and store in
// etcd (kind%3): the abort reply the Signaller reads, the ack report of
// /v1/runtime/acks, and the instance record of /v1/runtime/heartbeat and
// runtime/instances/<id>. Whatever Decode accepts passes Validate, fits
// the keys it becomes part of, and survives encoding and decoding again
// unchanged; whatever it refuses is an error, never a panic.
func FuzzDecodeRuntimeValues(f *testing.F) {
	for _, s := range []struct {
		kind uint8
		v    string
	}{
		{0, `{"inflight":37,"aborted":37}`},
		{0, `{"inflight":0,"aborted":0}`},
		{0, `{"inflight":3,"aborted":4}`},
		{0, `{"inflight":-1,"aborted":-1}`},
		{0, `{"inflight":1e3,"aborted":1}`},
		{1, `{"op":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e11","instance":"wf-1","reissued":37}`},
		{1, `{"op":"op-1","instance":"pod:ns.name_7","reissued":0}`},
		{1, `{"op":"op/1","instance":"wf-1","reissued":1}`},
		{1, `{"op":"op-1","instance":"wf 1","reissued":1}`},
		{1, `{"op":"op-1","instance":"wf-1","reissued":99999999999999999999}`},
		{2, `{"id":"wf-1","url":"http://10.0.0.5:9000","inflight":{"chat-70b":{"v42":37,"v41":0}}}`},
		{2, `{"id":"wf-1","inflight":{}}`},
		{2, `{"id":"wf-1","inflight":null}`},
		{2, `{"id":"wf-1","url":"file:///etc/passwd","inflight":{}}`},
		{2, `{"id":"wf-1","url":"http://x","inflight":{"../etc":{"v1":1}}}`},
		{2, `{"id":"wf-1","inflight":{"chat-70b":{"v42":-1}}}`},
		{2, `{"id":"wf-1","inflight":{"chat-70b":{"v42":1}},"inflight":{}}`},
		{2, `{"ID":"wf-1","inflight":{}}`},
		{2, `{"id":"wf-1","inflight":{}} {}`},
	} {
		f.Add(s.kind, []byte(s.v))
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		switch kind % 3 {
		case 0:
			roundTrip(t, data, func() *AbortReply { return new(AbortReply) }, func(v *AbortReply) {
				if v.InFlight < 0 || v.Aborted < 0 || v.Aborted > v.InFlight {
					t.Fatalf("accepted reply %+v", v)
				}
			})
		case 1:
			roundTrip(t, data, func() *AckReport { return new(AckReport) }, func(v *AckReport) {
				if v.Reissued < 0 {
					t.Fatalf("accepted report %+v", v)
				}
				checkKeyPart(t, v.Op)
				checkKeyPart(t, v.Instance)
			})
		default:
			roundTrip(t, data, func() *InstanceRecord { return new(InstanceRecord) }, func(v *InstanceRecord) {
				checkKeyPart(t, v.ID)
				if v.URL != "" && !strings.HasPrefix(v.URL, "http://") && !strings.HasPrefix(v.URL, "https://") {
					t.Fatalf("accepted url %q", v.URL)
				}
				for route, versions := range v.InFlight {
					checkKeyPart(t, route)
					for version, n := range versions {
						checkKeyPart(t, version)
						if n < 0 {
							t.Fatalf("accepted count %d", n)
						}
					}
				}
			})
		}
	})
}

// roundTrip decodes data into a new value; when that succeeds it checks the
// value, then encodes it, decodes the encoding and wants the same value.
func roundTrip[T interface{ Validate() error }](t *testing.T, data []byte, mk func() T, check func(T)) {
	t.Helper()
	v := mk()
	if err := Decode(data, v); err != nil {
		if !errors.Is(err, ErrInvalid) && !strings.Contains(err.Error(), "invalid") {
			t.Fatalf("refusal %v does not say the value is invalid", err)
		}
		return
	}
	if err := v.Validate(); err != nil {
		t.Fatalf("Decode accepted an invalid value %+v: %v", v, err)
	}
	check(v)
	enc, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %+v: %v", v, err)
	}
	again := mk()
	if err := Decode(enc, again); err != nil {
		t.Fatalf("re-encoded value %s does not decode: %v", enc, err)
	}
	if !reflect.DeepEqual(normalizeEmpty(v), normalizeEmpty(again)) {
		t.Fatalf("round trip changed the value:\n%+v\n%+v", v, again)
	}
}

// normalizeEmpty treats a nil and an empty in-flight map alike (both encode
// to an object with no entries or to null, and mean "nothing in flight").
func normalizeEmpty(v any) any {
	if r, ok := v.(*InstanceRecord); ok && len(r.InFlight) == 0 {
		c := *r
		c.InFlight = nil
		return &c
	}
	return v
}

// checkKeyPart fails for a name that could not be one segment of an etcd
// key or be shown in chat as it is.
func checkKeyPart(t *testing.T, s string) {
	t.Helper()
	if s == "" || len(s) > MaxInstanceLen || strings.ContainsAny(s, "/ \t\r\n\x00<>&*`") {
		t.Fatalf("accepted name %q", s)
	}
}

// FuzzAckTotals stores an arbitrary value at runtime/acks/<op>/<instance>
// (runtimes may write there, so it is outside input) and checks the totals
// WaitAcks reports for the rollback: an acknowledgement it counts says
// 0 <= aborted <= inflight and 0 <= reissued <= aborted, so the timing
// report can never claim negative requests, or more aborted than were in
// flight, or more re-issued than aborted. A value that is not an
// acknowledgement leaves the instance unacknowledged.
func FuzzAckTotals(f *testing.F) {
	for _, s := range []string{
		`{"inflight":37,"aborted":37,"reissued":37,"applied_rev":5121,"at":"2026-11-25T10:00:00Z"}`,
		`{"inflight":4,"aborted":0,"reissued":null,"applied_rev":7,"at":"2026-11-25T10:00:00.123456789Z"}`,
		`{"inflight":0,"aborted":0,"reissued":0,"applied_rev":1,"at":"0001-01-01T00:00:00Z"}`,
		`{"inflight":3,"aborted":2,"reissued":1,"applied_rev":9,"at":"2026-11-25T10:00:00+02:00"}`,
		`{}`, `null`, `[]`, `{"inflight":"3"}`, `{"inflight":3,"aborted":3,"reissued":3} x`,
		`{"inflight":1,"aborted":1,"reissued":1,"extra":true}`,
	} {
		f.Add([]byte(s))
	}
	// One member per process: each fuzz worker is a process of its own.
	c := etcdtest.Start(f).Client(f)
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, value []byte) {
		s, err := NewSignaller(SignallerConfig{Etcd: c, Prefix: "/fuzz-acks", Secret: []byte(vectorSecret), AckTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		op := fmt.Sprintf("op-%d", n.Add(1))
		ctx := context.Background()
		if _, err := c.Put(ctx, s.keys.Ack(op, "wf-1"), string(value)); err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = c.Delete(ctx, s.keys.Acks(op), clientv3.WithPrefix()) }()
		// The instance is not registered, so an instance without a usable
		// acknowledgement counts as vanished at once.
		res, err := s.WaitAcks(ctx, Signal{Op: op, Route: "chat-70b", Epoch: 2, From: "v42", ActiveAfter: "v41", FlipRev: 2,
			Expected: []Expected{{ID: "wf-1"}}, start: time.Now()})
		if err != nil {
			t.Fatalf("WaitAcks: %v", err)
		}
		if res.Acked+len(res.Vanished)+len(res.Missing) != 1 {
			t.Fatalf("one instance expected, result %+v", res)
		}
		if res.InFlight < 0 || res.Aborted < 0 || res.Reissued < 0 || res.Aborted > res.InFlight || res.Reissued > res.Aborted {
			t.Fatalf("value %q gave the totals in-flight %d, aborted %d, re-issued %d", value, res.InFlight, res.Aborted, res.Reissued)
		}
		if res.Acked == 0 && (res.InFlight != 0 || res.Aborted != 0 || res.Reissued != 0) {
			t.Fatalf("counts %+v without an acknowledgement", res)
		}
	})
}
