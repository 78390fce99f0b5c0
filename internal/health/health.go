// Package health owns the health-check runner: for every service with
// tcp_checks or http_checks it probes each started machine on the
// service's internal port and records the verdict in the catalog's
// per-machine Health, which routing reads. It never starts or stops
// machines; it only takes failing ones out of routing and brings them back.
//
// One prober goroutine runs per (check, machine). Reconcile keeps a prober
// whose check, machine and address are unchanged across a reload, so a
// reload neither restarts the grace period nor forgets consecutive counts.
package health

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// Options configures a Checker.
type Options struct {
	Log     *slog.Logger       // nil: discard
	Metrics *telemetry.Metrics // nil: none
	// Dial, if set, replaces net.Dialer.DialContext for probes (tests
	// inject latency / failures).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Connected, if set, is told how long each probe's connect took and
	// the region of the machine it reached: checks reach every machine,
	// so they keep the round-trip estimate of quiet regions current.
	Connected func(region string, took time.Duration)
	// Elsewhere, if set, names machines another node checks: those its
	// worker runs, whose addresses only the worker can reach. The
	// worker refuses work for one that fails its checks, and the edge
	// tries another; here they count as healthy.
	Elsewhere func(m *catalog.Machine) bool
}

// Checker runs the health checks of the current catalog snapshot.
type Checker struct {
	log       *slog.Logger
	metrics   *telemetry.Metrics
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	connected func(region string, took time.Duration)
	elsewhere func(*catalog.Machine) bool

	// mu serializes Reconcile and Close; probers is only touched under it.
	mu      sync.Mutex
	probers map[key]*prober
	closed  bool

	// gaugeMu orders writes of the healthy gauge: the writer reads the
	// current verdicts under it, so the last write always shows the last
	// state even when two checks of one machine flip it at once. slots
	// lists the series that exist, so a prober finishing after its machine
	// left cannot bring a deleted series back.
	gaugeMu sync.Mutex
	slots   map[slot]slotInfo
}

// key identifies a prober. Everything a probe depends on is in it, so a
// prober with an unchanged key can keep running across a reload.
type key struct {
	app     string
	port    int // the service's internal port
	index   int // the check's position in the service's Checks
	check   string
	machine string
	addr    netip.AddrPort
}

// slot is one machine of one service: the unit the healthy gauge reports.
type slot struct {
	app     string
	port    int
	machine string
}

type slotInfo struct {
	m    *catalog.Machine
	svcs []*catalog.Service
}

func (k key) slot() slot { return slot{k.app, k.port, k.machine} }

// New returns a Checker running no checks until the first Reconcile.
func New(o Options) *Checker {
	c := &Checker{log: o.Log, metrics: o.Metrics, dial: o.Dial, connected: o.Connected, elsewhere: o.Elsewhere, probers: map[key]*prober{}, slots: map[slot]slotInfo{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.dial == nil {
		c.dial = (&net.Dialer{}).DialContext
	}
	return c
}

// Reconcile makes the running probes match snap: one prober per check and
// started machine of every service with checks. Probers whose key is
// unchanged keep running; the others stop. Machines no check covers any
// more are healthy again.
func (c *Checker) Reconcile(snap *catalog.Snapshot) { c.ReconcileApps(snap, nil) }

// ReconcileApps is Reconcile for a snapshot that differs from the last
// one reconciled only in the apps named in changed (nil: any may): the
// other apps' probers, verdicts and gauges are left as they are, so a
// machine change in a catalog of thousands costs its app's checks only.
func (c *Checker) ReconcileApps(snap *catalog.Snapshot, changed map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	want, slots, unchecked := plan(snap, changed, c.elsewhere)

	// Stop vanished probers and wait for them first: a probe still in
	// flight must not overwrite the verdicts cleared below.
	var stopped []*prober
	for k, p := range c.probers {
		if want[k] == nil && (changed == nil || changed[k.app]) {
			p.cancel()
			stopped = append(stopped, p)
			delete(c.probers, k)
		}
	}
	for _, p := range stopped {
		<-p.done
	}
	for k, t := range want {
		if p := c.probers[k]; p != nil {
			// Same check on the same address: keep it, but point it at the
			// new snapshot's services (the region may have changed, or the
			// catalog may have built a fresh Health).
			p.target.Store(t)
			continue
		}
		p := c.newProber(k, t)
		c.probers[k] = p
		ctx, cancel := context.WithCancel(context.Background())
		p.cancel = cancel
		go p.run(ctx)
	}
	c.setSlots(slots, changed)

	// A check that no longer exists must not keep its machine out of
	// routing. A check at the same index that changed keeps the old
	// verdict until the new one decides, as a reload does for load.
	for _, p := range stopped {
		si, ok := slots[p.key.slot()]
		if !ok {
			continue
		}
		for _, svc := range si.svcs {
			if p.key.index < len(svc.Checks) {
				continue
			}
			if h := svc.Health(si.m); h != nil && h.Set(p.key.index, "") {
				c.changed(svc, si.m, p.check.Name(), true, "check removed")
			}
		}
	}
	for _, u := range unchecked {
		if h := u.svc.Health(u.m); h != nil && h.Reset() {
			c.changed(u.svc, u.m, "", true, "not checked any more")
		}
	}
}

type svcMachine struct {
	svc *catalog.Service
	m   *catalog.Machine
}

// plan lists the probers snap needs, the gauge series they feed, and the
// machines of services that no check covers.
// render is a check's config as a stable string: two reloads of the same
// check render the same, so its prober keeps running. The grace period is
// rendered by value (it is a pointer in the config).
func render(chk catalog.Check) string {
	grace := chk.Grace()
	chk.GracePeriod = nil
	return fmt.Sprintf("%+v grace=%v", chk, grace)
}

func plan(snap *catalog.Snapshot, changed map[string]bool, elsewhere func(*catalog.Machine) bool) (map[key]*target, map[slot]slotInfo, []svcMachine) {
	want := map[key]*target{}
	slots := map[slot]slotInfo{}
	var unchecked []svcMachine
	if snap == nil {
		return want, slots, nil
	}
	apps := snap.Apps
	if changed != nil {
		apps = make([]*catalog.App, 0, len(changed))
		for name := range changed {
			if a := snap.App(name); a != nil {
				apps = append(apps, a)
			}
		}
	}
	for _, app := range apps {
		for _, svc := range app.Services {
			for _, m := range svc.Machines {
				if len(svc.Checks) == 0 || !m.Started() || (elsewhere != nil && elsewhere(m)) {
					unchecked = append(unchecked, svcMachine{svc, m})
					continue
				}
				s := slot{app.Name, svc.InternalPort, m.ID}
				si := slots[s]
				si.m = m
				si.svcs = append(si.svcs, svc)
				slots[s] = si
				addr := m.AddrFor(svc.InternalPort)
				for i, chk := range svc.Checks {
					// fmt prints maps sorted by key, so the rendering of
					// the headers is stable.
					k := key{app.Name, svc.InternalPort, i, render(chk), m.ID, addr}
					// Two services on one internal port with the same check
					// share a prober: the probe would be the same.
					t := want[k]
					if t == nil {
						t = &target{m: m}
						want[k] = t
					}
					t.svcs = append(t.svcs, svc)
				}
			}
		}
	}
	return want, slots, unchecked
}

// Ready runs each of svc's checks once against m and returns why the
// first failing one failed ("" when all pass, or svc has none): a machine
// just started takes work only once its checks pass.
func (c *Checker) Ready(ctx context.Context, svc *catalog.Service, m *catalog.Machine) string {
	for i := range svc.Checks {
		k := key{app: svc.App.Name, port: svc.InternalPort, index: i, machine: m.ID, addr: m.AddrFor(svc.InternalPort)}
		p := c.newProber(k, &target{svcs: []*catalog.Service{svc}, m: m})
		if why := p.probe(ctx); why != "" {
			return why
		}
	}
	return ""
}

// Close stops every prober and waits for their goroutines to exit. The
// healthy gauges are removed, since nothing updates them any more.
func (c *Checker) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	for _, p := range c.probers {
		p.cancel()
	}
	for _, p := range c.probers {
		<-p.done
	}
	c.probers = nil
	c.setSlots(nil, nil)
}

// changed reports a flip of a machine's health for svc: a log line, the
// gauge, and a wake-up for work queued for a machine to come back.
func (c *Checker) changed(svc *catalog.Service, m *catalog.Machine, check string, healthy bool, reason string) {
	level := slog.LevelInfo
	if !healthy {
		level = slog.LevelWarn
	}
	c.log.LogAttrs(context.Background(), level, "machine health changed",
		slog.String("app", svc.App.Name), slog.String("machine", m.ID), slog.String("region", m.Region),
		slog.Int("internal_port", svc.InternalPort), slog.String("check", check),
		slog.Bool("healthy", healthy), slog.String("reason", reason))
	c.updateGauge(slot{svc.App.Name, svc.InternalPort, m.ID})
	if healthy {
		svc.Waiters().Wake()
	}
}

// setSlots replaces the gauge series with those of slots.
func (c *Checker) setSlots(slots map[slot]slotInfo, changed map[string]bool) {
	c.gaugeMu.Lock()
	defer c.gaugeMu.Unlock()
	if changed != nil {
		// Only the changed apps' series are planned again.
		for s := range c.slots {
			if _, ok := slots[s]; !ok && changed[s.app] {
				if c.metrics != nil {
					c.metrics.MachineHealthy.DeleteLabelValues(s.app, s.machine, strconv.Itoa(s.port))
				}
				delete(c.slots, s)
			}
		}
		for s, si := range slots {
			c.slots[s] = si
			c.writeGauge(s)
		}
		return
	}
	if c.metrics != nil {
		for s := range c.slots {
			if _, ok := slots[s]; !ok {
				c.metrics.MachineHealthy.DeleteLabelValues(s.app, s.machine, strconv.Itoa(s.port))
			}
		}
	}
	c.slots = slots
	for s := range slots {
		c.writeGauge(s)
	}
}

func (c *Checker) updateGauge(s slot) {
	c.gaugeMu.Lock()
	defer c.gaugeMu.Unlock()
	c.writeGauge(s)
}

// writeGauge sets s's gauge from the current verdicts; gaugeMu is held.
func (c *Checker) writeGauge(s slot) {
	si, ok := c.slots[s]
	if !ok || c.metrics == nil {
		return
	}
	v := 1.0
	for _, svc := range si.svcs {
		if h := svc.Health(si.m); h != nil && !h.Healthy() {
			v = 0
		}
	}
	c.metrics.MachineHealthy.WithLabelValues(s.app, s.machine, strconv.Itoa(s.port)).Set(v)
}
