// Package agent is the GPU-node agent (backflip-agent): it probes the node's
// local inference servers (OpenAI-compatible, KServe v2, TGI, Ollama) on an
// interval, serves what it observed at /v1/status and /v1/warm behind a
// bearer token, and registers the node and the versions it serves in etcd
// under a lease.
//
// "Warm" here means the expected version is loaded, resident, and a 1-token
// canary inference answered within its budget — a 200 from a health
// endpoint alone is never warm. The agent must not change anything on the
// inference servers, must not write to etcd outside <prefix>/fleet/nodes/,
// and must not trust a server's reply: bodies are capped and parsed
// defensively.
package agent
