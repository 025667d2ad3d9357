package audit

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// pg is the Postgres every test of the package takes databases from; its
// template database has the audit migrations applied, so pg.NewDatabase(t)
// returns an up-to-date, empty audit schema in milliseconds.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var err error
	pg, err = pgtest.Start(ctx, pgtest.Options{Template: func(ctx context.Context, conn *pgx.Conn) error {
		_, err := Migrate(ctx, conn)
		return err
	}})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "audit tests:", err)
		return 1
	}
	code := m.Run()
	if err := pg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "audit tests: close postgres:", err)
		code = 1
	}
	if code == 0 {
		if err := settleLeaks(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	return code
}

func settleLeaks() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mustConnect opens a connection that is closed when tb ends.
func mustConnect(tb testing.TB, cfg *pgx.ConnConfig) *pgx.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("connect to %s as %s: %v", cfg.Database, cfg.User, err)
	}
	tb.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
