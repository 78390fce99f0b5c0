//go:build unix

package main

// The harness of the end-to-end suite (e2e_test.go): it builds the real
// binary once in TestMain and runs it as subprocesses that never outlive
// the test. The in-process tests of this package (validate_test.go) run in
// the same test binary, built or not. Unix only: subprocesses are stopped
// with SIGTERM, as an operator would stop them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// buildTimeout bounds "go build", which may have to compile the whole
	// module on a cold cache.
	buildTimeout = 5 * time.Minute
	// procLifetime bounds every long-running subprocess, so one that a
	// crashed test fails to stop still dies on its own.
	procLifetime = 2 * time.Minute
	// stopGrace is how long a subprocess gets to exit after SIGTERM before
	// it is killed; the proxy and the demo machine both stop at once.
	stopGrace = 5 * time.Second
	// readyTimeout bounds waiting for a subprocess to say it listens.
	readyTimeout = 10 * time.Second
	// clientTimeout bounds one curl or openssl run.
	clientTimeout = 10 * time.Second
)

var (
	// binPath is the built binary; buildErr says why there is none.
	binPath  string
	buildErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

// runTests is TestMain's body, so the deferred cleanup of the build
// directory runs before os.Exit.
func runTests(m *testing.M) int {
	if testing.Short() {
		buildErr = errors.New("not built in -short mode")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "edgeproxy-e2e-")
	if err != nil {
		buildErr = err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	binPath, buildErr = buildBinary(dir)
	return m.Run()
}

// buildBinary runs "go build" on this package. The environment, including
// GOTOOLCHAIN, is inherited unchanged so the binary is built with the
// toolchain the tests themselves were built with.
func buildBinary(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out := filepath.Join(dir, "edgeproxy")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, b)
	}
	return out, nil
}

// binary returns the built edgeproxy, skipping in -short mode and failing
// when the build failed (the in-process tests still ran).
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end tests build and run the binary; skipped in -short mode")
	}
	if buildErr != nil {
		t.Fatalf("edgeproxy binary not built: %v", buildErr)
	}
	return binPath
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

// procLog collects a subprocess's output and wakes waiters on each write,
// so readiness is awaited without sleeping.
type procLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newProcLog() *procLog { return &procLog{changed: make(chan struct{})} }

func (l *procLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *procLog) snapshot() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String(), l.changed
}

func (l *procLog) String() string {
	s, _ := l.snapshot()
	return s
}

// proc is a running edgeproxy subprocess.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *procLog
	done chan struct{} // closed once Wait returned
}

// startProc runs the binary with args until the test ends. Cleanup sends
// SIGTERM, as an operator stopping it would, and kills the process if it
// is not gone after stopGrace; either way it waits for the process, so
// none outlives the test.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	bin := binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), procLifetime)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	killWithParent(cmd)
	p := &proc{name: name, cmd: cmd, log: newProcLog(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait() // the outcome is read from ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		exitedEarly := false
		select {
		case <-p.done:
			exitedEarly = true
		default:
		}
		cancel()
		<-p.done
		switch st := cmd.ProcessState; {
		case exitedEarly:
			t.Errorf("%s exited before the test ended: %v", name, st)
		case !st.Success():
			// A graceful stop exits 0; anything else means SIGTERM was
			// not handled or the process had to be killed.
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", name, st)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.log)
		}
	})
	return p
}

// logRecord is one JSON log line of a subprocess.
type logRecord map[string]any

// waitLog waits until match has accepted a JSON log line of p, feeding it
// every complete line seen so far each time output arrives. It fails the
// test if the process exits or readyTimeout passes first.
func (p *proc) waitLog(t *testing.T, what string, match func(logRecord) bool) {
	t.Helper()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	for {
		text, changed := p.log.snapshot()
		// Output arrives in arbitrary chunks; a last line without its
		// newline is read again, whole, after the next write.
		complete := text[:strings.LastIndexByte(text, '\n')+1]
		for line := range strings.Lines(complete) {
			var r logRecord
			if json.Unmarshal([]byte(line), &r) == nil && match(r) {
				return
			}
		}
		select {
		case <-changed:
		case <-p.done:
			t.Fatalf("%s exited while waiting for %s: %v\n%s", p.name, what, p.cmd.ProcessState, p.log)
		case <-timer.C:
			t.Fatalf("%s: no %s within %v\n%s", p.name, what, readyTimeout, p.log)
		}
	}
}

// listenAddr reads an "addr" field of a log record as a loopback address.
func listenAddr(t *testing.T, r logRecord) netip.AddrPort {
	t.Helper()
	s, _ := r["addr"].(string)
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatalf("log record %v: bad addr: %v", r, err)
	}
	return ap
}

// startDemoMachine runs "edgeproxy demo-machine" on a port the kernel
// picks: the machine logs the address it bound, so there is no window in
// which another process could take a port chosen in advance.
func startDemoMachine(t *testing.T, id string) int {
	t.Helper()
	p := startProc(t, "demo-machine "+id, "demo-machine", "-listen", "127.0.0.1:0", "-id", id)
	var addr netip.AddrPort
	p.waitLog(t, "listening log line", func(r logRecord) bool {
		if r["msg"] != "demo machine listening" {
			return false
		}
		addr = listenAddr(t, r)
		return true
	})
	return int(addr.Port())
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
