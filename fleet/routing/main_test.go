package routing

import (
	"testing"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// TestMain fails the package if a reader, publisher or client goroutine
// outlives its test.
func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }
