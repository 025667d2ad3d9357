package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"runtime/debug"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/internal/config"
)

// Main is the program with its outside world injected, so tests can run it
// in parallel, each with its own environment.
type Main struct {
	// Stdin is not read today: backflipctl never prompts, so that it runs
	// the same in a script and in an incident (--dry-run is the preview).
	Stdin io.Reader
	// Stdout gets the answer (text, or one JSON object with --json);
	// Stderr gets progress, warnings, errors and logs.
	Stdout, Stderr io.Writer
	// Getenv looks up an environment variable, as os.LookupEnv does: a
	// variable set to "" is set.
	Getenv func(string) (string, bool)
}

// Exit codes. They are part of the contract: scripts tell a refusal (the
// system works, it said no) from a failure (something is broken) from a
// mistake in the command line.
const (
	exitOK      = 0 // done, including a rollback whose outcome is degraded
	exitFailed  = 1 // EUNAVAILABLE, EINTERNAL and anything unexpected
	exitInput   = 2 // EINVALID, ENOTFOUND, usage and configuration errors
	exitRefused = 3 // EREFUSED, EUNAUTHORIZED, ECONFLICT
)

const usage = `usage: backflipctl <command> [flags]

commands:
  status [<route>]                      routes, revisions, rollback readiness, last drill, in flight
  rollback <route> [--to <version>] [--expect-rev N] [--force-cold] [--dry-run] <reason ...>
                                        roll back (default target: the route's previous version);
                                        the reason may also be given as --reason "..."
  promote <route> <version> [--expect-rev N] [--force-cold] [--dry-run] [<reason ...>]
                                        move a route forward (creates it when it does not exist)
  history [<route>] [--limit N]         audit events, newest first (default 20, at most 500)
  fleet                                 GPU nodes registered in etcd and what they serve
  drill run <route> [--dry-run]         a drill now: roll back to previous, verify, hold, flip back
  drill schedule <route> "<cron>"       drill on a schedule (5-field cron, CRON_TZ=Zone/City allowed;
                                        quote it); answers the next three runs
  drill cancel <route>                  remove the route's schedule
  drill skip <route>                    skip the next scheduled drill, keep the schedule
  drill list                            every schedule and its next runs
  drill history [<route>] [--chart F]   drill timings, p50/p95 and SLO; --chart writes the trend PNG
  help                                  this text

flags (anywhere on the line):
  --json           print the result as one JSON object instead of text
  --timeout D      give up after D (default 60s)
  --verbose        show internal error details and debug logs on stderr
  --               end of flags: the rest is positional (a reason starting with "-")

environment:
  BACKFLIP_ETCD_ENDPOINTS (required), BACKFLIP_ETCD_PREFIX, BACKFLIP_ETCD_CA_FILE, BACKFLIP_ETCD_CERT_FILE,
  BACKFLIP_ETCD_KEY_FILE, BACKFLIP_ETCD_USERNAME, BACKFLIP_ETCD_PASSWORD: etcd, as the bot reaches it
  BACKFLIP_AGENT_TOKEN      required by status, rollback, promote and drill run (warm checks ask the agents)
  BACKFLIP_RUNTIME_SECRET   required by rollback and drill run (abort signals to the workflow runtimes)
  BACKFLIP_DATABASE_URL     optional: audit history and drill times; without it history shows only
                            events not yet shipped from etcd
  BACKFLIP_WARM_QUORUM, BACKFLIP_WARM_TIMEOUT, BACKFLIP_WARM_MAX_AGE, BACKFLIP_ROUTER_CONVERGE_TIMEOUT,
  BACKFLIP_ABORT_ACK_TIMEOUT, BACKFLIP_ROLLBACK_SLO, BACKFLIP_DRILL_VERIFY_WINDOW,
  BACKFLIP_DRILL_QUIET_PERIOD: as for the bot

exit codes:
  0  done (a degraded rollback too: the route flipped; a warning says what did not confirm)
  1  failed: etcd or Postgres unavailable, internal error, a drill that failed
  2  bad input: usage, configuration, invalid name, route not found
  3  refused: target not warm, stale --expect-rev, conflicting change, not authorized, a drill
     refused or superseded by a real change

The actor recorded is cli:<os-user>@<host>, with the etcd user as its name.`

// Run runs one command and returns the process exit code.
func (m Main) Run(ctx context.Context, args []string) int {
	inv, err := parseArgs(args)
	if err != nil {
		return m.usageFailure(inv, err)
	}
	switch {
	case inv.help || inv.command == "help":
		fmt.Fprintln(m.Stdout, usage)
		return exitOK
	case inv.command == "":
		return m.usageFailure(inv, usagef("a command is required"))
	case inv.command == "version":
		fmt.Fprintln(m.Stdout, version())
		return exitOK
	}
	cmd, err := inv.check()
	if err != nil {
		return m.usageFailure(inv, err)
	}

	cfg, err := config.FromLookup(m.Getenv)
	if err == nil {
		err = requireFor(cfg, inv)
	}
	if err != nil {
		return m.fail(inv, nil, exitInput, commands.EINVALID, err.Error(), nil)
	}
	log, err := m.logger(cfg, inv.verbose)
	if err != nil {
		return m.fail(inv, nil, exitInput, commands.EINVALID, err.Error(), nil)
	}
	defer func() { _ = log.Sync() }()

	ctx, cancel := context.WithTimeout(ctx, inv.timeout)
	defer cancel()
	received := time.Now()
	deps, err := connect(ctx, cfg, inv, log)
	if err != nil {
		log.Debug("start-up failed", zap.Error(err))
		var se *startError
		if errors.As(err, &se) && se.exit == exitInput {
			return m.fail(inv, nil, exitInput, commands.EINVALID, err.Error(), nil)
		}
		return m.fail(inv, nil, exitFailed, commands.EUNAVAILABLE, err.Error(), nil)
	}
	defer deps.close()

	origin := commands.Origin{
		Actor:     commands.Actor{ID: actorID(m.Getenv), Name: cfg.Etcd.Username},
		Transport: commands.TransportCLI,
		Trusted:   true,
		Received:  received,
	}
	out, err := cmd(ctx, &runner{m: m, inv: inv, svc: deps.svc, origin: origin, dbConfigured: cfg.Postgres.URL.IsSet()})
	if err == nil && out == nil {
		err = &commands.Error{Code: commands.EINTERNAL, Message: "no result", Err: errors.New(inv.command + " returned neither a result nor an error")}
	}
	if err != nil {
		log.Debug("command failed", zap.String("command", inv.command), zap.Error(err))
		return m.failErr(inv, out, err)
	}
	return m.done(inv, out)
}

// usageFailure reports a command-line mistake with the usage.
func (m Main) usageFailure(inv invocation, err error) int {
	if inv.json {
		return m.fail(inv, nil, exitInput, commands.EINVALID, err.Error(), nil)
	}
	fmt.Fprintf(m.Stderr, "backflipctl: %v\n\n%s\n", err, usage)
	return exitInput
}

// exitCode maps a commands error code to the exit code.
func exitCode(code string) int {
	switch code {
	case "":
		return exitOK
	case commands.EINVALID, commands.ENOTFOUND:
		return exitInput
	case commands.EREFUSED, commands.EUNAUTHORIZED, commands.ECONFLICT:
		return exitRefused
	}
	return exitFailed
}

// failErr reports an error of a use case: its message (the detail of an
// internal error only with --verbose) and the exit code of its code. The
// usage line an EINVALID error carries is the chat grammar's, so the
// command line's own usage is pointed to instead.
func (m Main) failErr(inv invocation, out output, err error) int {
	code := commands.ErrorCode(err)
	msg := commands.ErrorMessage(err)
	if inv.verbose && code == commands.EINTERNAL {
		msg += " (" + err.Error() + ")"
	}
	var usage *string
	if code == commands.EINVALID {
		u := "backflipctl help"
		usage = &u
	}
	return m.fail(inv, out, exitCode(code), code, msg, usage)
}

// errorJSON is what --json prints when a command fails: the error, and the
// result as far as the operation got (a refused rollback's warm report).
type errorJSON struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Usage   string `json:"usage,omitempty"`
	} `json:"error"`
	Result any `json:"result,omitempty"`
}

// fail prints a failure: one JSON object on stdout with --json (with the
// result as far as it got), else a line on stderr. A failed or refused
// operation's report is not printed as text: its words describe a change
// that did not happen, and the error message says what was found.
func (m Main) fail(inv invocation, out output, exit int, code, msg string, usage *string) int {
	if inv.json {
		var e errorJSON
		e.Error.Code, e.Error.Message = code, msg
		if usage != nil {
			e.Error.Usage = *usage
		}
		if out != nil {
			e.Result = out.value()
		}
		m.printJSON(e)
		return exit
	}
	fmt.Fprintf(m.Stderr, "backflipctl: %s\n", msg)
	if usage != nil {
		fmt.Fprintf(m.Stderr, "(usage: %s)\n", *usage)
	}
	return exit
}

// done prints a command's answer and returns its exit code: a result can
// carry a refusal or failure even when the use case returned no error.
func (m Main) done(inv invocation, out output) int {
	exit, warning := out.exit()
	if inv.json {
		m.printJSON(out.value())
	} else if text := out.text(); text != "" {
		fmt.Fprintln(m.Stdout, strings.TrimRight(text, "\n"))
	}
	if warning != "" {
		fmt.Fprintf(m.Stderr, "warning: %s\n", warning)
	}
	return exit
}

func (m Main) printJSON(v any) {
	enc := json.NewEncoder(m.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(m.Stderr, "backflipctl: encode the answer as JSON: %v\n", err)
	}
}

// logger logs to stderr for a person: errors only, in console form, unless
// BACKFLIP_LOG_LEVEL / BACKFLIP_LOG_FORMAT say otherwise; --verbose turns
// debug on. The answer itself says what went wrong (a warm check that
// failed, an audit database that is down), so the warnings logged on the
// way (the etcd client's retries, for one) would only repeat it as noise.
func (m Main) logger(cfg *config.Config, verbose bool) (*zap.Logger, error) {
	level, format := cfg.Log.Level, cfg.Log.Format
	if _, set := m.Getenv("BACKFLIP_LOG_LEVEL"); !set {
		level = "error"
	}
	if _, set := m.Getenv("BACKFLIP_LOG_FORMAT"); !set {
		format = "console"
	}
	if verbose {
		level = "debug"
	}
	return config.NewLoggerTo(m.Stderr, level, format)
}

// requireFor checks the variables a command needs beyond what
// config.Validate checks, and names the first one missing.
func requireFor(cfg *config.Config, inv invocation) error {
	command := inv.command
	if inv.flips() && command == "drill" {
		// A drill is a rollback and a return: it needs what they need.
		command = "drill run"
	}
	var errs config.Errors
	if len(cfg.Etcd.Endpoints) == 0 {
		errs = append(errs, &config.VarError{Var: "BACKFLIP_ETCD_ENDPOINTS", Problem: "required (comma-separated etcd endpoints such as http://etcd-0:2379)"})
	}
	switch command {
	case "status", "rollback", "promote", "drill run":
		if !cfg.Secrets.AgentToken.IsSet() {
			errs = append(errs, &config.VarError{Var: "BACKFLIP_AGENT_TOKEN", Problem: "required by " + command + " (the bearer token the agents expect; warm checks ask them)"})
		}
	}
	if (command == "rollback" || command == "drill run") && !cfg.Secrets.RuntimeSecret.IsSet() {
		errs = append(errs, &config.VarError{Var: "BACKFLIP_RUNTIME_SECRET", Problem: "required by " + command + " (the HMAC key of the abort signal to the workflow runtimes)"})
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// actorID is "cli:<os-user>@<host>".
func actorID(getenv func(string) (string, bool)) string {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name, _ = getenv("USER")
	}
	if name == "" {
		name = "unknown"
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return "cli:" + name + "@" + host
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return "backflipctl " + bi.Main.Version
	}
	return "backflipctl (devel)"
}
