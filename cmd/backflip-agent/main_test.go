package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/internal/config"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/sim"
)

func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

const token = "e2e-agent-token"

// syncBuffer lets the test read what Main writes from its goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cleanEnv unsets every BACKFLIP_ variable for the test, so that the
// machine's environment does not leak into it, then sets env.
func cleanEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, config.Prefix) {
			t.Setenv(name, "") // restores the value when the test ends
			os.Unsetenv(name)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentConfig is a config file for one simulated OpenAI server.
func agentConfig(t *testing.T, advertise string) (path string, s *sim.Server) {
	t.Helper()
	s, err := sim.New(sim.KindOpenAI, "meta-llama/Llama-3.1-8B-Instruct", "")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	t.Cleanup(s.Close)
	cfg := map[string]any{
		"advertise_url":  advertise,
		"probe_interval": "1s",
		"servers": []any{map[string]any{
			"kind": "openai", "url": ts.URL, "route": "chat-8b", "version": "v3",
			"model": "meta-llama/Llama-3.1-8B-Instruct", "gpus": 2,
			"canary_prompt": "Reply with the single word OK.", "budget": "800ms",
		}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "agent.json", b), s
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "backflip-agent e2e"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return writeFile(t, "tls.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		writeFile(t, "tls.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})), pool
}

// TestAgentEndToEnd runs the binary's Main with TLS against a real etcd and
// a simulated inference server: it serves warm status to a client holding
// the token, registers the node, reports a dead engine on a fresh probe, and
// deregisters and exits 0 when stopped.
func TestAgentEndToEnd(t *testing.T) {
	etcd := etcdtest.Start(t)
	kv := etcd.Client(t)
	certFile, keyFile, pool := selfSigned(t)
	const advertise = "https://127.0.0.1:9443"
	cfgPath, engine := agentConfig(t, advertise)
	cleanEnv(t, map[string]string{
		"BACKFLIP_ETCD_ENDPOINTS": etcd.Endpoint(),
		"BACKFLIP_ETCD_PREFIX":    "/e2e",
		"BACKFLIP_AGENT_NODE":     "gpu-e2e-1",
		"BACKFLIP_AGENT_ADDR":     "127.0.0.1:0",
		"BACKFLIP_AGENT_CONFIG":   cfgPath,
		"BACKFLIP_AGENT_TOKEN":    token,
		"BACKFLIP_AGENT_TLS_CERT": certFile,
		"BACKFLIP_AGENT_TLS_KEY":  keyFile,
		"BACKFLIP_LOG_LEVEL":      "warn",
		"BACKFLIP_LOG_FORMAT":     "console",
	})

	var stdout, stderr syncBuffer
	addrc := make(chan net.Addr, 1)
	m := Main{Stdout: &stdout, Stderr: &stderr, Environ: os.Environ, Listening: func(a net.Addr) { addrc <- a }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exit := make(chan int, 1)
	go func() { exit <- m.Run(ctx, nil) }()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case code := <-exit:
		t.Fatalf("exited %d before listening:\n%s", code, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("not listening after 20s:\n%s", stderr.String())
	}

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	base := "https://" + addr.String()
	call := func(path, tok string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	if resp := call("/v1/status", "wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	if resp := call("/healthz", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := fleetapi.DecodeWarmReply(call("/v1/warm?route=chat-8b&version=v3", token).Body, "gpu-e2e-1", "chat-8b", "v3")
		if err != nil {
			t.Fatalf("warm reply: %v", err)
		}
		if r.Warm && r.GPUs == 2 && r.Kind == "openai" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not warm within 10s: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}

	key := fleetapi.Keys{Prefix: "/e2e"}.Node("gpu-e2e-1")
	rec := waitKey(t, kv, key)
	if rec == nil || rec.URL != advertise || rec.GPUs("chat-8b", "v3") != 2 {
		t.Fatalf("node record %+v", rec)
	}

	engine.Set(sim.InferenceDead)
	// A fresh request shares a probe already running (one canary per burst),
	// and the 1 s probe loop may have started one just before the engine
	// died: that shared answer may still be warm. A second fresh request
	// cannot share it — every probe running by then started after Set — so
	// it must see the dead engine.
	var r fleetapi.WarmReply
	for try := range 2 {
		var err error
		r, err = fleetapi.DecodeWarmReply(call("/v1/warm?route=chat-8b&version=v3&fresh=1", token).Body, "gpu-e2e-1", "chat-8b", "v3")
		if err != nil {
			t.Fatalf("dead engine, fresh (try %d): %v", try+1, err)
		}
		if !r.Warm {
			break
		}
	}
	if r.Warm || r.Error == "" {
		t.Fatalf("dead engine, two fresh requests: %+v", r)
	}

	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM, want 0:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not stop within 20s of its context ending")
	}
	gctx, gcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer gcancel()
	if resp, err := kv.Get(gctx, key); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("node record after shutdown: %v %v", resp, err)
	}
	if strings.Contains(stderr.String(), token) {
		t.Fatal("the token was logged")
	}
}

func waitKey(t *testing.T, kv *clientv3.Client, key string) *fleetapi.NodeRecord {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := kv.Get(ctx, key)
		cancel()
		if err == nil && len(resp.Kvs) == 1 {
			rec, err := fleetapi.DecodeNodeRecord(fleetapi.Keys{Prefix: "/e2e"}, key, resp.Kvs[0].Value)
			if err != nil {
				t.Fatalf("node record: %v", err)
			}
			return &rec
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not registered within 10s", key)
	return nil
}

func TestStartupErrors(t *testing.T) {
	goodCfg, _ := agentConfig(t, "http://127.0.0.1:9090")
	httpsCfg, _ := agentConfig(t, "https://127.0.0.1:9090")
	badCfg := writeFile(t, "bad.json", []byte(`{"advertise_url":"http://n:1","servers":[{"kind":"openai","url":"http://127.0.0.1:1","route":"r","version":"v1","model":"m","gpus":0,"canary_prompt":"x","budget":"1s"}]}`))
	certFile, keyFile, _ := selfSigned(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	base := map[string]string{
		"BACKFLIP_ETCD_ENDPOINTS": "127.0.0.1:1",
		"BACKFLIP_AGENT_NODE":     "n1",
		"BACKFLIP_AGENT_ADDR":     "127.0.0.1:0",
		"BACKFLIP_AGENT_CONFIG":   goodCfg,
		"BACKFLIP_AGENT_TOKEN":    token,
		"BACKFLIP_LOG_LEVEL":      "error",
	}
	with := func(kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(env, kv[i])
			} else {
				env[kv[i]] = kv[i+1]
			}
		}
		return env
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"NoEnvironment", map[string]string{}, nil, 2, "BACKFLIP_ETCD_ENDPOINTS: required"},
		{"NoNode", with("BACKFLIP_AGENT_NODE", ""), nil, 2, "BACKFLIP_AGENT_NODE: required"},
		{"NoToken", with("BACKFLIP_AGENT_TOKEN", ""), nil, 2, "BACKFLIP_AGENT_TOKEN: required"},
		{"BadNodeName", with("BACKFLIP_AGENT_NODE", "-n1"), nil, 2, "node name"},
		{"MissingConfigFile", with("BACKFLIP_AGENT_CONFIG", "/nonexistent/agent.json"), nil, 2, "BACKFLIP_AGENT_CONFIG: agent config"},
		{"BadConfigFile", with("BACKFLIP_AGENT_CONFIG", badCfg), nil, 2, "servers[0].gpus: must be 1 to 1024, got 0"},
		{"TLSWithHTTPAdvertise", with("BACKFLIP_AGENT_TLS_CERT", certFile, "BACKFLIP_AGENT_TLS_KEY", keyFile), nil, 2, "is not https"},
		{"BadTLSKey", with("BACKFLIP_AGENT_CONFIG", httpsCfg, "BACKFLIP_AGENT_TLS_CERT", certFile, "BACKFLIP_AGENT_TLS_KEY", certFile), nil, 1, "load TLS key pair"},
		{"PortTaken", with("BACKFLIP_AGENT_ADDR", taken.Addr().String()), nil, 1, "address already in use"},
		{"StrayArgument", base, []string{"serve"}, 2, `unexpected argument "serve"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t, tc.env)
			var stdout, stderr syncBuffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			code := Main{Stdout: &stdout, Stderr: &stderr}.Run(ctx, tc.args)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tc.code, tc.want)
			}
		})
	}

	var stdout syncBuffer
	if code := (Main{Stdout: &stdout, Stderr: &stdout}).Run(context.Background(), []string{"version"}); code != 0 ||
		!strings.HasPrefix(stdout.String(), "backflip-agent ") {
		t.Fatalf("version: %d %q", code, stdout.String())
	}
}

// TestEnvExample keeps configs/agent.env.example complete: it names every
// variable the agent reads and nothing else, and its uncommented settings
// pass the agent's validation.
func TestEnvExample(t *testing.T) {
	f, err := os.Open("../../configs/agent.env.example")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var listed []string
	set := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		commented := strings.HasPrefix(line, "#")
		line = strings.TrimPrefix(line, "#")
		name, value, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(name, config.Prefix) || strings.ContainsAny(name, " \t") {
			continue
		}
		listed = append(listed, name)
		if !commented {
			set[name] = value
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, v := range config.Vars() {
		if v.Group == "Etcd" || v.Group == "Agent" || v.Group == "Log" || v.Name == "BACKFLIP_AGENT_TOKEN" {
			want = append(want, v.Name)
		}
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Fatalf("agent.env.example lists\n%v\nthe agent reads\n%v", listed, want)
	}
	cleanEnv(t, set)
	cfg, err := config.FromEnv()
	if err == nil {
		err = cfg.ValidateAgent()
	}
	if err != nil {
		t.Fatalf("agent.env.example: %v", err)
	}
}
