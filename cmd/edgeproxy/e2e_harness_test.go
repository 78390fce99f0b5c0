//go:build unix

package main

// The harness of the end-to-end suite (e2e_test.go): it builds the real
// binary once in TestMain and runs it as subprocesses that never outlive
// the test. The in-process tests of this package (validate_test.go) run in
// the same test binary, built or not. Unix only: subprocesses are stopped
// with SIGTERM, as an operator would stop them.

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// bin is the binary TestMain built.
var bin proctest.Bin

// limits bound every long-running subprocess: its lifetime, so one that a
// crashed test fails to stop still dies on its own, and how long it gets
// to exit after SIGTERM before it is killed (the proxy and the demo
// machine both stop at once).
var limits = proctest.Limits{Lifetime: 2 * time.Minute, Grace: 5 * time.Second}

const (
	// readyTimeout bounds waiting for a subprocess to say it listens.
	readyTimeout = 10 * time.Second
	// clientTimeout bounds one curl or openssl run.
	clientTimeout = 10 * time.Second
)

func TestMain(m *testing.M) {
	// No leak check: the in-process tests of this package are not built
	// to join every goroutine.
	os.Exit(bin.Main(m, "edgeproxy", false))
}

// binary returns the built edgeproxy, skipping in -short mode and failing
// when the build failed (the in-process tests still ran).
func binary(t *testing.T) string {
	t.Helper()
	return bin.Path(t, "end-to-end tests build and run the binary; skipped in -short mode")
}

// requireTool finds an external client. CI must install it, so there a
// missing tool fails; on a developer machine the test is skipped instead.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI for the end-to-end tests: %v", name, err)
	}
	t.Skipf("%s not installed; skipping (CI installs it)", name)
	return ""
}

// startProc runs the binary with args until the test ends; cleanup stops
// it with SIGTERM and fails the test unless it then exits 0.
func startProc(t *testing.T, name string, args ...string) *proctest.Proc {
	t.Helper()
	return proctest.Run(t, limits, name, binary(t), args...)
}

// startDemoMachine runs "edgeproxy demo-machine" on a port the kernel
// picks: the machine logs the address it bound, so there is no window in
// which another process could take a port chosen in advance.
func startDemoMachine(t *testing.T, id string) int {
	t.Helper()
	p := startProc(t, "demo-machine "+id, "demo-machine", "-listen", "127.0.0.1:0", "-id", id)
	return int(p.AwaitAddr(t, "demo machine listening", readyTimeout).Port())
}

// waitAccepting polls until addr accepts TCP connections. The proxy logs
// a port only after binding it, so this normally succeeds at once; it
// guards against the log and the socket ever drifting apart.
func waitAccepting(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not accepting connections after %v: %v", addr, readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runClient runs a short-lived command bounded by clientTimeout and
// returns its combined output. Running out of time fails the test: a
// client that hangs means the proxy hung.
func runClient(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %v: %v\n%s", name, strings.Join(args, " "), clientTimeout, ctx.Err(), out)
	}
	return string(out), err
}
