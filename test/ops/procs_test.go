//go:build linux

package ops_test

// Subprocess plumbing: demo machines, the proxy's log file, free ports.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logRecord is one JSON log line.
type logRecord map[string]any

func (r logRecord) str(k string) string { s, _ := r[k].(string); return s }

// lockedBuffer collects a demo machine's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startDemo runs a demo machine on a port the kernel picks and returns
// the port. It is stopped with SIGTERM when the test ends.
func startDemo(t *testing.T, id string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, binary(t), "demo-machine", "-listen", "127.0.0.1:0", "-id", id)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("demo machine %s output:\n%s", id, out)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for line := range strings.Lines(out.String()) {
			var r logRecord
			if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == "demo machine listening" {
				ap, err := netip.ParseAddrPort(r.str("addr"))
				if err != nil {
					t.Fatalf("demo machine %s: %v", id, err)
				}
				return int(ap.Port())
			}
		}
		select {
		case <-done:
			t.Fatalf("demo machine %s exited: %v\n%s", id, cmd.ProcessState, out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("demo machine %s did not start:\n%s", id, out)
	return 0
}

// logWatch follows the proxy's log file, which every generation of the
// proxy appends to, and counts messages. Messages of "reload refused" are
// counted under that prefix whatever follows it.
type logWatch struct {
	path    string
	mu      sync.Mutex
	off     int64
	partial []byte
	counts  map[string]int
	records []logRecord
}

const refusedPrefix = "reload refused"

func newLogWatch(path string) *logWatch { return &logWatch{path: path, counts: map[string]int{}} }

// poll reads what was appended since the last call.
func (w *logWatch) poll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := os.Open(w.path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(w.off, 0); err != nil {
		return
	}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		w.off += int64(len(line))
		if err != nil {
			w.partial = append(w.partial, line...)
			return
		}
		if len(w.partial) > 0 {
			line = append(w.partial, line...)
			w.partial = nil
		}
		var rec logRecord
		if json.Unmarshal(line, &rec) != nil {
			rec = logRecord{"msg": "(not JSON) " + strings.TrimSpace(string(line))}
		}
		w.records = append(w.records, rec)
		msg := rec.str("msg")
		if strings.HasPrefix(msg, refusedPrefix) {
			msg = refusedPrefix
		}
		w.counts[msg]++
	}
}

func (w *logWatch) count(msg string) int {
	w.poll()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts[msg]
}

// since returns the records from index i on, and the current length.
func (w *logWatch) since(i int) ([]logRecord, int) {
	w.poll()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]logRecord(nil), w.records[min(i, len(w.records)):]...), len(w.records)
}

// waitFor polls until cond holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pickPorts returns n distinct loopback ports that are free now. They are
// drawn below the kernel's ephemeral range when it leaves room: a port in
// that range can be handed to any outgoing connection (this test makes
// thousands) while it is not bound, for instance between a reload that
// removes a port and the one that adds it back, which would fail the
// second reload for a reason that is not the proxy's.
func pickPorts(t *testing.T, n int) []int {
	t.Helper()
	lo := ephemeralLow()
	var out []int
	seen := map[int]bool{}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for tries := 0; len(out) < n && tries < 1000; tries++ {
		addr := "127.0.0.1:0"
		if lo > 12000 {
			addr = "127.0.0.1:" + strconv.Itoa(10000+rand.IntN(lo-10000))
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		lns = append(lns, ln)
		p := ln.Addr().(*net.TCPAddr).Port
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	if len(out) < n {
		t.Fatalf("found only %d free ports", len(out))
	}
	return out
}

// ephemeralLow reads the low end of the kernel's ephemeral port range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// readPID reads a pid file.
func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
