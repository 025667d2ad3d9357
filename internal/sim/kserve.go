package sim

import (
	"fmt"
	"net/http"
)

func (s *Server) routeKServe() {
	s.mux.HandleFunc("GET /v2/health/live", s.kserveLive)
	s.mux.HandleFunc("GET /v2/health/ready", s.kserveServerReady)
	s.mux.HandleFunc("GET /v2/models/{model}/ready", s.kserveModelReady)
	s.mux.HandleFunc("GET /v2/models/{model}/versions/{version}/ready", s.kserveModelReady)
	s.mux.HandleFunc("GET /v2/models/{model}", s.kserveMetadata)
	s.mux.HandleFunc("GET /v2/models/{model}/versions/{version}", s.kserveMetadata)
	s.mux.HandleFunc("POST /v2/models/{model}/infer", s.kserveInfer)
	s.mux.HandleFunc("POST /v2/models/{model}/versions/{version}/infer", s.kserveInfer)
}

// Health replies carry no body: "A 200 status code indicates true and a
// 4xx status code indicates false" (required_api.md, Health).
func (s *Server) kserveLive(w http.ResponseWriter, r *http.Request) {
	writeEmpty(w, http.StatusOK)
}

func (s *Server) kserveServerReady(w http.ResponseWriter, r *http.Request) {
	if s.state().behavior == Loading {
		writeEmpty(w, http.StatusBadRequest)
		return
	}
	writeEmpty(w, http.StatusOK)
}

// kserveHas reports whether the request's path names the model (and
// version, when both sides have one) this server has loaded.
func (s *Server) kserveHas(r *http.Request, st state) bool {
	v := r.PathValue("version")
	return st.behavior != Unloaded && r.PathValue("model") == s.model &&
		(v == "" || s.version == "" || v == s.version)
}

func (s *Server) kserveModelReady(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	if st.behavior == Loading || !s.kserveHas(r, st) {
		writeEmpty(w, http.StatusBadRequest)
		return
	}
	writeEmpty(w, http.StatusOK)
}

func (s *Server) kserveMetadata(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	if !s.kserveHas(r, st) {
		s.kserveError(w, http.StatusBadRequest, s.unknownModel(r))
		return
	}
	writeJSON(w, http.StatusOK, s.bodies.render("model_metadata.json", func(m map[string]any) {
		m["name"] = s.model
		if s.version != "" {
			m["versions"] = []any{s.version}
		}
	}))
}

func (s *Server) kserveInfer(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	var req struct {
		ID     string `json:"id"`
		Inputs []struct {
			Name     string  `json:"name"`
			Shape    []int64 `json:"shape"`
			Datatype string  `json:"datatype"`
			Data     []any   `json:"data"`
		} `json:"inputs"`
	}
	if !s.canary(w, r, &req) {
		return
	}
	if !s.kserveHas(r, st) {
		s.kserveError(w, http.StatusBadRequest, s.unknownModel(r))
		return
	}
	// The one input the captured metadata declares.
	const input = "input0"
	if len(req.Inputs) != 1 || req.Inputs[0].Name != input || req.Inputs[0].Datatype != "BYTES" || len(req.Inputs[0].Data) != 1 {
		s.kserveError(w, http.StatusBadRequest, fmt.Sprintf("expected one BYTES input %q with one element for model '%s'", input, s.model))
		return
	}
	switch st.behavior {
	case Loading:
		s.kserveError(w, http.StatusServiceUnavailable, fmt.Sprintf("Model with name %s is not ready.", s.model))
		return
	case InferenceDead:
		s.kserveError(w, http.StatusInternalServerError, "CUDA error: an illegal memory access was encountered")
		return
	}
	s.slow(r, st)
	writeJSON(w, http.StatusOK, s.bodies.render("infer_response.json", func(m map[string]any) {
		m["model_name"] = s.model
		if s.version != "" {
			m["model_version"] = s.version
		}
		m["id"] = req.ID
	}))
}

func (s *Server) unknownModel(r *http.Request) string {
	if v := r.PathValue("version"); v != "" {
		return fmt.Sprintf("Request for unknown model: '%s' version %s is not found", r.PathValue("model"), v)
	}
	return fmt.Sprintf("Request for unknown model: '%s' is not found", r.PathValue("model"))
}

func (s *Server) kserveError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, s.bodies.render("error.json", func(m map[string]any) {
		m["error"] = msg
	}))
}
