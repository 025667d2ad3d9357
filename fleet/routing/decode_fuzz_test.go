package routing

import (
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
)

// routeNamePattern and versionPattern are the contract's name shapes,
// written out here so the fuzz targets do not check the validators with
// themselves.
var (
	routeNamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	versionPattern   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._:@+-]{0,126}[A-Za-z0-9])?$`)
	opPattern        = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// FuzzDecodeRouteConfig: routes/<route> is what every router applies. A
// value DecodeRouteConfig accepts (by the fast path or encoding/json) has
// the route of its key, names of the contract's shapes (no reserved word,
// "previous" never a version), a kind of the contract, a positive epoch,
// bounded free text and a time, and previous differs from active; it
// encodes (Encode) to a value that decodes to the same config. A refused
// value is a *MalformedError naming the key.
func FuzzDecodeRouteConfig(f *testing.F) {
	for _, s := range []string{
		validConfigJSON(),
		`{"route":"chat-70b","active":"v42","previous":"v41","kind":"promote","from":"v41","epoch":12,"op":"0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e11","reason":"promote v42 after canary","actor":"cli:alice@ops-1 (etcd root)","at":"2026-11-25T10:00:00.123456789Z"}`,
		`{"route":"chat-70b","active":"v1","previous":"","kind":"promote","from":"","epoch":1,"op":"op-1","reason":"","actor":"","at":"2026-11-25T10:00:00+02:00"}`,
		`{"route":"chat-70b","active":"v41","previous":"v42","kind":"drill_return","from":"v42","epoch":9,"op":"op_2","reason":"it's \u201cfine\u201d <@U1>","actor":"U1","at":"2026-11-25T10:00:00Z"}`,
		`{"route":"chat-70b","active":"v41","previous":"v41","kind":"rollback","from":"v41","epoch":7,"op":"op-1","reason":"x","actor":"U1","at":"2026-11-25T10:00:00Z"}`,
		`{"route":"status","active":"v41","previous":"v42","kind":"rollback","from":"v42","epoch":7,"op":"op-1","reason":"x","actor":"U1","at":"2026-11-25T10:00:00Z"}`,
		`{"route":"chat-70b","active":"previous","kind":"promote","epoch":7,"op":"op-1","at":"2026-11-25T10:00:00Z"}`,
		`{"route":"chat-70b","active":"v41","kind":"rollback","epoch":7,"op":"op-1","at":"2026-11-25T10:00:00Z"}`,
		`{"route":"chat-70b","active":"v41","kind":"promote","epoch":0,"op":"op-1","at":"2026-11-25T10:00:00Z"}`,
		`{"route":"chat-70b","active":"v41","kind":"promote","epoch":7,"op":"op/1","at":"2026-11-25T10:00:00Z"}`,
		`{"route":"chat-70b","active":"v41","kind":"promote","epoch":7,"op":"op-1"}`,
		`{"route":"chat-70b","active":"v41","kind":"promote","epoch":7.0,"op":"op-1","at":"2026-11-25T10:00:00Z"}`,
		`{"route":"chat-70b","active":"v41","kind":"promote","epoch":7,"op":"op-1","at":"2026-11-25T10:00:00Z","extra":1}`,
		`{"route":"chat-70b","route":"embed","active":"v41","kind":"promote","epoch":7,"op":"op-1","at":"2026-11-25T10:00:00Z"}`,
		`{"ROUTE":"chat-70b","active":"v41","kind":"promote","epoch":7,"op":"op-1","at":"2026-11-25T10:00:00Z"}`,
		`{"route":"chat\u002d70b","active":"v41","kind":"promote","epoch":7,"op":"op-1","at":"2026-11-25T10:00:00Z"}`,
		validConfigJSON() + ` x`, `null`, `{}`, `[]`, ``,
	} {
		f.Add("chat-70b", []byte(s))
	}
	f.Add("", []byte(validConfigJSON()))
	f.Add("embed", []byte(validConfigJSON()))
	f.Fuzz(func(t *testing.T, want string, value []byte) {
		key := "/backflip/routes/" + want
		c, err := DecodeRouteConfig(key, value, want)
		if err != nil {
			var me *MalformedError
			if !errors.As(err, &me) || me.Key != key || !errors.Is(err, ErrMalformed) {
				t.Fatalf("refusal %#v is not a *MalformedError naming %s", err, key)
			}
			if c != (RouteConfig{}) {
				t.Fatalf("refusal %v with a config %+v", err, c)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted an invalid config %+v: %v", c, err)
		}
		if want != "" && c.Route != want {
			t.Fatalf("config of %q accepted for key %q", c.Route, key)
		}
		if !routeNamePattern.MatchString(c.Route) || IsReservedRoute(c.Route) {
			t.Fatalf("accepted route %q", c.Route)
		}
		for _, v := range []string{c.Active, c.Previous, c.From} {
			if v != "" && (!versionPattern.MatchString(v) || strings.EqualFold(v, PreviousVersion)) {
				t.Fatalf("accepted version %q", v)
			}
		}
		if c.Active == "" || c.Active == c.Previous || !c.Kind.Valid() || c.Epoch < 1 || !opPattern.MatchString(c.Op) ||
			len(c.Reason) > MaxReasonLen || len(c.Actor) > MaxActorLen || c.At.IsZero() || (c.Kind != KindPromote && c.From == "") {
			t.Fatalf("accepted config %+v", c)
		}
		enc, err := c.Encode()
		if err != nil {
			t.Fatalf("accepted config %+v does not encode: %v", c, err)
		}
		again, err := DecodeRouteConfig(key, enc, want)
		if err != nil {
			t.Fatalf("re-encoded config %s refused: %v", enc, err)
		}
		if !again.At.Equal(c.At) {
			t.Fatalf("round trip moved at from %v to %v", c.At, again.At)
		}
		again.At = c.At
		if again != c {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, again)
		}
	})
}

// FuzzRouterRecord: routers/<id> is written by every router, so it is
// outside input to the bot's convergence wait, which decodes the values of
// one router after another into one reused RouterRecord. Whatever the
// values, each is judged as if it were the only one: converged exactly
// when it strictly decodes, is at most maxRouterRecordLen bytes, carries the
// router's own id and reports the route at the flip's epoch or later;
// pending when it is such a record that does not; malformed otherwise. What
// an earlier value held never leaks into the judgment of a later one.
func FuzzRouterRecord(f *testing.F) {
	for _, s := range [][2]string{
		{`{"id":"router-7f9c","observed":{"chat-70b":9,"embed-small":3}}`, `{"id":"router-7f9c","observed":{"embed-small":4}}`},
		{`{"id":"router-7f9c","observed":{"chat-70b":8}}`, `{"id":"router-7f9c","observed":{"chat-70b":9}}`},
		{`{"id":"router-7f9c","observed":{"chat-70b":9}}`, `{"id":"router-7f9c"}`},
		{`{"id":"router-7f9c","observed":{"chat-70b":9}}`, `{"observed":{"chat-70b":9}}`},
		{`{"id":"router-7f9c","observed":{"chat-70b":9}}`, `{"id":"router-7f9c","observed":null}`},
		{`{"id":"router-7f9c","observed":{"chat-70b":9}}`, `{"id":"router-7f9c","observed":{"chat-70b":"9"}}`},
		{`{"id":"router-7f9c","observed":{"chat-70b":9},"id":"other"}`, `{"id":"router-7f9c","observed":{"chat-70b":9},"observed":{}}`},
		{`{"id":"other","observed":{"chat-70b":99}}`, `{"id":"router-7f9c","observed":{"chat-70b":9.5}}`},
		{`{"id":"router-7f9c","observed":{"chat-70b":9}} {}`, `{"id":"router-7f9c","observed":{"chat-70b":9},"x":1}`},
		{`null`, `{}`},
	} {
		f.Add("router-7f9c", int64(9), []byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, id string, epoch int64, v1, v2 []byte) {
		if epoch < 1 {
			epoch = 1
		}
		w := &convergeWait{route: "chat-70b", epoch: epoch}
		for i, v := range [][]byte{v1, v2, v1} {
			var want routerState
			var rec RouterRecord
			switch {
			case len(v) > maxRouterRecordLen || json.Unmarshal(v, &rec) != nil || !strictlyOneObject(v) || rec.ID != id:
				want = stateMalformed
			case rec.Observed["chat-70b"] >= epoch:
				want = stateConverged
			default:
				want = statePending
			}
			if got := w.decode(id, v); got != want {
				t.Fatalf("value %d %q of router %q at epoch %d: state %d, want %d", i, v, id, epoch, got, want)
			}
		}
	})
}

// strictlyOneObject reports whether v is a single JSON value whose objects
// have no fields other than a RouterRecord's (checked with a decoder that
// refuses unknown fields, but not the package's own strictjson).
func strictlyOneObject(v []byte) bool {
	dec := json.NewDecoder(strings.NewReader(string(v)))
	dec.DisallowUnknownFields()
	var rec RouterRecord
	if dec.Decode(&rec) != nil {
		return false
	}
	_, err := dec.Token()
	return errors.Is(err, io.EOF)
}
