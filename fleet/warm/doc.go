// Package warm is the bot's side of warm-keep: it decides whether a model
// version is loaded and warm on enough GPUs to carry a route's traffic, and
// it watches every route's rollback target so operators hear about a cold
// target before they need it.
//
// A Checker discovers the fleet from the node records agents register in
// etcd (<prefix>/fleet/nodes/), asks the agent of every node registered for
// the target version (GET /v1/warm) through a bounded worker pool under one
// deadline (BACKFLIP_WARM_TIMEOUT), and decides in GPUs: the target is warm
// when its warm GPUs are at least the route's quorum (policies/<route>
// warm_quorum, else BACKFLIP_WARM_QUORUM) times the GPUs registered for the
// route's active version. A refusal is a *NotWarmError, which matches
// ErrTargetNotWarm and carries the per-node report.
//
// A Monitor runs that check on an interval against every route's previous
// version (its rollback target) and emits an Event only when the target's
// state changes (cold, or warm again). The state lives in etcd at
// <prefix>/warmkeep/<route> and is written with a transaction guarded on its
// ModRevision, so two bot replicas, or one restarted, emit each change once.
//
// The package must not change routing, must not trust an agent: replies are
// capped and strictly decoded, and a hung, dead or hostile agent becomes one
// unreachable node in the report, never a delay past the deadline or a
// panic. It writes to etcd only under <prefix>/warmkeep/, holds no
// package-level mutable state, and takes its logger and clock from its
// caller. It does not post to Slack or write audit rows: the Monitor's Emit
// callback hands that to the bot.
package warm
