package commands

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/fleet/routing"
)

func validRecord() OpRecord {
	return OpRecord{
		Kind: routing.KindRollback, Route: "chat-70b", From: "v42", To: "v41", Phase: OpPhaseFlipped,
		Actor: "U1", Owner: "1a2b", Started: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), Epoch: 3,
	}
}

func TestOpRecordRoundTrip(t *testing.T) {
	rec := validRecord()
	val, err := rec.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeOpRecord("/p/ops/x", []byte(val))
	if err != nil {
		t.Fatal(err)
	}
	if got.Route != rec.Route || got.Phase != rec.Phase || got.Owner != rec.Owner || !got.Started.Equal(rec.Started) {
		t.Fatalf("round trip: got %+v", got)
	}
	lease, err := got.OwnerLease()
	if err != nil || lease != 0x1a2b {
		t.Fatalf("owner lease = %x, %v", lease, err)
	}
}

func TestOpRecordRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(*OpRecord)
		value  string
		want   string
	}{
		"BadKind":          {mutate: func(r *OpRecord) { r.Kind = "deploy" }, want: "kind"},
		"BadRoute":         {mutate: func(r *OpRecord) { r.Route = "../etc" }, want: "route"},
		"BadPhase":         {mutate: func(r *OpRecord) { r.Phase = "halfway" }, want: "phase"},
		"DoneNoOutcome":    {mutate: func(r *OpRecord) { r.Phase = OpPhaseDone }, want: "outcome"},
		"OutcomeNotDone":   {mutate: func(r *OpRecord) { r.Outcome = OutcomeCompleted }, want: "outcome"},
		"FlippedNoTarget":  {mutate: func(r *OpRecord) { r.To = "" }, want: "target"},
		"BadOwner":         {mutate: func(r *OpRecord) { r.Owner = "zz" }, want: "owner"},
		"ZeroOwner":        {mutate: func(r *OpRecord) { r.Owner = "0" }, want: "owner"},
		"BadIdem":          {mutate: func(r *OpRecord) { r.Idem = "a/b" }, want: "idempotency"},
		"UnknownField":     {value: `{"kind":"rollback","route":"chat-70b","phase":"started","owner":"1","extra":1}`, want: "extra"},
		"TrailingData":     {value: `{"kind":"rollback","route":"chat-70b","phase":"started","owner":"1"} {}`, want: ""},
		"NotJSON":          {value: `rollback`, want: ""},
		"TooLarge":         {value: `{"reason":"` + strings.Repeat("x", maxOpRecord) + `"}`, want: "bytes"},
		"NullRecord":       {value: `null`, want: ""},
		"WrongTypeForRev":  {value: `{"kind":"rollback","route":"chat-70b","phase":"started","owner":"1","rev":"7"}`, want: ""},
		"VersionWithSlash": {mutate: func(r *OpRecord) { r.From = "v4/2" }, want: "from"},
	} {
		t.Run(name, func(t *testing.T) {
			value := tc.value
			if tc.mutate != nil {
				rec := validRecord()
				tc.mutate(&rec)
				if _, err := rec.encode(); err == nil {
					t.Fatalf("encode accepted %+v", rec)
				}
				b := mustJSON(rec)
				value = string(b)
			}
			_, err := DecodeOpRecord("/p/ops/x", []byte(value))
			if err == nil {
				t.Fatalf("decoded %q", Clip(value, 80))
			}
			if !strings.Contains(err.Error(), "/p/ops/x") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q should name the key and %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeOpRecord: ops/<op> is read by recovery on every replica and
// by a retried request. A value DecodeOpRecord accepts passes Validate,
// names an owner lease, and encodes to a value that decodes to the same
// record; a refused one is a *routing.MalformedError naming the key.
func FuzzDecodeOpRecord(f *testing.F) {
	rec := validRecord()
	val, _ := rec.encode()
	f.Add([]byte(val))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"kind":"promote","route":"a","phase":"done","outcome":"completed","owner":"ff","to":"v1"}`))
	// As the bot writes them at each phase, and hostile variants.
	for _, s := range []string{
		`{"kind":"rollback","route":"chat-70b","from":"v42","to":"v41","phase":"started","timings":null,"actor":"U2147483697","reason":"latency spike after v42","channel":"C2147483705","ts":"1732550400.000100","idem":"trigger:13345224609.738474920","owner":"694d9a1b2c3d4e5f","outcome":"","actor_name":"steve","expect_rev":5120,"started":"2026-11-25T12:00:00.123456789Z"}`,
		`{"kind":"rollback","route":"chat-70b","from":"v42","to":"v41","phase":"flipped","timings":{"resolve":0.8,"warm":180.2},"actor":"U1","reason":"x","channel":"C1","ts":"","idem":"","owner":"694d9a1b2c3d4e5f","outcome":"","expect_rev":5120,"epoch":9,"started":"2026-11-25T12:00:00Z"}`,
		`{"kind":"drill_return","route":"chat-70b","from":"v41","to":"v42","phase":"done","timings":{"total":1420.5},"actor":"drill-scheduler","reason":"scheduled drill","channel":"","ts":"","idem":"","owner":"1","outcome":"completed","rev":5121,"epoch":10,"forced_cold":true,"started":"2026-11-25T12:00:00Z","report":"chat-70b rolled back v42 → v41 in 1.42 s","detail":""}`,
		`{"kind":"rollback","route":"chat-70b","phase":"started","owner":"-1"}`,
		`{"kind":"rollback","route":"chat-70b","phase":"started","owner":"7fffffffffffffff"}`,
		`{"kind":"rollback","route":"chat-70b","phase":"started","owner":"8000000000000000"}`,
		`{"kind":"rollback","route":"chat-70b","phase":"started","owner":"1","timings":{"warm":1e309}}`,
		`{"kind":"rollback","route":"chat-70b","phase":"started","owner":"1","started":"0000-01-01T00:00:00Z"}`,
		`{"kind":"rollback","route":"chat-70b","phase":"started","owner":"1","idem":"../../x"}`,
		`{"kind":"rollback","route":"chat-70b","phase":"started","owner":"1","Kind":"promote"}`,
	} {
		f.Add([]byte(s))
	}
	const key = "/p/ops/x"
	f.Fuzz(func(t *testing.T, value []byte) {
		rec, err := DecodeOpRecord(key, value)
		if err != nil {
			var me *routing.MalformedError
			if !errors.As(err, &me) || me.Key != key {
				t.Fatalf("refusal %#v is not a *routing.MalformedError naming %s", err, key)
			}
			return
		}
		if err := rec.Validate(); err != nil {
			t.Fatalf("decoded an invalid record: %v", err)
		}
		if _, err := rec.OwnerLease(); err != nil {
			t.Fatalf("decoded a record without an owner lease: %v", err)
		}
		enc, err := rec.encode()
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
		again, err := DecodeOpRecord(key, []byte(enc))
		if err != nil {
			t.Fatalf("re-encoded record %s refused: %v", enc, err)
		}
		if !again.Started.Equal(rec.Started) {
			t.Fatalf("round trip moved started from %v to %v", rec.Started, again.Started)
		}
		again.Started = rec.Started
		if len(again.Timings) == 0 && len(rec.Timings) == 0 {
			again.Timings = rec.Timings
		}
		if !reflect.DeepEqual(again, rec) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", rec, again)
		}
	})
}

func TestIdemKey(t *testing.T) {
	for _, ok := range []string{"a", "trigger:123.456", "card-" + strings.Repeat("x", 123)} {
		if err := validateIdemKey(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a/b", "a b", strings.Repeat("x", 129), "é", "../x"} {
		if err := validateIdemKey(bad); err == nil || ErrorCode(err) != EINVALID {
			t.Errorf("%q accepted or wrong code: %v", bad, err)
		}
	}
}

func TestReportLine(t *testing.T) {
	r := &Result{
		Kind: routing.KindRollback, Route: "chat-70b", From: "v42", To: "v41", Revision: 5121, Epoch: 9,
		Total:   1420 * time.Millisecond,
		Timings: []PhaseTiming{{PhaseWarm, 180 * time.Millisecond}, {PhaseFlip, 2 * time.Millisecond}},
		Routers: &RouterResult{Expected: 200, Converged: 200, Took: 31 * time.Millisecond},
		Audit:   AuditState{Queued: true},
	}
	r.Warm = nil
	got := r.Report()
	for _, want := range []string{"chat-70b rolled back v42 → v41 in 1.42 s", "flip 2.0 ms (rev 5121)", "routers 31 ms (200/200)", "audit ✓"} {
		if !strings.Contains(got, want) {
			t.Errorf("report %q lacks %q", got, want)
		}
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{40 * time.Second: "40 s ago", 5 * time.Minute: "5 min ago", 3 * time.Hour: "3 h ago", 72 * time.Hour: "3 days ago", -time.Second: "just now"} {
		if got := Ago(now, now.Add(-d)); got != want {
			t.Errorf("ago(%s) = %q, want %q", d, got, want)
		}
	}
}
