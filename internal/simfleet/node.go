package simfleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/agent"
	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/internal/sim"
)

const (
	// probeInterval is Config.ProbeInterval's default: short, so that a
	// behaviour switched at the terminal shows within about a second.
	probeInterval = time.Second
	// canaryBudget is Config.CanaryBudget's default.
	canaryBudget = 800 * time.Millisecond
	// AllNodes names every node in SetBehavior.
	AllNodes = "all"
)

// node is one simulated GPU node: the real agent, probing simulated
// inference servers on loopback, registered in etcd under a lease.
type node struct {
	name    string
	agent   *agent.Agent
	http    *agent.HTTPServer
	servers map[string]*simServer // by route@version
	// probes is the agent's HTTP client, its own as an agent process has
	// (one shared by a thousand agents would churn its idle connections).
	probes *http.Client
}

// simServer is one simulated inference server and the HTTP server it
// answers on.
type simServer struct {
	sim *sim.Server
	srv *http.Server
}

func versionKey(route, version string) string { return route + "@" + version }

// startNode starts one node: a simulated server per version, the agent
// probing them, its HTTP API and its registration. Everything it starts
// stops when f.ctx ends and the node is closed.
func (f *Fleet) startNode(name string) error {
	n := &node{name: name, servers: map[string]*simServer{}, probes: agent.NewHTTPClient()}
	// Appended first, so that Close stops whatever a failed start began.
	f.nodes = append(f.nodes, n)
	cfgs := make([]agent.ServerConfig, 0, len(f.versions))
	for _, v := range f.versions {
		sv, err := sim.New(v.server.Kind, v.server.Model, v.server.ModelVersion)
		if err != nil {
			return fmt.Errorf("simulated server of %s %s: %w", v.route, v.version, err)
		}
		sv.Set(v.behavior)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("simulated %s server: %w", v.server.Kind, err)
		}
		srv := &http.Server{Handler: sv, ReadHeaderTimeout: 5 * time.Second}
		f.nodeWG.Go(func() { _ = srv.Serve(ln) })
		n.servers[versionKey(v.route, v.version)] = &simServer{sim: sv, srv: srv}
		cfgs = append(cfgs, agent.ServerConfig{Kind: v.server.Kind, URL: "http://" + ln.Addr().String(),
			Route: v.route, Version: v.version, Model: v.server.Model, ModelVersion: v.server.ModelVersion,
			GPUs: v.gpus, CanaryPrompt: "Reply with the single word OK.", Budget: agent.Duration(f.cfg.CanaryBudget)})
	}
	// A simulated node's "not warm" warnings are what a refused rollback
	// shows on purpose; in the log they would only be noise.
	log := f.cfg.Logger.Named(name).WithOptions(zap.IncreaseLevel(zap.ErrorLevel))
	a, err := agent.New(agent.Config{Node: name, Servers: cfgs, Interval: f.cfg.ProbeInterval,
		HTTPClient: n.probes, Logger: log, Now: f.cfg.Now})
	if err != nil {
		return err
	}
	n.agent = a
	n.http, err = agent.Listen(agent.HTTPConfig{Addr: "127.0.0.1:0", Handler: a.Handler(f.cfg.AgentToken), Logger: log})
	if err != nil {
		return err
	}
	url := "http://" + n.http.Addr().String()
	ctx := f.ctx
	f.nodeWG.Go(func() { _ = a.Run(ctx) })
	f.nodeWG.Go(func() { _ = n.http.Serve(ctx) })
	f.nodeWG.Go(func() {
		err := a.Register(ctx, agent.RegisterConfig{Client: f.cfg.Client, Prefix: f.cfg.Prefix, URL: url})
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Error("registration ended", zap.Error(err))
		}
	})
	return nil
}

// close closes the node's simulated servers. Close calls it after ending
// f.ctx, which stops the agent, its HTTP server and its registration.
func (n *node) close() {
	for _, sv := range n.servers {
		sv.sim.Close() // releases requests held by Hang or Slow
		_ = sv.srv.Close()
	}
}

// probed reports whether the agent has observed every server at least once.
func (n *node) probed() bool {
	if n.agent == nil {
		return false
	}
	for _, v := range n.agent.Status().Versions {
		if v.ObservedAt.IsZero() {
			return false
		}
	}
	return true
}

// waitNodes waits until every node's record is in etcd and every agent has
// probed each of its servers once, so that the first warm check sees the
// whole fleet as it is.
func (f *Fleet) waitNodes(ctx context.Context) error {
	keys := fleetapi.Keys{Prefix: f.cfg.Prefix}
	return poll(ctx, "simulated nodes did not register", func(ctx context.Context) (bool, error) {
		for _, n := range f.nodes {
			if !n.probed() {
				return false, nil
			}
		}
		resp, err := f.cfg.Client.Get(ctx, keys.Nodes(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return false, err
		}
		registered := make(map[string]bool, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			registered[string(kv.Key)] = true
		}
		for _, n := range f.nodes {
			if !registered[keys.Node(n.name)] {
				return false, nil
			}
		}
		return true, nil
	})
}

// Nodes lists the simulated nodes' names, in order.
func (f *Fleet) Nodes() []string {
	out := make([]string, len(f.nodes))
	for i, n := range f.nodes {
		out[i] = n.name
	}
	return out
}

// SetBehavior switches the simulated servers of route's version on one
// node, or on every node when node is AllNodes ("all"). delay is how long a
// canary takes under sim.Slow. The agents notice at their next probe,
// within about a second, or at once when asked for a fresh probe.
func (f *Fleet) SetBehavior(node, route, version string, b sim.Behavior, delay time.Duration) error {
	changed := 0
	for _, n := range f.nodes {
		if node != AllNodes && n.name != node {
			continue
		}
		sv := n.servers[versionKey(route, version)]
		if sv == nil {
			return fmt.Errorf("no simulated server for %s %s (served: %s)", route, version, f.served())
		}
		sv.sim.SetDelay(delay)
		sv.sim.Set(b)
		changed++
	}
	if changed == 0 {
		return fmt.Errorf("no node %q (nodes gpu-01 … gpu-%02d, or %s)", node, len(f.nodes), AllNodes)
	}
	return nil
}

// served lists the route versions every node serves, for error messages.
func (f *Fleet) served() string {
	out := make([]string, 0, len(f.versions))
	for _, v := range f.versions {
		out = append(out, v.route+" "+v.version)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
