package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backflip-dev/backflip/internal/pglocal"
)

// EnvDatabaseURL names the variable that points tests at an existing server instead of a
// throwaway cluster. It must hold a postgres:// (or postgresql://) URL whose user may create
// and drop databases.
const EnvDatabaseURL = "BACKFLIP_TEST_DATABASE_URL"

// ErrExternal is returned by Stop and Restart on a Server that uses an existing server: it is
// not ours to stop.
var ErrExternal = errors.New("pgtest: server is external (" + EnvDatabaseURL + "); only a local cluster can be stopped")

// Options configures Start.
type Options struct {
	// Template, if set, runs once against a template database (e.g. migrations); every
	// NewDatabase is cloned from it with CREATE DATABASE ... TEMPLATE. The connection is
	// closed by Start afterwards.
	Template func(ctx context.Context, conn *pgx.Conn) error

	// Local starts a throwaway cluster even when BACKFLIP_TEST_DATABASE_URL is set. Fault
	// tests that Stop and Restart Postgres need one of their own.
	Local bool
}

// Server is a Postgres that tests can take databases from. It is safe for concurrent use.
type Server struct {
	adminURL string          // postgres:// URL of the admin database; see URL
	admin    *pgx.ConnConfig // parsed once from adminURL; only copies leave the Server
	prefix   string          // names of every database this Server creates start with it
	template string
	cloneSQL string // CREATE DATABASE options after TEMPLATE
	seq      atomic.Int64
	idle     chan *pgx.Conn // admin connections kept for reuse; see exec
	local    *cluster       // nil when external

	closeOnce sync.Once
	closeErr  error
}

// opTimeout bounds statements: a test database is created and dropped in milliseconds; it
// only turns a hung server into a failure instead of a stuck test binary.
const opTimeout = 30 * time.Second

// Start starts a cluster for the whole test binary (call it from TestMain and Close it after
// m.Run) or, when BACKFLIP_TEST_DATABASE_URL is set and opts.Local is not, connects to that
// server. Then it prepares the template database. If anything fails, whatever was started is
// cleaned up and the error says what went wrong, including the tail of Postgres's log.
func Start(ctx context.Context, opts Options) (*Server, error) {
	tag, err := randomTag()
	if err != nil {
		return nil, err
	}
	s := &Server{
		// The tag keeps names unique across test binaries sharing an external server (go
		// test runs packages in parallel), and lets Close find what this Server created.
		prefix: "bf_" + tag + "_",
		idle:   make(chan *pgx.Conn, idleConns),
	}
	s.template = s.prefix + "template"

	if raw := os.Getenv(EnvDatabaseURL); raw != "" && !opts.Local {
		if !isPostgresURL(raw) {
			return nil, fmt.Errorf("pgtest: %s must be a postgres:// URL", EnvDatabaseURL)
		}
		s.adminURL = raw
		if s.admin, err = pgx.ParseConfig(raw); err != nil {
			return nil, fmt.Errorf("pgtest: %s: %w", EnvDatabaseURL, err)
		}
	} else {
		c, err := startCluster(ctx)
		if err != nil {
			return nil, err
		}
		s.local, s.adminURL, s.admin = c, c.pg.URL(""), c.pg.ConnConfig("")
	}
	if s.local != nil {
		// Since Postgres 15, CREATE DATABASE copies the template through the WAL by default.
		// With fsync off, copying the files (after a checkpoint that costs next to nothing
		// here) is faster: BenchmarkNewDatabase measured 15 against 18 ms serially, 9 against
		// 14 ms in parallel, and WAL_LOG costs 80 to 120 ms as a session's first statement.
		// External servers keep their default: there a checkpoint can be expensive.
		version, err := s.serverVersion(ctx)
		if err != nil {
			return nil, errors.Join(err, s.Close())
		}
		if version >= 150000 {
			s.cloneSQL = " STRATEGY FILE_COPY"
		}
	}
	if err := s.prepareTemplate(ctx, opts.Template); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

func (s *Server) prepareTemplate(ctx context.Context, migrate func(context.Context, *pgx.Conn) error) error {
	ident := pgx.Identifier{s.template}.Sanitize()
	if err := s.exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return fmt.Errorf("pgtest: create template database: %w", err)
	}
	if migrate != nil {
		cfg := s.admin.Copy()
		cfg.Database = s.template
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return fmt.Errorf("pgtest: connect to template database: %w", err)
		}
		err = migrate(ctx, conn)
		// Close with a fresh context: ctx may be what made migrate fail.
		closeCtx, cancel := context.WithTimeout(context.Background(), opTimeout)
		conn.Close(closeCtx)
		cancel()
		if err != nil {
			return fmt.Errorf("pgtest: template: %w", err)
		}
	}
	// CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template, so forbid
	// new connections and end any the Template func left behind.
	if err := s.exec(ctx, "ALTER DATABASE "+ident+" ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("pgtest: lock template database: %w", err)
	}
	const terminate = `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`
	if err := s.exec(ctx, terminate, s.template); err != nil {
		return fmt.Errorf("pgtest: disconnect template database: %w", err)
	}
	return nil
}

// exec runs one statement on an admin connection. Opening a connection costs about 20 ms on
// these machines (more than cloning a database), so up to idleConns of them are kept
// between calls; each is checked with a ping before reuse and dropped after any error, so a
// restart or an idle_session_timeout costs one reconnect, never a failed call.
func (s *Server) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, sql, args...)
	s.release(conn, err)
	return err
}

const idleConns = 4

func (s *Server) acquire(ctx context.Context) (*pgx.Conn, error) {
	for {
		select {
		case conn := <-s.idle:
			if conn.Ping(ctx) == nil {
				return conn, nil
			}
			conn.Close(context.Background())
		default:
			return pgx.ConnectConfig(ctx, s.admin)
		}
	}
}

func (s *Server) release(conn *pgx.Conn, err error) {
	if err == nil && !conn.IsClosed() {
		select {
		case s.idle <- conn:
			return
		default:
		}
	}
	conn.Close(context.Background())
}

// closeIdle closes the kept admin connections.
func (s *Server) closeIdle() {
	for {
		select {
		case conn := <-s.idle:
			conn.Close(context.Background())
		default:
			return
		}
	}
}

// serverVersion returns the server's version as a number, e.g. 150018 for 15.18.
func (s *Server) serverVersion(ctx context.Context) (int, error) {
	conn, err := s.acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("pgtest: %w", err)
	}
	var version int
	err = conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version)
	s.release(conn, err)
	if err != nil {
		return 0, fmt.Errorf("pgtest: server version: %w", err)
	}
	return version, nil
}

// ConnConfig returns a copy of the admin connection's configuration.
func (s *Server) ConnConfig() *pgx.ConnConfig { return s.admin.Copy() }

// URL returns a postgres:// URL for database on this server, or for the admin database when
// database is "". Use it where a component takes a connection string; do not use
// ConnConfig.ConnString, which still names the admin database on configs from NewDatabase.
func (s *Server) URL(database string) string {
	if database == "" {
		return s.adminURL
	}
	return pglocal.WithDatabase(s.adminURL, database)
}

// NewDatabase creates a fresh database cloned from the template and returns its connection
// configuration (a copy of the admin configuration with Database changed). The database is
// dropped when tb ends. Failures are fatal to tb.
func (s *Server) NewDatabase(tb testing.TB) *pgx.ConnConfig {
	tb.Helper()
	name := databaseName(s.prefix, s.seq.Add(1), tb.Name())
	ident := pgx.Identifier{name}.Sanitize()

	ctx, cancel := context.WithTimeout(tb.Context(), opTimeout)
	defer cancel()
	if err := s.exec(ctx, "CREATE DATABASE "+ident+" TEMPLATE "+pgx.Identifier{s.template}.Sanitize()+s.cloneSQL); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		// A stopped local cluster is removed whole by Close; there is nothing to drop.
		if s.local != nil && !s.local.running() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	cfg := s.admin.Copy()
	cfg.Database = name
	return cfg
}

// Stop shuts the local cluster down (fast shutdown: sessions are ended, data is kept) and
// waits until it has exited. Connections fail until Restart. It affects every database of
// this Server, so only a test that owns the Server (Options.Local) should call it. On an
// external server it returns ErrExternal.
func (s *Server) Stop() error {
	if s.local == nil {
		return ErrExternal
	}
	s.closeIdle()
	return s.local.pg.Stop()
}

// Restart starts the stopped cluster again on the same socket folder and port, so every
// configuration handed out before stays valid, and waits until it accepts connections.
func (s *Server) Restart(ctx context.Context) error {
	if s.local == nil {
		return ErrExternal
	}
	return s.local.pg.Restart(ctx)
}

// Close stops the local cluster and removes its folder. On an external server it drops the
// databases this Server created that are still there (the template, and any a test did not
// clean up) and nothing else. Close is idempotent and works after a failed Start.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeIdle()
		if s.local != nil {
			s.closeErr = s.local.close()
			return
		}
		if s.admin != nil {
			s.closeErr = s.dropOwnDatabases()
		}
	})
	return s.closeErr
}

func (s *Server) dropOwnDatabases() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, s.admin)
	if err != nil {
		return fmt.Errorf("pgtest: close: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE left(datname, length($1)) = $1`, s.prefix)
	if err != nil {
		return fmt.Errorf("pgtest: close: list databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("pgtest: close: list databases: %w", err)
	}
	var errs []error
	for _, name := range names {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("pgtest: close: drop database %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// databaseName builds a database name that is unique per Server (prefix and sequence
// number) and readable in pg_stat_activity (the test name), within Postgres's 63 bytes.
func databaseName(prefix string, seq int64, testName string) string {
	const maxLen = 63
	name := fmt.Sprintf("%s%d_", prefix, seq)
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		if b.Len()+len(name) >= maxLen {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return name + b.String()
}

func randomTag() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("pgtest: random name: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
