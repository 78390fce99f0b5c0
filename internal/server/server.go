// Package server wires the stages of the data path together: it owns the
// listeners, the current runtime, and the per-connection function
// (serveConn in conn.go) that reads top to bottom as the path a
// connection takes through the proxy.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/acme"
	"github.com/edgeproxy/edgeproxy/internal/admin"
	"github.com/edgeproxy/edgeproxy/internal/balance"
	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/health"
	"github.com/edgeproxy/edgeproxy/internal/httpproxy"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/listen"
	"github.com/edgeproxy/edgeproxy/internal/machines"
	"github.com/edgeproxy/edgeproxy/internal/meter"
	"github.com/edgeproxy/edgeproxy/internal/permit"
	"github.com/edgeproxy/edgeproxy/internal/route"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

// Server is a running edgeproxy.
type Server struct {
	log     *slog.Logger
	rt      atomic.Pointer[Runtime]
	pools   *httpproxy.Pools
	handler *httpproxy.Handler
	bufs    *iox.BufferPool
	// parker holds idle HTTP/1.1 connections (nil where none works).
	parker *iox.Parker
	// bh is this node's backhaul (nil without a fleet certificate).
	bh       *bhNode
	deps     Deps
	nextID   atomic.Uint64
	tracing  *telemetry.Tracing
	tripwire *telemetry.Tripwire
	// health runs the services' health checks against their machines.
	health       *health.Checker
	listen       func(network, addr string) (net.Listener, error)
	listenPacket func(network, addr string) (net.PacketConn, error)
	reloadMu     sync.Mutex // one reload at a time
	// fileCfg is the config file's, fleetApps the fleet catalog's last
	// apps; the running config is both (under reloadMu).
	fileCfg   *config.Config
	fleetApps []config.App
	// fleetIndex is where each fleet app applied sits in the running
	// config's apps; a machine change rewrites that one entry.
	fleetIndex map[string]int
	// fleetApplied is whether the running config holds the last fleet
	// catalog handed over (less the apps it refused): only then can the
	// next be applied as a change to it.
	fleetApplied bool
	fleet        atomic.Pointer[fleetNode]
	// life starts and stops the machines of apps with a driver; drivers
	// are theirs, by app (under reloadMu).
	life    *machines.Controller
	drivers map[string]driverEntry
	// lifeStarted: Start has handed the apps to the controller, so
	// runtimes installed hand theirs too; portsBound: Start has opened
	// the ports, so machine state changes may rebuild (before, they wait
	// in lifePending). All under reloadMu.
	lifeStarted bool
	portsBound  bool
	lifePending map[string]bool
	// pub is what this node last published of the apps it drives; the
	// remote starts are those it asked other nodes for, by app/id.
	pub          published
	remoteMu     sync.Mutex
	remoteStarts map[string]*remoteOp
	// fleetMetrics registers the fleet gauges once.
	fleetMetrics sync.Once
	version      string
	// started is when New ran, for the status page's uptime.
	started time.Time
	// nodes are the fleet's node records last seen, for the status page.
	nodes atomic.Pointer[map[string]fleet.NodeRecord]
	// accessLog gets one line per request and per TCP connection (nil: off).
	accessLog      *slog.Logger
	closeAccessLog func() error
	wrapWire       func(net.Conn) net.Conn
	// tickets encrypt TLS session tickets; shared by every runtime so
	// sessions resume across reloads, and rotated by rotateTickets.
	tickets *tlsterm.Tickets
	// acme obtains and renews certificates ([acme]; nil without); it
	// manages names once startACME knows the challenge ports.
	acme        *acme.Manager
	acmeStarted atomic.Bool
	stop        chan struct{} // closed by Close
	stopOnce    sync.Once

	// Shared state every runtime uses: admission counts, the guard's and
	// the meter's accumulators, and the metrics that export them.
	permits    *permit.Limiter
	guardStats *iox.Stats
	meters     *meter.Apps
	metrics    *telemetry.Metrics
	admin      *admin.Server

	mu     sync.Mutex
	ports  map[int]*portServer // by public port
	udp    map[int]*udpPort    // UDP ports, by public port
	active map[net.Conn]*conn
	closed bool
	wg     sync.WaitGroup
}

// portServer is one public port: its listener and, for ports with the
// http handler, the net/http server its connections are handed to.
type portServer struct {
	public int
	ln     net.Listener
	httpLn *listen.Queue
	http   *http.Server
	// per-port metric children, looked up once
	accepted prometheus.Counter
	active   prometheus.Gauge
}

// Options configure a Server beyond its config file.
type Options struct {
	Log *slog.Logger
	// Intn breaks balancing ties; tests inject a deterministic one.
	Intn func(int) int
	// Version names the build in edgeproxy_build_info.
	Version string
	// AccessLog, if set, receives the access log instead of the
	// destination in the config (tests collect it).
	AccessLog io.Writer
	// Tracing, if set, replaces the tracing built from the config (tests
	// pass an in-memory recorder).
	Tracing *telemetry.Tracing
	// Listen opens listening sockets; nil uses net.Listen. A graceful
	// restart passes tableflip's, so sockets are inherited by the new
	// process instead of being closed.
	Listen func(network, addr string) (net.Listener, error)
	// ListenPacket opens UDP sockets, likewise (nil: net.ListenPacket).
	ListenPacket func(network, addr string) (net.PacketConn, error)
	// TestWrapWire, for tests only, inserts a layer between the meter and
	// the wire guard of every client connection, so fault-injection tests
	// can put a deliberately broken reader where the incident's was.
	TestWrapWire func(net.Conn) net.Conn
	// TestDial, for tests only, opens every upstream connection (requests
	// and health checks), so tests can put machines in fake regions with
	// injected round-trip times.
	TestDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TicketKeys are the session-ticket keys of the process this one
	// takes over from (an upgrade), so its clients' sessions resume here.
	TicketKeys []tlsterm.TicketKey
}

// New builds a server for a loaded config without opening any socket.
func New(cfg *config.Config, o Options) (*Server, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := cfg.Proxy
	pools := httpproxy.NewPools(httpproxy.PoolOptions{ResponseHeaderTimeout: p.ResponseHeaderTimeout.D()})
	s := &Server{
		log:        log,
		pools:      pools,
		bufs:       iox.NewBufferPool(32 << 10),
		ports:      map[int]*portServer{},
		active:     map[net.Conn]*conn{},
		permits:    permit.New(permitLimits(cfg.Limits), time.Now),
		guardStats: &iox.Stats{},
		meters:     &meter.Apps{},
		fileCfg:    cfg,
		started:    time.Now(),
	}
	s.handler = httpproxy.NewHandler(s.bufs)
	if pk, err := iox.NewParker(); err == nil {
		// Idle HTTP/1.1 connections wait here without a goroutine; where
		// there is no parker they keep theirs.
		s.parker = pk
	}
	s.metrics = telemetry.NewMetrics(s.guardStats, s.meters)
	if s.parker != nil {
		s.metrics.SetParked(s.parker.Parked)
	}
	s.metrics.SetCompressing(s.handler.Compressing)
	s.metrics.BuildInfo.WithLabelValues(cmp.Or(o.Version, "dev"), runtime.Version()).Set(1)
	s.version = cmp.Or(o.Version, "dev")
	s.metrics.SetMachines(s.machineStats)
	s.metrics.SetCertificates(s.certStats)
	s.metrics.SetUDP(s.udpStats)
	s.wrapWire = o.TestWrapWire
	s.listen = o.Listen
	if s.listen == nil {
		s.listen = net.Listen
	}
	s.listen = listen.Opener(s.listen)
	s.listenPacket = o.ListenPacket
	if s.listenPacket == nil {
		s.listenPacket = net.ListenPacket
	}
	s.udp = map[int]*udpPort{}
	dest := cfg.Log.AccessLog
	if dest != "off" && dest != "stdout" && dest != "stderr" {
		dest = cfg.Resolve(dest) // relative to the config file, like certificates
	}
	accessLog, closeLog, err := openAccessLog(dest)
	if err != nil {
		return nil, err
	}
	if o.AccessLog != nil {
		closeLog()
		accessLog, closeLog = slog.New(slog.NewJSONHandler(o.AccessLog, nil)), func() error { return nil }
	}
	s.accessLog, s.closeAccessLog = accessLog, closeLog
	s.tracing = o.Tracing
	if s.tracing == nil {
		if s.tracing, err = telemetry.NewTracing(cfg.Tracing, cmp.Or(o.Version, "dev")); err != nil {
			return nil, err
		}
	}
	s.tickets = tlsterm.NewTickets(p.SessionTicketRotation.D(), p.SessionTicketLifetime.D(), nil, o.TicketKeys...)
	s.stop = make(chan struct{})
	if s.acme, err = newACME(s, cfg); err != nil {
		return nil, err
	}
	s.deps = Deps{Log: log, Pools: pools, SelfSigned: tlsterm.NewSelfSigner(), Tickets: s.tickets, ACME: s.acme, Intn: o.Intn, GuardStats: s.guardStats,
		Metrics: s.metrics, AccessLog: s.accessLog, Tracing: s.tracing, Dial: o.TestDial}
	hopts := health.Options{Log: log, Metrics: s.metrics, Dial: upstreamDial(cfg, o.TestDial),
		Connected: func(region string, took time.Duration) { s.runtime().observeRTT(region, took) }}
	if cfg.Fleet.Backhaul() {
		s.bh = newBackhaul(s, cfg)
		s.deps.Backhaul, s.deps.Relay, s.deps.Down = s.bh, s.bh.client, s.bh.down
		hopts.Elsewhere = s.bh.elsewhere
	}
	s.health = health.New(hopts)
	s.newLifecycle()
	s.deps.Autostart, s.deps.Current = s.autostart, s.currentService
	rt, err := BuildRuntime(s.overlay(cfg), nil, s.deps)
	if err != nil {
		// What New started stops with it: no goroutine outlives a
		// refused config.
		if s.acme != nil {
			s.acme.Close()
		}
		if s.bh != nil {
			s.bh.close()
		}
		s.health.Close()
		return nil, err
	}
	for _, w := range rt.Certs.Warnings() {
		log.Warn("certificate warning", "detail", w)
	}
	s.rt.Store(rt)
	return s, nil
}

func (s *Server) runtime() *Runtime { return s.rt.Load() }

// Catalog is the catalog the running config serves: immutable, so safe to
// read while reloads and fleet changes replace it.
func (s *Server) Catalog() *catalog.Snapshot { return s.runtime().Snap }

// Start opens every public port and the admin listener and starts
// serving. It returns once all listeners are bound, or the first bind
// error (closing what it opened).
func (s *Server) Start() error {
	s.wg.Go(s.rotateTickets)
	rt := s.runtime()
	if rt.Config.Fleet != nil {
		rt = s.fromFleetCache(rt)
	}
	if a := rt.Config.Admin; a.Listen != "off" {
		adm, err := admin.Start(admin.Options{Listen: a.Listen, ListenFunc: s.listen, Token: rt.Config.AdminToken(),
			Registry: s.metrics.Registry, Unauthorized: s.metrics.AdminUnauthorized, Log: s.log,
			Views: admin.Views{
				Apps:        func() any { return s.Apps() },
				Machines:    func() any { return s.Machines() },
				Connections: func(limit int, by string) any { return s.Connections(limit, by) },
				Config:      s.EffectiveConfig,
				Reload:      func() error { return s.Reload(rt.Config.File) },
				Status:      func() any { return s.Status() },
			}})
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		s.admin = adm
		s.log.Info("admin listening", "addr", adm.Addr().String())
	}
	// The controller knows the apps it drives before the first request
	// can arrive, so that request can start a machine.
	s.reloadMu.Lock()
	s.lifeStarted = true
	s.syncLifecycle(rt)
	s.reloadMu.Unlock()
	for _, public := range rt.Routes.Ports() {
		ln, err := s.bind(rt, public)
		if err != nil {
			s.Close()
			return err
		}
		s.addPort(rt, public, ln)
	}
	if err := s.syncUDP(rt); err != nil {
		s.Close()
		return err
	}
	s.reloadMu.Lock()
	s.portsBound = true
	pending := s.lifePending
	s.lifePending = nil
	s.reloadMu.Unlock()
	for app := range pending {
		s.applyLifecycle(app)
	}
	// The backhaul listens before the node joins the fleet, whose record
	// of it gives edges the address as bound.
	if f := rt.Config.Fleet; s.bh != nil && f.BackhaulListen != "" {
		if err := s.bh.listen(f); err != nil {
			s.Close()
			return err
		}
	}
	if rt.Config.Fleet != nil {
		if err := s.startFleet(rt.Config, s.version); err != nil {
			s.Close()
			return fmt.Errorf("fleet: %w", err)
		}
	}
	// The fleet may have swapped in a newer runtime already; and ACME's
	// storage, in a fleet, is the fleet's.
	s.health.Reconcile(s.runtime().Snap)
	s.shareTickets()
	s.startACME(s.runtime())
	if tw := rt.Config.Tripwire; tw.TripwireEnabled() {
		s.tripwire = telemetry.StartTripwire(context.Background(), telemetry.TripwireOptions{
			Threshold: tw.Threshold, Samples: tw.Samples, ProfileDuration: tw.ProfileDuration.D(),
			Dir: tw.Dir, MaxFiles: tw.MaxFiles, Cooldown: tw.Cooldown.D(), Log: s.log,
			OnTrip: func(t telemetry.Trip) { s.metrics.TripwireTrips.Inc() },
		})
	}
	if s.admin != nil {
		s.admin.SetReady(true)
	}
	return nil
}

// AdminAddr is the admin listener's address, or nil when it is off.
func (s *Server) AdminAddr() net.Addr {
	if s.admin == nil {
		return nil
	}
	return s.admin.Addr()
}

// GuardStats are the progress guard's counters, for tests and the CLI.
func (s *Server) GuardStats() *iox.Stats { return s.guardStats }

// Metrics is the server's metric registry.
func (s *Server) Metrics() *telemetry.Metrics { return s.metrics }

func permitLimits(l config.Limits) permit.Limits {
	return permit.Limits{Global: l.MaxConnections, PerApp: l.MaxConnectionsPerApp, PerPort: l.MaxConnectionsPerPort,
		PerIP: l.MaxConnectionsPerIP, IPRate: l.IPAcceptRate, IPBurst: l.IPAcceptBurst}
}

// bind opens a public port's listener at its port_map'd local port.
func (s *Server) bind(rt *Runtime, public int) (net.Listener, error) {
	addr := net.JoinHostPort(rt.Config.Proxy.Bind, strconv.Itoa(rt.Config.Proxy.LocalPort(public)))
	ln, err := s.listen("tcp", addr)
	if err != nil {
		return nil, &bindError{port: public, err: err}
	}
	return ln, nil
}

// bindError is a public port that could not be opened.
type bindError struct {
	port int
	err  error
}

func (e *bindError) Error() string { return fmt.Sprintf("port %d: %v", e.port, e.err) }
func (e *bindError) Unwrap() error { return e.err }

func (s *Server) addPort(rt *Runtime, public int, ln net.Listener) {
	ps := &portServer{public: public, ln: ln,
		accepted: s.metrics.Accepted.WithLabelValues(portLabel(public)),
		active:   s.metrics.Active.WithLabelValues(portLabel(public))}
	pr := rt.Routes.Port(public)
	s.mu.Lock()
	if pr.Handlers.HTTP {
		s.startHTTP(rt, pr, ps)
	}
	s.ports[public] = ps
	s.mu.Unlock()
	s.log.Info("listening", "port", public, "addr", ln.Addr().String(), "handlers", pr.Handlers.String())
	s.wg.Go(func() {
		_ = listen.Serve(ln, s.log, func(c net.Conn) { s.serveConn(ps, c) })
	})
}

// Addr returns the address a public port listens on (useful when
// port_map sends it to port 0), or nil.
func (s *Server) Addr(public int) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ps := s.ports[public]; ps != nil {
		return ps.ln.Addr()
	}
	return nil
}

// track registers a raw connection so Close can end it; false means the
// server is closing and the connection must not start.
func (s *Server) track(raw net.Conn, c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.active[raw] = c
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.active, c)
	s.mu.Unlock()
}

// startHTTP gives a port its net/http server; s.mu is held.
func (s *Server) startHTTP(rt *Runtime, pr *route.Port, ps *portServer) {
	ps.httpLn = listen.NewQueue(ps.ln.Addr())
	ps.http = s.newHTTPServer(rt, pr)
	hs, q := ps.http, ps.httpLn
	s.wg.Go(func() { _ = hs.Serve(q) })
}

func itoa(n int) string { return strconv.Itoa(n) }

// Close stops accepting, closes every connection and waits for all
// goroutines the server started. (Graceful drain comes with reloads.)
func (s *Server) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	// The fleet first: a catalog applied while closing would open ports.
	if n := s.fleet.Swap(nil); n != nil {
		n.close()
	}
	s.mu.Lock()
	s.closed = true
	ports := s.ports
	s.ports = map[int]*portServer{}
	var conns []net.Conn
	for c := range s.active {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var errs []error
	for _, ps := range ports {
		if err := ps.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		if ps.http != nil {
			ps.http.Close()
		}
	}
	for _, c := range conns {
		c.Close()
	}
	s.closeUDP()
	if s.parker != nil {
		// Parked connections have no goroutine to see their socket close:
		// let them go, and wait for them to finish.
		s.parker.Close()
	}
	if s.bh != nil {
		s.bh.close()
	}
	if s.acme != nil {
		s.acme.Close()
	}
	s.wg.Wait()
	s.pools.Close()
	if s.admin != nil {
		s.admin.SetReady(false)
		errs = append(errs, s.admin.Close())
	}
	s.tripwire.Stop()
	// Machines the drivers run stop with the proxy: none outlives it.
	s.life.Close()
	s.health.Close()
	errs = append(errs, s.closeAccessLog())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errs = append(errs, s.tracing.Shutdown(ctx))
	return errors.Join(errs...)
}

// Run starts the server and serves until ctx is done, then drains.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	return s.Drain()
}

// Loads reports the live load of each machine of an app, summed over its
// services, for tests and the admin API.
func (s *Server) Loads(app string) map[string]int64 {
	out := map[string]int64{}
	a := s.runtime().Snap.App(app)
	if a == nil {
		return out
	}
	for _, m := range a.Machines {
		for _, svc := range a.Services {
			out[m.ID] += svc.Load(m).Value()
		}
	}
	return out
}

// openAccessLog opens where access log lines go: stdout, stderr, a file
// (appended), or nowhere ("off").
func openAccessLog(dest string) (*slog.Logger, func() error, error) {
	noop := func() error { return nil }
	switch dest {
	case "off":
		return nil, noop, nil
	case "stdout":
		return slog.New(slog.NewJSONHandler(os.Stdout, nil)), noop, nil
	case "stderr":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)), noop, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("access log: %w", err)
	}
	return slog.New(slog.NewJSONHandler(f, nil)), f.Close, nil
}

// machineStats lists every machine's load per service for the machine
// gauges, read from the current runtime at scrape time.
func (s *Server) machineStats() []telemetry.MachineStat {
	var out []telemetry.MachineStat
	for _, app := range s.runtime().Snap.Apps {
		var ports []int
		for _, svc := range app.Services {
			// A service is named by its internal port; a second service on
			// the same port (an http_service beside [[services]]) gets its
			// index too, so the two series stay apart.
			name := strconv.Itoa(svc.InternalPort)
			if slices.Contains(ports, svc.InternalPort) {
				name += "#" + strconv.Itoa(svc.Index)
			}
			ports = append(ports, svc.InternalPort)
			for _, m := range svc.Machines {
				load := svc.Load(m).Value()
				out = append(out, telemetry.MachineStat{App: app.Name, Service: name, Machine: m.ID,
					Load: load, Band: int(balance.BandOf(load, svc.Soft, svc.Hard))})
			}
		}
	}
	return out
}

// rotateTickets starts new session-ticket keys and forgets expired ones,
// on the clock: an idle proxy must forget old keys too.
func (s *Server) rotateTickets() {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if s.tickets.Rotate() {
				s.log.Debug("session ticket keys rotated", "keys", len(s.tickets.Keys()))
			}
			s.shareTickets()
		}
	}
}

// shareTickets makes this node's session-ticket keys the fleet's: it
// merges the other edges' keys and publishes its own, so a ticket any
// edge issued resumes at every edge (within a rotation tick).
func (s *Server) shareTickets() {
	n := s.fleet.Load()
	if n == nil || n.store == nil || !n.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := n.store.SyncTicketKeys(ctx, func(remote []byte) []byte {
		if remote != nil {
			if keys, err := tlsterm.ParseTicketKeys(remote); err == nil {
				s.tickets.Merge(keys)
			} else {
				s.log.Warn("fleet: session ticket keys unreadable; publishing this node's", "error", err.Error())
			}
		}
		s.tickets.Rotate()
		return tlsterm.MarshalTicketKeys(s.tickets.Keys())
	})
	if err != nil {
		s.log.Warn("fleet: session ticket keys not shared", "error", err.Error())
	}
}

// TicketKeys are the session-ticket keys now, for the process an
// upgrade hands over to.
func (s *Server) TicketKeys() []tlsterm.TicketKey { return s.tickets.Keys() }
