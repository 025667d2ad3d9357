// Package fleetapi is the wire contract between the GPU-node agent
// (fleet/agent) and the bot's warm checks (fleet/warm): the node record an
// agent registers in etcd at <prefix>/fleet/nodes/<node>, and the JSON the
// agent serves at /v1/status and /v1/warm.
//
// It holds types, key builders and strict decoders only. Every decoder caps
// what it reads and validates names before they are used, because the
// other side may be a hung, buggy or hostile peer. It must not do I/O beyond
// reading the body it is handed, and must not import the agent or the bot.
package fleetapi
