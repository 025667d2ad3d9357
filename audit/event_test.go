package audit

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func goodEvent() Event {
	n := 37
	return Event{
		EventID: uuid.New(), OpID: uuid.New(), Kind: KindRollback, Route: "chat-70b",
		FromVersion: "v42", ToVersion: "v41", Actor: "U123", ActorName: "alice", Channel: "C1",
		Reason: "latency spike after v42", Outcome: "ok", AffectedRequests: &n,
		Timings: map[string]float64{"warm": 180, "flip": 2, "total": 1420}, EtcdRevision: 5121,
		Details: json.RawMessage(`{"routers":"200/200"}`), SchemaVersion: SchemaVersion,
		OccurredAt: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
	}
}

func TestEventRoundTrip(t *testing.T) {
	e := goodEvent()
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.EventID != e.EventID || got.Kind != e.Kind || *got.AffectedRequests != 37 || got.Timings["total"] != 1420 ||
		string(got.Details) != string(e.Details) || !got.OccurredAt.Equal(e.OccurredAt) {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestEventValidate(t *testing.T) {
	for name, mut := range map[string]func(*Event){
		"NoEventID":      func(e *Event) { e.EventID = uuid.Nil },
		"NoOpID":         func(e *Event) { e.OpID = uuid.Nil },
		"UnknownKind":    func(e *Event) { e.Kind = "model.yolo" },
		"BadRoute":       func(e *Event) { e.Route = "../etc" },
		"BadVersion":     func(e *Event) { e.ToVersion = "v 41" },
		"NoActor":        func(e *Event) { e.Actor = " " },
		"HugeReason":     func(e *Event) { e.Reason = strings.Repeat("x", MaxText+1) },
		"NegativeCount":  func(e *Event) { n := -1; e.AffectedRequests = &n },
		"NegativeTiming": func(e *Event) { e.Timings = map[string]float64{"flip": -1} },
		"EmptyPhase":     func(e *Event) { e.Timings = map[string]float64{"": 1} },
		"DetailsNotJSON": func(e *Event) { e.Details = json.RawMessage(`{oops`) },
		"FutureSchema":   func(e *Event) { e.SchemaVersion = SchemaVersion + 1 },
		"NoTime":         func(e *Event) { e.OccurredAt = time.Time{} },
	} {
		t.Run(name, func(t *testing.T) {
			e := goodEvent()
			mut(&e)
			if _, err := e.Encode(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestDecodeEventStrict(t *testing.T) {
	e := goodEvent()
	b, _ := e.Encode()
	for name, bad := range map[string]string{
		"Garbage":      `{"event_id":`,
		"UnknownField": strings.Replace(string(b), `"kind"`, `"x":1,"kind"`, 1),
		"Trailing":     string(b) + `{}`,
		"Huge":         `{"reason":"` + strings.Repeat("x", MaxValue) + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeEvent([]byte(bad)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestOutboxKeys(t *testing.T) {
	k := Keys{Prefix: "/backflip"}
	e := goodEvent()
	op, err := OutboxOp(k, 3, e)
	if err != nil {
		t.Fatal(err)
	}
	key := string(op.KeyBytes())
	if key != "/backflip/audit/outbox/"+e.OpID.String()+"/000003" {
		t.Fatalf("key %s", key)
	}
	gotOp, seq, err := k.ParseEventKey(key)
	if err != nil || gotOp != e.OpID || seq != 3 {
		t.Fatalf("parse: %v %d %v", gotOp, seq, err)
	}
	// Zero padding keeps an op's events in order when keys are sorted.
	if k.Event(e.OpID, 9) >= k.Event(e.OpID, 10) {
		t.Fatal("event keys do not sort by sequence")
	}
	for _, bad := range []string{"/backflip/audit/outbox/x/000001", "/backflip/audit/outbox/" + e.OpID.String(),
		"/backflip/audit/outbox/" + e.OpID.String() + "/1", "/other/" + e.OpID.String() + "/000001"} {
		if _, _, err := k.ParseEventKey(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := OutboxOp(k, -1, e); err == nil {
		t.Fatal("negative sequence accepted")
	}
	bad := e
	bad.Kind = "nope"
	if _, err := OutboxOp(k, 0, bad); err == nil {
		t.Fatal("invalid event put in the outbox")
	}
}
