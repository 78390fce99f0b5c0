package machines

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// drainWait bounds how long a machine picked to stop is given, cordoned,
// for its work in flight to finish.
const drainWait = 10 * time.Second

// AppSpec is one app whose machines a driver starts and stops.
type AppSpec struct {
	Name   string
	Driver Driver
	// KillSignal and KillTimeout stop a machine.
	KillSignal   syscall.Signal
	KillTimeout  time.Duration
	StartTimeout time.Duration
	// Autostop is "", "stop" or "suspend"; every Interval per region.
	Autostop      string
	Interval      time.Duration
	MinRunning    int
	PrimaryRegion string
	Machines      []MachineSpec
}

// MachineSpec is one machine, with the state the config gives it: a
// machine written started is started when the controller first sees it.
type MachineSpec struct {
	Machine
	Initial State
}

// Status is what the controller knows of a machine now.
type Status struct {
	State State
	// Known is false until the driver has answered for the machine.
	Known bool
	// Cordoned while it is being stopped: no new work.
	Cordoned bool
	// Changed is the last transition; Stopped the last stop or suspend
	// by edgeproxy; Failed the last start that did not make it routable.
	Changed, Stopped, Failed time.Time
	// Why the last start failed.
	Why string
}

// Hooks are what the controller needs of the proxy around it.
type Hooks struct {
	// Apply rebuilds the runtime so that app's machines route by their
	// status now. It is never called with the controller's lock held.
	Apply func(app string)
	// Ready returns once m takes work (its port accepts, its checks
	// pass) or ctx ends, with why not.
	Ready func(ctx context.Context, app string, m Machine) error
	// Load is the work on a machine now, across the fleet, and whether
	// some service of it is at or above its soft limit.
	Load func(app, id string) (inFlight int64, overSoft bool)
	// Lease, if set, is asked before an autostop pass stops a machine of
	// app in region: in a fleet, nodes that drive the same app take
	// turns, so that each decision is made once. Nil: always granted.
	Lease func(app, region string, ttl time.Duration) bool
}

// Controller starts machines when work needs them and stops them when
// idle, for every app with a driver on this node.
type Controller struct {
	log     *slog.Logger
	metrics *telemetry.Metrics
	hooks   Hooks
	// drain is how long a machine picked to stop is given for its work
	// in flight (drainWait; tests shorten it).
	drain time.Duration

	mu     sync.Mutex
	apps   map[string]*appLife
	closed bool
	wg     sync.WaitGroup
}

type appLife struct {
	name string
	// spec is replaced by Sync: read it under Controller.mu, and hand
	// goroutines the copy they start with.
	spec   AppSpec
	status map[string]*Status
	starts map[string]*startOp
	cancel context.CancelFunc // ends the app's loop and its starts
	ctx    context.Context
}

type startOp struct {
	done chan struct{}
	err  error
}

// NewController returns a controller with no app; Sync gives it some.
func NewController(log *slog.Logger, metrics *telemetry.Metrics, hooks Hooks) *Controller {
	return &Controller{log: log, metrics: metrics, hooks: hooks, apps: map[string]*appLife{}, drain: drainWait}
}

// Sync makes the controller's apps those of specs: new apps and machines
// are asked for their state (and started, if written started), machines
// gone are stopped, an app whose driver changed starts afresh. It does
// not wait for any of that.
func (c *Controller) Sync(specs []AppSpec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	seen := map[string]bool{}
	for _, spec := range specs {
		seen[spec.Name] = true
		a := c.apps[spec.Name]
		if a != nil && a.spec.Driver != spec.Driver {
			c.dropLocked(a, "removed")
			a = nil
		}
		if a == nil {
			ctx, cancel := context.WithCancel(context.Background())
			a = &appLife{name: spec.Name, spec: spec, status: map[string]*Status{}, starts: map[string]*startOp{}, ctx: ctx, cancel: cancel}
			c.apps[spec.Name] = a
			if spec.Autostop != "" && spec.Interval > 0 {
				c.wg.Go(func() { c.autostopLoop(a, spec.Interval) })
			}
		}
		old := a.spec
		a.spec = spec
		for _, m := range spec.Machines {
			if a.status[m.ID] == nil {
				a.status[m.ID] = &Status{State: Stopped}
				c.wg.Go(func() { c.discover(a, spec, m) })
			}
		}
		for _, m := range old.Machines {
			if !slices.ContainsFunc(spec.Machines, func(x MachineSpec) bool { return x.ID == m.ID }) {
				delete(a.status, m.ID)
				c.wg.Go(func() { c.stopGone(a, spec, m.Machine) })
			}
		}
	}
	for name, a := range c.apps {
		if !seen[name] {
			c.dropLocked(a, "removed")
		}
	}
}

// dropLocked ends an app: its loop and starts stop, its driver closes
// (exec stops its processes). c.mu is held.
func (c *Controller) dropLocked(a *appLife, reason string) {
	delete(c.apps, a.name)
	a.cancel()
	running := a.running()
	driver := a.spec.Driver
	c.wg.Go(func() {
		err := driver.Close()
		if err != nil {
			c.log.Warn("machine driver: close", "app", a.name, "error", err.Error())
		}
		for range running {
			c.count(a, "stop", reason, err)
		}
	})
}

// running counts the machines started or starting; c.mu is held.
func (a *appLife) running() int {
	n := len(a.starts)
	for id, s := range a.status {
		if s.State == Started && a.starts[id] == nil {
			n++
		}
	}
	return n
}

// discover asks the driver for a new machine's state, and starts it if
// the config wrote it started and it is not.
func (c *Controller) discover(a *appLife, spec AppSpec, m MachineSpec) {
	ctx, cancel := context.WithTimeout(a.ctx, spec.StartTimeout)
	st, err := spec.Driver.State(ctx, m.Machine)
	cancel()
	if err != nil {
		c.log.Warn("machine driver: state unknown; taken as stopped", "app", a.name, "machine", m.ID, "error", err.Error())
		st = Stopped
	}
	if st == Started {
		// Running already (the API says so): routable once it answers.
		rctx, rcancel := context.WithTimeout(a.ctx, spec.StartTimeout)
		err = c.hooks.Ready(rctx, a.name, m.Machine)
		rcancel()
		if err != nil {
			st = Stopped
		}
	}
	c.mu.Lock()
	s := a.status[m.ID]
	if s != nil && !s.Known {
		s.Known, s.State, s.Changed = true, routable(st), time.Now()
	}
	c.mu.Unlock()
	c.hooks.Apply(a.name)
	if m.Initial == Started && routable(st) != Started {
		if err := c.Start(a.ctx, a.name, m.ID); err != nil && a.ctx.Err() == nil {
			c.log.Warn("machine written started did not start", "app", a.name, "machine", m.ID, "error", err.Error())
		}
	}
}

// routable folds a driver's state into the catalog's three.
func routable(s State) State {
	switch s {
	case Started, Suspended:
		return s
	}
	return Stopped
}

// Status is machine id of app as the controller knows it.
func (c *Controller) Status(app, id string) (Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.apps[app]; a != nil {
		if s := a.status[id]; s != nil {
			return *s, true
		}
	}
	return Status{}, false
}

// Start starts machine id of app and returns once it takes work, or why
// it will not. Concurrent callers share one start; a caller that leaves
// does not end it, since the next arrivals need the machine too.
func (c *Controller) Start(ctx context.Context, app, id string) error {
	c.mu.Lock()
	a := c.apps[app]
	if a == nil {
		c.mu.Unlock()
		return perr.New(perr.MachineDriverFailed, fmt.Errorf("app %s has no machine driver on this node", app))
	}
	op := a.starts[id]
	if s := a.status[id]; op == nil && s != nil && s.State == Started && !s.Cordoned {
		// Started already (work that looked at an older catalog asks
		// again): nothing to do, and nothing to count.
		c.mu.Unlock()
		return nil
	}
	if op == nil {
		spec, ok := a.machine(id)
		if !ok {
			c.mu.Unlock()
			return perr.New(perr.MachineStartFailed, fmt.Errorf("app %s has no machine %s", app, id))
		}
		op = &startOp{done: make(chan struct{})}
		a.starts[id] = op
		aspec := a.spec
		c.wg.Go(func() { c.runStart(a, aspec, spec.Machine, op) })
	}
	c.mu.Unlock()
	select {
	case <-op.done:
		return op.err
	case <-ctx.Done():
		return perr.New(perr.ClientClosed, ctx.Err())
	}
}

// Has reports whether app's machines are driven here.
func (c *Controller) Has(app string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apps[app] != nil
}

// Begin starts machine id of app, if it is not starting already, without
// waiting: for the arrivals to come.
func (c *Controller) Begin(app, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.apps[app]
	if a == nil || a.starts[id] != nil {
		return
	}
	if s := a.status[id]; s != nil && s.State == Started && !s.Cordoned {
		return
	}
	spec, ok := a.machine(id)
	if !ok {
		return
	}
	op := &startOp{done: make(chan struct{})}
	a.starts[id] = op
	aspec := a.spec
	c.wg.Go(func() { c.runStart(a, aspec, spec.Machine, op) })
}

func (a *appLife) machine(id string) (MachineSpec, bool) {
	for _, m := range a.spec.Machines {
		if m.ID == id {
			return m, true
		}
	}
	return MachineSpec{}, false
}

// runStart does one start: the driver, then readiness, then the status
// and a rebuild so that work routes to the machine.
func (c *Controller) runStart(a *appLife, spec AppSpec, m Machine, op *startOp) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(a.ctx, spec.StartTimeout)
	defer cancel()
	err := spec.Driver.Start(ctx, m)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = perr.New(perr.MachineStartTimeout, fmt.Errorf("machine %s: the driver did not start it within %v: %w", m.ID, spec.StartTimeout, err))
	}
	if err == nil {
		err = c.ready(ctx, spec, m)
	}
	result := "ok"
	c.mu.Lock()
	s := a.status[m.ID]
	if s != nil {
		s.Known = true
		if err == nil {
			s.State, s.Changed, s.Why = Started, time.Now(), ""
		} else {
			s.Failed, s.Why = time.Now(), err.Error()
		}
	}
	c.mu.Unlock()
	if err != nil {
		result = "failed"
		if pe, ok := perr.As(err); ok && pe.Code == perr.MachineStartTimeout {
			result = "timeout"
		}
		c.log.Warn("machine start failed", "app", a.name, "machine", m.ID, "error", err.Error(), "took", time.Since(began).String())
	} else {
		c.log.Info("machine started", "app", a.name, "machine", m.ID, "took", time.Since(began).String())
		// The runtime routes to the machine before the start is over:
		// until then arrivals join this start rather than, seeing the
		// machine still stopped, begin another.
		c.hooks.Apply(a.name)
	}
	c.mu.Lock()
	delete(a.starts, m.ID)
	c.mu.Unlock()
	if c.metrics != nil {
		c.metrics.MachineStarts.WithLabelValues(a.name, result).Inc()
		if err == nil {
			c.metrics.MachineStartDuration.WithLabelValues(a.name).Observe(time.Since(began).Seconds())
		}
	}
	op.err = err
	close(op.done)
}

// ready waits for the machine to take work, watching that its driver does
// not report it gone meanwhile (a command that exits at once fails the
// start now, not at the timeout).
func (c *Controller) ready(ctx context.Context, spec AppSpec, m Machine) error {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
			if st, err := spec.Driver.State(rctx, m); err == nil && (st == Failed || st == Stopped) {
				why := "the machine stopped while starting"
				if w, ok := spec.Driver.(interface{ Why(Machine) string }); ok && w.Why(m) != "" {
					why += ": " + w.Why(m)
				}
				cancel(errors.New(why))
				return
			}
		}
	}()
	err := c.hooks.Ready(rctx, spec.Name, m)
	cancel(nil)
	<-watchDone
	if err == nil {
		return nil
	}
	if cause := context.Cause(rctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		return perr.New(perr.MachineStartFailed, fmt.Errorf("machine %s: %w", m.ID, cause))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return perr.New(perr.MachineStartTimeout, fmt.Errorf("machine %s not routable within %v: %w", m.ID, spec.StartTimeout, err))
	}
	return perr.New(perr.MachineStartFailed, fmt.Errorf("machine %s: %w", m.ID, err))
}

// stopGone stops a machine that left the config.
func (c *Controller) stopGone(a *appLife, spec AppSpec, m Machine) {
	ctx, cancel := context.WithTimeout(context.Background(), spec.KillTimeout+10*time.Second)
	defer cancel()
	err := spec.Driver.Stop(ctx, m, spec.KillSignal, spec.KillTimeout)
	c.count(a, "stop", "removed", err)
}

func (c *Controller) count(a *appLife, action, reason string, err error) {
	if c.metrics == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "failed"
	}
	c.metrics.MachineStops.WithLabelValues(a.name, action, reason, result).Inc()
}

// autostopLoop looks for idle machines every interval until the app ends.
func (c *Controller) autostopLoop(a *appLife, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
		c.autostop(a)
	}
}

// autostop stops at most one machine per region: where started machines
// exceed those over their soft limit plus one, the least loaded; a
// region's lone machine only with no load; never below MinRunning in the
// primary region.
func (c *Controller) autostop(a *appLife) {
	c.mu.Lock()
	spec := a.spec
	type cand struct {
		m    Machine
		load int64
	}
	byRegion := map[string][]cand{}
	over := map[string]int{}
	for _, ms := range spec.Machines {
		s := a.status[ms.ID]
		if s == nil || s.State != Started || s.Cordoned || a.starts[ms.ID] != nil {
			continue
		}
		n, overSoft := c.hooks.Load(spec.Name, ms.ID)
		byRegion[ms.Region] = append(byRegion[ms.Region], cand{ms.Machine, n})
		if overSoft {
			over[ms.Region]++
		}
	}
	c.mu.Unlock()
	var picked []Machine
	others := false
	for region, cs := range byRegion {
		started := len(cs)
		excess := started - (over[region] + 1)
		slices.SortFunc(cs, func(x, y cand) int {
			if x.load != y.load {
				return int(x.load - y.load)
			}
			return strings.Compare(x.m.ID, y.m.ID)
		})
		lone := started == 1 && cs[0].load == 0
		if excess < 1 && !lone {
			continue
		}
		if region == spec.PrimaryRegion && started-1 < spec.MinRunning {
			continue
		}
		if c.hooks.Lease != nil && !c.hooks.Lease(spec.Name, region, 2*spec.Interval) {
			// Another node decides for this region now; what it stops,
			// this node learns from the driver.
			others = true
			continue
		}
		picked = append(picked, cs[0].m)
	}
	if others {
		c.refresh(a, spec)
	}
	for _, m := range picked {
		c.wg.Go(func() { c.stopIdle(a, spec, m) })
	}
}

// refresh asks the driver for the state of the app's machines that are
// not starting, and applies what changed: another node driving the same
// app may have stopped or started some.
func (c *Controller) refresh(a *appLife, spec AppSpec) {
	changed := false
	for _, m := range spec.Machines {
		ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
		st, err := spec.Driver.State(ctx, m.Machine)
		cancel()
		if err != nil {
			continue
		}
		c.mu.Lock()
		if s := a.status[m.ID]; s != nil && a.starts[m.ID] == nil && !s.Cordoned && s.State != routable(st) {
			s.State, s.Changed, changed = routable(st), time.Now(), true
		}
		c.mu.Unlock()
	}
	if changed {
		c.hooks.Apply(a.name)
	}
}

// stopIdle cordons m, gives its work in flight up to drainWait, then
// stops or suspends it.
func (c *Controller) stopIdle(a *appLife, spec AppSpec, m Machine) {
	if !c.setCordon(a, m.ID, true) {
		return
	}
	c.hooks.Apply(a.name)
	deadline := time.Now().Add(c.drain)
	for time.Now().Before(deadline) {
		if n, _ := c.hooks.Load(a.name, m.ID); n == 0 || !Sleep(a.ctx, 25*time.Millisecond) {
			break
		}
	}
	action := "stop"
	ctx, cancel := context.WithTimeout(a.ctx, spec.KillTimeout+10*time.Second)
	defer cancel()
	var err error
	state := Stopped
	if spec.Autostop == "suspend" {
		action, state = "suspend", Suspended
		err = spec.Driver.Suspend(ctx, m)
	} else {
		err = spec.Driver.Stop(ctx, m, spec.KillSignal, spec.KillTimeout)
	}
	c.mu.Lock()
	if s := a.status[m.ID]; s != nil {
		s.Cordoned = false
		if err == nil {
			s.State, s.Changed, s.Stopped = state, time.Now(), time.Now()
		}
	}
	c.mu.Unlock()
	c.count(a, action, "idle", err)
	if err != nil {
		c.log.Warn("idle machine not stopped", "app", a.name, "machine", m.ID, "action", action, "error", err.Error())
	} else {
		c.log.Info("idle machine stopped", "app", a.name, "machine", m.ID, "action", action)
	}
	c.hooks.Apply(a.name)
}

// setCordon marks a started machine cordoned (or not); false if it is
// not there, not started, or starting.
func (c *Controller) setCordon(a *appLife, id string, on bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := a.status[id]
	if s == nil || s.State != Started || a.starts[id] != nil {
		return false
	}
	s.Cordoned = on
	return true
}

// Close ends every app's loop and stops every machine the drivers run
// (exec's processes), then waits for all of it.
func (c *Controller) Close() {
	c.mu.Lock()
	c.closed = true
	for _, a := range c.apps {
		c.dropLocked(a, "shutdown")
	}
	c.mu.Unlock()
	c.wg.Wait()
}
