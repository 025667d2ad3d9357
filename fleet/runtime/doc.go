// Package runtime is backflip's side of defined in-flight behaviour: when a
// route is rolled back, requests still running on the version rolled away
// from abort at their next checkpoint and are re-issued on the version
// rolled back to, and the workflow runtime acknowledges what it did.
//
// This file set holds the contract both sides share: the etcd records of
// runtime instances and their acknowledgements, and the signed HTTP
// protocol for runtimes without an etcd client (signal, heartbeat, ack),
// with HMAC-SHA256 over "v1:<timestamp>:<body>" in a 5-minute window.
//
// The package must not import the bot, must never trust a peer (every body
// is capped and strictly decoded, every signature checked in constant
// time before the body is used) and holds no package-level mutable state.
package runtime
