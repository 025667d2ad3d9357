package commands

import (
	"fmt"
	"time"
	"unicode/utf8"
)

// Clip shortens s to at most n bytes, cut on a character boundary and
// marked with "…", so outside text (a reason, an agent's error, a hostile
// etcd value) is bounded before it reaches a message, record or log.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Ago is how long before now t was, for people: "just now", "40 s ago",
// "3 min ago", "5 h ago", "3 days ago"; "at an unknown time" for a zero t.
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "at an unknown time"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < 2*time.Minute:
		return fmt.Sprintf("%d s ago", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}
