package machines

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// ExecConfig is one app's exec driver: how to run each of its machines.
type ExecConfig struct {
	Command []string
	Env     map[string]string
	Dir     string
	LogDir  string
	// KillSignal and KillTimeout are the app's, used by Close.
	KillSignal  syscall.Signal
	KillTimeout time.Duration
	Log         *slog.Logger
}

// ExecDriver runs each machine of one app as a child process: start runs
// the command, stop sends the kill signal to its process group and kills
// the group after the timeout, suspend is SIGSTOP and resume SIGCONT.
// Processes are children of edgeproxy and die with it.
type ExecDriver struct {
	cfg ExecConfig

	mu     sync.Mutex
	procs  map[string]*proc // by machine id
	closed bool
}

// proc is one machine's process, current or last.
type proc struct {
	cmd     *exec.Cmd
	state   State
	exited  chan struct{} // closed when the process has exited
	why     string        // how it last exited, for errors
	changed chan struct{} // closed and replaced at each state change
	log     string        // its output file
}

// NewExecDriver checks c and returns a driver with no machine running.
func NewExecDriver(c ExecConfig) (*ExecDriver, error) {
	if len(c.Command) == 0 || c.Command[0] == "" {
		return nil, errors.New("exec driver: no command")
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if !strings.ContainsRune(c.Command[0], filepath.Separator) {
		// Looked up in PATH once, not at every start: a cold start
		// waits for it. (A path with a separator is taken as it is,
		// relative to Dir.)
		path, err := exec.LookPath(c.Command[0])
		if err != nil {
			return nil, fmt.Errorf("exec driver: command: %w", err)
		}
		c.Command = append([]string{path}, c.Command[1:]...)
	}
	if err := os.MkdirAll(c.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("exec driver: log_dir: %w", err)
	}
	return &ExecDriver{cfg: c, procs: map[string]*proc{}}, nil
}

// set changes p's state and wakes whoever waits on it; d.mu is held.
func (p *proc) set(s State) {
	if p.state == s {
		return
	}
	p.state = s
	close(p.changed)
	p.changed = make(chan struct{})
}

// Start runs the machine's command, or resumes it if suspended.
func (d *ExecDriver) Start(ctx context.Context, m Machine) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return perr.New(perr.MachineDriverFailed, errors.New("exec driver closed"))
	}
	p := d.procs[m.ID]
	if p != nil {
		switch p.state {
		case Started, Starting:
			return nil
		case Suspended:
			if err := signalGroup(p.cmd, syscall.SIGCONT); err != nil {
				return perr.New(perr.MachineStartFailed, fmt.Errorf("resume %s: %w", m.ID, err))
			}
			p.set(Started)
			return nil
		case Stopping:
			return perr.New(perr.MachineStartFailed, fmt.Errorf("machine %s is stopping", m.ID))
		}
	}
	logPath := filepath.Join(d.cfg.LogDir, m.App+"-"+m.ID+".log")
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return perr.New(perr.MachineStartFailed, fmt.Errorf("machine %s: log file: %w", m.ID, err))
	}
	defer out.Close() // the child holds its own copy
	cmd := &exec.Cmd{Path: d.cfg.Command[0], Args: d.cfg.Command}
	if !filepath.IsAbs(cmd.Path) && d.cfg.Dir != "" {
		cmd.Path = filepath.Join(d.cfg.Dir, cmd.Path)
	}
	cmd.Dir = d.cfg.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(),
		"PORT="+strconv.Itoa(int(m.Addr.Port())),
		"FLY_MACHINE_ID="+m.ID,
		"FLY_REGION="+m.Region,
		"FLY_APP_NAME="+m.App,
		"FLY_PROCESS_GROUP=app",
	)
	for k, v := range d.cfg.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return perr.New(perr.MachineStartFailed, fmt.Errorf("machine %s: %w", m.ID, err))
	}
	np := &proc{cmd: cmd, state: Started, exited: make(chan struct{}), changed: make(chan struct{}), log: logPath}
	if p != nil {
		close(p.changed) // wake waiters of the old process: its state is gone
	}
	d.procs[m.ID] = np
	d.cfg.Log.Info("machine process started", "app", m.App, "machine", m.ID, "pid", cmd.Process.Pid, "log", logPath)
	go d.reap(m, np)
	return nil
}

// reap waits for the process to exit and records how.
func (d *ExecDriver) reap(m Machine, p *proc) {
	err := p.cmd.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	p.why = "exited"
	if err != nil {
		p.why = err.Error()
	}
	if p.state == Stopping {
		p.set(Stopped)
	} else {
		// It ended on its own: a crash, or a command that does not stay up.
		p.set(Failed)
		d.cfg.Log.Warn("machine process exited on its own", "app", m.App, "machine", m.ID, "status", p.why, "log", p.log)
	}
	close(p.exited)
}

// Stop sends signal to the machine's process group and kills the group if
// it has not exited after timeout.
func (d *ExecDriver) Stop(ctx context.Context, m Machine, signal syscall.Signal, timeout time.Duration) error {
	d.mu.Lock()
	p := d.procs[m.ID]
	if p == nil || p.state == Stopped || p.state == Failed {
		d.mu.Unlock()
		return nil
	}
	suspended := p.state == Suspended
	p.set(Stopping)
	d.mu.Unlock()
	signalGroup(p.cmd, signal)
	if suspended {
		// A stopped process cannot act on the signal until it runs again.
		signalGroup(p.cmd, syscall.SIGCONT)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	signalGroup(p.cmd, syscall.SIGKILL)
	// SIGKILL cannot be ignored; the wait is bounded all the same, for a
	// process stuck in the kernel.
	select {
	case <-p.exited:
		return nil
	case <-time.After(5 * time.Second):
		return perr.New(perr.MachineDriverFailed, fmt.Errorf("machine %s did not exit after SIGKILL", m.ID))
	}
}

// Suspend freezes the machine's process group.
func (d *ExecDriver) Suspend(ctx context.Context, m Machine) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.procs[m.ID]
	if p == nil || p.state != Started {
		return perr.New(perr.MachineDriverFailed, fmt.Errorf("machine %s is not running", m.ID))
	}
	if err := signalGroup(p.cmd, syscall.SIGSTOP); err != nil {
		return perr.New(perr.MachineDriverFailed, fmt.Errorf("suspend %s: %w", m.ID, err))
	}
	p.set(Suspended)
	return nil
}

// State is the machine's process state; a machine never run is stopped.
func (d *ExecDriver) State(_ context.Context, m Machine) (State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.procs[m.ID]; p != nil {
		return p.state, nil
	}
	return Stopped, nil
}

// Why says how the machine's process last exited, and where its output is.
func (d *ExecDriver) Why(m Machine) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.procs[m.ID]; p != nil && p.why != "" {
		return fmt.Sprintf("process %s; its output is in %s", p.why, p.log)
	}
	return ""
}

// Wait returns once the machine is in state s.
func (d *ExecDriver) Wait(ctx context.Context, m Machine, s State) error {
	for {
		d.mu.Lock()
		p := d.procs[m.ID]
		if (p == nil && s == Stopped) || (p != nil && p.state == s) {
			d.mu.Unlock()
			return nil
		}
		var changed chan struct{}
		if p != nil {
			changed = p.changed
		}
		d.mu.Unlock()
		if changed == nil {
			// Never run: nothing will change until a Start; look again.
			if !Sleep(ctx, 50*time.Millisecond) {
				return ctx.Err()
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// Close stops every machine the driver runs, with the app's kill signal
// and timeout, all at once, so that none outlives edgeproxy.
func (d *ExecDriver) Close() error {
	d.mu.Lock()
	d.closed = true
	var ids []string
	for id, p := range d.procs {
		if p.state != Stopped && p.state != Failed {
			ids = append(ids, id)
		}
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Go(func() {
			errs[i] = d.Stop(context.Background(), Machine{ID: id}, d.cfg.KillSignal, d.cfg.KillTimeout)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// signalGroup signals the process group cmd leads (the machine's command
// and whatever it started), falling back to the process alone.
func signalGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd.Process == nil {
		return errors.New("not started")
	}
	if err := syscall.Kill(-cmd.Process.Pid, sig); err == nil {
		return nil
	}
	return cmd.Process.Signal(sig)
}
