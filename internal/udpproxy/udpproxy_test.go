package udpproxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/edgeproxy/edgeproxy/internal/iox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// echo is a UDP machine that sends every datagram back, and a copy of
// size extra bytes when asked.
func echo(t *testing.T) netip.AddrPort {
	t.Helper()
	pc := listenUDP(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, addr, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			reply := buf[:n]
			if bytes.HasPrefix(reply, []byte("big:")) {
				reply = bytes.Repeat([]byte{'b'}, 3000)
			}
			pc.WriteToUDPAddrPort(reply, addr)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// start runs a forwarder to machine on a loopback port.
func start(t *testing.T, machine netip.AddrPort, o Options) (*Forwarder, netip.AddrPort, *atomic.Int64) {
	t.Helper()
	leases := &atomic.Int64{}
	if o.Pick == nil {
		o.Pick = func(netip.AddrPort) (netip.AddrPort, func(), error) {
			leases.Add(1)
			return machine, func() { leases.Add(-1) }, nil
		}
	}
	if o.MaxFlows == 0 {
		o.MaxFlows = 100
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 5 * time.Second
	}
	if o.Guard == (iox.GuardLimits{}) {
		o.Guard = iox.DefaultGuardLimits()
	}
	pc := listenUDP(t)
	f := New(pc, o)
	served := make(chan error, 1)
	go func() { served <- f.Serve() }()
	t.Cleanup(func() {
		f.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f, pc.LocalAddr().(*net.UDPAddr).AddrPort(), leases
}

// eventually waits up to 5 s for cond, failing with what otherwise.
func eventually(t *testing.T, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialTo is a client socket connected to the forwarder at addr.
func dialTo(t *testing.T, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func exchange(t *testing.T, c *net.UDPConn, msg []byte) []byte {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply to %q: %v", msg, err)
	}
	return buf[:n]
}

func TestEchoFlowsAndReplyAddress(t *testing.T) {
	f, addr, leases := start(t, echo(t), Options{})
	var clients []*net.UDPConn
	for i := range 3 {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
		for j := range 3 {
			msg := []byte{byte('a' + i), byte('0' + j)}
			// A connected client socket only accepts replies from the
			// address it sent to: the reply came from the public port.
			if got := exchange(t, c, msg); !bytes.Equal(got, msg) {
				t.Errorf("client %d: sent %q, got %q", i, msg, got)
			}
		}
	}
	st := f.Stats()
	if st.Flows != 3 || leases.Load() != 3 {
		t.Errorf("%d flows and %d leases for 3 clients", st.Flows, leases.Load())
	}
	if st.PacketsIn != 9 || st.PacketsOut != 9 || st.BytesIn != 18 || st.BytesOut != 18 {
		t.Errorf("counters %+v, want 9 packets and 18 bytes each way", st)
	}
	f.Close()
	if leases.Load() != 0 {
		t.Errorf("%d leases held after Close", leases.Load())
	}
}

// A real DNS exchange: a miekg/dns server as the machine, its client
// through the forwarder.
func TestDNSExchange(t *testing.T) {
	pc := listenUDP(t)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA,
			Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 7)})
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	defer srv.Shutdown()
	_, addr, _ := start(t, pc.LocalAddr().(*net.UDPAddr).AddrPort(), Options{})
	cl := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	for _, name := range []string{"a.example.", "b.example."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		r, _, err := cl.Exchange(q, addr.String())
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.7" || r.Answer[0].Header().Name != name {
			t.Errorf("answer for %s: %v", name, r.Answer)
		}
	}
}

// A flood of new flows from many source ports: the table stays within
// its bound and the excess is counted, not served.
func TestFloodStaysWithinBound(t *testing.T) {
	const bound, senders = 20, 200
	f, addr, leases := start(t, echo(t), Options{MaxFlows: bound})
	for range senders {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := f.Stats()
		// (A closed sender's port may be reused by a later one: count
		// datagrams, not flows.)
		if st.PacketsIn+st.Dropped == senders {
			if st.Flows > bound || leases.Load() > bound {
				t.Fatalf("%d flows, %d leases; bound %d", st.Flows, leases.Load(), bound)
			}
			t.Logf("%d senders: %d flows, %d datagrams dropped", senders, st.Flows, st.Dropped)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %+v for %d senders", st, senders)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIdleFlowsEnd(t *testing.T) {
	f, addr, leases := start(t, echo(t), Options{IdleTimeout: 100 * time.Millisecond})
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange(t, c, []byte("hi"))
	deadline := time.Now().Add(5 * time.Second)
	for f.Stats().Flows != 0 || leases.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle flow still open: %+v, %d leases", f.Stats(), leases.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The client's next datagram opens a new flow.
	if got := exchange(t, c, []byte("again")); string(got) != "again" {
		t.Errorf("after the idle end: %q", got)
	}
}

// A reply larger than the first buffer is dropped and counted once; the
// flow's later ones arrive whole.
func TestOversizeReply(t *testing.T) {
	f, addr, _ := start(t, echo(t), Options{})
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("big:1"))
	if got := exchange(t, c, []byte("big:2")); len(got) != 3000 {
		t.Errorf("second large reply: %d bytes, want 3000", len(got))
	}
	if st := f.Stats(); st.Oversize != 1 {
		t.Errorf("oversize count %d, want 1", st.Oversize)
	}
}

// spinConn is a machine socket whose reads return nothing forever: the
// incident's shape on a flow.
type spinConn struct {
	net.Conn
	closed atomic.Bool
}

func (s *spinConn) Read([]byte) (int, error) {
	if s.closed.Load() {
		return 0, net.ErrClosed
	}
	return 0, nil
}
func (s *spinConn) Write(p []byte) (int, error) { return len(p), nil }
func (s *spinConn) Close() error                { s.closed.Store(true); return nil }

func TestSpinningFlowIsKilledAndNamed(t *testing.T) {
	var mu sync.Mutex
	var kills []string
	f, addr, leases := start(t, netip.MustParseAddrPort("127.0.0.1:9"), Options{
		Dial: func(netip.AddrPort) (net.Conn, error) { return &spinConn{}, nil },
		OnKill: func(client netip.AddrPort, k iox.Kill) {
			mu.Lock()
			kills = append(kills, client.String()+" "+k.Layer+" "+string(k.Reason))
			mu.Unlock()
		},
	})
	c := dialTo(t, addr)
	c.Write([]byte("x"))
	eventually(t, func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("spinning flow not killed: kills %v, %+v", kills, f.Stats())
	}, func() bool {
		mu.Lock()
		n := len(kills)
		mu.Unlock()
		return n > 0 && f.Stats().Flows == 0 && leases.Load() == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if want := c.LocalAddr().String() + " udp-machine "; len(kills) != 1 || !bytes.HasPrefix([]byte(kills[0]), []byte(want)) {
		t.Errorf("kills %v, want one naming %q", kills, want)
	}
}

func TestPickFailureDrops(t *testing.T) {
	f, addr, _ := start(t, netip.AddrPort{}, Options{
		Pick: func(netip.AddrPort) (netip.AddrPort, func(), error) {
			return netip.AddrPort{}, nil, errors.New("no machine")
		},
	})
	dialTo(t, addr).Write([]byte("x"))
	eventually(t, func() string { return "pick failure not counted" }, func() bool { return f.Stats().PickFailed > 0 })
	if st := f.Stats(); st.Flows != 0 {
		t.Errorf("%d flows after a failed pick", st.Flows)
	}
}

// Bound to every address, the forwarder answers from the address the
// client sent to: a client of 127.0.0.2 (its socket connected, so it
// takes replies from that address only) gets its reply, though the
// kernel would send one to it from 127.0.0.1.
func TestReplyFromTheAddressTheClientUsed(t *testing.T) {
	machine := echo(t)
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	f := New(pc, Options{MaxFlows: 10, IdleTimeout: 5 * time.Second, Guard: iox.DefaultGuardLimits(),
		Pick: func(netip.AddrPort) (netip.AddrPort, func(), error) { return machine, func() {}, nil }})
	served := make(chan error, 1)
	go func() { served <- f.Serve() }()
	defer func() { f.Close(); <-served }()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	for _, ip := range []string{"127.0.0.2", "127.0.0.1"} {
		c := dialTo(t, netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)))
		if got := exchange(t, c, []byte("to "+ip)); string(got) != "to "+ip {
			t.Errorf("via %s: %q", ip, got)
		}
	}
}
