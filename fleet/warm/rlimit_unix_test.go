//go:build unix

package warm

import (
	"syscall"
	"testing"
)

// checkOpenFiles fails tb, naming the fix, when the open-file limit is below
// need. (Go has already raised the soft limit to the hard one at start-up.)
func checkOpenFiles(tb testing.TB, need uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Logf("cannot read the open-file limit: %v", err)
		return
	}
	if lim.Cur < need {
		tb.Fatalf("open-file limit is %d, this needs about %d: raise it (ulimit -n %d, or LimitNOFILE in a systemd unit)", lim.Cur, need, need)
	}
}
