// Package catalog owns what edgeproxy knows about apps: their services and
// public ports, their machines and regions, and the live load on each
// machine. A Snapshot is immutable and built from the config (the file
// catalog); a reload builds a new Snapshot that shares the load counters
// of machines that stay, so limits hold across reloads.
package catalog

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/proxyproto"
)

// Snapshot is one immutable view of every app.
type Snapshot struct {
	Region string
	Apps   []*App
	byName map[string]*App
}

// App is one app.
type App struct {
	Name      string
	Hostnames []string
	Services  []*Service
	Machines  []*Machine
	// Autostart: a driver can start the app's stopped machines when work
	// arrives for them.
	Autostart bool
	// PrimaryRegion is the app's home ("": none named): between regions
	// equally near, its machines are preferred.
	PrimaryRegion string
}

// Unit is what a service's concurrency limits count.
type Unit uint8

const (
	Connections Unit = iota // each client connection counts
	Requests                // each HTTP request counts; upstream connections pooled
)

func (u Unit) String() string {
	if u == Requests {
		return "requests"
	}
	return "connections"
}

// Service is one internal port of an app's machines with its public ports.
type Service struct {
	App *App
	// Machines are the app's machines that serve this service: those of
	// its process groups (all of them when it names none).
	Machines     []*Machine
	Index        int
	InternalPort int
	// UDP services forward datagrams per flow (internal/udpproxy); their
	// ports are not in the TCP routing table.
	UDP        bool
	Unit       Unit
	Soft, Hard int
	Ports      []*Port
	Balance    Policy
	Checks     []Check
	// loads and health hold this service's load counter and health per
	// machine, by Machine.ID.
	loads  map[string]*Load
	health map[string]*Health
	waits  *Waiters
}

// Policy is how a machine is chosen among equally close ones.
type Policy uint8

const (
	LeastLoaded Policy = iota // the platform's: band, then fewest in flight
	P2CLatency                // two random choices by in-flight × response time
)

func (p Policy) String() string {
	if p == P2CLatency {
		return "p2c-latency"
	}
	return "least-loaded"
}

// Port is one public port entry of a service (a single port or a range).
type Port struct {
	Service  *Service
	Lo, Hi   int
	Handlers Handlers
	// ForceHTTPS redirects plain HTTP requests to https.
	ForceHTTPS bool
	TLS        TLSOptions
	HTTP       HTTPOptions
	// ProxyProto is the PROXY header version sent to machines (0: none).
	ProxyProto int
}

// Handlers is the set of fly.toml handlers on a port.
type Handlers struct{ TLS, HTTP, ProxyProto, PgTLS bool }

func (h Handlers) String() string {
	var parts []string
	for _, x := range []struct {
		on   bool
		name string
	}{{h.TLS, "tls"}, {h.HTTP, "http"}, {h.ProxyProto, "proxy_proto"}, {h.PgTLS, "pg_tls"}} {
		if x.on {
			parts = append(parts, x.name)
		}
	}
	if len(parts) == 0 {
		return "tcp"
	}
	return strings.Join(parts, "+")
}

// TLSOptions is a port's tls_options with defaults applied.
type TLSOptions struct {
	ALPN              []string
	MinVersion        uint16
	MaxVersion        uint16
	DefaultSelfSigned bool
}

// HTTPOptions is a port's http_options with defaults applied.
type HTTPOptions struct {
	H2Backend bool
	// AbortOnClose cancels requests when the client half-closes.
	AbortOnClose bool
	IdleTimeout  time.Duration
	// Pristine adds no headers to responses.
	Pristine bool
	// AddHeaders and RemoveHeaders are response.headers.
	AddHeaders    map[string][]string
	RemoveHeaders []string
	// DebugRouting explains each routing decision in a response header.
	DebugRouting bool
	// Compress compresses responses the client accepts compressed and
	// the machine sent uncompressed.
	Compress bool
}

// Machine is one instance of an app.
type Machine struct {
	ID     string
	Region string
	Addr   netip.Addr
	// ports maps internal ports to the ports the machine listens on.
	ports map[int]int
	State string
	// Cordoned machines take no new work; health checks go on.
	Cordoned bool
	// Owner is the fleet node whose driver starts the machine ("": this
	// node's own, or none).
	Owner string
	// ProcessGroup is the machine's fly.toml process group ("app" when
	// none is named).
	ProcessGroup string
}

// AddrFor is the address a service reaches the machine on.
func (m *Machine) AddrFor(internalPort int) netip.AddrPort {
	if p, ok := m.ports[internalPort]; ok {
		return netip.AddrPortFrom(m.Addr, uint16(p))
	}
	return netip.AddrPortFrom(m.Addr, uint16(internalPort))
}

// Started reports whether the machine can take traffic.
func (m *Machine) Started() bool { return m.State == "started" }

// Startable reports whether a driver could start the machine for work.
func (m *Machine) Startable() bool {
	return (m.State == "stopped" || m.State == "suspended") && !m.Cordoned
}

// App returns the app called name, or nil.
func (s *Snapshot) App(name string) *App {
	if s == nil {
		return nil
	}
	return s.byName[name]
}

// Load returns the load counter of machine m for service svc.
func (svc *Service) Load(m *Machine) *Load { return svc.loads[m.ID] }

// Health returns machine m's health for service svc.
func (svc *Service) Health(m *Machine) *Health { return svc.health[m.ID] }

// Usable reports whether m may take new work for svc: started, not
// cordoned and healthy.
func (svc *Service) Usable(m *Machine) bool {
	return m.Started() && !m.Cordoned && svc.health[m.ID].Healthy()
}

// Machine returns the app's machine with id, or nil.
func (a *App) Machine(id string) *Machine {
	for _, m := range a.Machines {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// Waiters is where work queued for this service waits for capacity.
func (svc *Service) Waiters() *Waiters { return svc.waits }

// Build makes a Snapshot from a validated config. prev, if not nil, is the
// snapshot being replaced: load counters of machines that stay carry over.
func Build(cfg *config.Config, prev *Snapshot) (*Snapshot, error) {
	return Rebuild(cfg, prev, nil)
}

// Rebuild is Build for a config that differs from prev's only in the apps
// named in changed (nil: any may differ). The others are prev's own, shared
// as they are: a snapshot is immutable, so a machine change in one app of
// ten thousand costs that one app, not the catalog.
func Rebuild(cfg *config.Config, prev *Snapshot, changed map[string]bool) (*Snapshot, error) {
	snap := &Snapshot{Region: cfg.Proxy.Region, byName: make(map[string]*App, len(cfg.Apps)),
		Apps: make([]*App, 0, len(cfg.Apps))}
	for i := range cfg.Apps {
		ca := &cfg.Apps[i]
		if changed != nil && !changed[ca.Name] {
			if app := prev.App(ca.Name); app != nil {
				snap.Apps = append(snap.Apps, app)
				snap.byName[app.Name] = app
				continue
			}
		}
		app := &App{Name: ca.Name, Hostnames: lower(ca.Hostnames), PrimaryRegion: ca.PrimaryRegion}
		if ca.Driver != nil || slices.ContainsFunc(ca.Machines, func(m config.Machine) bool { return m.Owner != "" }) {
			// Its own driver, or a fleet node's that will start machines
			// when asked.
			app.Autostart, _, _ = ca.Lifecycle()
		}
		for _, cm := range ca.Machines {
			m, err := buildMachine(cm)
			if err != nil {
				return nil, fmt.Errorf("app %s: machine %s: %w", ca.Name, cm.ID, err)
			}
			app.Machines = append(app.Machines, m)
		}
		for j, cs := range ca.AllServices() {
			svc, err := buildService(app, j, cs, prev)
			if err != nil {
				return nil, fmt.Errorf("app %s: service %d: %w", ca.Name, j, err)
			}
			app.Services = append(app.Services, svc)
		}
		snap.Apps = append(snap.Apps, app)
		snap.byName[app.Name] = app
	}
	return snap, nil
}

func buildMachine(cm config.Machine) (*Machine, error) {
	addr, err := netip.ParseAddr(cm.Address)
	if err != nil {
		return nil, err
	}
	m := &Machine{ID: cm.ID, Region: cm.Region, Addr: addr, State: cm.State, Cordoned: cm.Cordoned, Owner: cm.Owner,
		ProcessGroup: cmp.Or(cm.ProcessGroup, config.DefaultProcessGroup), ports: map[int]int{}}
	for k, v := range cm.Ports {
		n, err := strconv.Atoi(k)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", k, err)
		}
		m.ports[n] = v
	}
	return m, nil
}

func buildService(app *App, idx int, cs config.Service, prev *Snapshot) (*Service, error) {
	svc := &Service{App: app, Index: idx, InternalPort: cs.InternalPort, UDP: cs.Protocol == "udp", Soft: config.DefaultSoftLimit,
		loads: map[string]*Load{}, health: map[string]*Health{}}
	if cs.Balance == "p2c-latency" {
		svc.Balance = P2CLatency
	}
	for _, c := range cs.TCPChecks {
		svc.Checks = append(svc.Checks, Check{HTTPCheck: config.HTTPCheck{TCPCheck: c}})
	}
	for _, c := range cs.HTTPChecks {
		svc.Checks = append(svc.Checks, Check{HTTP: true, HTTPCheck: c})
	}
	if c := cs.Concurrency; c != nil {
		if c.Type == "requests" {
			svc.Unit = Requests
		}
		if c.SoftLimit > 0 {
			svc.Soft = c.SoftLimit
		}
		svc.Hard = c.HardLimit
		if c.SoftLimit == 0 && svc.Hard > 0 && svc.Hard < svc.Soft {
			// A hard limit under the default soft one: soft follows it, so
			// machines still pass through the over-soft band.
			svc.Soft = svc.Hard
		}
	}
	old := previousService(prev, app.Name, idx, cs.InternalPort)
	svc.waits = newWaiters()
	if old != nil {
		svc.waits = old.waits
	}
	for _, m := range app.Machines {
		if len(cs.Processes) > 0 && !slices.Contains(cs.Processes, m.ProcessGroup) {
			continue
		}
		svc.Machines = append(svc.Machines, m)
	}
	for _, m := range svc.Machines {
		if old != nil && old.loads[m.ID] != nil {
			svc.loads[m.ID] = old.loads[m.ID]
		} else {
			svc.loads[m.ID] = &Load{}
		}
		// Health carries over too: a reload must not put a failing machine
		// back into routing until its checks pass again.
		if old != nil && old.health[m.ID] != nil {
			svc.health[m.ID] = old.health[m.ID]
		} else {
			svc.health[m.ID] = newHealth()
		}
	}
	for _, cp := range cs.Ports {
		p, err := buildPort(svc, cp)
		if err != nil {
			return nil, err
		}
		svc.Ports = append(svc.Ports, p)
	}
	return svc, nil
}

// previousService finds the service a new one continues across a reload:
// same app and internal port, preferring the same position, so adding a
// service does not reset the others' load counters.
func previousService(prev *Snapshot, app string, idx, internalPort int) *Service {
	if prev == nil {
		return nil
	}
	pa := prev.App(app)
	if pa == nil {
		return nil
	}
	if idx < len(pa.Services) && pa.Services[idx].InternalPort == internalPort {
		return pa.Services[idx]
	}
	for _, s := range pa.Services {
		if s.InternalPort == internalPort {
			return s
		}
	}
	return nil
}

func buildPort(svc *Service, cp config.Port) (*Port, error) {
	lo, hi := cp.Range()
	p := &Port{Service: svc, Lo: lo, Hi: hi, ForceHTTPS: cp.ForceHTTPS}
	p.Handlers = Handlers{TLS: cp.Has("tls"), HTTP: cp.Has("http"), ProxyProto: cp.Has("proxy_proto"), PgTLS: cp.Has("pg_tls")}
	if p.Handlers.ProxyProto {
		v := ""
		if cp.ProxyProtoOptions != nil {
			v = cp.ProxyProtoOptions.Version
		}
		ver, err := proxyproto.ParseVersion(v)
		if err != nil {
			return nil, err
		}
		p.ProxyProto = ver
	}
	if err := p.TLS.from(cp.TLSOptions, p.Handlers.HTTP, p.Handlers.PgTLS); err != nil {
		return nil, err
	}
	p.HTTP.from(cp.HTTPOptions)
	return p, nil
}

func lower(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.TrimSuffix(strings.ToLower(s), ".")
	}
	return out
}
