package server

import (
	"context"
	"errors"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/listen"
)

// Reload loads the config at path and, if it is valid, swaps in a new
// runtime: new connections and every new request use it (also on
// keep-alive connections opened before), while raw TCP connections and
// requests in flight finish on the runtime they started with. Ports that stay keep their
// listeners (no connection is refused in between), new ports open before
// the swap, removed ports stop accepting after it. An invalid config
// changes nothing; every problem is logged with file, line and key.
func (s *Server) Reload(path string) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg, notices, err := config.Load(path)
	if err != nil {
		s.reloadFailed(err)
		return err
	}
	for _, n := range notices {
		s.log.Info("config note", "file", n.File, "line", n.Line, "key", n.Key, "note", n.Msg)
	}
	s.fileCfg = cfg
	if err := s.swap(s.withFleet(cfg), "file", path); err != nil {
		return err
	}
	// A worker's machines may have changed with its file: the fleet sees
	// them as they are now (records that did not change are not written).
	if s.fleet.Load() != nil && cfg.Fleet.Worker() && cfg.Fleet.BackhaulListen != "" {
		s.wg.Go(s.publishAll)
	}
	return nil
}

// ApplyFleet makes apps, the fleet catalog's, part of the running config
// alongside the file's, through the same path as a reload.
//
// A fleet app that needs a public port this node cannot open (taken by
// another process, privileged) is left out, and the rest applies: one bad
// app must not freeze every edge's catalog.
func (s *Server) ApplyFleet(apps []config.App) error {
	return s.ApplyFleetChanges(apps, nil)
}

// ApplyFleetChanges is ApplyFleet told which apps differ from the last
// catalog applied (nil: any may). When those apps were applied before and
// only their machines changed, which is what a fleet's steady stream of
// starts, stops and cordons is, the new runtime checks and rebuilds just
// them; anything else takes the whole path.
func (s *Server) ApplyFleetChanges(apps []config.App, changed []string) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if changed != nil && s.fleetApplied {
		if ok, err := s.applyMachines(apps, changed); ok {
			s.fleetApplied = err == nil
			return err
		}
	}
	err := s.applyFleet(apps)
	s.fleetApplied = err == nil
	return err
}

// applyFleet applies apps the whole way; reloadMu is held.
func (s *Server) applyFleet(apps []config.App) error {
	for {
		s.fleetApps = apps
		err := s.swap(s.withFleet(s.fileCfg), "fleet", "")
		var be *bindError
		if !errors.As(err, &be) {
			return err
		}
		kept := apps[:0:0]
		for _, a := range apps {
			if usesPort(&a, be.port) {
				s.log.Warn("fleet app refused: this node cannot open its port", "app", a.Name, "port", be.port, "error", be.err.Error())
				s.metrics.FleetUpdates.WithLabelValues("app_config", "refused").Inc()
				continue
			}
			kept = append(kept, a)
		}
		if len(kept) == len(apps) {
			return err // the file's own port: nothing to leave out
		}
		apps = kept
	}
}

// applyMachines applies a catalog whose changed apps differ from the
// running config only in their machines, checking and rebuilding those
// apps alone. It reports false, having changed nothing, when the change is
// anything else (an app new, gone, refused before, reconfigured, or with
// a machine the config would refuse): the whole path then decides.
func (s *Server) applyMachines(apps []config.App, changed []string) (bool, error) {
	old := s.runtime()
	replace := make(map[int]config.App, len(changed))
	for _, name := range changed {
		i, ok := s.fleetIndex[name]
		j, found := slices.BinarySearchFunc(apps, name, func(a config.App, n string) int { return strings.Compare(a.Name, n) })
		if !ok || !found || !config.SameButMachines(&old.Config.Apps[i], &apps[j]) || len(config.MachineProblems(&apps[j])) > 0 {
			return false, nil
		}
		replace[i] = apps[j]
	}
	rt, err := s.rebuildApps(old, replace)
	if err != nil {
		return false, nil
	}
	s.fleetApps = apps
	return true, s.install(old, rt, "fleet", "")
}

// rebuildApps builds a runtime for old's config with the apps at the
// positions in replace replaced, rebuilding those apps alone: the way a
// change to some apps' machines (the fleet's, a driver's) is applied.
func (s *Server) rebuildApps(old *Runtime, replace map[int]config.App) (*Runtime, error) {
	cfg := *old.Config
	cfg.Apps = slices.Clone(old.Config.Apps)
	changed := make(map[string]bool, len(replace))
	for i, a := range replace {
		cfg.Apps[i] = a
		changed[a.Name] = true
	}
	return buildRuntime(&cfg, old, s.deps, changed)
}

// usesPort reports whether app a listens on public port p.
func usesPort(a *config.App, p int) bool {
	for _, svc := range a.AllServices() {
		for _, port := range svc.Ports {
			if lo, hi := port.Range(); p >= lo && p <= hi {
				return true
			}
		}
	}
	return false
}

// swap builds a runtime for cfg and puts it in place; reloadMu is held.
func (s *Server) swap(cfg *config.Config, source, path string) error {
	old := s.runtime()
	cfg = s.overlay(cfg)
	rt, err := BuildRuntime(cfg, old, s.deps)
	if err != nil {
		s.reloadFailed(err)
		return err
	}
	if err := s.install(old, rt, source, path); err != nil {
		return err
	}
	s.fleetIndex = fleetIndex(cfg, len(s.fileCfg.Apps))
	return nil
}

// fleetIndex maps each fleet app of cfg, those after the file's own, to
// its position.
func fleetIndex(cfg *config.Config, fromFile int) map[string]int {
	idx := make(map[string]int, max(0, len(cfg.Apps)-fromFile))
	for i := fromFile; i < len(cfg.Apps); i++ {
		idx[cfg.Apps[i].Name] = i
	}
	return idx
}

// install puts rt, built to replace old, in place; reloadMu is held.
func (s *Server) install(old, rt *Runtime, source, path string) error {
	cfg := rt.Config
	s.warnRestartOnly(old.Config, cfg)
	s.tickets.SetPeriods(cfg.Proxy.SessionTicketRotation.D(), cfg.Proxy.SessionTicketLifetime.D())

	// Open new ports first: a port that cannot be bound fails the reload
	// before anything changed.
	opened := map[int]net.Listener{}
	for _, public := range rt.Routes.Ports() {
		if s.hasPort(public) {
			continue
		}
		ln, err := s.bind(rt, public)
		if err != nil {
			for _, l := range opened {
				l.Close()
			}
			s.reloadFailed(err)
			return err
		}
		opened[public] = ln
	}
	// Kept ports that gain the http handler need an HTTP server before
	// the new runtime routes connections to it.
	s.mu.Lock()
	for public, ps := range s.ports {
		if pr := rt.Routes.Port(public); pr != nil && pr.Handlers.HTTP && ps.http == nil {
			s.startHTTP(rt, pr, ps)
		}
	}
	s.mu.Unlock()

	s.rt.Store(rt)
	s.manageCerts(rt)
	s.health.ReconcileApps(rt.Snap, rt.changed)
	if s.lifeStarted {
		s.syncLifecycle(rt)
	}
	s.permits.SetLimits(permitLimits(cfg.Limits))
	for public, ln := range opened {
		s.addPort(rt, public, ln)
	}
	if err := s.syncUDP(rt); err != nil {
		// The runtime is in force; a UDP port that cannot be bound is
		// logged and tried again at the next reload.
		s.log.Error("udp port not opened", "error", err.Error())
	}
	// Removed ports stop accepting; their connections finish on the old
	// runtime and are drained like any other.
	s.mu.Lock()
	var removed []*portServer
	for public, ps := range s.ports {
		if rt.Routes.Port(public) == nil {
			removed = append(removed, ps)
			delete(s.ports, public)
		}
	}
	s.mu.Unlock()
	for _, ps := range removed {
		listen.Park(ps.ln)
		s.log.Info("port closed by reload", "port", ps.public)
		if ps.http != nil {
			timeout := rt.Config.Proxy.DrainTimeout.D()
			s.wg.Go(func() { s.shutdownHTTP(ps, timeout) })
		}
	}
	s.metrics.ConfigReloads.WithLabelValues("ok").Inc()
	if source == "file" {
		s.log.Info("config reloaded", "file", path, "apps", len(cfg.Apps), "ports", len(rt.Routes.Ports()))
	} else {
		s.log.Debug("fleet catalog applied", "apps", len(cfg.Apps), "ports", len(rt.Routes.Ports()))
	}
	return nil
}

// withFleet is the file's config with the fleet's apps added. A fleet app
// the config refuses (a bad service, a hostname or port taken) is left out
// and logged; the rest apply. Each round validates the whole config once,
// so a catalog of thousands of apps costs a few validations, not one per
// app.
func (s *Server) withFleet(file *config.Config) *config.Config {
	apps := s.fleetApps
	own := func(a config.App) bool { return publishes(file, &a) }
	if slices.ContainsFunc(file.Apps, own) {
		// The fleet's copy of an app this node publishes (its drivers or
		// its worker run the machines) is this node's own: the file's is
		// the one to serve.
		apps = slices.DeleteFunc(slices.Clone(apps), func(fa config.App) bool {
			return slices.ContainsFunc(file.Apps, func(a config.App) bool { return own(a) && a.Name == fa.Name })
		})
	}
	for len(apps) > 0 {
		cfg, problems := config.WithApps(file, apps)
		if len(problems) == 0 {
			return cfg
		}
		bad := map[int]string{}
		for _, p := range problems {
			if i, ok := config.ProblemApp(p); ok && i >= len(file.Apps) {
				if _, seen := bad[i-len(file.Apps)]; !seen {
					bad[i-len(file.Apps)] = p.Msg
				}
			}
		}
		if len(bad) == 0 {
			// Reported against the file's own apps only: leave the fleet
			// out rather than guess.
			s.log.Warn("fleet catalog refused: it clashes with the config file", "problem", problems[0].Msg)
			return file
		}
		kept := make([]config.App, 0, len(apps)-len(bad))
		for i, a := range apps {
			if msg, refused := bad[i]; refused {
				s.log.Warn("fleet app refused", "app", a.Name, "problem", msg)
				s.metrics.FleetUpdates.WithLabelValues("app_config", "refused").Inc()
				continue
			}
			kept = append(kept, a)
		}
		apps = kept
	}
	return file
}

func (s *Server) reloadFailed(err error) {
	s.metrics.ConfigReloads.WithLabelValues("failed").Inc()
	var ce *config.Error
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			s.log.Error("reload refused: config problem; the running config stays in force",
				"file", p.File, "line", p.Line, "key", p.Key, "problem", p.Msg)
		}
		return
	}
	s.log.Error("reload refused; the running config stays in force", "error", err.Error())
}

// warnRestartOnly names settings a reload cannot change: they belong to
// listeners and process-wide machinery set up at start.
func (s *Server) warnRestartOnly(old, cfg *config.Config) {
	changed := func(key string, differ bool) {
		if differ {
			s.log.Warn("setting changed in the config takes effect at the next restart", "key", key)
		}
	}
	changed("proxy.bind", old.Proxy.Bind != cfg.Proxy.Bind)
	changed("admin", old.Admin != cfg.Admin)
	changed("log.access_log", old.Log != cfg.Log)
	changed("tracing", old.Tracing != cfg.Tracing)
	changed("fleet", !reflect.DeepEqual(old.Fleet, cfg.Fleet))
	changed("acme", !reflect.DeepEqual(old.ACME, cfg.ACME))
	// An open UDP port keeps its table's bound and idle time; a port
	// opened later, or at the next restart, takes the new ones.
	changed("limits.max_udp_flows", old.Limits.MaxUDPFlows != cfg.Limits.MaxUDPFlows)
	changed("proxy.udp_idle_timeout", old.Proxy.UDPIdleTimeout != cfg.Proxy.UDPIdleTimeout)
	changed("tripwire", old.Tripwire.Threshold != cfg.Tripwire.Threshold || old.Tripwire.Dir != cfg.Tripwire.Dir)
	changed("proxy.response_header_timeout", old.Proxy.ResponseHeaderTimeout != cfg.Proxy.ResponseHeaderTimeout)
	for public := range s.portsSnapshot() {
		if old.Proxy.LocalPort(public) != cfg.Proxy.LocalPort(public) {
			changed("proxy.port_map."+itoa(public), true)
		}
	}
}

func (s *Server) hasPort(public int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ports[public]
	return ok
}

func (s *Server) portsSnapshot() map[int]*portServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]*portServer, len(s.ports))
	for k, v := range s.ports {
		out[k] = v
	}
	return out
}

// shutdownHTTP drains one port's HTTP server: idle keep-alive connections
// close at once, HTTP/2 connections get GOAWAY, active requests finish
// within timeout.
func (s *Server) shutdownHTTP(ps *portServer, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// HTTP/1.1 connections are the proxy's own: idle ones close now,
	// busy ones after their response.
	s.mu.Lock()
	var hs []*httpConn
	for _, c := range s.active {
		c.mu.Lock()
		if c.ps == ps && c.httpc != nil {
			hs = append(hs, c.httpc)
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	for _, h := range hs {
		h.drain()
	}
	if err := ps.http.Shutdown(ctx); err != nil {
		ps.http.Close()
	}
}

// Handover drains after a new process has taken over the sockets. The
// admin socket is shared with that process too, so this one stops
// answering it at once: /ready and /v1/reload must reach the process that
// is serving, not the one leaving.
func (s *Server) Handover() error {
	if s.admin != nil {
		s.admin.Close()
	}
	return s.Drain()
}

// Drain stops accepting, lets in-flight requests and connections finish
// within the config's drain_timeout (idle keep-alive connections close at
// once, HTTP/2 clients get GOAWAY), then closes whatever is left and
// everything the server started.
func (s *Server) Drain() error {
	timeout := s.runtime().Config.Proxy.DrainTimeout.D()
	if n := s.fleet.Swap(nil); n != nil {
		// No catalog change may open ports while they close; the one
		// applied last serves the requests that finish.
		n.close()
	}
	if s.admin != nil {
		s.admin.SetReady(false)
	}
	s.log.Info("draining", "timeout", timeout.String())
	ports := s.portsSnapshot()
	for _, ps := range ports {
		ps.ln.Close()
	}
	// UDP flows have nothing to finish that a client would not resend:
	// the next process (an upgrade) or nobody takes the datagrams now.
	s.closeUDP()
	if n := s.closeWebSockets(); n > 0 {
		s.log.Info("asked WebSocket tunnels to close", "tunnels", n)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, ps := range ports {
			if ps.http != nil {
				s.wg.Go(func() { s.shutdownHTTP(ps, timeout) })
			}
		}
		deadline := time.Now().Add(timeout)
		for s.activeCount() > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}()
	<-done
	if n := s.activeCount(); n > 0 {
		s.log.Warn("drain timeout: closing the connections still open", "connections", n)
	} else {
		s.log.Info("drained")
	}
	return s.Close()
}

// closeWebSockets adds a going-away close frame to every WebSocket tunnel.
func (s *Server) closeWebSockets() int {
	s.mu.Lock()
	var hs []*httpConn
	for _, c := range s.active {
		c.mu.Lock()
		if c.httpc != nil {
			hs = append(hs, c.httpc)
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	n := 0
	for _, h := range hs {
		if h.GoAway() {
			n++
		}
		h.drain()
	}
	return n
}

func (s *Server) activeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.active)
}

// WatchConfig reloads the config whenever its file changes, checking
// once a second, until ctx ends. Polling needs no platform support and a
// second is quick enough for a human editing a file.
func (s *Server) WatchConfig(ctx context.Context, path string) {
	stat := func() (time.Time, int64) {
		fi, err := os.Stat(path)
		if err != nil {
			return time.Time{}, -1
		}
		return fi.ModTime(), fi.Size()
	}
	lastMod, lastSize := stat()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			mod, size := stat()
			if size < 0 || (mod.Equal(lastMod) && size == lastSize) {
				continue
			}
			lastMod, lastSize = mod, size
			s.log.Info("config file changed; reloading", "file", path)
			_ = s.Reload(path)
		}
	}
}

// ActiveConns counts the client connections open now, parked ones
// included.
func (s *Server) ActiveConns() int { return s.activeCount() }
