package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Connect returns a pool for the audit database at url. It does not wait
// for Postgres: the pool connects lazily and reconnects after an outage,
// so the bot starts (and rolls back, queueing audit in etcd) while
// Postgres is down. The URL is never included in an error.
func Connect(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors can quote the URL, password included.
		return nil, fmt.Errorf("BACKFLIP_DATABASE_URL is not a valid Postgres connection URL")
	}
	return ConnectConfig(ctx, cfg)
}

// ConnectConfig is Connect with a parsed configuration (the dev stack
// connects to its own cluster as the bot's role this way, without
// formatting a URL). It sets the pool's sizes and timeouts on cfg.
func ConnectConfig(ctx context.Context, cfg *pgxpool.Config) (*pgxpool.Pool, error) {
	cfg.MaxConns = 8
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 30 * time.Second
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 5*time.Second {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}
