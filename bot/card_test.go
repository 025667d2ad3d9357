package bot

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backflip-dev/backflip/fleet/routing"
)

func TestCardRoundTrip(t *testing.T) {
	c := Card{ID: uuid.NewString(), Route: "chat-70b", From: "v42", To: "v41", Rev: 7, Exp: time.Now().Unix(), Reason: strings.Repeat("<", routing.MaxReasonLen), By: "U1"}
	v, err := c.Encode()
	if err != nil {
		t.Fatalf("a 1000-byte reason of '<' must fit a button: %v", err)
	}
	got, err := DecodeCard(v)
	if err != nil || got.Reason != c.Reason || got.Rev != 7 || got.IdemKey() != "card:"+c.ID {
		t.Fatalf("round trip: %v %+v", err, got)
	}
}

func TestCardRefused(t *testing.T) {
	good := Card{V: 1, ID: uuid.NewString(), Route: "chat-70b", From: "v42", To: "v41", Rev: 7, Exp: 1, Reason: "x", By: "U1"}
	for name, mutate := range map[string]func(*Card){
		"BadID":       func(c *Card) { c.ID = "x" },
		"BadRoute":    func(c *Card) { c.Route = "../x" },
		"BadVersion":  func(c *Card) { c.To = "v 1" },
		"NoRevision":  func(c *Card) { c.Rev = 0 },
		"NoReason":    func(c *Card) { c.Reason = "" },
		"WrongFormat": func(c *Card) { c.V = 2 },
	} {
		t.Run(name, func(t *testing.T) {
			c := good
			mutate(&c)
			b := mustJSONString(t, c)
			if _, err := DecodeCard(b); err == nil {
				t.Fatalf("accepted %s", b)
			}
		})
	}
	for _, v := range []string{"", "{}", "null", `{"v":1} {}`, strings.Repeat("x", 3000), `{"v":1,"extra":true}`} {
		if _, err := DecodeCard(v); err == nil {
			t.Errorf("accepted %q", v)
		}
	}
}

func FuzzDecodeCard(f *testing.F) {
	c := Card{ID: uuid.NewString(), Route: "chat-70b", From: "v42", To: "v41", Rev: 7, Exp: 1, Reason: "x", By: "U1"}
	v, _ := c.Encode()
	f.Add(v)
	f.Add(`{"v":1}`)
	f.Fuzz(func(t *testing.T, value string) {
		c, err := DecodeCard(value)
		if err != nil {
			return
		}
		if routing.ValidateRoute(c.Route) != nil || routing.ValidateVersion(c.To) != nil {
			t.Fatalf("accepted invalid names: %+v", c)
		}
	})
}

func mustJSONString(t *testing.T, c Card) string {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
