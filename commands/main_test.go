package commands

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

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
	os.Exit(pgtest.RunTests(m, "commands", pgtest.Options{Template: migrate}, func(s *pgtest.Server) { pg = s }))
}

func migrate(ctx context.Context, conn *pgx.Conn) error {
	_, err := audit.Migrate(ctx, conn)
	return err
}

// helperEnv, when set, makes the test binary a crash-test subprocess.
const helperEnv = "BACKFLIP_COMMANDS_HELPER"
