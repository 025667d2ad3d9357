package slackfake

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: the fake serves
// every request on its own goroutine and must stop them all at Cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
