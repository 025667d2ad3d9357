// Package embedetcd runs a real etcd member inside the current process, built
// on go.etcd.io/etcd/server/v3/embed.
//
// It exists for two callers: the `backflip dev` command, which needs an etcd
// without asking the operator to install one, and the internal/etcdtest
// harness, which starts single members and three-member clusters for tests.
// Both get the same server that production runs, so what passes against it is
// what production will do; nothing here fakes etcd behaviour.
//
// The package settles the few settings that backflip relies on and that etcd
// leaves off or noisy by default:
//
//   - Auto-compaction is always on, in periodic mode with a five-minute
//     retention. A time window rather than a revision count is chosen because
//     the readers that depend on history are watchers resuming after a
//     disconnect: with a time window, a reader that was away for less than
//     five minutes can resume from its last revision whatever the write rate
//     was meanwhile, while a revision count (say 1000) can be used up in
//     seconds by the dev stack's synthetic traffic. Five minutes is far
//     longer than READER_MAX_STALENESS (30 s) and a reconnect, and short
//     enough to keep the dev database small. Readers still have to handle
//     ErrCompacted; this only makes it rare. etcd compacts nothing during the
//     first period, so tests that need a compaction call Compact themselves.
//   - etcd logs through the *zap.Logger the caller passes in; nothing is
//     written to stderr on its own, and no global logger (zap, grpclog) is
//     touched.
//   - The grpc-gateway (etcd's JSON-over-HTTP API) is off: nothing in
//     backflip speaks it, and it would dial an extra internal gRPC
//     connection per listener.
//   - Close is not a crash: a leader hands leadership over before it stops.
//     HardStop is the crash: the raft node stops at once, then the
//     connections and listeners close, so clients fail over as they would
//     after a crash and a restarted member can bind the same ports.
//
// What it must not do: it is not a production deployment of etcd (backflip
// wants its own etcd cluster, run by operators, see deploy/), so it offers no
// TLS, auth or membership changes; it keeps no package-level state, so any
// number of members can run side by side in one process; and it knows nothing
// about backflip's keyspace.
package embedetcd
