//go:build linux

package shapes_test

// The harness: TestMain builds the real binary once, and the tests run it
// as subprocesses (a demo machine and the proxy) that never outlive them.
// The proxy under test is therefore an ordinary non-race build, fast enough
// to storm, while this package runs under -race in CI like every other.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const (
	// buildTimeout bounds "go build", which may compile the whole module
	// on a cold cache.
	buildTimeout = 5 * time.Minute
	// procLifetime bounds every subprocess, so one that a crashed test
	// fails to stop still dies on its own (Pdeathsig covers a killed test
	// binary).
	procLifetime = 10 * time.Minute
	// stopGrace is how long a subprocess gets to exit after SIGTERM
	// before it is killed.
	stopGrace = 15 * time.Second
	// readyTimeout bounds waiting for a subprocess to say it listens.
	readyTimeout = 15 * time.Second
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

// runTests is TestMain's body, so the deferred removal of the build
// directory runs before os.Exit.
func runTests(m *testing.M) int {
	if testing.Short() {
		return m.Run() // every test skips itself
	}
	dir, err := os.MkdirTemp("", "edgeproxy-shapes-")
	if err != nil {
		buildErr = err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	binPath, buildErr = buildBinary(dir)
	code := m.Run()
	if code == 0 {
		// Subprocess waiters, storm workers and slowloris connections are
		// all bounded and joined; anything still running is a leak.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "shapes: goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	return code
}

// buildBinary builds ./cmd/edgeproxy from the module root without -race:
// the suite measures the proxy, not the race detector. The environment,
// GOTOOLCHAIN included, is inherited.
func buildBinary(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "edgeproxy")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/edgeproxy")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, b)
	}
	return out, nil
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

// binary returns the built edgeproxy, skipping in -short mode.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("the connection-shape suite builds the proxy and storms it for a minute or more; skipped in -short mode")
	}
	if buildErr != nil {
		t.Fatalf("edgeproxy binary not built: %v", buildErr)
	}
	return binPath
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

func (p *proc) pid() int { return p.cmd.Process.Pid }

// startProc runs the binary with args until the test ends. Cleanup sends
// SIGTERM, as an operator would, kills the process if it is not gone after
// stopGrace, and waits for it either way.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	bin := binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), procLifetime)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	// The kernel kills the child if the test binary dies without cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", name, st)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, summarize(p.log.String()))
		}
	})
	return p
}

// summarize picks from a subprocess's output what explains a failure: the
// lines logged above INFO (request failures with their codes, spin kills),
// grouped by level, message and code with one example each, then the last
// lines. A storm logs thousands of access lines; they are left out.
func summarize(out string) string {
	const lastLines = 5
	type group struct {
		n       int
		example string
	}
	groups := map[string]*group{}
	var keys, all []string
	for line := range strings.Lines(out) {
		all = append(all, line)
		var r logRecord
		if json.Unmarshal([]byte(line), &r) != nil {
			r = logRecord{"level": "?", "msg": "(not JSON)"}
		}
		if r["level"] == "INFO" || r["level"] == "DEBUG" {
			continue
		}
		key := fmt.Sprintf("%v %q code=%v", r["level"], r["msg"], r["code"])
		g := groups[key]
		if g == nil {
			g = &group{example: line}
			groups[key] = g
			keys = append(keys, key)
		}
		g.n++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d lines; above INFO:\n", len(all))
	for _, k := range keys {
		fmt.Fprintf(&b, "  %d× %s, e.g. %s", groups[k].n, k, groups[k].example)
	}
	fmt.Fprintf(&b, "last %d lines:\n", min(lastLines, len(all)))
	for _, l := range all[max(0, len(all)-lastLines):] {
		b.WriteString(l)
	}
	return b.String()
}

// logRecord is one JSON log line of a subprocess.
type logRecord map[string]any

// waitLog feeds every complete JSON log line of p to match until it
// returns true, failing if the process exits or readyTimeout passes.
func (p *proc) waitLog(t *testing.T, what string, match func(logRecord) bool) {
	t.Helper()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	for {
		text, changed := p.log.snapshot()
		// A last line without its newline is read again, whole, later.
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

// logAddr reads the "addr" field of a log record as an address.
func logAddr(t *testing.T, r logRecord) netip.AddrPort {
	t.Helper()
	s, _ := r["addr"].(string)
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatalf("log record %v: bad addr: %v", r, err)
	}
	return ap
}
