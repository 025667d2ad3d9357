package bot

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// mutateOne changes s by one byte: op%3 picks replace, insert or delete,
// at pos (modulo the length), with b. It reports false when the result is
// s itself.
func mutateOne(s string, op uint8, pos uint16, b byte) (string, bool) {
	switch op % 3 {
	case 0:
		if s == "" {
			return s, false
		}
		i := int(pos) % len(s)
		if s[i] == b {
			return s, false
		}
		return s[:i] + string([]byte{b}) + s[i+1:], true
	case 1:
		i := int(pos) % (len(s) + 1)
		return s[:i] + string([]byte{b}) + s[i:], true
	default:
		if s == "" {
			return s, false
		}
		i := int(pos) % len(s)
		return s[:i] + s[i+1:], true
	}
}

// slackSignature is the contract's v0 signature, computed here from
// Slack's documentation rather than with the code under test:
// "v0=" + lower-case hex of HMAC-SHA256(secret, "v0:" + timestamp + ":" + body),
// the timestamp being the header exactly as sent.
func slackSignature(secret, ts, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("v0:" + ts + ":" + body))
	return "v0=" + hex.EncodeToString(m.Sum(nil))
}

// FuzzSlackSignature checks the verification of Slack's HTTP deliveries
// (X-Slack-Signature v0 and X-Slack-Request-Timestamp) on every endpoint,
// for any body and clock skew:
//   - a request signed as Slack signs it gets past the check (the answer
//     is not 401) exactly when its timestamp is within five minutes of the
//     bot's clock, and Sign agrees with the contract's formula;
//   - any single-byte change (replace, insert, delete) of the body, the
//     timestamp header or the signature header is refused with 401, as is
//     the signature made with another secret, and the Handler is never
//     called for a refused request;
//   - arbitrary headers (junkTS, junkSig) are refused unless they are the
//     contract's signature, and the refusal reason (logged, never sent)
//     never holds the secret nor more than a few dozen bytes of them.
func FuzzSlackSignature(f *testing.F) {
	// Realistic deliveries, at realistic skews.
	f.Add(uint8(0), slashForm().Encode(), int64(0), uint8(0), uint16(17), byte('x'), "", "")
	f.Add(uint8(1), "payload="+blockActionsPayload(ActionConfirm), int64(-42), uint8(4), uint16(3), byte('1'), "1732550400", "v0=00")
	f.Add(uint8(2), `{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`, int64(299), uint8(8), uint16(70), byte('A'), "", "")
	f.Add(uint8(0), "", int64(300), uint8(2), uint16(0), byte('0'), "", "")
	// Hostile ones: stale, from the future, binary, oversized headers.
	f.Add(uint8(1), "payload=%7B", int64(301), uint8(5), uint16(1), byte('f'), "+1732550400", "v0="+strings.Repeat("a", 64))
	f.Add(uint8(2), "\x00\xff", int64(-301), uint8(7), uint16(65535), byte(0xff), "1732550400 ", "V0="+strings.Repeat("F", 64))
	f.Add(uint8(0), "text=x", int64(-1<<40), uint8(6), uint16(9), byte(':'), "99999999999999999999", "v0=v0=v0=")
	paths := []string{"/slack/commands", "/slack/interactions", "/slack/events"}
	f.Fuzz(func(t *testing.T, path uint8, body string, skew int64, mut uint8, pos uint16, b byte, junkTS, junkSig string) {
		if len(body) > 4<<10 || len(junkTS) > 1<<10 || len(junkSig) > 1<<10 {
			return // sizes are tested elsewhere; long inputs only slow the fuzzer
		}
		p := paths[int(path)%len(paths)]
		h := &transportHandler{slashReply: &Reply{Message: Message{Text: "ok"}}}
		hh, err := NewHTTPHandler(HTTPConfig{SigningSecret: []byte(httpTestSecret), Handler: h, Now: httpTestNow})
		if err != nil {
			t.Fatal(err)
		}
		send := func(ts, sig, body string) int {
			r := httptest.NewRequest(http.MethodPost, p, strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set(headerTimestamp, ts)
			r.Header.Set(headerSignature, sig)
			return serve(hh, r).Code
		}
		refused := func(what, ts, sig, body string) {
			t.Helper()
			before := h.calls()
			if code := send(ts, sig, body); code != http.StatusUnauthorized {
				t.Fatalf("%s: status %d, want 401 (ts %q sig %q body %q)", what, code, ts, sig, body)
			}
			if h.calls() != before {
				t.Fatalf("%s: the handler was called for a refused request", what)
			}
		}

		skewSec := skew % (15 * 60)
		ts := strconv.FormatInt(httpTestNow().Unix()+skewSec, 10)
		sig := slackSignature(httpTestSecret, ts, body)
		if got := Sign([]byte(httpTestSecret), httpTestNow().Unix()+skewSec, []byte(body)); got != sig {
			t.Fatalf("Sign = %s, the contract says %s", got, sig)
		}
		inWindow := skewSec >= -300 && skewSec <= 300
		if code := send(ts, sig, body); (code != http.StatusUnauthorized) != inWindow {
			t.Fatalf("skew %ds: status %d", skewSec, code)
		}
		if inWindow {
			refused("another secret", ts, slackSignature(httpTestSecret+"x", ts, body), body)
		}

		mBody, mTS, mSig := body, ts, sig
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
			refused("one byte changed", mTS, mSig, mBody)
		}

		hdr := http.Header{}
		hdr.Set(headerTimestamp, junkTS)
		hdr.Set(headerSignature, junkSig)
		if _, _, err := signatureHeaders(hdr, httpTestNow()); err != nil {
			msg := err.Error()
			if strings.Contains(msg, httpTestSecret) || len(msg) > 120 {
				t.Fatalf("refusal reason is %d bytes or holds the secret: %q", len(msg), msg)
			}
		}
		if code := send(junkTS, junkSig, body); code != http.StatusUnauthorized && junkSig != slackSignature(httpTestSecret, junkTS, body) {
			t.Fatalf("junk headers ts %q sig %q: status %d", junkTS, junkSig, code)
		}
	})
}
