package proctest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
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

// pipeDelay bounds how long a process's end is waited for after it exited,
// or after its lifetime ran out and it was sent SIGTERM: a child it left
// behind could otherwise hold the output pipe open forever.
const pipeDelay = 5 * time.Second

// Proc is a running subprocess whose output (stdout and stderr, where
// edgeproxy writes its JSON log) is collected in memory.
type Proc struct {
	Name   string
	cmd    *exec.Cmd
	log    *Output
	cancel context.CancelFunc
	done   chan struct{} // closed once Wait returned

	stopOnce sync.Once
	stopped  bool // Stop found the process still running
	killed   bool // Kill ended it, as the test meant
}

// Start runs bin with args. The process lives at most lifetime: a test that
// crashed before stopping it cannot leave it running, and on Linux the
// kernel kills it if the test binary itself dies (see killWithParent).
// When the lifetime runs out it is sent SIGTERM, and killed pipeDelay
// later.
func Start(name string, lifetime time.Duration, bin string, args ...string) (*Proc, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lifetime)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = pipeDelay
	killWithParent(cmd)
	p := &Proc{Name: name, cmd: cmd, log: NewOutput(), cancel: cancel, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		_ = cmd.Wait() // the outcome is read from ProcessState
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output is everything the process wrote so far.
func (p *Proc) Output() string { return p.log.String() }

// Stop sends SIGTERM, as an operator stopping the process would, kills it
// if it has not exited after grace, and waits for it either way. It
// reports an error unless the process was still running and then exited
// 0: a graceful stop exits 0, anything else means SIGTERM was not handled
// or the process had to be killed. Later calls report what the first did.
func (p *Proc) Stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
		default:
			p.stopped = true
			_ = p.cmd.Process.Signal(syscall.SIGTERM) // fails only if it just exited
			timer := time.NewTimer(grace)
			select {
			case <-p.done:
			case <-timer.C:
				// Stuck: SIGQUIT makes a Go program print every
				// goroutine's stack into the output the failure shows.
				_ = p.cmd.Process.Signal(syscall.SIGQUIT)
				select {
				case <-p.done:
				case <-time.After(2 * time.Second):
				}
				_ = p.cmd.Process.Kill()
			}
			timer.Stop()
		}
		p.cancel()
		<-p.done
	})
	switch st := p.cmd.ProcessState; {
	case p.killed:
		return nil
	case !p.stopped:
		return fmt.Errorf("%s exited before it was stopped: %v", p.Name, st)
	case !st.Success():
		return fmt.Errorf("%s did not exit cleanly on SIGTERM: %v", p.Name, st)
	}
	return nil
}

// Kill ends the process at once with SIGKILL, as a crash or the kernel's
// OOM killer would, and waits for it. The test meant it: the cleanup does
// not count it as a failure.
func (p *Proc) Kill() {
	p.stopOnce.Do(func() {
		p.stopped, p.killed = true, true
		_ = p.cmd.Process.Kill()
		p.cancel()
		<-p.done
	})
}

// Record is one JSON log line of a subprocess.
type Record map[string]any

// WaitLog waits until match has accepted a JSON log line of p, feeding it
// every complete line seen so far each time output arrives, so readiness
// is awaited without sleeping. It fails if the process exits or timeout
// passes first.
func (p *Proc) WaitLog(match func(Record) bool, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		text, changed := p.log.Snapshot()
		// Output arrives in arbitrary chunks; a last line without its
		// newline is read again, whole, after the next write.
		complete := text[:strings.LastIndexByte(text, '\n')+1]
		for line := range strings.Lines(complete) {
			var r Record
			if json.Unmarshal([]byte(line), &r) == nil && match(r) {
				return nil
			}
		}
		select {
		case <-changed:
		case <-p.done:
			return fmt.Errorf("%s exited: %v", p.Name, p.cmd.ProcessState)
		case <-timer.C:
			return fmt.Errorf("%s: none within %v", p.Name, timeout)
		}
	}
}

// Await is WaitLog for a test: it fails t, naming what was awaited and
// showing the output, if the line does not come.
func (p *Proc) Await(t testing.TB, what string, timeout time.Duration, match func(Record) bool) {
	t.Helper()
	if err := p.WaitLog(match, timeout); err != nil {
		t.Fatalf("waiting for %s: %v\n%s", what, err, p.Output())
	}
}

// AwaitAddr awaits the log line whose message is msg and returns the
// address in its "addr" field, failing t if it does not come within
// timeout; a demo machine says where it listens this way.
func (p *Proc) AwaitAddr(t testing.TB, msg string, timeout time.Duration) netip.AddrPort {
	t.Helper()
	var addr netip.AddrPort
	p.Await(t, msg, timeout, func(r Record) bool {
		if r["msg"] != msg {
			return false
		}
		addr = MustAddr(t, r)
		return true
	})
	return addr
}

// AwaitListening awaits the proxy's "listening" lines for every public
// port in ports and its "admin listening" line, and returns the local
// address of each public port and of the admin listener.
func (p *Proc) AwaitListening(t testing.TB, timeout time.Duration, ports ...int) (map[int]netip.AddrPort, netip.AddrPort) {
	t.Helper()
	got := map[int]netip.AddrPort{}
	var admin netip.AddrPort
	what := fmt.Sprintf("listening lines for the admin port and ports %v", ports)
	p.Await(t, what, timeout, func(r Record) bool {
		switch r["msg"] {
		case "listening":
			port, _ := r["port"].(float64)
			got[int(port)] = MustAddr(t, r)
		case "admin listening":
			admin = MustAddr(t, r)
		}
		for _, port := range ports {
			if !got[port].IsValid() {
				return false
			}
		}
		return admin.IsValid()
	})
	return got, admin
}

// Addr reads the "addr" field of a log record, where edgeproxy logs the
// address it bound. Processes listen on ports the kernel picks and say
// which, so there is no window in which another process could take a
// port chosen in advance.
func Addr(r Record) (netip.AddrPort, error) {
	s, _ := r["addr"].(string)
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf("log record %v: bad addr: %w", r, err)
	}
	return ap, nil
}

// MustAddr is Addr for a test.
func MustAddr(t testing.TB, r Record) netip.AddrPort {
	t.Helper()
	ap, err := Addr(r)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// Limits bound a process started by Run.
type Limits struct {
	Lifetime time.Duration // see Start
	Grace    time.Duration // see Stop
	// Summary picks from the output what is logged when the test failed;
	// nil logs the whole output.
	Summary func(output string) string
}

// Run starts bin with args for the rest of test t. Cleanup stops it (see
// Stop) and fails t if it exited before or not cleanly, so that no
// process outlives the test and a crash or a mishandled SIGTERM is seen.
func Run(t testing.TB, lim Limits, name, bin string, args ...string) *Proc {
	t.Helper()
	p, err := Start(name, lim.Lifetime, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(lim.Grace); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			out := p.Output()
			if lim.Summary != nil {
				out = lim.Summary(out)
			}
			t.Logf("%s output:\n%s", name, out)
		}
	})
	return p
}

// Output collects a subprocess's output, safe to read while it runs, and
// wakes waiters on each write. Suites that start other real servers
// (PostgreSQL) use it for their logs too.
type Output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

// NewOutput makes an empty Output.
func NewOutput() *Output { return &Output{changed: make(chan struct{})} }

func (l *Output) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// Snapshot returns the output so far and a channel closed at the next
// write.
func (l *Output) Snapshot() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String(), l.changed
}

func (l *Output) String() string {
	s, _ := l.Snapshot()
	return s
}

// RunCommand runs a short-lived command to its end, bounded by timeout,
// and returns its combined output. Running out of time fails the test: a
// command that hangs is a bug, not a result.
func RunCommand(t testing.TB, timeout time.Duration, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %v\n%s", bin, strings.Join(args, " "), timeout, out)
	}
	return string(out), err
}

// Metric reads one sample, named with its labels as /metrics prints them
// (`name{a="x",b="y"}`), from the admin listener at admin; found is false
// when the series is absent or the listener does not answer.
func Metric(admin, series string) (v float64, found bool) {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(b)) {
		if s, ok := strings.CutPrefix(line, series+" "); ok {
			_, err := fmt.Sscan(s, &v)
			return v, err == nil
		}
	}
	return 0, false
}

// FreePorts returns n distinct loopback ports that are free now. They are
// drawn below the kernel's ephemeral range when it leaves room: a port in
// that range can be handed to any outgoing connection, or to any process
// that listens on port 0, while it is not bound: between a reload that
// removes a port and the one that adds it back, or while a machine given
// the port boots (another test's process took one during a 20 s boot).
func FreePorts(t testing.TB, n int) []int {
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
