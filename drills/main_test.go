package drills

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

// leakSettle is how long the leak check waits for goroutines to end, as
// etcdtest.VerifyTestMain does: a stopped etcd member leaves peer
// goroutines that end within etcd's 5 s peer read timeout.
const leakSettle = 10 * time.Second

// TestMain starts the shared Postgres, runs the tests, stops Postgres and
// then checks for leaked goroutines the way etcdtest.VerifyTestMain does.
// VerifyTestMain itself cannot be used: it exits the process right after
// the tests, before Postgres could be stopped.
func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var err error
	pg, err = pgtest.Start(ctx, pgtest.Options{Template: func(ctx context.Context, conn *pgx.Conn) error {
		_, err := audit.Migrate(ctx, conn)
		return err
	}})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "drills tests:", err)
		return 1
	}
	code := m.Run()
	if err := pg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "drills tests: close postgres:", err)
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

// settleLeaks waits up to leakSettle for goroutines to end; those still
// running then are leaks.
func settleLeaks() error {
	deadline := time.Now().Add(leakSettle)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
