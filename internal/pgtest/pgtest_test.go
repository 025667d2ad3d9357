package pgtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/backflip-dev/backflip/internal/pgtest"
)

// server is the cluster shared by this binary's tests, started by TestMain.
var server *pgtest.Server

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := pgtest.Start(ctx, pgtest.Options{Template: createWidgets})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	server = s
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	// After Close: the goroutine waiting on postgres ends with it.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	return code
}

// createWidgets is the template: a table with one row, so a clone shows both schema and data.
func createWidgets(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, `
		CREATE TABLE widgets (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
		INSERT INTO widgets (name) VALUES ('seed');`)
	return err
}

func mustConnect(tb testing.TB, cfg *pgx.ConnConfig) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.ConnectConfig(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("connect to %s: %v", cfg.Database, err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func widgetNames(tb testing.TB, conn *pgx.Conn) []string {
	tb.Helper()
	rows, err := conn.Query(tb.Context(), `SELECT name FROM widgets ORDER BY name`)
	if err != nil {
		tb.Fatalf("select widgets: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatalf("select widgets: %v", err)
	}
	return names
}

func databases(tb testing.TB, cfg *pgx.ConnConfig) []string {
	tb.Helper()
	conn := mustConnect(tb, cfg)
	rows, err := conn.Query(tb.Context(), `SELECT datname FROM pg_database ORDER BY datname`)
	if err != nil {
		tb.Fatalf("list databases: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatalf("list databases: %v", err)
	}
	return names
}

func TestNewDatabase(t *testing.T) {
	// Each writes its own row and must see only the template's row and its own, whichever
	// order they run in: with a shared database the later one would see both.
	for _, name := range []string{"First", "Second"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := server.NewDatabase(t)
			if admin := server.ConnConfig(); cfg.Database == admin.Database || cfg.Host != admin.Host || cfg.Port != admin.Port {
				t.Fatalf("config %s@%s:%d, admin %s@%s:%d: want same server, other database",
					cfg.Database, cfg.Host, cfg.Port, admin.Database, admin.Host, admin.Port)
			}
			conn := mustConnect(t, cfg)
			if _, err := conn.Exec(t.Context(), `INSERT INTO widgets (name) VALUES ($1)`, name); err != nil {
				t.Fatalf("insert: %v", err)
			}
			if got, want := widgetNames(t, conn), []string{name, "seed"}; !slices.Equal(got, want) {
				t.Errorf("widgets = %q, want %q", got, want)
			}
		})
	}
}

func TestNewDatabaseDroppedAfterTest(t *testing.T) {
	var (
		name string
		conn *pgx.Conn // left open past the subtest: the drop must end it (WITH (FORCE))
	)
	t.Run("Create", func(t *testing.T) {
		cfg := server.NewDatabase(t)
		name = cfg.Database
		var err error
		if conn, err = pgx.ConnectConfig(t.Context(), cfg); err != nil {
			t.Fatalf("connect: %v", err)
		}
	})
	if conn == nil {
		t.FailNow()
	}
	defer conn.Close(context.Background())
	if slices.Contains(databases(t, server.ConnConfig()), name) {
		t.Errorf("database %s still exists after its test ended", name)
	}
	if _, err := conn.Exec(t.Context(), "SELECT 1"); err == nil {
		t.Errorf("a session on dropped database %s still works", name)
	}
}

func TestURL(t *testing.T) {
	cfg := server.NewDatabase(t)
	parsed, err := pgx.ParseConfig(server.URL(cfg.Database))
	if err != nil {
		t.Fatalf("parse %s: %v", server.URL(cfg.Database), err)
	}
	if parsed.Host != cfg.Host || parsed.Port != cfg.Port || parsed.User != cfg.User || parsed.Database != cfg.Database {
		t.Fatalf("URL parses to %s@%s:%d/%s, want %s@%s:%d/%s",
			parsed.User, parsed.Host, parsed.Port, parsed.Database, cfg.User, cfg.Host, cfg.Port, cfg.Database)
	}
	if got := widgetNames(t, mustConnect(t, parsed)); !slices.Equal(got, []string{"seed"}) {
		t.Errorf("widgets = %q, want [seed]", got)
	}
}

// noCleanupTB loses cleanups, like a test binary that dies before running them.
type noCleanupTB struct{ testing.TB }

func (noCleanupTB) Cleanup(func()) {}

// TestExternalURL points BACKFLIP_TEST_DATABASE_URL at the cluster TestMain started, as CI
// would at a service container, and checks the second Server leaves nothing behind.
func TestExternalURL(t *testing.T) {
	t.Setenv(pgtest.EnvDatabaseURL, server.URL(""))
	admin := server.ConnConfig()
	before := databases(t, admin)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ext, err := pgtest.Start(ctx, pgtest.Options{Template: createWidgets})
	if err != nil {
		t.Fatalf("start with %s: %v", pgtest.EnvDatabaseURL, err)
	}
	t.Cleanup(func() { ext.Close() })

	if got := ext.ConnConfig(); got.Host != admin.Host || got.Database != admin.Database {
		t.Errorf("external admin config is %s/%s, want %s/%s", got.Host, got.Database, admin.Host, admin.Database)
	}
	if err := ext.Stop(); !errors.Is(err, pgtest.ErrExternal) {
		t.Errorf("Stop on an external server = %v, want ErrExternal", err)
	}
	if err := ext.Restart(ctx); !errors.Is(err, pgtest.ErrExternal) {
		t.Errorf("Restart on an external server = %v, want ErrExternal", err)
	}
	for _, name := range []string{"First", "Second"} {
		t.Run(name, func(t *testing.T) {
			conn := mustConnect(t, ext.NewDatabase(t))
			if _, err := conn.Exec(t.Context(), `INSERT INTO widgets (name) VALUES ($1)`, name); err != nil {
				t.Fatalf("insert: %v", err)
			}
			if got, want := widgetNames(t, conn), []string{name, "seed"}; !slices.Equal(got, want) {
				t.Errorf("widgets = %q, want %q", got, want)
			}
		})
	}
	leaked := ext.NewDatabase(noCleanupTB{t})
	if !slices.Contains(databases(t, admin), leaked.Database) {
		t.Fatalf("database %s was not created", leaked.Database)
	}

	if err := ext.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if after := databases(t, admin); !slices.Equal(after, before) {
		t.Errorf("databases after Close = %q, want as before: %q", after, before)
	}
}

func TestExternalURLTemplateErrorCleansUp(t *testing.T) {
	t.Setenv(pgtest.EnvDatabaseURL, server.URL(""))
	before := databases(t, server.ConnConfig())
	errMigrate := errors.New("migration 3 failed")
	_, err := pgtest.Start(t.Context(), pgtest.Options{Template: func(ctx context.Context, conn *pgx.Conn) error {
		if err := createWidgets(ctx, conn); err != nil {
			return err
		}
		return errMigrate
	}})
	if !errors.Is(err, errMigrate) {
		t.Fatalf("Start = %v, want the Template's error", err)
	}
	if after := databases(t, server.ConnConfig()); !slices.Equal(after, before) {
		t.Errorf("databases after failed Start = %q, want as before: %q", after, before)
	}
}

func TestExternalURLMustBeURL(t *testing.T) {
	t.Setenv(pgtest.EnvDatabaseURL, "host=/tmp dbname=postgres")
	if _, err := pgtest.Start(t.Context(), pgtest.Options{}); err == nil {
		t.Fatal("Start accepted a keyword/value connection string")
	}
}

// cleanupNowTB collects cleanups so a benchmark can run them inside its loop.
type cleanupNowTB struct {
	testing.TB
	cleanups []func()
}

func (tb *cleanupNowTB) Cleanup(f func()) { tb.cleanups = append(tb.cleanups, f) }

// BenchmarkNewDatabase measures what one test pays for a database of its own: the clone from
// the template and the drop.
func BenchmarkNewDatabase(b *testing.B) {
	for b.Loop() {
		tb := &cleanupNowTB{TB: b}
		server.NewDatabase(tb)
		for _, f := range slices.Backward(tb.cleanups) {
			f()
		}
	}
}

func BenchmarkNewDatabaseParallel(b *testing.B) {
	b.SetParallelism(2)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tb := &cleanupNowTB{TB: b}
			server.NewDatabase(tb)
			for _, f := range slices.Backward(tb.cleanups) {
				f()
			}
		}
	})
}
