package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/backflip-dev/backflip/fleet/agent"
	"github.com/backflip-dev/backflip/internal/sim"
	"go.uber.org/zap"
)

// A simulated GPU node: the real agent code, probing simulated inference
// servers on loopback, registered in the embedded etcd.
type simNode struct {
	name    string
	agent   *agent.Agent
	http    *agent.HTTPServer
	servers map[string]*simServer // by route@version
}

type simServer struct {
	sim *sim.Server
	srv *http.Server
}

// devVersion is one version of one route that every simulated node serves.
type devVersion struct {
	route, version, kind, model, modelVersion string
	gpus                                      int
	behavior                                  sim.Behavior
}

// devVersions is the demo fleet: chat-70b's previous version is warm, so it
// can be rolled back to; embed-small's is unloaded, so a rollback is refused.
func devVersions() []devVersion {
	return []devVersion{
		{"chat-70b", "v42", sim.KindOpenAI, "meta-llama/Llama-3.1-70B-Instruct", "", 4, sim.Warm},
		{"chat-70b", "v41", sim.KindKServeV2, "llama-70b", "41", 4, sim.Warm},
		{"embed-small", "v7", sim.KindOllama, "nomic-embed-text:v7", "", 1, sim.Warm},
		{"embed-small", "v6", sim.KindTGI, "nomic-ai/nomic-embed-text-v6", "", 1, sim.Unloaded},
	}
}

// fleet is the running simulated fleet.
type fleet struct {
	token string
	nodes []*simNode
	wg    sync.WaitGroup
}

func newToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// startFleet starts n nodes. Everything it starts stops when ctx is done
// and close has been called.
func (s *Stack) startFleet(ctx context.Context, n int) (*fleet, error) {
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	f := &fleet{token: token}
	for i := 1; i <= n; i++ {
		node, err := s.startNode(ctx, f, fmt.Sprintf("gpu-%02d", i))
		if err != nil {
			f.close()
			return nil, err
		}
		f.nodes = append(f.nodes, node)
	}
	return f, nil
}

func (s *Stack) startNode(ctx context.Context, f *fleet, name string) (*simNode, error) {
	node := &simNode{name: name, servers: map[string]*simServer{}}
	var cfgs []agent.ServerConfig
	for _, v := range devVersions() {
		sv, err := sim.New(v.kind, v.model, v.modelVersion)
		if err != nil {
			return nil, err
		}
		sv.Set(v.behavior)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("simulated %s server: %w", v.kind, err)
		}
		srv := &http.Server{Handler: sv, ReadHeaderTimeout: 5 * time.Second}
		f.wg.Add(1)
		go func() { defer f.wg.Done(); _ = srv.Serve(ln) }()
		node.servers[v.route+"@"+v.version] = &simServer{sim: sv, srv: srv}
		cfgs = append(cfgs, agent.ServerConfig{Kind: v.kind, URL: "http://" + ln.Addr().String(), Route: v.route,
			Version: v.version, Model: v.model, ModelVersion: v.modelVersion, GPUs: v.gpus,
			CanaryPrompt: "Reply with the single word OK.", Budget: agent.Duration(800 * time.Millisecond)})
	}
	// A simulated node's "not warm" warnings are what the terminal shows on
	// purpose (a refused rollback); in the log they would only be noise.
	log := s.cfg.Logger.Named(name).WithOptions(zap.IncreaseLevel(zap.ErrorLevel))
	a, err := agent.New(agent.Config{Node: name, Servers: cfgs, Interval: time.Second, Logger: log, Now: s.cfg.Now})
	if err != nil {
		node.close()
		return nil, err
	}
	node.agent = a
	node.http, err = agent.Listen(agent.HTTPConfig{Addr: "127.0.0.1:0", Handler: a.Handler(f.token), Logger: log})
	if err != nil {
		node.close()
		return nil, err
	}
	url := "http://" + node.http.Addr().String()
	f.wg.Add(3)
	go func() { defer f.wg.Done(); _ = a.Run(ctx) }()
	go func() { defer f.wg.Done(); _ = node.http.Serve(ctx) }()
	go func() {
		defer f.wg.Done()
		if err := a.Register(ctx, agent.RegisterConfig{Client: s.client, Prefix: s.cfg.Prefix, URL: url}); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("registration ended", zap.Error(err))
		}
	}()
	return node, nil
}

func (n *simNode) close() {
	for _, sv := range n.servers {
		sv.sim.Close() // releases requests held by Hang or Slow
		_ = sv.srv.Close()
	}
}

// close stops the simulated servers after the agents (stopped by ctx).
func (f *fleet) close() {
	for _, n := range f.nodes {
		n.close()
	}
	f.wg.Wait()
}

// setBehavior changes the simulated servers of route@version on one node
// ("all" for every node).
func (f *fleet) setBehavior(node, route, version string, b sim.Behavior, delay time.Duration) (int, error) {
	changed := 0
	for _, n := range f.nodes {
		if node != "all" && n.name != node {
			continue
		}
		sv := n.servers[route+"@"+version]
		if sv == nil {
			return 0, fmt.Errorf("no simulated server for %s %s (served: %s)", route, version, f.served())
		}
		sv.sim.SetDelay(delay)
		sv.sim.Set(b)
		changed++
	}
	if changed == 0 {
		return 0, fmt.Errorf("no node %q (nodes gpu-01 … gpu-%02d, or all)", node, len(f.nodes))
	}
	return changed, nil
}

func (f *fleet) served() string {
	var out []string
	for _, v := range devVersions() {
		out = append(out, v.route+" "+v.version)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
