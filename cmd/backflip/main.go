// Command backflip is the backflip bot. This file only wires: the work is
// in the packages it calls.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"os/user"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/bot"
	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/internal/config"
	"github.com/backflip-dev/backflip/internal/devstack"
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
            elected replica — op recovery, the audit shipper, the warm-keep monitor and the drill scheduler (config: env, see configs/bot.env.example)
  dev       run the whole system on this machine (embedded etcd, simulated fleet and traffic, the bot on a
            chat terminal and on loopback Slack HTTP endpoints)
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

	dcfg := devstack.Config{
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
		Getenv:          m.Getenv,
		Logger:          log,
	}
	if cfg.Postgres.URL.IsSet() {
		dcfg.DatabaseURL = cfg.Postgres.URL.Reveal()
	}
	// The drill timing of the environment when it is set; the dev stack's
	// own short one otherwise (the contract's 24 h quiet period would
	// refuse every drill on routes seeded a moment ago).
	if _, set := m.Getenv("BACKFLIP_DRILL_VERIFY_WINDOW"); set {
		dcfg.DrillVerifyWindow = cfg.Timing.DrillVerifyWindow
	}
	if _, set := m.Getenv("BACKFLIP_DRILL_QUIET_PERIOD"); set {
		dcfg.DrillQuietPeriod = cfg.Timing.DrillQuietPeriod
	}
	stack, err := devstack.Start(ctx, dcfg)
	if err != nil {
		return err
	}
	defer stack.Close()

	// The chat is the bot of `backflip serve`, with the terminal as its
	// Slack: the same answers, cards and live progress, printed as text.
	me := stack.Origin()
	term := bot.NewTerminal(m.Stdout, me.Actor.ID, me.Actor.Name, me.Channel.ID, me.Channel.Name)
	term.Interactive = isTerminal(m.Stdin)
	term.Help = devstack.Help
	term.Logger = log.Named("terminal")
	b, err := bot.New(bot.Config{Transport: commands.TransportTerminal, Service: stack.Service(), Poster: term, CardTTL: cfg.Slack.CardTTL,
		OpsChannel: me.Channel.ID, UpdateInterval: devUpdateInterval, Logger: log.Named("bot")})
	if err != nil {
		return err
	}
	term.Wait = b.Wait
	slack, err := serveDevSlack(term.Shared(b), log.Named("slack-http"))
	if err != nil {
		return err
	}
	fmt.Fprintln(term, stack.Banner(slack.banner(me)))
	if err := stack.StartJobs(b.Notify, b); err != nil {
		return err
	}

	err = term.Run(ctx, m.Stdin, b, func(ctx context.Context, line string) (handled, quit bool) {
		return stack.Exec(ctx, term, line)
	})
	// Nothing new may start while the bot finishes what runs: a rollback
	// confirmed just before Ctrl-C still flips, reports and is audited.
	slack.close()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), devCloseTimeout)
	defer cancel()
	if cerr := b.Close(cctx); cerr != nil {
		log.Warn("stopped before the bot's work finished", zap.Error(cerr))
	}
	log.Info("stopping", zap.Error(err))
	return err
}

// devUpdateInterval spaces the live updates of a progress message at the
// terminal: it has no rate limit, and a person watching a rollback of a
// second or two should see its phases go by.
const devUpdateInterval = 200 * time.Millisecond

// devCloseTimeout bounds how long `backflip dev` waits for running work
// when it stops: longer than a rollback's own bounds, so it only gives up
// on one that is stuck.
const devCloseTimeout = 3 * time.Minute

// devRuntimes is how many simulated workflow runtimes `backflip dev` runs:
// two, so a rollback's report shows acknowledgements being collected from
// more than one.
const devRuntimes = 2

// isTerminal reports whether in is a terminal a person types at, rather
// than a pipe or a file.
func isTerminal(in io.Reader) bool {
	f, ok := in.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

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

// devSlack is the Slack HTTP endpoints of `backflip dev`, on loopback with
// a signing secret made for this run, so that curl or a script can play
// Slack against the real transport (signatures, acks, decoding) while what
// the bot posts shows at the terminal.
type devSlack struct {
	secret []byte
	url    string
	srv    *http.Server
	done   chan struct{}
}

func serveDevSlack(h bot.Handler, log *zap.Logger) (*devSlack, error) {
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("dev signing secret: %w", err)
	}
	// Slack's signing secrets are hex strings whose text is the HMAC key;
	// this one is made the same way.
	secret := []byte(hex.EncodeToString(raw))
	handler, err := bot.NewHTTPHandler(bot.HTTPConfig{SigningSecret: secret, Handler: h, Logger: log})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the dev Slack endpoints: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/slack/", handler)
	s := &devSlack{secret: secret, url: "http://" + ln.Addr().String(), done: make(chan struct{}),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dev Slack endpoints stopped", zap.Error(err))
		}
	}()
	return s, nil
}

// banner describes the endpoints for the dev stack's banner, with a curl
// that plays Slack sending `/rollback status chat-70b` as the person at
// the terminal. It is signed now, so it is good for Slack's five minutes;
// the README shows how to sign a request later.
func (s *devSlack) banner(me commands.Origin) string {
	body := url.Values{
		"command": {"/rollback"}, "text": {"status chat-70b"},
		"user_id": {me.Actor.ID}, "user_name": {me.Actor.Name},
		"channel_id": {me.Channel.ID}, "channel_name": {me.Channel.Name},
		"trigger_id": {"dev-curl"},
	}.Encode()
	ts := time.Now().Unix()
	return fmt.Sprintf(`  slack (http)        %s/slack/commands, /slack/interactions, /slack/events
                      signing secret %s (this run's own); what the bot
                      answers there shows at this terminal. Try (signed now, good for 5 minutes):
    curl -sS %s/slack/commands -H 'X-Slack-Request-Timestamp: %d' -H 'X-Slack-Signature: %s' --data '%s'`,
		s.url, s.secret, s.url, ts, bot.Sign(s.secret, ts, []byte(body)), body)
}

// close stops taking requests and waits for those being answered.
func (s *devSlack) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}
