package commands

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/internal/pgtest"
)

// pg is the Postgres every test of the package takes databases from; its
// template has the audit migrations applied, so pg.NewDatabase(t) is an
// empty, current audit schema in milliseconds.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		// A subprocess of the crash tests: a bot replica that crashes.
		os.Exit(crashChild())
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var err error
	pg, err = pgtest.Start(ctx, pgtest.Options{Template: func(ctx context.Context, conn *pgx.Conn) error {
		_, err := audit.Migrate(ctx, conn)
		return err
	}})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "commands tests:", err)
		return 1
	}
	code := m.Run()
	if err := pg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "commands tests: close postgres:", err)
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

// helperEnv, when set, makes the test binary a crash-test subprocess.
const helperEnv = "BACKFLIP_COMMANDS_HELPER"

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
