package server

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
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
	})
	s.drivers = map[string]driverEntry{}
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
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.runtime()
	i := slices.IndexFunc(old.Config.Apps, func(a config.App) bool { return a.Name == app })
	src := slices.IndexFunc(s.fileCfg.Apps, func(a config.App) bool { return a.Name == app })
	if i < 0 || src < 0 || s.fileCfg.Apps[src].Driver == nil {
		return // gone meanwhile
	}
	cfg := *old.Config
	cfg.Apps = slices.Clone(old.Config.Apps)
	cfg.Apps[i] = s.fileCfg.Apps[src]
	s.overlayApp(&cfg.Apps[i])
	rt, err := buildRuntime(&cfg, old, s.deps, map[string]bool{app: true})
	if err != nil {
		s.log.Error("machine state not applied", "app", app, "error", err.Error())
		return
	}
	if err := s.install(old, rt, "lifecycle", ""); err != nil {
		return
	}
	if a := rt.Snap.App(app); a != nil {
		for _, svc := range a.Services {
			svc.Waiters().Wake()
		}
	}
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
		MinRunning: minRunning, PrimaryRegion: a.PrimaryRegion}
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
	var last error
	for {
		c, err := dial(ctx, "tcp", m.Addr.String())
		if err == nil {
			c.Close()
			break
		}
		last = err
		if !sleepCtx(ctx, 20*time.Millisecond) {
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
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return fmt.Errorf("checks do not pass: %s", why)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
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
	m := s.chooseStart(rt, svc, want)
	if m == nil {
		return nil, "", nil
	}
	app := svc.App.Name
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

// chooseStart is the machine to start for want: one work may go to,
// nearest first; among equals, one not stopped by edgeproxy within the
// autostop interval and not failing to start lately, a suspended one
// (it resumes faster), then by id, so that concurrent arrivals choose
// the same one and share its start.
func (s *Server) chooseStart(rt *Runtime, svc *catalog.Service, want *upstream.Want) *catalog.Machine {
	if want == nil {
		want = &upstream.Want{}
	}
	recent := rt.Config.Proxy.AutostopInterval.D()
	now := time.Now()
	type cand struct {
		m                      *catalog.Machine
		dist                   int
		stoppedLately, failing bool
	}
	var cs []cand
	for _, m := range svc.App.Machines {
		if !m.Startable() || slices.ContainsFunc(want.Exclude, func(x *catalog.Machine) bool { return x.ID == m.ID }) ||
			(want.ForceInstance && m.ID != want.Instance) ||
			(want.ForceRegion && !slices.Contains(want.Regions, m.Region)) {
			continue
		}
		st, _ := s.life.Status(svc.App.Name, m.ID)
		cs = append(cs, cand{m: m, dist: rt.Dialer.Picker.Rank(m.Region, want),
			stoppedLately: !st.Stopped.IsZero() && now.Sub(st.Stopped) < recent,
			failing:       !st.Failed.IsZero() && now.Sub(st.Failed) < recent && st.Failed.After(st.Changed)})
	}
	if len(cs) == 0 {
		return nil
	}
	slices.SortFunc(cs, func(x, y cand) int {
		return cmp.Or(cmp.Compare(x.dist, y.dist), boolCmp(x.failing, y.failing), boolCmp(x.stoppedLately, y.stoppedLately),
			boolCmp(x.m.State != "suspended", y.m.State != "suspended"), strings.Compare(x.m.ID, y.m.ID))
	})
	return cs[0].m
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
