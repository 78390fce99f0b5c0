package server

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/backhaul"
	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/httpproxy"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/route"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// bhNode is this node's part in the backhaul: the workers it knows of
// (from the fleet's node records), its client to them, and, on a
// worker, its own listener. It is the upstream dialer's way to machines
// other nodes run.
type bhNode struct {
	s       *Server
	self    string
	dir     atomic.Pointer[workerDir]
	client  *backhaul.Client
	metrics *backhaul.Metrics

	mu     sync.Mutex
	nodes  map[string]fleet.NodeRecord
	worker *backhaul.Worker
	// advertise is where edges dial this worker ("": not listening).
	advertise string
	stop      chan struct{}
	wg        sync.WaitGroup
}

// workerDir is an immutable view of the workers: where each listens,
// and which are alive now. Edges read it per request without a lock.
type workerDir struct {
	addr   map[string]string // node → backhaul address, for every worker ever seen
	region map[string]string // node → its region
	down   map[string]bool   // workers whose heartbeat expired
}

// newBackhaul sets up the backhaul for a node with a fleet certificate.
func newBackhaul(s *Server, cfg *config.Config) *bhNode {
	b := &bhNode{s: s, self: cfg.Fleet.Node, metrics: backhaul.NewMetrics(s.metrics),
		nodes: map[string]fleet.NodeRecord{}, stop: make(chan struct{})}
	b.dir.Store(&workerDir{})
	p := cfg.Proxy
	b.client = backhaul.NewClient(backhaul.ClientOptions{
		Identity:               s.identity,
		Address:                b.address,
		DialTimeout:            p.ConnectTimeout.D(),
		IdleTimeout:            p.IdleTimeout.D(),
		ResponseHeaderTimeout:  p.ResponseHeaderTimeout.D(),
		MaxResponseHeaderBytes: int64(p.MaxHeaderBytes),
		Guard:                  b.guard(cfg),
		Metrics:                b.metrics,
		Dial:                   s.deps.Dial,
		// A connect to a worker is a round trip to its region: the edge's
		// view of how far regions are learns from the backhaul too.
		Connected: func(node string, took time.Duration) {
			if region := b.region(node); region != "" {
				s.runtime().observeRTT(region, took)
			}
		},
	})
	// Liveness follows the clock: a worker that stops beating is down
	// once its record is older than the heartbeat's lifetime, with no
	// event to say so.
	b.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.rebuild()
			}
		}
	})
	return b
}

// guard is the progress guard's settings for backhaul connections, with
// the spin kill logged as for any connection, naming the peer node.
func (b *bhNode) guard(cfg *config.Config) backhaul.Guard {
	return backhaul.Guard{Limits: guardLimits(cfg), Stats: b.s.guardStats, OnKill: func(peer string, k iox.Kill) {
		b.s.log.Error("spin detector killed a backhaul connection", "peer", peer, "layer", k.Layer,
			"reason", string(k.Reason), "counters", k.Counts.String(), "chain", k.Chain)
	}}
}

// setNodes takes the fleet's node records (the watcher's callback).
func (b *bhNode) setNodes(nodes map[string]fleet.NodeRecord) {
	b.mu.Lock()
	for name, n := range nodes {
		if n.Backhaul != "" {
			b.nodes[name] = n
		}
	}
	b.mu.Unlock()
	b.rebuild()
}

// rebuild makes the directory from the records: a worker once seen is
// remembered, so its machines fail over quickly (down) rather than be
// dialled at addresses only it can reach.
func (b *bhNode) rebuild() {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := &workerDir{addr: make(map[string]string, len(b.nodes)), region: make(map[string]string, len(b.nodes)), down: map[string]bool{}}
	for name, n := range b.nodes {
		d.addr[name], d.region[name] = n.Backhaul, n.Region
		if time.Since(n.Seen) > fleet.NodeTTL {
			d.down[name] = true
		}
	}
	old := b.dir.Load()
	b.dir.Store(d)
	for name := range old.down {
		if !d.down[name] {
			b.s.log.Info("backhaul: worker is back", "node", name)
		}
	}
	for name := range d.down {
		if !old.down[name] {
			b.s.log.Warn("backhaul: worker's heartbeat expired; its machines take no work", "node", name)
		}
	}
}

// Worker is the node that runs m, when that is a worker other than this
// node (upstream.Backhaul).
func (b *bhNode) Worker(m *catalog.Machine) string {
	if m.Owner == "" || m.Owner == b.self {
		return ""
	}
	if _, ok := b.dir.Load().addr[m.Owner]; ok {
		return m.Owner
	}
	return ""
}

// down reports machines whose worker has left the fleet.
func (b *bhNode) down(m *catalog.Machine) bool {
	node := b.Worker(m)
	return node != "" && b.dir.Load().down[node]
}

// region is worker node's region ("": unknown).
func (b *bhNode) region(node string) string { return b.dir.Load().region[node] }

// elsewhere reports machines another node checks (their worker).
func (b *bhNode) elsewhere(m *catalog.Machine) bool { return b.Worker(m) != "" }

func (b *bhNode) address(node string) (string, bool) {
	d := b.dir.Load()
	addr, ok := d.addr[node]
	return addr, ok && !d.down[node]
}

// DialStream opens a raw stream to a machine through its worker.
func (b *bhNode) DialStream(ctx context.Context, node string, t backhaul.Target) (net.Conn, error) {
	return b.client.DialStream(ctx, node, t)
}

// listen opens the worker's backhaul listener.
func (b *bhNode) listen(f *config.Fleet) error {
	ln, err := b.s.listen("tcp", f.BackhaulListen)
	if err != nil {
		return fmt.Errorf("backhaul_listen %s: %w", f.BackhaulListen, err)
	}
	p := b.s.runtime().Config.Proxy
	w := backhaul.NewWorker(ln, backhaul.WorkerOptions{
		Identity:         b.s.identity,
		HandshakeTimeout: p.HandshakeTimeout.D(),
		IdleTimeout:      p.IdleTimeout.D(),
		Guard:            b.guard(b.s.runtime().Config),
		Connect:          b.connect,
		Pipe:             b.pipe,
		HTTP:             b.s.handler,
		ConnContext:      b.connContext,
		Log:              b.s.log,
		Metrics:          b.metrics,
	})
	b.mu.Lock()
	b.worker = w
	b.advertise = f.BackhaulAdvertise
	if b.advertise == "" {
		// As bound: a listen address with port 0 gets its real port.
		b.advertise = ln.Addr().String()
	}
	b.mu.Unlock()
	b.wg.Go(func() { _ = w.Serve() })
	b.s.log.Info("backhaul listening", "addr", ln.Addr().String(), "node", b.self)
	return nil
}

// connect is the worker's side of a stream: one of its own machines,
// leased by its own count and health, reached with its own timeout.
func (b *bhNode) connect(ctx context.Context, peer string, t backhaul.Target) (net.Conn, func(), error) {
	rt := b.s.runtime()
	entry, m, err := httpproxy.OwnMachine(rt.Snap, b.self, t)
	if err != nil {
		return nil, nil, err
	}
	l, err := upstream.Relay(entry.Service, m)
	if err != nil {
		return nil, nil, err
	}
	c, err := rt.Dialer.Dial(ctx, t.App, m.Region, m.AddrFor(t.Port))
	if err != nil {
		l.Release()
		return nil, nil, err
	}
	return rt.Env.WrapUpstream(c), l.Release, nil
}

// pipe moves a stream's bytes under the proxy's idle and half-closed
// timeouts.
func (b *bhNode) pipe(edge, machine net.Conn) {
	p := b.s.runtime().Config.Proxy
	iox.Duplex(edge, machine, iox.DuplexOptions{Pool: b.s.bufs, IdleTimeout: p.IdleTimeout.D(),
		HalfClosedTimeout: p.HalfClosedTimeout.D(), NoSplice: true})
}

// connContext gives a relayed request the connection the core reads:
// from an edge, in relay mode, in the runtime in force.
func (b *bhNode) connContext(ctx context.Context, peer string) context.Context {
	rt := b.s.runtime()
	c := &httpproxy.Conn{ID: b.s.nextID.Add(1), Env: rt.Env, Relay: &httpproxy.Relay{Self: b.self, Peer: peer},
		Current: func() (*httpproxy.Env, *route.Port) { return b.s.runtime().Env, nil }}
	return httpproxy.WithConn(ctx, c)
}

// close stops the listener and the client.
func (b *bhNode) close() {
	b.mu.Lock()
	w := b.worker
	b.worker = nil
	b.mu.Unlock()
	if w != nil {
		w.Close()
	}
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	b.wg.Wait()
	b.client.Close()
}

// identity is this node's fleet identity in the runtime in force.
func (s *Server) identity() *backhaul.Identity { return s.runtime().identity }

// advertised is the address this node's record gives edges ("": none).
func (b *bhNode) advertised() string {
	if b == nil {
		return ""
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.advertise
}
