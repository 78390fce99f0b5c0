// Package machines starts, stops and suspends the machines behind apps,
// through a driver chosen per app: exec runs each machine as a local
// process; machines-api asks a Machines API. The lifecycle on top (start
// on demand, stop when idle) is in this package too; drivers only act and
// report.
package machines

import (
	"context"
	"net/netip"
	"syscall"
	"time"
)

// State is a machine's state as a driver reports it. The first three are
// the catalog's; the others are transitions a driver may report.
type State string

const (
	Started   State = "started"
	Stopped   State = "stopped"
	Suspended State = "suspended"
	Starting  State = "starting"
	Stopping  State = "stopping"
	// Failed: the machine exited or could not start; starting it again
	// is allowed.
	Failed State = "failed"
)

// Machine is what a driver needs to know about one machine.
type Machine struct {
	App, ID, Region string
	// Addr is where the machine's first service listens: the port a
	// process started by exec gets in $PORT.
	Addr netip.AddrPort
}

// Driver acts on machines. Every method may block up to ctx's deadline
// and returns errors that carry a perr code (PM01 for a machine that
// could not start, PM03 for a driver that could not be asked).
type Driver interface {
	// Start starts a stopped machine, or resumes a suspended one, and
	// returns once the driver reports it started (not yet reachable:
	// the caller waits for its port or its checks). Starting a started
	// machine is not an error.
	Start(ctx context.Context, m Machine) error
	// Stop sends signal, and after timeout kills the machine. Stopping a
	// stopped machine is not an error.
	Stop(ctx context.Context, m Machine, signal syscall.Signal, timeout time.Duration) error
	// Suspend freezes a started machine so that Start resumes it.
	Suspend(ctx context.Context, m Machine) error
	// State asks for the machine's current state.
	State(ctx context.Context, m Machine) (State, error)
	// Wait returns once the machine is in state s, or ctx ends.
	Wait(ctx context.Context, m Machine, s State) error
	// Close releases what the driver holds. exec stops every machine it
	// started, so that no process outlives edgeproxy.
	Close() error
}

// Sleep pauses for d unless ctx ends first, and reports whether ctx is
// still alive: the waits of drivers and of the lifecycle around them all
// end when their machine's app does.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
