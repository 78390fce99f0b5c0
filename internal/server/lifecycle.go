package server

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/machines"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// driverEntry is an app's driver and the settings it was made from: a
// reload that leaves them as they were keeps the driver, and its machines.
type driverEntry struct {
	key    string
	driver machines.Driver
}

// newLifecycle makes the controller that starts and stops the machines
// of apps with a driver.
func (s *Server) newLifecycle() {
	s.life = machines.NewController(s.log, s.metrics, machines.Hooks{
		Apply: s.applyLifecycle,
		Ready: s.machineReady,
		Load:  s.machineLoad,
		Lease: s.lifeLease,
	})
	s.drivers = map[string]driverEntry{}
	s.remoteStarts = map[string]*remoteOp{}
}

// overlay is cfg with the machines of apps that have a driver in the
// state the controller knows them in (stopped until it knows): their
// written state is where they start from, not where they are.
func (s *Server) overlay(cfg *config.Config) *config.Config {
	if !slices.ContainsFunc(cfg.Apps, func(a config.App) bool { return a.Driver != nil }) {
		return cfg
	}
	out := *cfg
	out.Apps = slices.Clone(cfg.Apps)
	for i := range out.Apps {
		if out.Apps[i].Driver != nil {
			s.overlayApp(&out.Apps[i])
		}
	}
	return &out
}

// overlayApp rewrites a's machines (a copy of them) by the controller.
func (s *Server) overlayApp(a *config.App) {
	a.Machines = slices.Clone(a.Machines)
	for j := range a.Machines {
		m := &a.Machines[j]
		st, ok := s.life.Status(a.Name, m.ID)
		if !ok {
			m.State = string(machines.Stopped)
			continue
		}
		m.State = string(st.State)
		m.Cordoned = m.Cordoned || st.Cordoned
	}
}

// applyLifecycle rebuilds app alone, with its machines as the controller
// has them now, and wakes the work waiting on its services: a machine
// started for them is there to take it.
func (s *Server) applyLifecycle(app string) {
	if s.rebuildLifecycle(app) {
		// Before the start that asked for this is over: a node that
		// asked for it reads the machine started when it is answered.
		s.publishLifecycle(app)
	}
}

// rebuildLifecycle is applyLifecycle's rebuild, under reloadMu.
func (s *Server) rebuildLifecycle(app string) bool {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if !s.portsBound {
		// A rebuild now would open the ports Start is about to: Start
		// applies the change once they are open.
		if s.lifePending == nil {
			s.lifePending = map[string]bool{}
		}
		s.lifePending[app] = true
		return false
	}
	old := s.runtime()
	i := slices.IndexFunc(old.Config.Apps, func(a config.App) bool { return a.Name == app })
	src := slices.IndexFunc(s.fileCfg.Apps, func(a config.App) bool { return a.Name == app })
	if i < 0 || src < 0 || s.fileCfg.Apps[src].Driver == nil {
		return false // gone meanwhile
	}
	a := s.fileCfg.Apps[src]
	s.overlayApp(&a)
	rt, err := s.rebuildApps(old, map[int]config.App{i: a})
	if err != nil {
		s.log.Error("machine state not applied", "app", app, "error", err.Error())
		return false
	}
	if err := s.install(old, rt, "lifecycle", ""); err != nil {
		return false
	}
	if a := rt.Snap.App(app); a != nil {
		for _, svc := range a.Services {
			svc.Waiters().Wake()
		}
	}
	return true
}

// syncLifecycle hands the controller the apps with a driver in rt, making
// a driver for each whose settings are new. reloadMu is held.
func (s *Server) syncLifecycle(rt *Runtime) {
	cfg := rt.Config
	var specs []machines.AppSpec
	seen := map[string]bool{}
	for i := range cfg.Apps {
		a := &cfg.Apps[i]
		if a.Driver == nil {
			continue
		}
		d, err := s.driverFor(cfg, a)
		if err != nil {
			s.log.Error("machine driver not started: the app's machines keep their written state", "app", a.Name, "error", err.Error())
			continue
		}
		seen[a.Name] = true
		specs = append(specs, s.appSpec(cfg, rt.Snap.App(a.Name), a, d))
	}
	for name := range s.drivers {
		if !seen[name] {
			delete(s.drivers, name) // the controller closes it
		}
	}
	s.life.Sync(specs)
}

// driverFor is a's driver: the one it had, if its settings are the same.
func (s *Server) driverFor(cfg *config.Config, a *config.App) (machines.Driver, error) {
	sig, _ := config.Signal(a.KillSignal)
	key := fmt.Sprintf("%+v|%v|%v", *a.Driver, a.KillSignal, a.KillTimeout)
	if e, ok := s.drivers[a.Name]; ok && e.key == key {
		return e.driver, nil
	}
	d := a.Driver
	var drv machines.Driver
	var err error
	switch d.Type {
	case "exec":
		drv, err = machines.NewExecDriver(machines.ExecConfig{Command: d.Command, Env: d.Env,
			Dir: cfg.Resolve(cmp.Or(d.Dir, ".")), LogDir: cfg.Resolve(d.LogDir),
			KillSignal: sig, KillTimeout: a.KillTimeout.D(), Log: s.log})
	case "machines-api":
		var token []byte
		if token, err = os.ReadFile(cfg.Resolve(d.TokenFile)); err != nil {
			return nil, fmt.Errorf("token_file: %w", err)
		}
		drv, err = machines.NewAPIDriver(machines.APIConfig{URL: d.URL, Token: strings.TrimSpace(string(token)),
			App: d.APIApp, RequestTimeout: d.RequestTimeout.D(), Retries: *d.Retries})
	default:
		err = fmt.Errorf("unknown driver type %q", d.Type)
	}
	if err != nil {
		return nil, err
	}
	s.drivers[a.Name] = driverEntry{key: key, driver: drv}
	return drv, nil
}

// appSpec is what the controller needs of app a, whose catalog entry is ca.
func (s *Server) appSpec(cfg *config.Config, ca *catalog.App, a *config.App, d machines.Driver) machines.AppSpec {
	sig, _ := config.Signal(a.KillSignal)
	_, autostop, minRunning := a.Lifecycle()
	spec := machines.AppSpec{Name: a.Name, Driver: d, KillSignal: sig, KillTimeout: a.KillTimeout.D(),
		StartTimeout: a.Driver.StartTimeout.D(), Autostop: autostop, Interval: cfg.Proxy.AutostopInterval.D(),
		MinRunning: minRunning, PrimaryRegion: cmp.Or(a.PrimaryRegion, cfg.Proxy.Region)}
	internal := 0
	if svcs := a.AllServices(); len(svcs) > 0 {
		internal = svcs[0].InternalPort
	}
	// Written state, from the file: the running config's is the overlay.
	written := map[string]string{}
	if i := slices.IndexFunc(s.fileCfg.Apps, func(x config.App) bool { return x.Name == a.Name }); i >= 0 {
		for _, m := range s.fileCfg.Apps[i].Machines {
			written[m.ID] = m.State
		}
	}
	for _, m := range ca.Machines {
		spec.Machines = append(spec.Machines, machines.MachineSpec{
			Machine: machines.Machine{App: a.Name, ID: m.ID, Region: m.Region, Addr: m.AddrFor(internal)},
			Initial: machines.State(written[m.ID]),
		})
	}
	return spec
}

// machineReady returns once m accepts connections on its first service's
// port and passes every check its services have, or ctx ends.
func (s *Server) machineReady(ctx context.Context, app string, m machines.Machine) error {
	dial := s.deps.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	// Every millisecond between the machine listening and this noticing
	// is added to the cold start the client waits out: poll often while
	// a quick boot may end, less as the boot goes on. A refused connect
	// on loopback or a LAN costs microseconds.
	var last error
	began := time.Now()
	for {
		c, err := dial(ctx, "tcp", m.Addr.String())
		if err == nil {
			c.Close()
			break
		}
		last = err
		if !machines.Sleep(ctx, readyPoll(time.Since(began))) {
			return fmt.Errorf("port %d does not accept: %w", m.Addr.Port(), last)
		}
	}
	for {
		why := ""
		if a := s.runtime().Snap.App(app); a != nil {
			if cm := a.Machine(m.ID); cm != nil {
				for _, svc := range a.Services {
					if why = s.health.Ready(ctx, svc, cm); why != "" {
						break
					}
				}
			}
		}
		if why == "" {
			return nil
		}
		if !machines.Sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("checks do not pass: %s", why)
		}
	}
}

// machineLoad is the work on machine id of app now, fleet-wide, and
// whether one of its services is at or above its soft limit.
func (s *Server) machineLoad(app, id string) (int64, bool) {
	a := s.runtime().Snap.App(app)
	if a == nil {
		return 0, false
	}
	m := a.Machine(id)
	if m == nil {
		return 0, false
	}
	var n int64
	over := false
	for _, svc := range a.Services {
		v := svc.Load(m).Value()
		n += v
		if v >= int64(svc.Soft) {
			over = true
		}
	}
	return n, over
}

// autostart is the picker's hook: it starts one of svc's stopped machines
// for work that want describes. See upstream.Picker.Autostart.
func (s *Server) autostart(ctx context.Context, svc *catalog.Service, want *upstream.Want, wait bool) (*catalog.Service, string, error) {
	rt := s.runtime()
	if cur := s.currentService(svc); cur != svc {
		// The work looked at an older catalog, which a start may have
		// replaced meanwhile: it looks again at the current one first.
		if wait {
			return cur, "", nil
		}
		svc = cur
	}
	m := s.chooseStart(rt, svc, want)
	if m == nil {
		return nil, "", nil
	}
	app := svc.App.Name
	if !s.life.Has(app) {
		if m.Owner == "" {
			return nil, "", nil // nothing here or elsewhere starts it
		}
		return s.remoteStart(ctx, svc, m, wait)
	}
	if !wait {
		s.life.Begin(app, m.ID)
		return nil, "", nil
	}
	s.metrics.StartWaits.WithLabelValues(app).Inc()
	waiting := s.metrics.StartWaiting.WithLabelValues(app)
	waiting.Inc()
	defer waiting.Dec()
	if err := s.life.Start(ctx, app, m.ID); err != nil {
		if pe, ok := perr.As(err); ok {
			return nil, "", pe
		}
		return nil, "", perr.New(perr.MachineStartFailed, err)
	}
	return s.currentService(svc), m.ID, nil
}

// chooseStart is the machine to start for want, among those work may go
// to (see firstToStart for the order).
func (s *Server) chooseStart(rt *Runtime, svc *catalog.Service, want *upstream.Want) *catalog.Machine {
	if want == nil {
		want = &upstream.Want{}
	}
	recent := rt.Config.Proxy.AutostopInterval.D()
	now := time.Now()
	var cs []startCand
	for _, m := range svc.Machines {
		if !m.Startable() || slices.ContainsFunc(want.Exclude, func(x *catalog.Machine) bool { return x.ID == m.ID }) ||
			(want.ForceInstance && m.ID != want.Instance) ||
			(want.ForceRegion && !slices.Contains(want.Regions, m.Region)) {
			continue
		}
		st, _ := s.life.Status(svc.App.Name, m.ID)
		cs = append(cs, startCand{m: m, dist: rt.Dialer.Picker.Rank(m.Region, want),
			stoppedLately: !st.Stopped.IsZero() && now.Sub(st.Stopped) < recent,
			failing:       !st.Failed.IsZero() && now.Sub(st.Failed) < recent && st.Failed.After(st.Changed)})
	}
	return firstToStart(cs)
}

// startCand is a machine that could be started, with what orders it.
type startCand struct {
	m                      *catalog.Machine
	dist                   int
	stoppedLately, failing bool
}

// firstToStart is the machine to start among cs (nil if none): nearest;
// then not failing to start lately; then not stopped lately (a machine
// stopped moments ago is avoided while others can serve); then suspended
// (it resumes faster); then by id, so that concurrent arrivals choose the
// same one.
func firstToStart(cs []startCand) *catalog.Machine {
	if len(cs) == 0 {
		return nil
	}
	best := slices.MinFunc(cs, func(x, y startCand) int {
		return cmp.Or(cmp.Compare(x.dist, y.dist), boolCmp(x.failing, y.failing), boolCmp(x.stoppedLately, y.stoppedLately),
			boolCmp(x.m.State != "suspended", y.m.State != "suspended"), strings.Compare(x.m.ID, y.m.ID))
	})
	return best.m
}

// boolCmp orders false before true.
func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// currentService is svc as the runtime in force now has it.
func (s *Server) currentService(svc *catalog.Service) *catalog.Service {
	a := s.runtime().Snap.App(svc.App.Name)
	if a == nil || svc.Index >= len(a.Services) {
		return svc
	}
	return a.Services[svc.Index]
}

// readyPoll spaces the connects that watch a starting machine's port,
// by how long it has been booting: 0.5 ms for the first 200 ms (a quick
// boot is where a millisecond shows), 2 ms to 2 s, then 10 ms.
func readyPoll(booting time.Duration) time.Duration {
	switch {
	case booting < 200*time.Millisecond:
		return 500 * time.Microsecond
	case booting < 2*time.Second:
		return 2 * time.Millisecond
	}
	return 10 * time.Millisecond
}

// remoteStartTimeout bounds a start another node asks of this one, and
// this node's wait for one it asks of another.
const remoteStartTimeout = 2 * time.Minute

// startOwned starts, for another node, a machine this node's driver runs.
func (s *Server) startOwned(ctx context.Context, app, id string) error {
	if !s.life.Has(app) {
		return perr.New(perr.MachineDriverFailed, fmt.Errorf("app %s is not driven by this node", app))
	}
	return s.life.Start(ctx, app, id)
}

// lifeLease is the controller's lease hook: in a fleet, the lease of the
// app's region in the fleet store; alone, always granted.
func (s *Server) lifeLease(app, region string, ttl time.Duration) bool {
	n := s.fleet.Load()
	if n == nil || n.store == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ok, err := n.store.Lease(ctx, "autostop."+app+"."+region, n.node, ttl)
	if err != nil {
		// The store is unreachable: skip the pass rather than risk two
		// deciders. Machines stay up a little longer; nothing breaks.
		s.log.Warn("autostop: lease not taken; this pass is skipped", "app", app, "region", region, "error", err.Error())
		return false
	}
	return ok
}

// published is what this node last wrote to the fleet for the apps its
// drivers run, so that only changes are written.
type published struct {
	mu       sync.Mutex
	apps     map[string]string               // app → its record, as written
	machines map[string]*fleet.MachineRecord // app/id → record
}

// publishLifecycle writes app (when its config changed) and its machines
// (those whose state changed) to the fleet: other nodes route to them,
// and ask this node to start them. Workers are the source of truth for
// their machines.
func (s *Server) publishLifecycle(app string) {
	n := s.fleet.Load()
	if n == nil || n.store == nil {
		return
	}
	rt := s.runtime()
	i := slices.IndexFunc(rt.Config.Apps, func(a config.App) bool { return a.Name == app })
	if i < 0 || !publishes(rt.Config, &rt.Config.Apps[i]) {
		return
	}
	a := &rt.Config.Apps[i]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p := &s.pub
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.apps == nil {
		p.apps, p.machines = map[string]string{}, map[string]*fleet.MachineRecord{}
	}
	rec := &fleet.AppRecord{Name: a.Name, Hostnames: a.Hostnames, Services: a.Services, HTTPService: a.HTTPService, Owner: "node:" + n.node}
	if b, _ := json.Marshal(rec); p.apps[app] != string(b) {
		if err := n.store.PutApp(ctx, rec); err != nil {
			s.log.Warn("fleet: app not published", "app", app, "error", err.Error())
			return
		}
		p.apps[app] = string(b)
	}
	for _, m := range a.Machines {
		key := app + "/" + m.ID
		old := p.machines[key]
		if old != nil && old.State == m.State && old.Cordoned == m.Cordoned && old.Address == m.Address && old.Region == m.Region {
			continue
		}
		mr := &fleet.MachineRecord{ID: m.ID, App: app, Region: m.Region, Address: m.Address, Ports: m.Ports,
			State: m.State, Cordoned: m.Cordoned, Owner: n.node, ProcessGroup: m.ProcessGroup}
		if old != nil {
			mr.Version = old.Version
		}
		if err := n.store.PutMachine(ctx, mr); err != nil {
			s.log.Warn("fleet: machine state not published", "app", app, "machine", m.ID, "error", err.Error())
			continue
		}
		p.machines[key] = mr
	}
}

// publishAll publishes every app this node runs machines of.
func (s *Server) publishAll() {
	cfg := s.runtime().Config
	for i := range cfg.Apps {
		if publishes(cfg, &cfg.Apps[i]) {
			s.publishLifecycle(cfg.Apps[i].Name)
		}
	}
}

// publishes reports whether this node is the source of truth for a's
// machines, and so publishes them with itself as owner: it drives them,
// or it is a worker with a backhaul (its file's machines are the ones it
// runs, reached by edges through it).
func publishes(cfg *config.Config, a *config.App) bool {
	return a.Driver != nil || (cfg.Fleet.Worker() && cfg.Fleet.BackhaulListen != "")
}

// remoteStart asks the node that owns m to start it, once at a time per
// machine from this node, and with wait, waits for the answer and then
// for this node's catalog to show it started (the owner publishes that
// before it answers).
func (s *Server) remoteStart(ctx context.Context, svc *catalog.Service, m *catalog.Machine, wait bool) (*catalog.Service, string, error) {
	n := s.fleet.Load()
	if n == nil {
		return nil, "", perr.New(perr.MachineDriverFailed, fmt.Errorf("machine %s is started by node %s, and this node is not in the fleet now", m.ID, m.Owner))
	}
	app := svc.App.Name
	key := app + "/" + m.ID
	s.remoteMu.Lock()
	op := s.remoteStarts[key]
	if op == nil {
		op = &remoteOp{done: make(chan struct{})}
		s.remoteStarts[key] = op
		token := s.runtime().Config.AdminToken()
		go func() {
			rctx, cancel := context.WithTimeout(context.Background(), remoteStartTimeout)
			defer cancel()
			op.err = fleet.RequestStart(rctx, n.nc, m.Owner, app, m.ID, token)
			s.remoteMu.Lock()
			delete(s.remoteStarts, key)
			s.remoteMu.Unlock()
			close(op.done)
		}()
	}
	s.remoteMu.Unlock()
	if !wait {
		return nil, "", nil
	}
	select {
	case <-op.done:
	case <-ctx.Done():
		return nil, "", perr.New(perr.ClientClosed, ctx.Err())
	}
	if op.err != nil {
		return nil, "", op.err
	}
	// The owner wrote the machine started before it answered; this
	// node's watcher applies it within a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cur := s.currentService(svc)
		if cm := cur.App.Machine(m.ID); cm != nil && cm.Started() {
			return cur, m.ID, nil
		}
		if time.Now().After(deadline) {
			return nil, "", perr.New(perr.MachineStartTimeout, fmt.Errorf("node %s started machine %s, but its record did not reach this node within 5s", m.Owner, m.ID))
		}
		if !machines.Sleep(ctx, 5*time.Millisecond) {
			return nil, "", perr.New(perr.ClientClosed, ctx.Err())
		}
	}
}

// remoteOp is a start this node asked another for.
type remoteOp struct {
	done chan struct{}
	err  error
}
