package upstream_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Acquire waits on timers and channels and Connect dials real sockets; a
// goroutine left behind by either would outlive the connection it served.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
