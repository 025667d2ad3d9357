package sim

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"strings"
)

// capturedMetricsModel is the model_name label in openai/metrics.txt,
// replaced by the served model.
const capturedMetricsModel = "meta-llama/Llama-3.1-8B-Instruct"

func (s *Server) routeOpenAI() {
	s.mux.HandleFunc("GET /health", s.openAIHealth)
	s.mux.HandleFunc("GET /v1/models", s.openAIModels)
	s.mux.HandleFunc("POST /v1/completions", s.openAICompletion)
	s.mux.HandleFunc("GET /metrics", s.openAIMetrics)
}

// openAIHealth: vLLM's /health is 200 with an empty body.
func (s *Server) openAIHealth(w http.ResponseWriter, r *http.Request) {
	if s.state().behavior == Loading {
		writeEmpty(w, http.StatusServiceUnavailable)
		return
	}
	writeEmpty(w, http.StatusOK)
}

func (s *Server) openAIModels(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	writeJSON(w, http.StatusOK, s.bodies.render("models.json", func(m map[string]any) {
		switch st.behavior {
		case Loading:
			m["data"] = []any{}
		case Unloaded:
			// Another model is being served: the captured one, renamed only
			// if it happens to be the model this server is meant to have.
			if e := firstOf(m, "data"); e != nil && e["id"] == s.model {
				e["id"], e["root"] = s.model+"-previous", s.model+"-previous"
			}
		default:
			if e := firstOf(m, "data"); e != nil {
				e["id"], e["root"] = s.model, s.model
			}
		}
	}))
}

func (s *Server) openAICompletion(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	var req struct {
		Model     string `json:"model"`
		Prompt    any    `json:"prompt"`
		MaxTokens *int   `json:"max_tokens"`
	}
	if !s.canary(w, r, &req) {
		return
	}
	switch {
	case st.behavior == Loading:
		s.openAIError(w, http.StatusServiceUnavailable, "ServiceUnavailableError", "The model is still loading.")
		return
	case st.behavior == Unloaded || req.Model != s.model:
		// vLLM's reply to a model it does not serve.
		s.openAIError(w, http.StatusNotFound, "NotFoundError", fmt.Sprintf("The model `%s` does not exist.", req.Model))
		return
	case st.behavior == InferenceDead:
		s.openAIError(w, http.StatusInternalServerError, "InternalServerError", "engine dead: the inference engine stopped responding")
		return
	case req.Prompt == nil:
		s.openAIError(w, http.StatusBadRequest, "BadRequestError", "prompt is required")
		return
	}
	s.slow(r, st)
	writeJSON(w, http.StatusOK, s.bodies.render("completion.json", func(m map[string]any) {
		m["model"] = s.model
	}))
}

func (s *Server) openAIError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, s.bodies.render("error.json", func(m map[string]any) {
		m["message"], m["type"], m["code"] = msg, typ, code
	}))
}

// openAIMetrics serves the captured exposition with the served model as
// model_name and the in-flight count set by SetInFlight.
func (s *Server) openAIMetrics(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	model := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s.model)
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(s.bodies.raw["metrics.txt"]))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "vllm:num_requests_running{") {
			line = fmt.Sprintf(`vllm:num_requests_running{model_name="%s"} %d.0`, model, st.inFlight)
		}
		line = strings.ReplaceAll(line, `model_name="`+capturedMetricsModel+`"`, `model_name="`+model+`"`)
		out.WriteString(line)
		out.WriteByte('\n')
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(out.Bytes())
}
