package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Kinds of simulated server: the protocols the agent probes. They match
// the agent's config file's "kind" values.
const (
	KindOpenAI   = "openai"
	KindKServeV2 = "kserve-v2"
	KindTGI      = "tgi"
	KindOllama   = "ollama"
)

// Behavior is what a simulated server does; see the package documentation.
type Behavior int

// The behaviours a Server can be switched to.
const (
	Warm Behavior = iota
	Loading
	Unloaded
	InferenceDead
	Slow
	Hang
)

var behaviorNames = [...]string{"warm", "loading", "unloaded", "inference-dead", "slow", "hang"}

func (b Behavior) String() string {
	if b >= 0 && int(b) < len(behaviorNames) {
		return behaviorNames[b]
	}
	return fmt.Sprintf("Behavior(%d)", int(b))
}

// ParseBehavior reads a behaviour's name as String writes it, for the dev
// stack's terminal.
func ParseBehavior(s string) (Behavior, error) {
	for i, n := range behaviorNames {
		if n == s {
			return Behavior(i), nil
		}
	}
	return 0, fmt.Errorf("unknown behaviour %q (want one of %v)", s, behaviorNames)
}

// maxRequestBytes caps a request body the simulator reads; a probe's
// canary request is well under a kilobyte.
const maxRequestBytes = 1 << 20

// Server is one simulated inference server serving one model (and, where
// the protocol has one, model version). It implements http.Handler.
type Server struct {
	kind, model, version string
	mux                  *http.ServeMux
	bodies               *bodies

	// now stamps Ollama's expires_at and created_at; a field so that tests
	// of the simulator itself could pin it.
	now func() time.Time

	mu         sync.Mutex
	behavior   Behavior
	delay      time.Duration
	inFlight   int
	lastCanary []byte

	requests atomic.Int64
	canaries atomic.Int64

	closeOnce sync.Once
	closed    chan struct{}
}

// New returns a server of the given kind (openai, kserve-v2, tgi, ollama)
// serving model. modelVersion is the KServe/Triton model version, TGI's
// model_sha or a prefix of Ollama's digest; it may be empty. The server
// starts Warm.
func New(kind, model, modelVersion string) (*Server, error) {
	if model == "" {
		return nil, fmt.Errorf("sim: a model name is required")
	}
	b, err := loadBodies(kind)
	if err != nil {
		return nil, err
	}
	s := &Server{
		kind:    kind,
		model:   model,
		version: modelVersion,
		bodies:  b,
		now:     time.Now,
		mux:     http.NewServeMux(),
		closed:  make(chan struct{}),
	}
	switch kind {
	case KindOpenAI:
		s.routeOpenAI()
	case KindKServeV2:
		s.routeKServe()
	case KindTGI:
		s.routeTGI()
	case KindOllama:
		s.routeOllama()
	}
	return s, nil
}

// Kind returns the protocol New was given.
func (s *Server) Kind() string { return s.kind }

// Model returns the model name the server serves.
func (s *Server) Model() string { return s.model }

// ModelVersion returns the model version New was given.
func (s *Server) ModelVersion() string { return s.version }

// Set switches the server's behaviour; requests already past the switch
// point finish with the behaviour they started with.
func (s *Server) Set(b Behavior) {
	s.mu.Lock()
	s.behavior = b
	s.mu.Unlock()
}

// Behavior returns the current behaviour.
func (s *Server) Behavior() Behavior {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.behavior
}

// SetDelay sets how long the canary takes when the behaviour is Slow.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// SetInFlight sets the running-request count the openai server reports in
// vllm:num_requests_running. Other kinds expose no such count.
func (s *Server) SetInFlight(n int) {
	s.mu.Lock()
	s.inFlight = n
	s.mu.Unlock()
}

// Requests is how many requests the server has received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// CanaryRequests is how many inference requests (completion, infer,
// generate) the server has received, whatever it answered.
func (s *Server) CanaryRequests() int64 { return s.canaries.Load() }

// LastCanary returns the body of the last inference request, so tests can
// check what a probe sent (nil if none yet).
func (s *Server) LastCanary() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.lastCanary)
}

// Close releases every request held by Hang or Slow (their connections
// are dropped without a reply) and makes later ones return at once the
// same way. Call it before closing the http server the handler runs in:
// httptest.Server.Close waits for outstanding requests.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if s.Behavior() == Hang {
		s.wait(r, -1)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// state is a consistent snapshot of the switchable settings.
type state struct {
	behavior Behavior
	delay    time.Duration
	inFlight int
}

func (s *Server) state() state {
	s.mu.Lock()
	defer s.mu.Unlock()
	return state{behavior: s.behavior, delay: s.delay, inFlight: s.inFlight}
}

// wait holds a request for d (forever when d < 0). If the request's
// context ends or the server is closed first, it aborts the connection
// without a reply — what a hung engine looks like to its client — by
// panicking with http.ErrAbortHandler, which net/http recovers silently.
func (s *Server) wait(r *http.Request, d time.Duration) {
	var timer <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
		return
	case <-r.Context().Done():
	case <-s.closed:
	}
	panic(http.ErrAbortHandler)
}

// canary records an inference request and reads its JSON body into v.
// It answers 400 itself and returns false when the body is not JSON.
func (s *Server) canary(w http.ResponseWriter, r *http.Request, v any) bool {
	s.canaries.Add(1)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	s.mu.Lock()
	s.lastCanary = body
	s.mu.Unlock()
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		http.Error(w, "decode body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// slow delays a canary when the behaviour is Slow. If the client gives
// up or the server is closed meanwhile, wait aborts the request.
func (s *Server) slow(r *http.Request, st state) {
	if st.behavior == Slow {
		s.wait(r, st.delay)
	}
}

func writeJSON(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func writeEmpty(w http.ResponseWriter, code int) {
	w.WriteHeader(code)
}
