package server

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// heartbeatEvery keeps this node in ep-nodes, well inside its TTL.
const heartbeatEvery = 5 * time.Second

// fleetNode is this process's part in a fleet: the embedded NATS server
// when there is one, the connection, the watcher that keeps the catalog
// copy and the heartbeat.
type fleetNode struct {
	emb    *fleet.Embedded
	nc     *nats.Conn
	store  *fleet.Store
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// lostAt is when the connection was lost (0 while connected), in
	// Unix nanoseconds.
	lostAt atomic.Int64
	once   sync.Once
	load   *fleet.LoadSharing
	// node is this node's name in the fleet.
	node string
}

// startFleet joins the fleet [fleet] describes. The catalog copy is
// applied as it arrives; nothing here waits for the fleet, so a fleet
// that is down delays no port.
func (s *Server) startFleet(cfg *config.Config, version string) error {
	f := cfg.Fleet
	n := &fleetNode{node: f.Node}
	if f.Embedded {
		emb, err := fleet.StartEmbedded(f, cfg.Resolve)
		if err != nil {
			return err
		}
		n.emb = emb
		s.log.Info("fleet: embedded NATS listening", "url", emb.ClientURL())
	}
	n.lostAt.Store(time.Now().UnixNano())
	nc, err := fleet.Connect(f, cfg.Resolve, n.emb)
	if err != nil {
		n.close()
		return err
	}
	n.nc = nc
	nc.SetDisconnectErrHandler(func(_ *nats.Conn, err error) {
		n.lostAt.CompareAndSwap(0, time.Now().UnixNano())
		s.log.Warn("fleet: disconnected from NATS; serving the last catalog", "error", errText(err))
	})
	resync := make(chan struct{}, 1)
	nc.SetReconnectHandler(func(c *nats.Conn) {
		n.lostAt.Store(0)
		s.log.Info("fleet: reconnected to NATS", "url", c.ConnectedUrlRedacted())
		select {
		case resync <- struct{}{}:
		default:
		}
	})
	if nc.IsConnected() {
		n.lostAt.Store(0)
	}
	store, err := fleet.NewStore(nc)
	if err != nil {
		n.close()
		return err
	}
	n.store = store
	if _, err := fleet.ServeProfiles(nc, f.Node, func() string { return s.runtime().Config.AdminToken() }, s.log); err != nil {
		n.close()
		return err
	}
	// Other nodes ask this one to start the machines its drivers run.
	if _, err := fleet.ServeStarts(nc, f.Node, func() string { return s.runtime().Config.AdminToken() }, s.startOwned, remoteStartTimeout, s.log); err != nil {
		n.close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	w := &fleet.Watcher{Store: store, Regions: f.Regions, Log: s.log, Counts: fleetCounts{s.metrics}, Resync: resync,
		CacheFile: fleetCache(cfg),
		Nodes:     s.setNodes,
		Apply: func(apps []config.App, changed []string) {
			if err := s.ApplyFleetChanges(apps, changed); err != nil {
				s.log.Warn("fleet: catalog not applied; the previous one stays", "error", err.Error())
			}
			if ls := n.load; ls != nil {
				ls.Reapply()
			}
		}}
	ls, err := fleet.ShareLoad(nc, f.Node, f.Regions, func() fleet.LoadView { return loadView{s.runtime()} }, s.log)
	if err != nil {
		n.close()
		return err
	}
	n.load = ls
	n.wg.Go(func() { n.shareLoad(ctx) })
	n.wg.Go(func() { w.Run(ctx) })
	rec := &fleet.NodeRecord{Name: f.Node, Role: f.Role, Region: cfg.Proxy.Region, Version: version,
		Addresses: nodeAddresses(cfg), Backhaul: s.bh.advertised()}
	n.wg.Go(func() { n.heartbeat(ctx, rec) })
	// Registered once: a node that leaves and rejoins (a failed handover)
	// keeps the same gauges, which read whichever node is current.
	s.fleetMetrics.Do(func() {
		s.metrics.SetFleet(func() bool {
			cur := s.fleet.Load()
			return cur != nil && cur.nc.IsConnected()
		}, func() time.Duration {
			if cur := s.fleet.Load(); cur != nil {
				return cur.age()
			}
			return 0
		})
	})
	s.fleet.Store(n)
	// The machines this node's drivers run, as they are now, for the
	// other nodes; state changes are published as they happen.
	n.wg.Go(s.publishAll)
	return nil
}

// age is how stale the copy may be: 0 while connected.
func (n *fleetNode) age() time.Duration {
	at := n.lostAt.Load()
	if at == 0 {
		return 0
	}
	return time.Since(time.Unix(0, at))
}

// shareLoad reports this node's loads every interval.
func (n *fleetNode) shareLoad(ctx context.Context) {
	t := time.NewTicker(fleet.LoadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n.load.Tick(now)
		}
	}
}

func (n *fleetNode) heartbeat(ctx context.Context, rec *fleet.NodeRecord) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		if n.nc.IsConnected() {
			hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			n.store.Heartbeat(hctx, rec)
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// close leaves the fleet; the catalog applied last keeps serving.
func (n *fleetNode) close() {
	n.once.Do(func() {
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
		if n.nc != nil {
			n.nc.Close()
		}
		if n.emb != nil {
			n.emb.Close()
		}
	})
}

// nodeAddresses are the addresses this node's public ports listen on.
func nodeAddresses(cfg *config.Config) []string {
	if cfg.Proxy.Bind == "" {
		return nil
	}
	return []string{cfg.Proxy.Bind}
}

func errText(err error) string {
	if err == nil {
		return "connection closed"
	}
	return err.Error()
}

// fleetCounts counts catalog records for the metrics.
type fleetCounts struct{ m *telemetry.Metrics }

func (f fleetCounts) Update(bucket, result string) {
	f.m.FleetUpdates.WithLabelValues(bucketLabel(bucket), result).Inc()
}

// bucketLabel keeps the label bounded: machine buckets count as one.
func bucketLabel(bucket string) string {
	switch bucket {
	case fleet.BucketApps, fleet.BucketSummary, fleet.BucketNodes:
		return bucket
	}
	return "ep-machines"
}

// FleetURL is the embedded NATS server's client URL ("" without one), for
// the fleet CLI and tests.
func (s *Server) FleetURL() string {
	n := s.fleet.Load()
	if n == nil || n.emb == nil {
		return ""
	}
	return n.emb.ClientURL()
}

// fleetCache is where a node caches the catalog it applied last.
func fleetCache(cfg *config.Config) string {
	return filepath.Join(cfg.Resolve(cfg.Fleet.DataDir), "catalog.json")
}

// fromFleetCache builds the starting runtime with the catalog cached at
// the last run, before any port opens: a node that starts while NATS is
// down serves the fleet's apps from its first connection on.
func (s *Server) fromFleetCache(rt *Runtime) *Runtime {
	apps, err := fleet.ReadCache(fleetCache(rt.Config))
	if err != nil {
		return rt
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.fleetApps = apps
	next, err := BuildRuntime(s.overlay(s.withFleet(s.fileCfg)), rt, s.deps)
	if err != nil {
		s.log.Warn("fleet: cached catalog not applied", "error", err.Error())
		return rt
	}
	s.rt.Store(next)
	s.fleetIndex = fleetIndex(next.Config, len(s.fileCfg.Apps))
	s.log.Info("fleet: serving the cached catalog until NATS answers", "apps", len(apps))
	return next
}

// loadView is a runtime's catalog as load sharing sees it.
type loadView struct{ rt *Runtime }

func (v loadView) Local(yield func(k fleet.LoadKey, region string, n int64)) {
	for _, a := range v.rt.Snap.Apps {
		for j, svc := range a.Services {
			for _, m := range a.Machines {
				yield(fleet.LoadKey{App: a.Name, Service: j, Machine: m.ID}, m.Region, svc.Load(m).Local())
			}
		}
	}
}

func (v loadView) SetRemote(k fleet.LoadKey, n int64) {
	a := v.rt.Snap.App(k.App)
	if a == nil || k.Service < 0 || k.Service >= len(a.Services) {
		return
	}
	if m := a.Machine(k.Machine); m != nil {
		svc := a.Services[k.Service]
		if l := svc.Load(m); l != nil && l.SetRemote(n) {
			svc.Waiters().Wake()
		}
	}
}

// PrepareHandover readies the fleet for a new process taking over this
// node. It writes the catalog applied last to the cache at once (it is
// otherwise written at most every 2 s), since the new process serves from
// the cache until it has read the store: a stale cache would route, for
// that moment, as the fleet did seconds ago. A node that runs the fleet's
// NATS server itself then stops it, because the new process must open
// the same port and store, and serves from the catalog it applied last
// while the handover runs; the returned function rejoins, for when the
// handover fails. Nodes on external NATS stay: the new process joins the
// same servers side by side.
func (s *Server) PrepareHandover() (rejoin func() error) {
	n := s.fleet.Load()
	if n == nil {
		return func() error { return nil }
	}
	s.reloadMu.Lock()
	apps, applied := s.fleetApps, s.fleetApps != nil
	s.reloadMu.Unlock()
	if file := fleetCache(s.runtime().Config); applied && file != "" {
		if err := fleet.WriteCache(file, apps); err != nil {
			s.log.Warn("fleet: cannot write the catalog cache for the handover", "file", file, "error", err.Error())
		}
	}
	if n.emb == nil || !s.fleet.CompareAndSwap(n, nil) {
		return func() error { return nil }
	}
	n.close()
	s.log.Info("fleet: embedded NATS stopped for the handover; serving the last catalog")
	return func() error {
		rt := s.runtime()
		return s.startFleet(rt.Config, s.version)
	}
}

// setNodes takes the fleet's node records: the backhaul finds workers there.
func (s *Server) setNodes(nodes map[string]fleet.NodeRecord) {
	s.nodes.Store(&nodes)
	if s.bh != nil {
		s.bh.setNodes(nodes)
	}
}
