//go:build linux

package pgtls_test

// The harness: TestMain builds the real binary once; each test starts a
// PostgreSQL server (postgres_test.go) and the proxy in front of it
// (proxy_test.go) as subprocesses that never outlive it.

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

const (
	// readyTimeout bounds waiting for a subprocess to say it is ready.
	readyTimeout = 20 * time.Second
	// clientTimeout bounds one psql run; running out fails the test, as a
	// client that hangs means the proxy hung.
	clientTimeout = 20 * time.Second
)

// bin is the binary TestMain built.
var bin proctest.Bin

func TestMain(m *testing.M) {
	// Process waiters and psql runs are all bounded and joined; anything
	// still running after the tests leaked.
	os.Exit(bin.Main(m, "pgtls", true))
}

// binary returns the built edgeproxy, skipping in -short mode.
func binary(t *testing.T) string {
	t.Helper()
	return bin.Path(t, "the PostgreSQL suite builds the proxy and starts a PostgreSQL server; skipped in -short mode")
}

// missing reports a tool the suite cannot run without. CI must install it
// (.ci/run does), so there it fails; on a developer machine it skips.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("required in CI (.ci/run installs postgresql and postgresql-client): "+format, args...)
	}
	t.Skipf("skipping, install postgresql and postgresql-client to run it: "+format, args...)
}

// isExec reports whether path is an executable file.
func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// lookPath is exec.LookPath returning "" when name is not found.
func lookPath(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}
