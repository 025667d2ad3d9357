// Package faults is backflip's fault suite: it proves "never wrong" under
// failure. It holds no product code, only tests (this file is here so the
// package has a name and a place for its documentation).
//
// Every scenario runs against real parts: a 3-member embedded etcd cluster
// (internal/etcdtest), a real Postgres (internal/pgtest), and the simulated
// fleet (internal/simfleet: real agents over simulated inference servers,
// real routers on the reader library, real runtime SDK instances carrying
// traffic), with bot replicas that are real commands.Service instances,
// each with its own etcd client and owner lease, and an audit shipper.
// Operators (goroutines with Slack identities) read status, roll back (to
// the default target or a named version) and promote, each request guarded
// by the revision the operator last read (--expect-rev) or not (--now),
// under a deadline.
//
// The scenarios:
//
//  1. TestLeaderHardStopped: the etcd leader is hard-stopped as an op
//     begins its flip (racing the flip's transaction, or with the op held
//     until the leader is down) or begins waiting for the routers, and
//     restarted a little later.
//  2. TestMemberPartitionedFromBot: the leader's client port is partitioned
//     from the bot by an etcdtest.Link, losslessly (what was sent arrives
//     after the heal, possibly long after its sender gave up), for a short
//     and a long time (the long one outlasts the replicas' owner lease, so
//     recovery takes over ops of a replica that is alive but cut off); every
//     other partition ends with the connections cut. One replica's client
//     knows only that member, one has it first in its endpoint list, one
//     reaches every member and runs recovery. TestFlipReplyLost makes its
//     sharpest case deterministic: a flip commits, its reply is lost (the
//     member's replies to that replica blackholed), and another replica
//     moves the route on before the first one re-reads.
//  3. TestCompactionDuringWatches: the history is compacted to the current
//     revision every 200 ms while routers, runtimes and the shipper watch;
//     and the fleet and the shipper (behind links) are cut off while a route
//     changes twice, the history is compacted past what they saw and their
//     connections are cut, so their watches cannot resume and they must
//     read everything again.
//  4. TestPostgresDownDuringOperations: the audit database is stopped during
//     the operations and started again before they end.
//  5. TestHungAgents: a tenth of the agents hang (port open, no answer); one
//     route's quorum (0.8) is met without them, the other's (1.0) is not.
//     Every warm check decides by its timeout and its report names the hung
//     nodes; the first route changes, the second is refused as not warm,
//     naming them.
//  6. TestReplicaKilledAtEveryPhase: a bot replica in a process of its own
//     is SIGKILLed at each phase of a rollback while two other replicas run
//     recovery at once: each op is abandoned (not flipped), recovered
//     (flipped) or completed, exactly once, with one recovery notice.
//  7. TestConcurrentRollbacksAndPromotions: many rollbacks and promotions of
//     the same routes start at once, from several operators on two
//     replicas, in waves.
//
// After each scenario, once its faults are healed, every op record is
// closed (by recovery; an op left open behind a live replica's lease is
// recovered once that lease is revoked, as the replica's restart would),
// the traffic stops, every router is on every route's last epoch, and the
// outbox is shipped. Then:
//
//   - Every operator got an answer: no call is without one past its
//     deadline plus what the phases after a flip may take (they run to the
//     end whatever the caller's context), and every answer is a Result or
//     an error with a code the transports know; an answer no correct
//     backflip gives (an unclassifiable refusal or conflict, EINTERNAL) is
//     an error.
//   - Linearizability of each route's history (github.com/anishathalye/
//     porcupine): a register per route holding (active, previous, kind,
//     epoch); operations rollback(target or default, expected epoch or
//     none), promote(version, expected epoch or none) and read(status);
//     each operation's output is what its operator was told — completed
//     (with from, to and the new epoch), refused (already rolled back, no
//     previous version, already on the target, not warm), conflict (the
//     epoch it was guarded on), failed, or unknown. A refusal or conflict
//     must hold in the register's state at its linearization point; a
//     not-warm refusal must come from a request that would otherwise have
//     changed the route. "Failed" means nothing changed. An unknown outcome
//     (the answer says the change may or may not have happened, or the
//     replica was killed) is possibly applied, and open-ended: its return
//     time is the end of the history, since such a write can land after the
//     answer. See model_test.go; TestModel shows the check rejects each kind
//     of wrong answer.
//   - The ground truth (a watch of every route key on the harness's own
//     client) agrees: epochs go up one by one, every change was made by a
//     request whose operator was told it completed (or may have), and every
//     completed request's change is there, once, as reported.
//   - No audit event is lost or duplicated: in Postgres, every op that
//     changed a route has exactly one "flipped" event and every other none;
//     every op with an op record has exactly one final event, agreeing with
//     the record, with the route's history and with its operator's answer;
//     every event an answer reported as queued is there; event ids are
//     unique; no event belongs to an op nobody asked for; the outbox and the
//     quarantine are empty.
//   - No request passed Done() on a rolled-back version after its runtime
//     instance applied the flip: simfleet's Observer reports every change
//     each instance applied and, per request attempt at its final
//     checkpoint, the version and epoch it was pinned to and the highest
//     epoch its instance had applied just before Done; an attempt that
//     passed must not have been pinned to a version rolled away from by a
//     change its instance applied by then (or skipped over in a jump of
//     epochs, unless the version was active again).
//   - Every router and runtime applied each route's epochs in increasing
//     order, and (scenario 3) every router skipped an epoch at least once,
//     which shows its watch was compacted away and it re-read.
//
// Sizes: by default the suite runs a bounded form that `make test` runs in
// about a minute on two cores (two leader kills, two partitions, one cut
// across a compaction, 100 operations with Postgres down, 1 of 10 agents
// hung, a kill at the end of each phase, 24 concurrent operations in two
// waves). BACKFLIP_FAULTS=full runs the figures (`make faults`):
// six leader kills, six partitions, five cuts, 1000 operations, 2 of 20
// agents hung, a kill at the start and at the end of each phase, 100
// concurrent operations in three waves. Scenarios run two at a time
// (t.Parallel); nothing asserts a duration, timeouts only bound waits.
//
// Finding: TestFlipReplyLost found that a replica whose flip had landed
// told its operator "changed by someone else first … Nothing was changed
// by this request" when the flip's reply was lost and another op changed
// the route before the re-read (routing.Store.Flip's re-read can only see
// that the route is not its own change any more). commands now asks the
// op record, which only the flip transaction moves on this replica's
// behalf, before answering a conflict (op.ownFlipLanded); the scenario
// asserts the corrected answer.
//
// Faults are injected with real mechanisms only: Server.HardStop of a
// member (etcdtest.Cluster), etcdtest.Link (a TCP link that partitions
// without losing a byte and cuts connections), etcd's Compact,
// pgtest.Server Stop/Restart of a cluster of the scenario's own, a
// listener that accepts and never answers in place of a hung agent (the
// bot's agent client dials it for the hung nodes; the agents themselves are
// untouched), and SIGKILL of a bot replica run as a subprocess of the test
// binary (the approach of commands/crash_test.go).
package faults
