// Command backflip-agent is the GPU-node agent: it probes the node's
// inference servers, serves their warm status to the bot and registers the
// node in etcd. This file only wires: the work is in fleet/agent.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/agent"
	"github.com/backflip-dev/backflip/internal/config"
	"github.com/backflip-dev/backflip/internal/etcdclient"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Main{Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ}.Run(ctx, os.Args[1:]))
}

// Main is the program with its outside world injected, so tests can run it.
// Settings come from the BACKFLIP_ environment variables (config.FromEnv).
type Main struct {
	Stdout, Stderr io.Writer
	// Environ lists the environment, to warn about misspelt BACKFLIP_
	// variables; nil skips the check.
	Environ func() []string
	// Listening, when set, is called with the status API's address once it
	// listens (tests listen on port 0).
	Listening func(net.Addr)
}

// Exit codes.
const (
	exitOK     = 0 // stopped by SIGINT or SIGTERM, deregistered
	exitFailed = 1 // failed while starting or running
	exitUsage  = 2 // bad arguments or configuration
)

const usage = `usage: backflip-agent [version]

Runs the GPU-node agent until SIGINT or SIGTERM. Settings come from BACKFLIP_
environment variables (see configs/agent.env.example); the inference servers
from the JSON file named by BACKFLIP_AGENT_CONFIG (see configs/agent.example.json).`

// Run runs the agent, or a subcommand, and returns the process exit code.
func (m Main) Run(ctx context.Context, args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "version", "-version", "--version":
			fmt.Fprintln(m.Stdout, version())
			return exitOK
		case "help", "-h", "-help", "--help":
			fmt.Fprintln(m.Stdout, usage)
			return exitOK
		default:
			fmt.Fprintf(m.Stderr, "backflip-agent: unexpected argument %q\n%s\n", args[0], usage)
			return exitUsage
		}
	}
	err := m.run(ctx)
	var ce configError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		fmt.Fprintf(m.Stderr, "backflip-agent: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(m.Stderr, "backflip-agent: %v\n", err)
		return exitFailed
	}
}

// configError marks a start-up failure caused by the configuration (exit 2).
type configError struct{ error }

func (e configError) Unwrap() error { return e.error }

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return "backflip-agent " + bi.Main.Version
	}
	return "backflip-agent (devel)"
}

func (m Main) run(ctx context.Context) error {
	cfg, err := config.FromEnv()
	if err != nil {
		return configError{err}
	}
	if err := cfg.ValidateAgent(); err != nil {
		return configError{err}
	}
	log, err := config.NewLoggerTo(m.Stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return configError{err}
	}
	defer func() { _ = log.Sync() }()
	if m.Environ != nil {
		if unknown := config.UnknownVars(m.Environ()); len(unknown) > 0 {
			log.Warn("ignoring unknown BACKFLIP_ variables (misspelt?)", zap.Strings("vars", unknown))
		}
	}

	fc, err := agent.LoadConfig(cfg.Agent.ConfigFile)
	if err != nil {
		return configError{fmt.Errorf("BACKFLIP_AGENT_CONFIG: %w", err)}
	}
	if err := checkAdvertise(fc.AdvertiseURL, cfg.Agent.TLSCert != ""); err != nil {
		return configError{err}
	}
	a, err := agent.New(agent.Config{
		Node:         cfg.Agent.Node,
		Servers:      fc.Servers,
		Interval:     time.Duration(fc.ProbeInterval),
		FreshTimeout: time.Duration(fc.FreshTimeout),
		Logger:       log.Named("agent"),
	})
	if err != nil {
		return configError{err}
	}
	srv, err := agent.Listen(agent.HTTPConfig{
		Addr:        cfg.Agent.Addr,
		Handler:     a.Handler(cfg.Secrets.AgentToken.Reveal()),
		TLSCertFile: cfg.Agent.TLSCert,
		TLSKeyFile:  cfg.Agent.TLSKey,
		Logger:      log.Named("http"),
	})
	if err != nil {
		return err
	}
	etcd, err := etcdclient.New(cfg.Etcd, log)
	if err != nil {
		_ = srv.Close()
		return err
	}
	defer func() { _ = etcd.Close() }()
	if m.Listening != nil {
		m.Listening(srv.Addr())
	}
	log.Info("starting", zap.String("node", cfg.Agent.Node), zap.String("advertise_url", fc.AdvertiseURL),
		zap.Stringer("addr", srv.Addr()), zap.Int("servers", len(fc.Servers)), zap.String("version", version()))

	// The three parts run until ctx is done; if one fails first, the
	// others are stopped and the agent exits 1 (a supervisor restarts it).
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	part := func(name string, run func(context.Context) error) {
		wg.Go(func() {
			err := run(rctx)
			if err != nil && rctx.Err() == nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", name, err)
				}
				mu.Unlock()
			}
			cancel()
		})
	}
	part("probes", a.Run)
	part("http", srv.Serve)
	part("registration", func(ctx context.Context) error {
		return a.Register(ctx, agent.RegisterConfig{Client: etcd, Prefix: cfg.Etcd.Prefix, URL: fc.AdvertiseURL})
	})
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	log.Info("stopped")
	return nil
}

// checkAdvertise refuses an http:// advertise URL on an agent that serves
// TLS: the bot would speak plain HTTP to a TLS port. The reverse, https://
// without a certificate here, is allowed: a TLS-terminating proxy in front.
func checkAdvertise(advertise string, tlsOn bool) error {
	u, err := url.Parse(advertise)
	if err != nil {
		return err
	}
	if tlsOn && u.Scheme != "https" {
		return fmt.Errorf("BACKFLIP_AGENT_CONFIG: advertise_url %q is not https but BACKFLIP_AGENT_TLS_CERT is set", advertise)
	}
	return nil
}
