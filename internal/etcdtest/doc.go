// Package etcdtest starts real etcd servers for tests: a single member, a
// multi-member cluster whose members can be crashed and restarted, a
// fault-injecting TCP proxy (go.etcd.io/etcd/pkg/v3/proxy) that blackholes or
// delays the traffic between clients and one member, and a Link between
// clients and one member that partitions it the way a network does (nothing
// lost: what was sent arrives after the heal) and cuts its connections.
//
// It is imported only from _test.go files. Every helper takes a testing.TB,
// fails the test with tb.Fatalf when setup goes wrong (it never skips: a test
// that needs etcd gets etcd or fails), and registers its own cleanup with
// tb.Cleanup, so a test does not close servers, clients or proxies, nor
// remove data directories, itself. Packages whose tests use it check for
// leaked goroutines with
//
//	func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }
//
// which waits for etcd's own stragglers instead of ignoring them (see
// VerifyTestMain).
//
// Logs: etcd's, the clients' and the proxies' warnings and errors are kept in
// memory and written to the test log only when the test fails. Set
// BACKFLIP_TEST_ETCD_LOG to a level (debug, info, warn, error) to stream them
// as they happen instead, e.g. to see what a hanging test was doing.
//
// Ports: a single member binds 127.0.0.1:0. Cluster members must know each
// other's URLs before they start, and a restarted member must get its old
// client port back so that existing clients reconnect to it, so the harness
// reserves every cluster port for the cluster's lifetime (see reservePort)
// rather than probing for a free port and hoping it stays free. Peers talk
// over TCP on reserved ports, not over unix:// sockets: those are created
// relative to the working directory, which under go test is the source
// directory of the package under test, and a test killed before its cleanup
// would leave socket files there.
//
// What it must not do: it holds no package-level state, so tests using it may
// run in parallel; it knows nothing about backflip's keyspace; and it makes no
// assertions about backflip's behaviour, it only provides the real parts
// those tests run against.
package etcdtest
