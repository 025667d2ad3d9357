// Package routing owns the one piece of state that decides where inference
// traffic goes: the routing config of each model route, stored in etcd at
// <prefix>/routes/<route>.
//
// It has two halves. The writing half (Store) changes a route with one etcd
// transaction guarded by the ModRevision the caller saw, so two concurrent
// changes can never both win and no reader can observe a half-applied change;
// callers may add their own operations (op record, idempotency key, audit
// outbox) to that same transaction. The reading half (Watcher) is the library
// that inference routers and workflow runtimes embed: a watch-fed, immutable
// in-memory copy whose per-request check is an atomic pointer load.
//
// The package must not know about Slack, Postgres, the fleet's warm state or
// the op lifecycle: those belong to the callers, which pass their extra
// transaction operations in. It must not retry a flip blindly after a timeout
// (it re-reads to learn whether the write landed), must not write anything
// per request on the read path, and must not hold package-level mutable state.
package routing
