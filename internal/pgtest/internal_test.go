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
