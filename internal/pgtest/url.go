package pgtest

import "strings"

// isPostgresURL tells whether s is a URL (which pglocal.WithDatabase can edit) rather than a
// keyword/value connection string.
func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}
