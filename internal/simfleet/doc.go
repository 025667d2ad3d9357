// Package simfleet runs a whole simulated fleet in one process, against a
// real etcd: GPU nodes (the real fleet/agent probing internal/sim inference
// servers on loopback, each registered under a lease), inference routers
// (the real fleet/routing reader, publishing what they applied under
// routers/<id>), and workflow runtimes (the real fleet/runtime SDK) carrying
// synthetic multi-step requests that checkpoint between steps and are
// re-issued when a rollback aborts them.
//
// It is what the commands tests roll back against and what `backflip dev`
// shows at a terminal: everything on the bot's side of the wire — warm
// checks, flips, router convergence, abort signals and acknowledgements —
// meets the same code and the same etcd keys it meets in production. Start
// seeds the routes it is given (when they do not exist yet) and returns once
// every node has registered and probed its servers, every router has
// published the routes' epochs and every runtime has registered; Close stops
// everything it started and leaves no goroutine behind. Stats counts the
// synthetic requests' outcomes, including the one that must never happen: a
// request that finished on a version its runtime had already seen the route
// rolled back away from.
// Config.Observe lets a test watch what the routers and runtimes apply and,
// per request attempt, what Done answered and what its runtime had applied
// by then (internal/faults checks its invariants with it); it only
// observes.
//
// What it must not do: it is for tests and `backflip dev` only, and must not
// be imported by any production code path other than `backflip dev` (the bot,
// the agent binary and backflipctl never run it). It does not fake the parts
// it simulates around: the only fakes are the inference servers, which come
// from internal/sim. It holds no package-level mutable state, so several
// fleets may run in one process, each under its own etcd prefix; two fleets
// must never share a prefix. It never closes the etcd client it is given.
package simfleet
