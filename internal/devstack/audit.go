package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/internal/pglocal"
)

// devDatabase is the dev stack's audit database, and botRole the role the
// stack's Service connects as: like the bot in production, it may only
// INSERT and SELECT (granted backflip_runtime by the migrations), while the
// migrations run as the cluster's owner.
const (
	devDatabase = "backflip"
	botRole     = "backflip_bot"
)

// auditDB is where the dev stack's audit events end up.
type auditDB struct {
	// pool is nil when there is no database: events then stay queued in
	// the etcd outbox, as they do in production while Postgres is down.
	pool    *pgxpool.Pool
	cluster *pglocal.Cluster
	// tmp is a folder to remove on close: the cluster's, when the state
	// folder could not hold it.
	tmp string
	// where says, for the banner, what the database is (never a password).
	where string
}

// startAudit brings up the audit database: BACKFLIP_DATABASE_URL when set,
// else a Postgres cluster of the dev stack's own, started from the local
// binaries with its data in <state>/postgres so the history survives a
// restart. The schema is migrated either way. Without server binaries, or
// when the cluster does not start, the stack runs on without a database
// (and says why in the banner): rollbacks still work and their events wait
// in etcd.
func startAudit(ctx context.Context, cfg Config) (*auditDB, error) {
	log := cfg.Logger.Named("audit-db")
	if cfg.DatabaseURL != "" {
		return externalAudit(ctx, cfg.DatabaseURL)
	}
	a := &auditDB{}
	dir := filepath.Join(cfg.StateDir, "postgres")
	where := "data in " + dir
	c, err := pglocal.Start(ctx, pglocal.Options{Dir: dir, Durable: true, TCP: true, Getenv: cfg.Getenv, Logger: log})
	if errors.Is(err, pglocal.ErrUnreachable) {
		// Root runs Postgres as the postgres OS user, which cannot reach
		// a state folder under, say, /root: keep the cluster for this run
		// only, in a temporary folder it can reach.
		if a.tmp, err = os.MkdirTemp("", "backflip-dev-pg-"); err != nil {
			return nil, fmt.Errorf("temporary folder for the audit database: %w", err)
		}
		where = fmt.Sprintf("throwaway for this run: the postgres OS user cannot reach %s", dir)
		c, err = pglocal.Start(ctx, pglocal.Options{Dir: a.tmp, Durable: false, TCP: true, Getenv: cfg.Getenv, Logger: log})
	}
	switch {
	case errors.Is(err, pglocal.ErrNoBinaries):
		a.close()
		return &auditDB{where: "none: PostgreSQL server binaries were not found (install the postgresql package, " +
			"set BACKFLIP_PG_BIN, or point BACKFLIP_DATABASE_URL at a database); audit events stay queued in etcd"}, nil
	case err != nil:
		a.close()
		log.Warn("audit database not started", zap.Error(err))
		return &auditDB{where: "none: the local Postgres did not start (see the log above); audit events stay queued in etcd"}, nil
	}
	a.cluster = c
	if err := a.prepare(ctx); err != nil {
		a.close()
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig("")
	if err != nil {
		a.close()
		return nil, err
	}
	pcfg.ConnConfig = c.ConnConfig(devDatabase)
	pcfg.ConnConfig.User = botRole
	if a.pool, err = audit.ConnectConfig(ctx, pcfg); err != nil {
		a.close()
		return nil, err
	}
	a.where = c.TCPURL(devDatabase) + "   " + where
	return a, nil
}

// prepare creates the dev database and the bot's role, and migrates the
// schema, as the cluster's owner. Each step is a no-op the second time.
func (a *auditDB) prepare(ctx context.Context) error {
	admin, err := pgx.ConnectConfig(ctx, a.cluster.ConnConfig("postgres"))
	if err != nil {
		return fmt.Errorf("connect to the dev Postgres: %w", err)
	}
	var exists bool
	err = admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, devDatabase).Scan(&exists)
	if err == nil && !exists {
		_, err = admin.Exec(ctx, `CREATE DATABASE `+devDatabase)
	}
	_ = admin.Close(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("create the dev audit database: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, a.cluster.ConnConfig(devDatabase))
	if err != nil {
		return fmt.Errorf("connect to the dev audit database: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := audit.Migrate(ctx, conn); err != nil {
		return fmt.Errorf("migrate the dev audit database: %w", err)
	}
	_, err = conn.Exec(ctx, `DO $$ BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '`+botRole+`') THEN
		CREATE ROLE `+botRole+` LOGIN IN ROLE backflip_runtime;
	END IF;
END $$`)
	if err != nil {
		return fmt.Errorf("create the dev bot's database role: %w", err)
	}
	return nil
}

// externalAudit migrates the database at url (as whoever the URL names,
// who must own the schema) and connects to it.
func externalAudit(ctx context.Context, url string) (*auditDB, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors can quote the URL, password included.
		return nil, errors.New("BACKFLIP_DATABASE_URL is not a valid Postgres connection URL")
	}
	conn, err := pgx.ConnectConfig(ctx, pcfg.ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("connect to BACKFLIP_DATABASE_URL (host %s, database %s): %w", pcfg.ConnConfig.Host, pcfg.ConnConfig.Database, err)
	}
	_, err = audit.Migrate(ctx, conn)
	_ = conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("migrate BACKFLIP_DATABASE_URL (database %s): %w", pcfg.ConnConfig.Database, err)
	}
	pool, err := audit.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	return &auditDB{pool: pool, where: fmt.Sprintf("BACKFLIP_DATABASE_URL: database %s on %s, as %s", pcfg.ConnConfig.Database, pcfg.ConnConfig.Host, pcfg.ConnConfig.User)}, nil
}

// close closes the pool, stops the cluster and removes a temporary one.
func (a *auditDB) close() {
	if a == nil {
		return
	}
	if a.pool != nil {
		a.pool.Close()
	}
	if a.cluster != nil {
		_ = a.cluster.Close()
	}
	if a.tmp != "" {
		_ = os.RemoveAll(a.tmp)
	}
}
