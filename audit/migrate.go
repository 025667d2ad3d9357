package audit

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The schema is a list of versioned SQL files embedded in the binary, so
// `backflip migrate` needs nothing but a database URL. The runner is a
// few dozen lines rather than goose or tern: it only ever moves forward
// (there are no down migrations for an append-only audit log), it must not
// add a module to go.mod, and what it does — a version table, one
// transaction per migration, an advisory lock — is small enough to read in
// one sitting.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrateLockKey is the pg_advisory_lock key that serialises Migrate runs
// against one database (advisory locks are per database), so two
// `backflip migrate` started at once neither race on creating
// schema_migrations nor apply a migration twice: the second waits and then
// finds nothing to do. It is the first eight bytes of "bflpaudt".
const migrateLockKey int64 = 0x62666c7061756474

// migration is one embedded SQL file, named NNNN_description.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// ErrSchemaTooNew is returned by Migrate when the database has a migration
// applied that this build does not know: an older binary must not guess.
var ErrSchemaTooNew = errors.New("audit schema is newer than this build")

// migrations reads and orders the embedded files. It fails on a bad name or
// a duplicate version, which a test catches before any release.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		prefix, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v < 1 || len(prefix) != 4 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", other, name, v)
		}
		seen[v] = name
		b, err := fs.ReadFile(migrationFiles, "migrations/"+name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// Migrate brings the audit schema up to date on conn, which must connect as
// the role that owns (or will own) audit_events, and returns the versions it
// applied, in order; none when the schema was up to date. Each migration
// runs in its own transaction together with its schema_migrations row, so a
// failure leaves the database at the last migration that succeeded. A
// session advisory lock makes concurrent calls safe: they run one after the
// other and the later ones apply nothing.
func Migrate(ctx context.Context, conn *pgx.Conn) (applied []int, err error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return nil, fmt.Errorf("take the migration lock: %w", err)
	}
	defer func() {
		// The lock belongs to the session: if the connection broke it is
		// gone already; otherwise release it even when ctx is cancelled.
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLockKey); uerr != nil && !conn.IsClosed() {
			err = errors.Join(err, fmt.Errorf("release the migration lock: %w", uerr))
		}
	}()

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    int         PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	have := make(map[int]bool, len(done))
	for _, v := range done {
		have[int(v)] = true
	}
	known := make(map[int]bool, len(ms))
	for _, m := range ms {
		known[m.version] = true
	}
	for v := range have {
		if !known[v] {
			return nil, fmt.Errorf("%w: the database has migration %d applied, this build knows up to %d", ErrSchemaTooNew, v, ms[len(ms)-1].version)
		}
	}

	for _, m := range ms {
		if have[m.version] {
			continue
		}
		if err := applyMigration(ctx, conn, m); err != nil {
			return applied, err
		}
		applied = append(applied, m.version)
	}
	return applied, nil
}

func applyMigration(ctx context.Context, conn *pgx.Conn, m migration) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// Without arguments pgx sends the file as one simple-protocol
		// query, so a file may hold several statements and DO blocks.
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", m.version); err != nil {
			return fmt.Errorf("migration %s: record version: %w", m.name, err)
		}
		return nil
	})
}
