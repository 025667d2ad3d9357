package etcdtest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakSettleTimeout is how long VerifyTestMain waits for goroutines to end
// before it calls them leaked. etcd leaves a few peer-connection goroutines
// behind a stopped member (an HTTP server goroutine stuck in a read whose
// deadline etcd's timeout connection pushed back, and the in-process client
// connection on the other end); they end by themselves within etcd's peer
// read timeout, 5 s (rafthttp.ConnReadTimeout). goleak on its own gives up
// after about half a second.
const leakSettleTimeout = 10 * time.Second

// VerifyTestMain runs the tests and then, if they passed, fails the test
// binary if goroutines are left running, like goleak.VerifyTestMain. Use it
// in the TestMain of every package whose tests use this harness:
//
//	func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }
//
// The difference is the wait: goroutines that end within leakSettleTimeout
// are not leaks. Waiting instead of ignoring etcd's goroutines by name keeps
// a leak in the code under test visible, even one in the same functions
// (net/http's connection loops) that etcd's stragglers sit in.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if err := settle(opts); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func settle(opts []goleak.Option) error {
	deadline := time.Now().Add(leakSettleTimeout)
	for {
		err := goleak.Find(opts...)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
