package pgtest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakSettle is how long the leak check waits for goroutines to end, as
// etcdtest.VerifyTestMain does: a stopped etcd member leaves peer
// goroutines that end within etcd's 5 s peer read timeout.
const leakSettle = 10 * time.Second

// RunTests is a package's TestMain body for tests that share one Postgres:
// it starts the server with opts, hands it to set (the package keeps it in
// its `pg` variable), runs the tests, stops Postgres and then checks for
// leaked goroutines the way etcdtest.VerifyTestMain does (which cannot be
// used here: it exits right after the tests, before Postgres could be
// stopped). It returns the exit code.
func RunTests(m *testing.M, name string, opts Options, set func(*Server)) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	srv, err := Start(ctx, opts)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s tests: %v\n", name, err)
		return 1
	}
	set(srv)
	code := m.Run()
	if err := srv.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "%s tests: close postgres: %v\n", name, err)
		code = 1
	}
	if code == 0 {
		if err := settleLeaks(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	return code
}

// settleLeaks waits up to leakSettle for goroutines to end; those still
// running then are leaks.
func settleLeaks() error {
	deadline := time.Now().Add(leakSettle)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
