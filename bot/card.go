package bot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/strictjson"
)

// Action ids of backflip's buttons.
const (
	ActionConfirm = "backflip.confirm"
	ActionCancel  = "backflip.cancel"
)

// maxCardValue is Slack's limit on a button value.
const maxCardValue = 2000

// Card is the state of a pre-flight card, carried in its buttons' value so
// that any replica can act on a click. Slack signs the interaction that
// brings it back, and people cannot edit a button's value, but it is still
// decoded strictly and every name validated again: it is outside input.
type Card struct {
	V int `json:"v"`
	// ID becomes the rollback's op id, and "card:<ID>" its idempotency
	// key, so a double click or two replicas handling one click flip once.
	ID    string `json:"id"`
	Route string `json:"route"`
	From  string `json:"from"`
	To    string `json:"to"`
	// Rev is the route revision the card showed: the rollback is refused,
	// not re-targeted, if the route has moved since.
	Rev       int64  `json:"rev"`
	Exp       int64  `json:"exp"`
	ForceCold bool   `json:"force_cold,omitempty"`
	Reason    string `json:"reason"`
	// By is the user who typed the command.
	By string `json:"by"`
}

// IdemKey is the card's idempotency key.
func (c Card) IdemKey() string { return "card:" + c.ID }

// Expires is when the card stops being valid.
func (c Card) Expires() time.Time { return time.Unix(c.Exp, 0) }

// Encode returns the button value.
func (c Card) Encode() (string, error) {
	c.V = 1
	// No HTML escaping: json.Marshal writes each <, > and & as six bytes,
	// which could push a 1000-byte reason past Slack's 2000-byte value.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return "", err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > maxCardValue {
		return "", fmt.Errorf("card value is %d bytes, Slack allows %d", len(b), maxCardValue)
	}
	return string(b), nil
}

// DecodeCard decodes and validates a button value. It does not check
// expiry (the caller says "expired" differently from "malformed").
func DecodeCard(value string) (Card, error) {
	var c Card
	if len(value) > maxCardValue {
		return c, fmt.Errorf("card value is %d bytes", len(value))
	}
	if err := strictjson.Decode([]byte(value), &c); err != nil {
		return Card{}, fmt.Errorf("card value: %w", err)
	}
	if c.V != 1 {
		return Card{}, fmt.Errorf("card version %d is not 1", c.V)
	}
	if u, err := uuid.Parse(c.ID); err != nil || u.String() != c.ID {
		return Card{}, fmt.Errorf("card id %q is not a uuid", c.ID)
	}
	if err := routing.ValidateRoute(c.Route); err != nil {
		return Card{}, fmt.Errorf("card route: %w", err)
	}
	for _, v := range []string{c.From, c.To} {
		if err := routing.ValidateVersion(v); err != nil {
			return Card{}, fmt.Errorf("card version: %w", err)
		}
	}
	if c.Rev <= 0 || c.Exp <= 0 {
		return Card{}, fmt.Errorf("card revision %d or expiry %d missing", c.Rev, c.Exp)
	}
	if len(c.Reason) == 0 || len(c.Reason) > routing.MaxReasonLen || len(c.By) > 64 {
		return Card{}, fmt.Errorf("card reason or requester out of bounds")
	}
	return c, nil
}
