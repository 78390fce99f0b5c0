//go:build linux

package ops_test

// Subprocess plumbing: demo machines (run by internal/proctest) and the proxy's log file.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// logRecord is one JSON log line.
type logRecord map[string]any

func (r logRecord) str(k string) string { s, _ := r[k].(string); return s }

// startDemo runs a demo machine on a port the kernel picks and returns
// the port. It is stopped with SIGTERM when the test ends.
func startDemo(t *testing.T, id string) int {
	t.Helper()
	p, err := proctest.Start("demo machine "+id, 5*time.Minute, binary(t), "demo-machine", "-listen", "127.0.0.1:0", "-id", id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The demo machines only serve the proxy under test; how they
		// exit is not what this suite checks.
		_ = p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("demo machine %s output:\n%s", id, p.Output())
		}
	})
	return int(p.AwaitAddr(t, "demo machine listening", 10*time.Second).Port())
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
