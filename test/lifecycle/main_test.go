//go:build linux

// Package lifecycle_test runs edgeproxy with machines it starts and stops
// itself: the exec driver runs each machine as a demo machine process,
// and the machines-api driver asks a fake Machines API in the test
// process. Linux only: the exec driver's machines die with their proxy by
// a Linux process attribute, which the suite checks.
package lifecycle_test

import (
	"os"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

const readyTimeout = 15 * time.Second

var bin proctest.Bin

func TestMain(m *testing.M) {
	os.Exit(bin.Main(m, "lifecycle", true))
}

func edgeproxy(t *testing.T) string {
	t.Helper()
	return bin.Path(t, "the lifecycle suite starts real machine processes; skipped in -short mode")
}
