//go:build linux

package security_test

import (
	"os"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// readyTimeout bounds waiting for a subprocess to say it listens.
const readyTimeout = 15 * time.Second

// bin is the binary TestMain built.
var bin proctest.Bin

func TestMain(m *testing.M) {
	// Recording machines and clients are bounded and joined; anything
	// still running afterwards leaked.
	os.Exit(bin.Main(m, "security", true))
}

// startProc runs the binary with args until the test ends.
func startProc(t *testing.T, name string, args ...string) *proctest.Proc {
	t.Helper()
	const skip = "the security suite builds and runs the proxy; skipped in -short mode"
	lim := proctest.Limits{Lifetime: 5 * time.Minute, Grace: 10 * time.Second}
	return proctest.Run(t, lim, name, bin.Path(t, skip), args...)
}
