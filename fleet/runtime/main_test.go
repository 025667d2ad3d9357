package runtime

import (
	"testing"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// TestMain fails the package if a reader, registration, ack writer or
// client goroutine outlives its test.
func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }
