// Package sim simulates the inference servers the node agent probes, one
// http.Handler per protocol, so that the probes, the agent and `backflip
// dev` run against the engines' wire shapes without a GPU:
//
//   - "openai" (vLLM, SGLang): GET /health, GET /v1/models,
//     POST /v1/completions, GET /metrics (vllm:num_requests_running).
//   - "kserve-v2" (Triton, KServe): GET /v2/health/live, GET /v2/health/ready,
//     GET /v2/models/{m}[/versions/{v}][/ready], POST .../infer.
//   - "tgi": GET /health, GET /info, POST /generate.
//   - "ollama": GET /, GET /api/ps, POST /api/generate.
//
// Every body is a reply copied from the engine's documentation or from a
// published capture, kept under testdata/ (testdata/README.md says where
// each came from). The simulator decodes it and sets only the fields that
// name the model — id, version, digest, residency expiry, in-flight count —
// so the probes are tested against the engines' shapes, not shapes written
// alongside them.
//
// A Server's behaviour is switched at run time, safely from any goroutine:
//
//	s, _ := sim.New("openai", "meta-llama/Llama-3.1-8B-Instruct", "")
//	ts := httptest.NewServer(s)
//	defer ts.Close()
//	defer s.Close() // releases hung requests first, so ts.Close can return
//	s.Set(sim.InferenceDead)
//
// Behaviours:
//
//   - Warm: healthy, the model listed (and, for Ollama, resident), the
//     canary answered.
//   - Loading: a cold start. Health/readiness say not ready; the model is
//     not listed (openai, ollama) or not ready (kserve-v2); inference
//     answers 503. TGI's /info still names its model: the router reports
//     its static configuration.
//   - Unloaded: the server is up and healthy but the expected model or
//     version is absent: not in /v1/models, model-ready 400, /info naming
//     another model, not in /api/ps. Ollama still answers /api/generate,
//     as the real one does by loading the model — which a probe must
//     therefore never call for a model that is not resident.
//   - InferenceDead: health and readiness 200, the model listed, but the
//     canary fails with the engine's error reply (500; TGI: 424). This is
//     the failure a health check alone misses.
//   - Slow: the canary answers after SetDelay's delay; everything else is
//     normal.
//   - Hang: every request is accepted and never answered until the
//     client gives up or Close is called; the connection is then dropped
//     without a response.
//
// Tests can also check what a probe did: Requests and CanaryRequests count
// requests, LastCanary returns the last inference request's body, and
// Testdata hands out a capture for cases a Behavior does not cover (an
// Ollama model resident in CPU memory only, an expired keep-alive).
// SetInFlight sets the openai server's vllm:num_requests_running.
//
// A Server keeps no package-level state and starts no goroutines of its
// own; a handler held by Hang or Slow returns when its request's context
// ends or Close is called, so nothing outlives the test server.
//
// This package is for tests and the dev stack only. It must not be used
// to answer real traffic, and it must not grow behaviour the engines do not
// have: a new behaviour needs a source like the ones in testdata/README.md.
package sim
