package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/fleet/routing"
)

// Limits of the HTTP API.
const (
	// MaxRequestURI bounds a request's path and query: the longest real one
	// is /v1/warm with a 63-byte route and a 128-byte version.
	MaxRequestURI = 1024
	// maxHeaderBytes bounds the request line and headers.
	maxHeaderBytes = 16 << 10
	// shutdownTimeout bounds the graceful shutdown: long enough for a
	// fresh=1 request to finish its probe.
	shutdownTimeout = 5 * time.Second
)

// Handler serves the agent's HTTP API:
//
//	GET /v1/status                           every served version (fleetapi.StatusReply)
//	GET /v1/warm?route=R&version=V[&fresh=1] one version (fleetapi.WarmReply)
//	GET /metrics                             Prometheus metrics of this agent
//	GET /healthz                             "ok" while the process runs
//
// Every path but /healthz requires "Authorization: Bearer <token>"
// (BACKFLIP_AGENT_TOKEN), else 401 with no detail. An empty token refuses
// every authenticated request: the comparison must never succeed for a
// request without a token.
//
// /healthz is unauthenticated on purpose: kubelet and load-balancer health
// checks cannot present a token kept in a Secret (a kubelet httpGet probe's
// headers are plain text in the pod spec), and the answer says nothing but
// that the process is alive. Everything that names a route, a version or a
// metric needs the token; Prometheus presents it with
// authorization.credentials_file.
//
// Only GET is served (405 otherwise). Unknown query parameters are ignored,
// so that a newer bot can add one during a rolling upgrade; a repeated or
// malformed known parameter is a 400 with a JSON {"error": "..."} body.
func (a *Agent) Handler(token string) http.Handler {
	h := &handler{
		a:        a,
		hasToken: token != "",
		tokenSum: sha256.Sum256([]byte(token)),
		metrics: promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{
			ErrorLog:            zap.NewStdLog(a.log.Named("metrics")),
			MaxRequestsInFlight: 4,
		}),
	}
	return h
}

type handler struct {
	a        *Agent
	hasToken bool
	tokenSum [sha256.Size]byte
	metrics  http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if len(r.RequestURI) > MaxRequestURI || len(r.URL.RawQuery) > MaxRequestURI {
		writeError(w, http.StatusRequestURITooLong, "request URI too long")
		return
	}
	if r.URL.Path == "/healthz" {
		if !onlyGET(w, r) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	// Authentication comes before the method and the path, so that a
	// caller without the token learns nothing about what is served.
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="backflip-agent"`)
		writeError(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	if !onlyGET(w, r) {
		return
	}
	switch r.URL.Path {
	case "/v1/status":
		writeJSON(w, http.StatusOK, h.a.Status())
	case "/v1/warm":
		h.warm(w, r)
	case "/metrics":
		h.metrics.ServeHTTP(w, r)
	default:
		writeError(w, http.StatusNotFound, "not found")
	}
}

// authorized checks the bearer token. Both sides are hashed first, so that
// the constant-time comparison also hides the token's length
// (subtle.ConstantTimeCompare returns at once on a length mismatch).
func (h *handler) authorized(r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || !h.hasToken {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], h.tokenSum[:]) == 1
}

func onlyGET(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet {
		return true
	}
	w.Header().Set("Allow", http.MethodGet)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed; use GET")
	return false
}

func (h *handler) warm(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed query string")
		return
	}
	route, err := single(q, "route")
	if err == nil {
		err = routing.ValidateRoute(route)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "route: "+err.Error())
		return
	}
	version, err := single(q, "version")
	if err == nil {
		err = routing.ValidateVersion(version)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "version: "+err.Error())
		return
	}
	fresh := false
	if vs, ok := q["fresh"]; ok {
		if len(vs) != 1 {
			writeError(w, http.StatusBadRequest, "fresh: given more than once")
			return
		}
		if fresh, err = strconv.ParseBool(vs[0]); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("fresh: want 1 or 0, got %q", vs[0]))
			return
		}
	}
	state := h.a.Warm(r.Context(), route, version, fresh)
	writeJSON(w, http.StatusOK, fleetapi.WarmReply{Node: h.a.node, VersionState: state})
}

func single(q url.Values, name string) (string, error) {
	switch vs := q[name]; len(vs) {
	case 0:
		return "", errors.New("required")
	case 1:
		return vs[0], nil
	default:
		return "", errors.New("given more than once")
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		// Only a bug gets here: every reply is plain data.
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// HTTPConfig is the agent's HTTP server.
type HTTPConfig struct {
	// Addr is the listen address (BACKFLIP_AGENT_ADDR), e.g. ":9090";
	// port 0 picks a free port (tests).
	Addr    string
	Handler http.Handler
	// TLSCertFile and TLSKeyFile (BACKFLIP_AGENT_TLS_CERT, _KEY), both or
	// neither: PEM files; with them the server speaks only TLS 1.2+.
	TLSCertFile, TLSKeyFile string
	Logger                  *zap.Logger
}

// HTTPServer is the agent's listening HTTP server.
type HTTPServer struct {
	srv *http.Server
	ln  net.Listener
	tls bool
	log *zap.Logger
}

// Listen loads the TLS key pair, if any, and binds the address, so that a
// bad certificate or a taken port fails start-up rather than the first
// request. Serve starts answering.
func Listen(cfg HTTPConfig) (*HTTPServer, error) {
	if cfg.Logger == nil || cfg.Handler == nil {
		return nil, errors.New("agent: http: Logger and Handler are required")
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return nil, errors.New("agent: http: TLS certificate and key must be set together")
	}
	srv := &http.Server{
		Handler:           cfg.Handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// A fresh=1 request may wait up to fresh_timeout (at most
		// MaxFreshTimeout) for its probe before the reply is written; the
		// write deadline must outlast that, or the longest allowed wait
		// ends in a dropped connection instead of an answer.
		WriteTimeout:   MaxFreshTimeout + 15*time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       zap.NewStdLog(cfg.Logger.Named("http")),
	}
	useTLS := cfg.TLSCertFile != ""
	if useTLS {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("agent: http: load TLS key pair %s, %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("agent: http: %w", err)
	}
	return &HTTPServer{srv: srv, ln: ln, tls: useTLS, log: cfg.Logger}, nil
}

// Addr is the address the server listens on.
func (s *HTTPServer) Addr() net.Addr { return s.ln.Addr() }

// TLS reports whether the server speaks TLS.
func (s *HTTPServer) TLS() bool { return s.tls }

// Serve answers requests until ctx is done, then shuts down gracefully
// (requests in flight get up to 5 s) and returns nil. It returns an error if
// the server fails before that.
func (s *HTTPServer) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		if s.tls {
			errc <- s.srv.ServeTLS(s.ln, "", "")
		} else {
			errc <- s.srv.Serve(s.ln)
		}
	}()
	s.log.Info("serving", zap.Stringer("addr", s.ln.Addr()), zap.Bool("tls", s.tls))
	select {
	case err := <-errc:
		return fmt.Errorf("agent: http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.log.Warn("http shutdown: closing the connections still open", zap.Error(err))
		_ = s.srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("agent: http: %w", err)
	}
	return nil
}

// Close stops the server at once: the listener and every connection. It is
// for a start-up that fails after Listen; Serve shuts down gracefully.
func (s *HTTPServer) Close() error {
	err := s.srv.Close()
	if lerr := s.ln.Close(); lerr != nil && !errors.Is(lerr, net.ErrClosed) && err == nil {
		err = lerr
	}
	return err
}

// ListenAndServe is Listen then Serve.
func ListenAndServe(ctx context.Context, cfg HTTPConfig) error {
	s, err := Listen(cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}
