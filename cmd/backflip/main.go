// Command backflip is the backflip bot. This file only wires: the work is
// in the packages it calls.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"runtime/debug"
	"syscall"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/internal/config"
	"github.com/backflip-dev/backflip/internal/devstack"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.LookupEnv}.Run(ctx, os.Args[1:]))
}

// Main is the program with its outside world injected, so tests can run it.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) (string, bool)
}

const usage = `usage: backflip <command> [flags]

commands:
  serve     run the bot: Slack (Socket Mode or HTTP), runtime endpoints, health, metrics, and — on the
            elected replica — op recovery, the audit shipper and the warm-keep monitor (config: env, see configs/bot.env.example)
  dev       run the whole system on this machine (embedded etcd, simulated fleet and traffic, chat terminal)
  migrate   apply the audit schema to BACKFLIP_DATABASE_URL (connect as the owning role)
  version   print the version`

// Run runs one subcommand and returns the process exit code: 0 done, 1
// failed, 2 bad usage.
func (m Main) Run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(m.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "dev":
		err = m.dev(ctx, args[1:])
	case "serve":
		err = m.serve(ctx, args[1:])
	case "migrate":
		err = m.migrate(ctx, args[1:])
	case "version":
		fmt.Fprintln(m.Stdout, version())
	case "help", "-h", "--help":
		fmt.Fprintln(m.Stdout, usage)
	default:
		fmt.Fprintf(m.Stderr, "backflip: unknown command %q\n%s\n", args[0], usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(m.Stderr, "backflip: %v\n", err)
		return 2
	default:
		fmt.Fprintf(m.Stderr, "backflip: %v\n", err)
		return 1
	}
}

type usageError struct{ error }

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return "backflip " + bi.Main.Version
	}
	return "backflip (devel)"
}

func (m Main) dev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	stateDir := fs.String("state-dir", ".backflip", "folder that holds all state")
	routers := fs.Int("routers", 4, "number of simulated inference routers")
	nodes := fs.Int("nodes", 8, "number of simulated GPU nodes (agent + inference servers)")
	rps := fs.Int("rps", 5, "synthetic requests each simulated workflow runtime starts per second (0: no traffic)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("dev takes no arguments, got %q", fs.Args())}
	}
	if *routers < 1 || *routers > 1000 {
		return usageError{fmt.Errorf("--routers wants 1 to 1000, got %d", *routers)}
	}
	if *nodes < 1 || *nodes > 99 {
		return usageError{fmt.Errorf("--nodes wants 1 to 99, got %d", *nodes)}
	}
	if *rps < 0 || *rps > 1000 {
		return usageError{fmt.Errorf("--rps wants 0 to 1000, got %d", *rps)}
	}
	cfg, err := config.FromLookup(m.Getenv)
	if err != nil {
		return usageError{err}
	}
	// The dev stack logs for a person at a terminal unless told otherwise.
	if _, set := m.Getenv("BACKFLIP_LOG_FORMAT"); !set {
		cfg.Log.Format = "console"
	}
	if _, set := m.Getenv("BACKFLIP_LOG_LEVEL"); !set {
		cfg.Log.Level = "warn"
	}
	log, err := config.NewLoggerTo(m.Stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	stack, err := devstack.Start(ctx, devstack.Config{
		StateDir:        *stateDir,
		Routers:         *routers,
		Nodes:           *nodes,
		Runtimes:        devRuntimes,
		RPS:             *rps,
		Prefix:          cfg.Etcd.Prefix,
		User:            osUser(m.Getenv),
		WarmTimeout:     cfg.Timing.WarmTimeout,
		ConvergeTimeout: cfg.Timing.RouterConvergeTimeout,
		AckTimeout:      cfg.Timing.AbortAckTimeout,
		CardTTL:         cfg.Slack.CardTTL,
		Logger:          log,
		Out:             m.Stdout,
	})
	if err != nil {
		return err
	}
	defer stack.Close()
	err = stack.Serve(ctx, m.Stdin)
	log.Info("stopping", zap.Error(err))
	return err
}

// devRuntimes is how many simulated workflow runtimes `backflip dev` runs:
// two, so a rollback's report shows acknowledgements being collected from
// more than one.
const devRuntimes = 2

// osUser names the person at the terminal: the OS user, as backflipctl
// names its actor.
func osUser(getenv func(string) (string, bool)) string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if name, ok := getenv("USER"); ok && name != "" {
		return name
	}
	return "dev"
}

// migrate applies the audit schema. It connects as whoever
// BACKFLIP_DATABASE_URL names, which must be the role that owns the audit
// tables (and may create the backflip_runtime role, unless it exists); the
// bot itself connects as a role granted backflip_runtime.
func (m Main) migrate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("migrate takes no arguments, got %q", fs.Args())}
	}
	cfg, err := config.FromEnv()
	if err != nil {
		return usageError{err}
	}
	if !cfg.Postgres.URL.IsSet() {
		return usageError{&config.VarError{Var: "BACKFLIP_DATABASE_URL", Problem: "required by migrate: the postgres:// URL of the audit database, as its owning role"}}
	}
	// Parsed, never formatted; and pgx's parse error would quote the URL,
	// password included when its redaction guesses wrong, so it is not shown.
	connCfg, err := pgx.ParseConfig(cfg.Postgres.URL.Reveal())
	if err != nil {
		return usageError{&config.VarError{Var: "BACKFLIP_DATABASE_URL", Problem: "cannot be parsed as a Postgres connection URL"}}
	}
	conn, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return fmt.Errorf("connect to the audit database: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	applied, err := audit.Migrate(ctx, conn)
	for _, v := range applied {
		fmt.Fprintf(m.Stdout, "applied migration %04d\n", v)
	}
	if err != nil {
		return fmt.Errorf("migrate the audit schema: %w", err)
	}
	if len(applied) == 0 {
		fmt.Fprintln(m.Stdout, "audit schema is up to date")
	}
	return nil
}
