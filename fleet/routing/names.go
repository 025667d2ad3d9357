package routing

import (
	"fmt"
	"strings"
)

// Limits on names. They keep every name safe to embed in an etcd key, a
// Slack message and a Postgres row without escaping.
const (
	MaxRouteLen   = 63
	MaxVersionLen = 128
	MaxOpLen      = 64
)

// IsReservedRoute reports whether name is a word of the chat grammar that
// would make a command ambiguous if it were a route name ("/rollback status"
// must never mean a route called "status").
func IsReservedRoute(name string) bool {
	switch strings.ToLower(name) {
	case "help", "status", "history", "run", "schedule", "cancel", "skip", "list":
		return true
	}
	return false
}

// PreviousVersion is the word the grammar uses in place of a version to mean
// the route's previous version; no real version may be called that.
const PreviousVersion = "previous"

// ValidateRoute reports whether name may be used as a route name: 1 to 63
// characters of letters, digits, '.', '_' and '-', starting and ending with a
// letter or digit, and not one of the grammar's reserved words.
func ValidateRoute(name string) error {
	if err := validateName("route", name, MaxRouteLen, false); err != nil {
		return err
	}
	if IsReservedRoute(name) {
		return fmt.Errorf("%w: route name %q is a reserved word of the chat grammar", ErrInvalid, name)
	}
	return nil
}

// ValidateVersion reports whether v may be used as a model version: 1 to 128
// characters of letters, digits and '.', '_', '-', ':', '@', '+', starting
// and ending with a letter or digit. Versions are otherwise opaque.
func ValidateVersion(v string) error {
	if err := validateName("version", v, MaxVersionLen, true); err != nil {
		return err
	}
	if strings.EqualFold(v, PreviousVersion) {
		return fmt.Errorf("%w: version name %q is reserved (it names the route's previous version)", ErrInvalid, v)
	}
	return nil
}

// ValidateOpID reports whether id may be used as an op id (it becomes part of
// keys such as ops/<op>): 1 to 64 characters of letters, digits, '-' and '_'.
func ValidateOpID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: op id is empty", ErrInvalid)
	}
	if len(id) > MaxOpLen {
		return fmt.Errorf("%w: op id is %d bytes, at most %d allowed", ErrInvalid, len(id), MaxOpLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '-' && c != '_' {
			return fmt.Errorf("%w: op id %q: character %q not allowed (letters, digits, '-', '_')", ErrInvalid, id, c)
		}
	}
	return nil
}

func validateName(what, s string, maxLen int, version bool) error {
	if s == "" {
		return fmt.Errorf("%w: %s name is empty", ErrInvalid, what)
	}
	if len(s) > maxLen {
		return fmt.Errorf("%w: %s name is %d bytes, at most %d allowed", ErrInvalid, what, len(s), maxLen)
	}
	if !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return fmt.Errorf("%w: %s name %q must start and end with a letter or digit", ErrInvalid, what, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlnum(c), c == '.', c == '_', c == '-':
		case version && (c == ':' || c == '@' || c == '+'):
		default:
			allowed := "letters, digits, '.', '_', '-'"
			if version {
				allowed += ", ':', '@', '+'"
			}
			return fmt.Errorf("%w: %s name %q: character %q not allowed (%s)", ErrInvalid, what, s, c, allowed)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}
