package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// redacted is what a set Secret shows instead of its value.
const redacted = "[redacted]"

// Secret is a configuration value that must never be printed: a token, a
// password, a signing key, or a URL that may embed a password. Every way fmt,
// encoding/json, log/slog and zap render it shows "[redacted]" when it is set
// and "" when it is not, so a whole Config can be logged. Reveal returns the
// value for the one place that needs it.
type Secret string

// Reveal returns the secret's value. Call it only where the value is used
// (an HTTP header, an HMAC key, a client config), never to log it.
func (s Secret) Reveal() string { return string(s) }

// IsSet reports whether the secret has a non-empty value.
func (s Secret) IsSet() bool { return s != "" }

// String returns "[redacted]" when the secret is set and "" when it is not.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %q, %x, %d…) print the
// redacted form; a Stringer alone would leave %d and %x printing the value.
func (s Secret) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), s.String())
}

// MarshalJSON encodes the redacted form.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText encodes the redacted form (YAML, TOML, map keys, zap's text
// fallbacks).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue makes log/slog print the redacted form.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
