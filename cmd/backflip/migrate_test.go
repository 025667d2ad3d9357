package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// TestMigrateCommand runs `backflip migrate` against a real, empty
// database. config.FromEnv reads the process environment, so the test sets
// it with t.Setenv and cannot run in parallel.
func TestMigrateCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	srv, err := pgtest.Start(ctx, pgtest.Options{}) // no template: databases start empty
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close postgres: %v", err)
		}
	})
	unsetenv := func(t *testing.T, k string) {
		t.Setenv(k, "") // restores the old value afterwards
		if err := os.Unsetenv(k); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("AppliesThenUpToDate", func(t *testing.T) {
		db := srv.NewDatabase(t)
		t.Setenv("BACKFLIP_DATABASE_URL", srv.URL(db.Database))
		code, out, errOut := runMain(t, nil, "", "migrate")
		if code != 0 || out != "applied migration 0001\napplied migration 0002\n" {
			t.Fatalf("first run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		code, out, errOut = runMain(t, nil, "", "migrate")
		if code != 0 || out != "audit schema is up to date\n" {
			t.Fatalf("second run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		conn, err := pgx.ConnectConfig(t.Context(), db)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM audit_events").Scan(&n); err != nil || n != 0 {
			t.Fatalf("audit_events: %d rows, %v", n, err)
		}
	})

	t.Run("URLRequired", func(t *testing.T) {
		unsetenv(t, "BACKFLIP_DATABASE_URL")
		code, out, errOut := runMain(t, nil, "", "migrate")
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "BACKFLIP_DATABASE_URL: required by migrate") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
	})

	t.Run("UnreachableFailsWithoutShowingPassword", func(t *testing.T) {
		t.Setenv("BACKFLIP_DATABASE_URL", "postgres://owner:hunter2secret@127.0.0.1:1/audit?connect_timeout=5&sslmode=disable")
		code, _, errOut := runMain(t, nil, "", "migrate")
		if code != 1 || !strings.Contains(errOut, "connect to the audit database") || strings.Contains(errOut, "hunter2secret") {
			t.Fatalf("exit %d\nstderr:\n%s", code, errOut)
		}
	})

	t.Run("ArgumentsRefused", func(t *testing.T) {
		code, _, errOut := runMain(t, nil, "", "migrate", "now")
		if code != 2 || !strings.Contains(errOut, "migrate takes no arguments") {
			t.Fatalf("exit %d\nstderr:\n%s", code, errOut)
		}
	})
}
