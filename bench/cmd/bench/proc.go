package main

import (
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
	"time"
)

// proc is a process the driver started. Each runs in a process group of
// its own (its pgid is its pid), so stopping it also stops what it forked
// (nginx's worker) and a Ctrl-C at the terminal reaches only the driver,
// which then stops everything it started.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, valid after done
}

var (
	liveMu sync.Mutex
	live   = map[*proc]struct{}{}
)

// startProc runs args pinned to core (taskset -c), or unpinned if core < 0.
func startProc(name string, core int, env []string, stdin io.Reader, stdout, stderr io.Writer, args ...string) (*proc, error) {
	if core >= 0 {
		args = append([]string{"taskset", "-c", strconv.Itoa(core)}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	// Pdeathsig: if the driver dies without cleaning up, the kernel kills
	// its direct children anyway.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	liveMu.Lock()
	defer liveMu.Unlock()
	if stopping {
		return nil, errors.New("interrupted")
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	live[p] = struct{}{}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then
// SIGKILLs the group. Safe to call more than once.
func (p *proc) stop(grace time.Duration) {
	defer func() {
		liveMu.Lock()
		delete(live, p)
		liveMu.Unlock()
	}()
	if p.exited() {
		return // reaped: its pid may belong to someone else by now
	}
	pgid := p.pid()
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	// Whatever of the group is left (a worker whose master is gone).
	syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// cpuSeconds is the user+system CPU of an exited process (from wait4's
// rusage); NaN when it is not known.
func (p *proc) cpuSeconds() float64 {
	st := p.cmd.ProcessState
	if st == nil {
		return nan
	}
	return (st.UserTime() + st.SystemTime()).Seconds()
}

var stopping bool

// removeOnSignal is the temporary directory to delete when interrupted.
var removeOnSignal string

// stopAll stops every process still running; used on exit and on signals.
func stopAll() {
	liveMu.Lock()
	stopping = true
	ps := make([]*proc, 0, len(live))
	for p := range live {
		ps = append(ps, p)
	}
	liveMu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { p.stop(2 * time.Second) })
	}
	wg.Wait()
}

// handleSignals stops every started process on SIGINT, SIGTERM or SIGHUP
// and exits.
func handleSignals() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nbench: %v: stopping every process started\n", s)
		stopAll()
		if removeOnSignal != "" {
			os.RemoveAll(removeOnSignal)
		}
		os.Exit(130)
	}()
}

// --- /proc readers ---

var clkTck = 100.0

func readProcCPUTicks(pid int) (ticks uint64, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	f, err := procStatFields(string(b))
	if err != nil {
		return 0, 0, err
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return ut + st, ppid, nil
}

// tree returns pid and all its descendants.
func tree(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		_, ppid, err := readProcCPUTicks(n)
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], n)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeCPU is the CPU seconds (user+system) used so far by pid and its
// descendants.
func treeCPU(pid int) float64 {
	var sum uint64
	for _, p := range tree(pid) {
		t, _, err := readProcCPUTicks(p)
		if err == nil {
			sum += t
		}
	}
	return float64(sum) / clkTck
}

// treeMem sums VmRSS and VmHWM (KiB) over pid and its descendants.
func treeMem(pid int) (rss, hwm int64) {
	for _, p := range tree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		r, h := parseStatusKiB(string(b))
		rss += r
		hwm += h
	}
	return rss, hwm
}

func readCores() (coreTimes, map[int]coreTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return coreTimes{}, nil, err
	}
	return parseProcStat(string(b))
}

func initClkTck() {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return
	}
	if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
		clkTck = v
	}
}

// machineBusy samples /proc/stat over d and returns how many cores' worth
// of CPU the machine was busy.
func machineBusy(d time.Duration) (float64, error) {
	a, cores, err := readCores()
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	b, _, err := readCores()
	if err != nil {
		return 0, err
	}
	return busyPct(a, b) / 100 * float64(max(1, len(cores))), nil
}

// raiseNoFile lifts the open-file limit for the driver and so for every
// process it starts (10,000 idle connections need more than 1024).
func raiseNoFile(want uint64) uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	// Always call Setrlimit, even when the limit is already high enough:
	// the Go runtime raised the soft limit at start and would otherwise
	// restore the original one for the processes started by os/exec.
	want = max(want, r.Cur)
	n := syscall.Rlimit{Cur: want, Max: max(want, r.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err == nil {
		return want
	}
	n = syscall.Rlimit{Cur: r.Max, Max: r.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err == nil {
		return r.Max
	}
	return r.Cur
}
