package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestStopRestart takes a cluster of its own down and up again, as the audit shipper's
// "Postgres down then up" tests will, and checks Close removes its folder.
func TestStopRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Local: true, Template: func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `CREATE TABLE events (id int PRIMARY KEY)`)
		return err
	}})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	base := s.local.base

	cfg := s.NewDatabase(t)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `INSERT INTO events VALUES (1)`); err != nil {
		t.Fatalf("insert: %v", err)
	}

	if err := s.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if _, err := conn.Exec(ctx, `SELECT 1`); err == nil {
		t.Error("a session survived Stop")
	}
	if c, err := pgx.ConnectConfig(ctx, cfg); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped cluster")
	}

	if err := s.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := s.Restart(ctx); err == nil {
		t.Error("restarting a running cluster succeeded")
	}
	conn2, err := pgx.ConnectConfig(ctx, cfg) // the same config: same socket folder and port
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer conn2.Close(context.Background())
	var n int
	if err := conn2.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil || n != 1 {
		t.Errorf("after restart: %d events, err %v; want the 1 written before Stop", n, err)
	}

	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := os.Stat(base); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster folder %s after Close: %v, want it removed", base, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// TestStartReportsFailure runs fake server binaries that fail, and checks the error quotes
// what they said: a test that cannot start Postgres must say why.
func TestStartReportsFailure(t *testing.T) {
	tests := []struct {
		name, initdb, postgres, want string
	}{
		{
			name:     "InitdbFails",
			initdb:   "echo 'initdb: error: cannot frobnicate' >&2; exit 1",
			postgres: "exit 1",
			want:     "initdb: error: cannot frobnicate",
		},
		{
			name:     "PostgresExits",
			initdb:   `mkdir -p "$2"`, // initdb --pgdata DIR ...
			postgres: "echo 'FATAL:  could not frobnicate' >&2; exit 1",
			want:     "FATAL:  could not frobnicate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not t.TempDir: as root, the scripts run as the postgres user, who cannot enter it.
			bin, err := os.MkdirTemp("", "pgtest-fakebin-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(bin) })
			for name, body := range map[string]string{"initdb": tt.initdb, "postgres": tt.postgres} {
				if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("BACKFLIP_PG_BIN", bin)
			_, err = Start(t.Context(), Options{Local: true})
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start = %v, want an error quoting %q", err, tt.want)
			}
		})
	}
}

func TestStartBadPGBin(t *testing.T) {
	t.Setenv("BACKFLIP_PG_BIN", t.TempDir())
	_, err := Start(t.Context(), Options{Local: true})
	if err == nil || !strings.Contains(err.Error(), "BACKFLIP_PG_BIN") {
		t.Fatalf("Start = %v, want an error naming BACKFLIP_PG_BIN", err)
	}
}

func TestFindBinDir(t *testing.T) {
	root := t.TempDir()
	mkServer := func(dir string, names ...string) string {
		t.Helper()
		dir = filepath.Join(root, dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	envBin := mkServer("env", "initdb", "postgres")
	clientOnly := mkServer("client", "initdb") // no postgres next to it
	v96 := mkServer("lib/9.6/bin", "initdb", "postgres")
	v15 := mkServer("lib/15/bin", "initdb", "postgres")
	mkServer("lib/16/bin", "initdb") // newest, but incomplete
	linked := mkServer("linked")
	if err := os.Symlink(filepath.Join(v96, "initdb"), filepath.Join(linked, "initdb")); err != nil {
		t.Fatal(err)
	}
	glob := filepath.Join(root, "lib/*/bin")
	noPath := func(string) (string, error) { return "", errors.New("not found") }
	onPath := func(dir string) func(string) (string, error) {
		return func(name string) (string, error) { return filepath.Join(dir, name), nil }
	}
	env := func(bin string) func(string) string {
		return func(k string) string {
			if k == "BACKFLIP_PG_BIN" {
				return bin
			}
			return ""
		}
	}

	tests := []struct {
		name     string
		getenv   func(string) string
		lookPath func(string) (string, error)
		glob     string
		want     string
		wantErr  string
	}{
		{name: "EnvWins", getenv: env(envBin), lookPath: onPath(v96), glob: glob, want: envBin},
		{name: "EnvIncompleteIsAnError", getenv: env(clientOnly), lookPath: onPath(v96), glob: glob, wantErr: "BACKFLIP_PG_BIN"},
		{name: "PathSymlinkResolved", getenv: env(""), lookPath: onPath(linked), glob: glob, want: v96},
		{name: "PathWithoutServerFallsThrough", getenv: env(""), lookPath: onPath(clientOnly), glob: glob, want: v15},
		{name: "NewestCompleteVersion", getenv: env(""), lookPath: noPath, glob: glob, want: v15},
		{name: "NothingSaysWhatToInstall", getenv: env(""), lookPath: noPath, glob: filepath.Join(root, "none/*/bin"), wantErr: "install the 'postgresql' package"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findBinDir(tt.getenv, tt.lookPath, tt.glob)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("findBinDir = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("findBinDir = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestDatabaseName(t *testing.T) {
	tests := []struct {
		name, prefix, test, want string
		seq                      int64
	}{
		{name: "Sanitized", prefix: "bf_0a1b2c3d_", seq: 7, test: "TestFlip/Two Writers-Ünïcode", want: "bf_0a1b2c3d_7_testflip_two_writers__n_code"},
		{name: "Truncated", prefix: "bf_0a1b2c3d_", seq: 12345, test: strings.Repeat("TestVeryLong", 10), want: ("bf_0a1b2c3d_12345_" + strings.Repeat("testverylong", 10))[:63]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := databaseName(tt.prefix, tt.seq, tt.test)
			if got != tt.want || len(got) > 63 {
				t.Errorf("databaseName = %q (%d bytes), want %q", got, len(got), tt.want)
			}
		})
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct {
		name, raw string
	}{
		{name: "Plain", raw: "postgres://u:p@db.example:5433/app?sslmode=disable"},
		{name: "NoPath", raw: "postgres://u@db.example"},
		{name: "NoPathQuery", raw: "postgresql://u@db.example?sslmode=disable&application_name=x"},
		{name: "DbnameParamOverridesPath", raw: "postgres://u@db.example/app?dbname=other&sslmode=disable"},
		{name: "PasswordWithQuestionMarkAndAt", raw: "postgres://u:pa%40ss?w@db.example/app"},
		{name: "EmptyPassword", raw: "postgres://u:@db.example/app?sslmode=disable"},
		{name: "MultiHost", raw: "postgres://u@h1:5432,h2:5433/app?sslmode=disable&target_session_attrs=any"},
		{name: "SocketWithOddCharacters", raw: socketURL("/tmp/a b+c&d=e?f", "5432")},
	}
	const db = "bf_1_test_x"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig, err := pgx.ParseConfig(tt.raw)
			if err != nil {
				t.Fatalf("parse original %q: %v", tt.raw, err)
			}
			out := withDatabase(tt.raw, db)
			got, err := pgx.ParseConfig(out)
			if err != nil {
				t.Fatalf("parse %q: %v", out, err)
			}
			if got.Database != db {
				t.Errorf("%q: database %q, want %q", out, got.Database, db)
			}
			orig.Database = db
			if got.Host != orig.Host || got.Port != orig.Port || got.User != orig.User || got.Password != orig.Password ||
				len(got.Fallbacks) != len(orig.Fallbacks) || (got.TLSConfig == nil) != (orig.TLSConfig == nil) {
				t.Errorf("%q: %s:%s@%s:%d (%d fallbacks), want %s:%s@%s:%d (%d fallbacks)", out,
					got.User, got.Password, got.Host, got.Port, len(got.Fallbacks),
					orig.User, orig.Password, orig.Host, orig.Port, len(orig.Fallbacks))
			}
		})
	}
	if got, err := pgx.ParseConfig(socketURL("/tmp/a b+c&d=e?f", "5432")); err != nil || got.Host != "/tmp/a b+c&d=e?f" {
		t.Errorf("socket URL host = %q, %v", got.Host, err)
	}
}

// TestBaseParents checks a cluster goes to /dev/shm only when it has room: Docker's default
// 64 MB /dev/shm cannot hold two clusters, and initdb would fail there for lack of space.
func TestBaseParents(t *testing.T) {
	tests := []struct {
		name string
		free uint64
		err  error
		want []string
	}{
		{name: "RoomyShmFirst", free: 24 << 30, want: []string{"/dev/shm", os.TempDir()}},
		{name: "DockerDefaultShmSkipped", free: 64 << 20, want: []string{os.TempDir()}},
		{name: "NoShm", err: os.ErrNotExist, want: []string{os.TempDir()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := baseParents(func(string) (uint64, error) { return tt.free, tt.err })
			if !slices.Equal(got, tt.want) {
				t.Errorf("baseParents = %q, want %q", got, tt.want)
			}
		})
	}
}
