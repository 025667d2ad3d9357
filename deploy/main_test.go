package deploy

import (
	"testing"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }
