package audit

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// newEmptyDatabase creates a database with no schema at all (NewDatabase
// clones the migrated template), dropped when tb ends.
func newEmptyDatabase(tb testing.TB) *pgx.ConnConfig {
	tb.Helper()
	admin := mustConnect(tb, pg.ConnConfig())
	name := "bf_empty_" + strings.ReplaceAll(uuid.NewString(), "-", "")
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(tb.Context(), "CREATE DATABASE "+ident); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	cfg := pg.ConnConfig()
	cfg.Database = name
	return cfg
}

func allVersions(tb testing.TB) []int {
	tb.Helper()
	ms, err := migrations()
	if err != nil {
		tb.Fatal(err)
	}
	var vs []int
	for _, m := range ms {
		vs = append(vs, m.version)
	}
	return vs
}

func TestMigrate(t *testing.T) {
	t.Run("EmbeddedFilesNumberedFromOne", func(t *testing.T) {
		vs := allVersions(t)
		for i, v := range vs {
			if v != i+1 {
				t.Fatalf("versions %v: want 1..%d without gaps", vs, len(vs))
			}
		}
		if len(vs) < 2 {
			t.Fatalf("versions %v: want at least the table and the append-only migration", vs)
		}
	})

	t.Run("FromScratchThenIdempotent", func(t *testing.T) {
		t.Parallel()
		conn := mustConnect(t, newEmptyDatabase(t))
		applied, err := Migrate(t.Context(), conn)
		if err != nil {
			t.Fatalf("first run: %v", err)
		}
		if want := allVersions(t); !slices.Equal(applied, want) {
			t.Fatalf("first run applied %v, want %v", applied, want)
		}
		applied, err = Migrate(t.Context(), conn)
		if err != nil || len(applied) != 0 {
			t.Fatalf("second run applied %v, %v; want nothing", applied, err)
		}
		rows, _ := conn.Query(t.Context(), "SELECT version FROM schema_migrations ORDER BY version")
		got, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil || len(got) != len(allVersions(t)) {
			t.Fatalf("schema_migrations = %v, %v", got, err)
		}
		// The runner's lock is released: another session can take it at once.
		var ok bool
		if err := conn.QueryRow(t.Context(), "SELECT pg_try_advisory_lock($1)", migrateLockKey).Scan(&ok); err != nil || !ok {
			t.Fatalf("lock still held after Migrate: %v %v", ok, err)
		}
	})

	t.Run("ConcurrentCallsDoNotFail", func(t *testing.T) {
		t.Parallel()
		cfg := newEmptyDatabase(t)
		const n = 4
		conns := make([]*pgx.Conn, n)
		for i := range conns {
			conns[i] = mustConnect(t, cfg)
		}
		var wg sync.WaitGroup
		results := make([][]int, n)
		errs := make([]error, n)
		for i := range conns {
			wg.Go(func() { results[i], errs[i] = Migrate(t.Context(), conns[i]) })
		}
		wg.Wait()
		var all []int
		for i := range n {
			if errs[i] != nil {
				t.Errorf("Migrate %d: %v", i, errs[i])
			}
			all = append(all, results[i]...)
		}
		slices.Sort(all)
		if want := allVersions(t); !slices.Equal(all, want) {
			t.Fatalf("together the runs applied %v, want each of %v exactly once", all, want)
		}
	})

	t.Run("TemplateIsUpToDate", func(t *testing.T) {
		t.Parallel()
		applied, err := Migrate(t.Context(), mustConnect(t, pg.NewDatabase(t)))
		if err != nil || len(applied) != 0 {
			t.Fatalf("applied %v, %v; want nothing", applied, err)
		}
	})

	t.Run("NewerSchemaRefused", func(t *testing.T) {
		t.Parallel()
		conn := mustConnect(t, pg.NewDatabase(t))
		if _, err := conn.Exec(t.Context(), "INSERT INTO schema_migrations (version) VALUES (9999)"); err != nil {
			t.Fatal(err)
		}
		if _, err := Migrate(t.Context(), conn); !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("Migrate = %v, want ErrSchemaTooNew", err)
		}
	})
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
