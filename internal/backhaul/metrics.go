package backhaul

import (
	"sync"

	"github.com/edgeproxy/edgeproxy/internal/meter"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// Metrics counts the backhaul by peer node. Bytes are read from each
// connection's meter at scrape time (and kept when it closes), so moving
// a byte never touches a Prometheus object. A nil *Metrics counts
// nothing.
type Metrics struct {
	t *telemetry.Backhaul

	mu     sync.Mutex
	live   map[*meteredConn]struct{}
	closed map[peerSide]*[2]int64 // in, out of closed connections
	open   map[peerSide]int
}

type peerSide struct{ peer, side string }

// meteredConn is one backhaul connection's meter and who it is with.
type meteredConn struct {
	m  *meter.Conn
	ps peerSide
}

// NewMetrics makes the backhaul's instruments in the node's registry.
func NewMetrics(m *telemetry.Metrics) *Metrics {
	b := &Metrics{live: map[*meteredConn]struct{}{}, closed: map[peerSide]*[2]int64{}, open: map[peerSide]int{}}
	b.t = m.NewBackhaul(b.stats)
	return b
}

// stats lists connections and bytes by peer and side, for a scrape.
func (m *Metrics) stats() []telemetry.BackhaulStat {
	m.mu.Lock()
	defer m.mu.Unlock()
	by := map[peerSide]*telemetry.BackhaulStat{}
	get := func(ps peerSide) *telemetry.BackhaulStat {
		st := by[ps]
		if st == nil {
			st = &telemetry.BackhaulStat{Peer: ps.peer, Side: ps.side}
			by[ps] = st
		}
		return st
	}
	for ps, b := range m.closed {
		st := get(ps)
		st.In += b[0]
		st.Out += b[1]
	}
	for c := range m.live {
		in, out := c.m.Bytes()
		st := get(c.ps)
		st.In += in
		st.Out += out
	}
	for ps, n := range m.open {
		get(ps).Conns = n
	}
	out := make([]telemetry.BackhaulStat, 0, len(by))
	for _, st := range by {
		out = append(out, *st)
	}
	return out
}

// opened counts a connection with peer as open and its bytes as its.
func (m *Metrics) opened(mc *meteredConn) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.live[mc] = struct{}{}
	m.open[mc.ps]++
	m.mu.Unlock()
}

// ended moves a connection's bytes to the closed totals.
func (m *Metrics) ended(mc *meteredConn) {
	if m == nil {
		return
	}
	in, out := mc.m.Bytes()
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live[mc]; !ok {
		return
	}
	delete(m.live, mc)
	if m.open[mc.ps]--; m.open[mc.ps] <= 0 {
		delete(m.open, mc.ps)
	}
	b := m.closed[mc.ps]
	if b == nil {
		b = new([2]int64)
		m.closed[mc.ps] = b
	}
	b[0] += in
	b[1] += out
}

// connsWith is how many backhaul connections to or from peer are open.
func (m *Metrics) connsWith(peer string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for ps, k := range m.open {
		if ps.peer == peer {
			n += k
		}
	}
	return n
}

func (m *Metrics) stream(peer, side, result string) {
	if m != nil {
		m.t.Streams.WithLabelValues(peer, side, result).Inc()
	}
}

// Request counts an HTTP request relayed to worker peer.
func (m *Metrics) Request(peer, result string) {
	if m != nil {
		m.t.Requests.WithLabelValues(peer, result).Inc()
	}
}

func (m *Metrics) refusedConn() {
	if m != nil {
		m.t.Refused.Inc()
	}
}
