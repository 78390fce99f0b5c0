//go:build linux

package ops_test

// TestMain builds the proxy once (without -race: the suite measures the
// proxy, the race detector watches this package) and doubles as the
// supervisor of the proxy's process tree, see supervise.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

const (
	// supervisorEnv, when set in the environment of this test binary,
	// makes it run as the supervisor instead of running tests; its value
	// is the supervisor's lifetime.
	supervisorEnv = "EDGEPROXY_OPS_SUPERVISOR"
	// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER of prctl(2).
	prSetChildSubreaper = 36
)

// bin is the binary TestMain built.
var bin proctest.Bin

func TestMain(m *testing.M) {
	if life := os.Getenv(supervisorEnv); life != "" {
		os.Exit(supervise(life, os.Args[1:]))
	}
	os.Exit(bin.Main(m, "ops", true))
}

func binary(t *testing.T) string {
	t.Helper()
	return bin.Path(t, "the operations suite runs the proxy under load for about a minute; skipped in -short mode")
}

// supervise runs the proxy command args in a new process group and stays
// its subreaper: every generation a graceful upgrade starts is re-parented
// here when its parent exits, so its exit status can be reported and no
// generation outlives the test. Events go to stdout, one per line:
// "started PID", "exited PID STATUS" (STATUS is the exit code, or -N for
// signal N). When stdin reaches EOF (the test closed it, or died), on
// SIGTERM or when the lifetime ends, the whole group is killed. It returns once no child is left.
func supervise(lifetime string, args []string) int {
	life, err := time.ParseDuration(lifetime)
	if err != nil || len(args) == 0 {
		fmt.Printf("error bad supervisor arguments %q %q\n", lifetime, args)
		return 2
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		fmt.Printf("error prctl(PR_SET_CHILD_SUBREAPER): %v\n", e)
		return 2
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		fmt.Printf("error %v\n", err)
		return 2
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, supervisorEnv+"=") {
			env = append(env, kv)
		}
	}
	p, err := os.StartProcess(args[0], args, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{null, os.Stderr, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fmt.Printf("error start: %v\n", err)
		return 2
	}
	fmt.Printf("started %d\n", p.Pid)
	pgid := p.Pid
	var once sync.Once
	killAll := func(why string) {
		once.Do(func() {
			if syscall.Kill(-pgid, syscall.SIGKILL) == nil {
				fmt.Printf("killed group %d: %s\n", pgid, why)
			}
		})
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		killAll("stdin closed")
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		killAll("SIGTERM")
	}()
	time.AfterFunc(life, func() { killAll("lifetime " + lifetime + " over") })
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.ECHILD):
			return 0
		case err != nil:
			fmt.Printf("error wait4: %v\n", err)
			killAll("wait4 failed")
			return 2
		}
		status := ws.ExitStatus()
		if ws.Signaled() {
			status = -int(ws.Signal())
		}
		fmt.Printf("exited %d %d\n", pid, status)
	}
}

// supervisor is the test's side of supervise.
type supervisor struct {
	cmd   *exec.Cmd
	stdin *os.File // closing it kills the group
	done  chan struct{}

	mu      sync.Mutex
	started int
	exits   map[int]int
	events  []string
	changed chan struct{}
}

// startSupervised runs the proxy command under a supervisor, with the
// proxy's stdout and stderr going to logFile. Cleanup stops the supervisor
// (killing whatever is left); callers stop the proxy gracefully first.
func startSupervised(t *testing.T, lifetime time.Duration, logFile *os.File, args ...string) *supervisor {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), supervisorEnv+"="+lifetime.String())
	cmd.Stdin = pr
	cmd.Stderr = logFile
	// No Pdeathsig: the kernel closes the pipe's write end whenever this
	// process dies, and that EOF is what stops the supervisor.
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &supervisor{cmd: cmd, stdin: pw, done: make(chan struct{}), exits: map[int]int{}, changed: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start supervisor: %v", err)
	}
	pr.Close()
	go s.read(out)
	t.Cleanup(func() {
		s.stdin.Close()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-s.done
		}
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("supervisor events: %q", s.eventList())
		}
	})
	return s
}

func (s *supervisor) read(out io.Reader) {
	defer close(s.done)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		s.mu.Lock()
		s.events = append(s.events, sc.Text())
		switch {
		case len(f) == 2 && f[0] == "started":
			s.started, _ = strconv.Atoi(f[1])
		case len(f) == 3 && f[0] == "exited":
			pid, _ := strconv.Atoi(f[1])
			s.exits[pid], _ = strconv.Atoi(f[2])
		}
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
}

func (s *supervisor) eventList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.events...)
}

// state returns what is known so far and a channel closed on the next
// event.
func (s *supervisor) state() (started int, exits map[int]int, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	exits = make(map[int]int, len(s.exits))
	for k, v := range s.exits {
		exits[k] = v
	}
	return s.started, exits, s.changed
}

// waitExit waits until pid was reaped and returns its status.
func (s *supervisor) waitExit(pid int, timeout time.Duration) (int, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		_, exits, changed := s.state()
		if st, ok := exits[pid]; ok {
			return st, nil
		}
		select {
		case <-changed:
		case <-s.done:
			if _, exits, _ := s.state(); hasKey(exits, pid) {
				return exits[pid], nil
			}
			return 0, fmt.Errorf("supervisor ended before pid %d was reaped", pid)
		case <-timer.C:
			return 0, fmt.Errorf("pid %d still running after %v", pid, timeout)
		}
	}
}

func hasKey(m map[int]int, k int) bool {
	_, ok := m[k]
	return ok
}
