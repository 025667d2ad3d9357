package sim

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ollamaKeepAlive is Ollama's default keep-alive: a model stays resident
// this long after its last request (docs/api.md, keep_alive).
const ollamaKeepAlive = 5 * time.Minute

func (s *Server) routeOllama() {
	// Ollama answers its root with a plain "Ollama is running".
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("Ollama is running"))
	})
	s.mux.HandleFunc("GET /api/ps", s.ollamaPS)
	s.mux.HandleFunc("POST /api/generate", s.ollamaGenerate)
}

// ollamaNames reports whether name is the served model, as Ollama
// resolves names: a name without a tag means ":latest".
func (s *Server) ollamaNames(name string) bool {
	full := func(n string) string {
		if i := strings.LastIndexByte(n, ':'); i < 0 || strings.Contains(n[i:], "/") {
			return n + ":latest"
		}
		return n
	}
	return full(name) == full(s.model)
}

// ollamaPS lists the model as resident (in VRAM, expiring after the default
// keep-alive) unless it is loading or unloaded, when /api/ps lists nothing.
func (s *Server) ollamaPS(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	now := s.now()
	writeJSON(w, http.StatusOK, s.bodies.render("ps.json", func(m map[string]any) {
		if st.behavior == Loading || st.behavior == Unloaded {
			m["models"] = []any{}
			return
		}
		e := firstOf(m, "models")
		if e == nil {
			return
		}
		e["name"], e["model"] = s.model, s.model
		if d, ok := e["digest"].(string); ok {
			e["digest"] = s.digest(d)
		}
		e["expires_at"] = now.Add(ollamaKeepAlive).Format(time.RFC3339Nano)
	}))
}

// digest returns a digest starting with the configured version when that
// is a hex prefix (as `ollama list` shows one), else the captured digest.
func (s *Server) digest(captured string) string {
	v := strings.TrimPrefix(s.version, "sha256:")
	if v == "" || len(v) > len(captured) {
		return captured
	}
	if _, err := hex.DecodeString(v + strings.Repeat("0", len(v)%2)); err != nil {
		return captured
	}
	return strings.ToLower(v) + captured[len(v):]
}

func (s *Server) ollamaGenerate(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	var req struct {
		Model   string         `json:"model"`
		Prompt  *string        `json:"prompt"`
		Stream  *bool          `json:"stream"`
		Options map[string]any `json:"options"`
	}
	if !s.canary(w, r, &req) {
		return
	}
	switch {
	case !s.ollamaNames(req.Model):
		s.ollamaError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	case req.Stream == nil || *req.Stream:
		// The simulator only speaks the non-streaming form the probe uses.
		s.ollamaError(w, http.StatusBadRequest, "sim: only \"stream\": false is simulated")
		return
	case st.behavior == Loading:
		s.ollamaError(w, http.StatusServiceUnavailable, "server busy, please try again.  maximum pending requests exceeded")
		return
	case st.behavior == InferenceDead:
		writeJSON(w, http.StatusInternalServerError, s.bodies.raw["error.json"])
		return
	}
	// Unloaded answers too: a real Ollama loads the model to do so.
	s.slow(r, st)
	writeJSON(w, http.StatusOK, s.bodies.render("generate.json", func(m map[string]any) {
		m["model"] = req.Model
		m["created_at"] = s.now().UTC().Format(time.RFC3339Nano)
	}))
}

func (s *Server) ollamaError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, s.bodies.render("error.json", func(m map[string]any) {
		m["error"] = msg
	}))
}
