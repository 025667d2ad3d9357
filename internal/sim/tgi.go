package sim

import (
	"net/http"
)

func (s *Server) routeTGI() {
	s.mux.HandleFunc("GET /health", s.tgiHealth)
	s.mux.HandleFunc("GET /info", s.tgiInfo)
	s.mux.HandleFunc("POST /generate", s.tgiGenerate)
}

// tgiHealth: 200 without a body, or 503 with the documented error.
func (s *Server) tgiHealth(w http.ResponseWriter, r *http.Request) {
	if s.state().behavior == Loading {
		writeJSON(w, http.StatusServiceUnavailable, s.bodies.raw["health_error.json"])
		return
	}
	writeEmpty(w, http.StatusOK)
}

// tgiInfo reports the served model. TGI serves one model for its whole
// life, so Unloaded means the server was started with another one: the
// captured Mistral, renamed only if it is the model this server should have.
func (s *Server) tgiInfo(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	writeJSON(w, http.StatusOK, s.bodies.render("info.json", func(m map[string]any) {
		if st.behavior == Unloaded {
			if m["model_id"] == s.model {
				m["model_id"] = s.model + "-previous"
			}
			return
		}
		m["model_id"] = s.model
		if s.version != "" {
			m["model_sha"] = s.version
		}
	}))
}

func (s *Server) tgiGenerate(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	var req struct {
		Inputs     string `json:"inputs"`
		Parameters struct {
			MaxNewTokens *int `json:"max_new_tokens"`
		} `json:"parameters"`
	}
	if !s.canary(w, r, &req) {
		return
	}
	switch {
	case req.Inputs == "":
		// TGI's documented validation error shape (docs/openapi.json, 422).
		writeJSON(w, http.StatusUnprocessableEntity, []byte(`{"error":"Input validation error","error_type":"validation"}`))
		return
	case st.behavior == Loading:
		writeJSON(w, http.StatusServiceUnavailable, s.bodies.raw["health_error.json"])
		return
	case st.behavior == InferenceDead:
		writeJSON(w, http.StatusFailedDependency, s.bodies.raw["generate_error.json"])
		return
	}
	s.slow(r, st)
	writeJSON(w, http.StatusOK, s.bodies.raw["generate.json"])
}
