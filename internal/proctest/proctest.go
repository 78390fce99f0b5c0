// Package proctest runs the edgeproxy binary and its demo machines as real
// subprocesses for the suites that need separate processes.
//
// The suites (cmd/edgeproxy's end-to-end tests, test/shapes, test/ops)
// build the binary once in TestMain with a Bin, start each process with
// Start or Run, await readiness by reading the process's JSON log lines
// rather than by sleeping, and stop it with SIGTERM as an operator would.
// Stopping by signal makes the package Unix-only in practice.
package proctest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// buildTimeout bounds "go build", which may have to compile the whole
// module on a cold cache.
const buildTimeout = 5 * time.Minute

// Build compiles ./cmd/edgeproxy into a new temporary directory and
// returns the binary's path and a cleanup that removes the directory
// (also when err is not nil, so it can always be deferred).
//
// It builds without -race whatever the tests run under: the suites measure
// the proxy, the race detector watches the tests. The environment,
// GOTOOLCHAIN included, is inherited unchanged, so the binary is built
// with the toolchain the tests were built with.
func Build(ctx context.Context) (path string, cleanup func(), err error) {
	return BuildProgram(ctx, "./cmd/edgeproxy", "edgeproxy")
}

// BuildProgram compiles the main package pkg (a path in this module, or a
// module this one requires, such as a tool of go.mod's tool block) into a
// new temporary directory as name, as Build does: the suites' real
// servers (NATS, pebble) come from the module proxy at the versions
// go.mod names, with nothing to install.
func BuildProgram(ctx context.Context, pkg, name string) (path string, cleanup func(), err error) {
	cleanup = func() {}
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	// The module root, not the working directory, because each suite's
	// test binary runs in its own package's directory.
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", cleanup, err
	}
	dir, err := os.MkdirTemp("", "edgeproxy-proctest-")
	if err != nil {
		return "", cleanup, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", cleanup, fmt.Errorf("go build: %v\n%s", err, b)
	}
	return out, cleanup, nil
}

// moduleRoot asks the go command where go.mod is.
func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod), nil
}

// Bin is the binary a suite builds once in TestMain and hands to its
// tests. A failed build is kept, not fatal, so that tests which do not
// need the binary still run and those which do fail with the reason.
type Bin struct {
	path    string
	err     error
	cleanup func()
}

// Build builds the binary (see Build) and returns the cleanup to defer.
func (b *Bin) Build(ctx context.Context) (cleanup func()) {
	b.path, b.cleanup, b.err = Build(ctx)
	return b.cleanup
}

// Main is the body of a suite's TestMain, which passes its result to
// os.Exit (a function of its own so that deferred cleanups run first). It
// builds the binary unless -short, where every test skips itself, runs the
// tests and removes the binary. With checkLeaks, a run whose tests all
// passed fails if goroutines outlive them: process waiters and the
// suite's clients are all bounded and joined, so any still running leaked.
func (b *Bin) Main(m *testing.M, suite string, checkLeaks bool) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	defer b.Build(context.Background())()
	code := m.Run()
	if code == 0 && checkLeaks {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: goroutines outlived the tests: %v\n", suite, err)
			code = 1
		}
	}
	return code
}

// Path returns the built binary for a test. In -short mode the test is
// skipped with skipReason, as none of these suites is short; if the build
// failed (or was never run) the test fails.
func (b *Bin) Path(t testing.TB, skipReason string) string {
	t.Helper()
	if testing.Short() {
		t.Skip(skipReason)
	}
	if b.err != nil {
		t.Fatalf("edgeproxy binary not built: %v", b.err)
	}
	if b.path == "" {
		t.Fatal("edgeproxy binary not built: TestMain did not build it")
	}
	return b.path
}

// PlaceholderApp is an [[apps]] table that keeps a proxy's port 80 bound
// for apps that arrive later from the fleet and share it by Host.
const PlaceholderApp = `
[[apps]]
name = "placeholder"
hostnames = ["placeholder.test"]
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
`
