package bot

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/internal/pgtest"
)

// pg is the Postgres the end-to-end tests take audit databases from.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(pgtest.RunTests(m, "bot", pgtest.Options{Template: migrate}, func(s *pgtest.Server) { pg = s }))
}

func migrate(ctx context.Context, conn *pgx.Conn) error {
	_, err := audit.Migrate(ctx, conn)
	return err
}
