package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
)

const testToken = "s3cret-agent-token"

func do(tb testing.TB, h http.Handler, method, target, auth string) *httptest.ResponseRecorder {
	tb.Helper()
	r := httptest.NewRequest(method, target, nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestAuth(t *testing.T) {
	ta := newTestAgent(t)
	h := ta.Handler(testToken)
	for _, tc := range []struct {
		name string
		auth string
		code int
	}{
		{"Missing", "", http.StatusUnauthorized},
		{"Wrong", "Bearer not-the-token", http.StatusUnauthorized},
		{"Prefix", "Bearer " + testToken[:5], http.StatusUnauthorized},
		{"Longer", "Bearer " + testToken + "x", http.StatusUnauthorized},
		{"Empty", "Bearer ", http.StatusUnauthorized},
		{"Basic", "Basic " + testToken, http.StatusUnauthorized},
		{"BareToken", testToken, http.StatusUnauthorized},
		{"Right", "Bearer " + testToken, http.StatusOK},
		{"SchemeCaseInsensitive", "bearer " + testToken, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v1/status", "/v1/warm?route=chat-70b&version=v42", "/metrics", "/nope"} {
				w := do(t, h, http.MethodGet, path, tc.auth)
				want := tc.code
				if path == "/nope" && want == http.StatusOK {
					want = http.StatusNotFound
				}
				if w.Code != want {
					t.Fatalf("GET %s: %d, want %d", path, w.Code, want)
				}
				if w.Code == http.StatusUnauthorized {
					// No detail: the same body whatever was wrong.
					if body := strings.TrimSpace(w.Body.String()); body != `{"error":"unauthorized"}` {
						t.Fatalf("401 body %q", body)
					}
					if w.Header().Get("WWW-Authenticate") == "" {
						t.Fatal("401 without WWW-Authenticate")
					}
				}
			}
		})
	}

	t.Run("EmptyConfiguredTokenRefusesAll", func(t *testing.T) {
		h := ta.Handler("")
		for _, auth := range []string{"", "Bearer ", "Bearer x"} {
			if w := do(t, h, http.MethodGet, "/v1/status", auth); w.Code != http.StatusUnauthorized {
				t.Fatalf("auth %q: %d, want 401", auth, w.Code)
			}
		}
	})

	t.Run("HealthzNeedsNoToken", func(t *testing.T) {
		w := do(t, h, http.MethodGet, "/healthz", "")
		if w.Code != http.StatusOK || w.Body.String() != "ok\n" {
			t.Fatalf("healthz: %d %q", w.Code, w.Body.String())
		}
	})
}

func TestMethodsAndLimits(t *testing.T) {
	ta := newTestAgent(t)
	h := ta.Handler(testToken)
	bearer := "Bearer " + testToken
	for _, tc := range []struct {
		name, method, path, auth string
		code                     int
	}{
		{"PostStatus", http.MethodPost, "/v1/status", bearer, http.StatusMethodNotAllowed},
		{"DeleteWarm", http.MethodDelete, "/v1/warm?route=r&version=v", bearer, http.StatusMethodNotAllowed},
		{"HeadStatus", http.MethodHead, "/v1/status", bearer, http.StatusMethodNotAllowed},
		{"PostWithoutToken", http.MethodPost, "/v1/status", "", http.StatusUnauthorized},
		{"PostHealthz", http.MethodPost, "/healthz", "", http.StatusMethodNotAllowed},
		{"UnknownPath", http.MethodGet, "/v2/status", bearer, http.StatusNotFound},
		{"UnknownPathWithoutToken", http.MethodGet, "/v2/status", "", http.StatusUnauthorized},
		{"LongURI", http.MethodGet, "/v1/warm?route=r&version=" + strings.Repeat("v", MaxRequestURI), bearer, http.StatusRequestURITooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := do(t, h, tc.method, tc.path, tc.auth)
			if w.Code != tc.code {
				t.Fatalf("%s %s: %d, want %d (%s)", tc.method, tc.path, w.Code, tc.code, w.Body.String())
			}
			if tc.code == http.StatusMethodNotAllowed && w.Header().Get("Allow") != http.MethodGet {
				t.Fatalf("405 without Allow: GET")
			}
		})
	}
}

func TestWarmParams(t *testing.T) {
	ta := newTestAgent(t)
	ta.run(t)
	h := ta.Handler(testToken)
	bearer := "Bearer " + testToken
	for _, tc := range []struct {
		name  string
		query string
		want  string // fragment of the 400's error
	}{
		{"NoParams", "", "route: required"},
		{"NoRoute", "version=v42", "route: required"},
		{"NoVersion", "route=chat-70b", "version: required"},
		{"EmptyRoute", "route=&version=v42", "route: invalid: route name is empty"},
		{"BadRoute", "route=../etc&version=v42", "route: invalid"},
		{"ReservedRoute", "route=status&version=v42", "reserved word"},
		{"BadVersion", "route=chat-70b&version=v%2042", "version: invalid"},
		{"ReservedVersion", "route=chat-70b&version=previous", "version: invalid"},
		{"TwoRoutes", "route=chat-70b&route=x&version=v42", "route: given more than once"},
		{"TwoVersions", "route=chat-70b&version=v42&version=v41", "version: given more than once"},
		{"BadFresh", "route=chat-70b&version=v42&fresh=please", `fresh: want 1 or 0, got "please"`},
		{"TwoFresh", "route=chat-70b&version=v42&fresh=1&fresh=1", "fresh: given more than once"},
		{"MalformedQuery", "route=%zz&version=v42", "malformed query"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := do(t, h, http.MethodGet, "/v1/warm?"+tc.query, bearer)
			var body struct{ Error string }
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusBadRequest {
				t.Fatalf("%d %q (%v), want 400 with a JSON error", w.Code, w.Body.String(), err)
			}
			if !strings.Contains(body.Error, tc.want) {
				t.Fatalf("error %q, want it to contain %q", body.Error, tc.want)
			}
		})
	}

	t.Run("Served", func(t *testing.T) {
		w := do(t, h, http.MethodGet, "/v1/warm?route=chat-70b&version=v42&unknown=ignored", bearer)
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%d %s", w.Code, w.Body.String())
		}
		r, err := fleetapi.DecodeWarmReply(w.Body, "gpu-node-1", "chat-70b", "v42")
		if err != nil || !r.Served || !r.Warm || r.GPUs != 4 {
			t.Fatalf("reply %+v: %v", r, err)
		}
	})

	t.Run("Fresh", func(t *testing.T) {
		p := ta.prober("chat-70b", "v41")
		before := p.calls.Load()
		w := do(t, h, http.MethodGet, "/v1/warm?route=chat-70b&version=v41&fresh=1", bearer)
		if _, err := fleetapi.DecodeWarmReply(w.Body, "gpu-node-1", "chat-70b", "v41"); err != nil || w.Code != http.StatusOK {
			t.Fatalf("%d: %v", w.Code, err)
		}
		if got := p.calls.Load(); got != before+1 {
			t.Fatalf("fresh=1 probed %d times, want once", got-before)
		}
		do(t, h, http.MethodGet, "/v1/warm?route=chat-70b&version=v41&fresh=0", bearer)
		if got := p.calls.Load(); got != before+1 {
			t.Fatal("fresh=0 probed")
		}
	})

	t.Run("NotServed", func(t *testing.T) {
		w := do(t, h, http.MethodGet, "/v1/warm?route=chat-70b&version=v40", bearer)
		r, err := fleetapi.DecodeWarmReply(w.Body, "gpu-node-1", "chat-70b", "v40")
		if err != nil || w.Code != http.StatusOK || r.Served || r.Warm {
			t.Fatalf("%d %+v: %v", w.Code, r, err)
		}
	})

	t.Run("Status", func(t *testing.T) {
		w := do(t, h, http.MethodGet, "/v1/status", bearer)
		s, err := fleetapi.DecodeStatusReply(w.Body)
		if err != nil || s.Node != "gpu-node-1" || len(s.Versions) != 3 {
			t.Fatalf("%d %+v: %v", w.Code, s, err)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		w := do(t, h, http.MethodGet, "/metrics", bearer)
		if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `backflip_agent_warm{route="chat-70b",version="v42"} 1`) {
			t.Fatalf("%d %s", w.Code, w.Body.String())
		}
	})
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key, and returns their paths and a pool that trusts the certificate.
func writeSelfSigned(tb testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "backflip-agent test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// serve runs s until the test ends and checks it shuts down cleanly.
func serve(tb testing.TB, s *HTTPServer) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
}

func get(tb testing.TB, client *http.Client, url string) (*http.Response, error) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() { resp.Body.Close() })
	return resp, nil
}

func TestTLS(t *testing.T) {
	ta := newTestAgent(t)
	certFile, keyFile, pool := writeSelfSigned(t)
	s, err := Listen(HTTPConfig{Addr: "127.0.0.1:0", Handler: ta.Handler(testToken),
		TLSCertFile: certFile, TLSKeyFile: keyFile, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	serve(t, s)
	url := "https://" + s.Addr().String() + "/v1/status"

	client := func(cfg *tls.Config) *http.Client {
		tr := &http.Transport{TLSClientConfig: cfg}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}

	resp, err := get(t, client(&tls.Config{RootCAs: pool}), url)
	if err != nil {
		t.Fatalf("GET over TLS: %v", err)
	}
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("status %d, TLS %v", resp.StatusCode, resp.TLS)
	}
	if _, err := fleetapi.DecodeStatusReply(resp.Body); err != nil {
		t.Fatal(err)
	}

	if _, err := get(t, client(&tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}), url); err == nil {
		t.Fatal("TLS 1.1 client accepted")
	}
	if _, err := get(t, client(&tls.Config{}), url); err == nil {
		t.Fatal("client that does not trust the certificate connected")
	}
	resp, err = get(t, client(nil), "http://"+s.Addr().String()+"/v1/status")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("plain HTTP to the TLS port answered 200: %s", body)
		}
	}
}

func TestListenRefuses(t *testing.T) {
	ta := newTestAgent(t)
	certFile, _, _ := writeSelfSigned(t)
	for _, tc := range []struct {
		name string
		cfg  HTTPConfig
		want string
	}{
		{"CertWithoutKey", HTTPConfig{Addr: "127.0.0.1:0", TLSCertFile: certFile}, "set together"},
		{"KeyIsNotAKey", HTTPConfig{Addr: "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: certFile}, "load TLS key pair"},
		{"MissingFiles", HTTPConfig{Addr: "127.0.0.1:0", TLSCertFile: "/nonexistent/c", TLSKeyFile: "/nonexistent/k"}, "load TLS key pair"},
		{"BadAddr", HTTPConfig{Addr: "127.0.0.1:notaport"}, "agent: http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Handler, tc.cfg.Logger = ta.Handler(testToken), testLogger(t)
			s, err := Listen(tc.cfg)
			if err == nil {
				_ = s.Close()
				t.Fatal("Listen succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
}

func TestPlainHTTPServer(t *testing.T) {
	ta := newTestAgent(t)
	ta.run(t)
	s, err := Listen(HTTPConfig{Addr: "127.0.0.1:0", Handler: ta.Handler(testToken), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, s)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := get(t, &http.Client{Transport: tr, Timeout: 10 * time.Second},
		"http://"+s.Addr().String()+"/v1/warm?route=embed-small&version=v7&fresh=1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := fleetapi.DecodeWarmReply(resp.Body, "gpu-node-1", "embed-small", "v7")
	if err != nil || !r.Warm {
		t.Fatalf("%+v: %v", r, err)
	}
}

// TestWriteTimeoutOutlastsFreshWait: a fresh=1 request may legitimately
// wait up to MaxFreshTimeout before its reply is written, so the server's
// write deadline must be longer, or the client gets a dropped connection.
func TestWriteTimeoutOutlastsFreshWait(t *testing.T) {
	ta := newTestAgent(t)
	s, err := Listen(HTTPConfig{Addr: "127.0.0.1:0", Handler: ta.Handler(testToken), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.srv.WriteTimeout <= MaxFreshTimeout {
		t.Fatalf("WriteTimeout %v does not outlast the longest fresh wait (%v)", s.srv.WriteTimeout, MaxFreshTimeout)
	}
}
