package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
	"github.com/edgeproxy/edgeproxy/internal/udpproxy"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// udpPort is one public UDP port and its forwarder.
type udpPort struct {
	public int
	pc     *net.UDPConn
	fwd    *udpproxy.Forwarder
	done   chan struct{}
}

// udpPickTimeout bounds the choice of a machine for a new flow: the
// port's datagrams wait behind it, so a flow that cannot get a machine
// soon is dropped rather than queued.
const udpPickTimeout = 100 * time.Millisecond

// syncUDP opens the runtime's UDP ports not open yet and closes those it
// no longer has. Kept ports go on: each new flow reads the service from
// the runtime in force.
func (s *Server) syncUDP(rt *Runtime) error {
	want := rt.udpPorts
	s.mu.Lock()
	var gone []*udpPort
	for public, up := range s.udp {
		if want[public] == nil {
			gone = append(gone, up)
			delete(s.udp, public)
		}
	}
	var add []int
	for public := range want {
		if s.udp[public] == nil {
			add = append(add, public)
		}
	}
	s.mu.Unlock()
	for _, up := range gone {
		up.fwd.Close()
		<-up.done
		s.log.Info("udp port closed by reload", "port", up.public)
	}
	for _, public := range add {
		if err := s.openUDP(rt, public); err != nil {
			return err
		}
	}
	return nil
}

// openUDP binds a public UDP port and starts its forwarder.
func (s *Server) openUDP(rt *Runtime, public int) error {
	addr := net.JoinHostPort(rt.Config.Proxy.Bind, strconv.Itoa(rt.Config.Proxy.LocalPort(public)))
	pc, err := s.listenPacket("udp", addr)
	if err != nil {
		return &bindError{port: public, err: err}
	}
	upc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return &bindError{port: public, err: fmt.Errorf("not a UDP socket: %T", pc)}
	}
	cfg := rt.Config
	up := &udpPort{public: public, pc: upc, done: make(chan struct{})}
	up.fwd = udpproxy.New(upc, udpproxy.Options{
		Pick:        func(client netip.AddrPort) (netip.AddrPort, func(), error) { return s.udpPick(public, client) },
		Dial:        s.udpDial,
		MaxFlows:    cfg.Limits.MaxUDPFlows,
		IdleTimeout: cfg.Proxy.UDPIdleTimeout.D(),
		Guard:       guardLimits(cfg),
		Stats:       s.guardStats,
		OnKill: func(client netip.AddrPort, k iox.Kill) {
			s.log.Error("spin detector killed a udp flow", "port", public, "client", client.String(), "layer", k.Layer,
				"reason", string(k.Reason), "counters", k.Counts.String(), "chain", k.Chain)
		},
		Log: s.log,
	})
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		upc.Close()
		return nil
	}
	s.udp[public] = up
	s.mu.Unlock()
	s.log.Info("listening", "port", public, "addr", upc.LocalAddr().String(), "handlers", "udp")
	go func() {
		defer close(up.done)
		if err := up.fwd.Serve(); err != nil {
			s.log.Error("udp port stopped", "port", public, "error", err.Error())
		}
	}()
	return nil
}

// udpPick leases a machine of the service on public UDP port for a new
// flow, by the same rules as a TCP connection's (region, limits,
// health), counting the flow as a connection.
func (s *Server) udpPick(public int, client netip.AddrPort) (netip.AddrPort, func(), error) {
	rt := s.runtime()
	svc := rt.udpPorts[public]
	if svc == nil {
		return netip.AddrPort{}, nil, fmt.Errorf("no udp service on port %d", public)
	}
	ctx, cancel := context.WithTimeout(context.Background(), udpPickTimeout)
	defer cancel()
	l, err := rt.Dialer.Picker.Acquire(ctx, svc, &upstream.Want{})
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	if rt.Dialer.Backhaul != nil && rt.Dialer.Backhaul.Worker(l.Machine) != "" {
		l.Release()
		return netip.AddrPort{}, nil, fmt.Errorf("machine %s runs on another node: UDP does not cross the backhaul", l.Machine.ID)
	}
	return l.Machine.AddrFor(svc.InternalPort), l.Release, nil
}

// udpDial opens a flow's socket to a machine, from upstream_bind if set.
func (s *Server) udpDial(machine netip.AddrPort) (net.Conn, error) {
	var local *net.UDPAddr
	if b := s.runtime().Config.Proxy.UpstreamBind; b != "" {
		local = &net.UDPAddr{IP: net.ParseIP(b)}
	}
	return net.DialUDP("udp", local, net.UDPAddrFromAddrPort(machine))
}

// closeUDP stops every UDP port.
func (s *Server) closeUDP() {
	s.mu.Lock()
	ports := s.udp
	s.udp = map[int]*udpPort{}
	s.mu.Unlock()
	for _, up := range ports {
		up.fwd.Close()
		<-up.done
	}
}

// udpStats lists the UDP ports' counters for the metrics.
func (s *Server) udpStats() []telemetry.UDPStat {
	s.mu.Lock()
	ports := make([]*udpPort, 0, len(s.udp))
	for _, up := range s.udp {
		ports = append(ports, up)
	}
	s.mu.Unlock()
	byPort := s.runtime().udpPorts
	out := make([]telemetry.UDPStat, 0, len(ports))
	for _, up := range ports {
		app := ""
		if svc := byPort[up.public]; svc != nil {
			app = svc.App.Name
		}
		st := up.fwd.Stats()
		out = append(out, telemetry.UDPStat{App: app, Port: portLabel(up.public), Flows: st.Flows,
			PacketsIn: st.PacketsIn, PacketsOut: st.PacketsOut, BytesIn: st.BytesIn, BytesOut: st.BytesOut,
			DroppedFull: st.Dropped, DroppedNoMachine: st.PickFailed, DroppedOversize: st.Oversize})
	}
	return out
}

// UDPAddr returns the local address of a public UDP port, or nil.
func (s *Server) UDPAddr(public int) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if up := s.udp[public]; up != nil {
		return up.pc.LocalAddr()
	}
	return nil
}
