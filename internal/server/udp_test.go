package server_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// dnsMachine is a real DNS server (miekg/dns) on loopback UDP that
// answers every A question with 192.0.2.53.
func dnsMachine(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA,
			Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 53)})
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-done })
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func udpConfig(machinePort, maxFlows int) string {
	return fmt.Sprintf(`
[limits]
max_udp_flows = %d

[[apps]]
name = "dns"
  [[apps.services]]
  internal_port = 53
  protocol = "udp"
    [[apps.services.ports]]
    port = 53
  [[apps.machines]]
  id = "d1"
  address = "127.0.0.1"
  ports = { 53 = %d }
`, maxFlows, machinePort)
}

// A DNS exchange through a UDP service, counted per app in the metrics.
func TestUDPServiceDNS(t *testing.T) {
	p := proxytest.Start(t, udpConfig(dnsMachine(t), 100), proxytest.Options{})
	addr := p.Server.UDPAddr(53)
	if addr == nil {
		t.Fatal("UDP port 53 is not served")
	}
	cl := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	for _, name := range []string{"a.example.", "b.example.", "c.example."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		r, _, err := cl.Exchange(q, addr.String())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.53" {
			t.Fatalf("%s: answer %v", name, r.Answer)
		}
	}
	waitMetric(t, p, `edgeproxy_udp_packets_total{app="dns",direction="in",port="53"}`, 3)
	waitMetric(t, p, `edgeproxy_udp_packets_total{app="dns",direction="out",port="53"}`, 3)
	if addr := p.Server.Addr(53); addr != nil {
		t.Errorf("a UDP service's port is served over TCP too: %v", addr)
	}
}

// A flood of new flows from many source ports stays within
// max_udp_flows; the rest is dropped and counted.
func TestUDPFloodWithinBound(t *testing.T) {
	const bound, senders = 10, 100
	p := proxytest.Start(t, udpConfig(dnsMachine(t), bound), proxytest.Options{})
	addr := p.Server.UDPAddr(53).(*net.UDPAddr)
	q := new(dns.Msg)
	q.SetQuestion("flood.example.", dns.TypeA)
	wire, _ := q.Pack()
	for range senders {
		c, err := net.DialUDP("udp", nil, addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(wire)
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		flows := scrape(t, p, `edgeproxy_udp_flows{app="dns",port="53"}`)
		dropped := scrape(t, p, `edgeproxy_udp_dropped_total{app="dns",port="53",reason="flow_table_full"}`)
		in := scrape(t, p, `edgeproxy_udp_packets_total{app="dns",direction="in",port="53"}`)
		if in+dropped == senders {
			if flows > bound {
				t.Fatalf("%v flows open, bound %d", flows, bound)
			}
			t.Logf("%d senders: %v flows, %v datagrams dropped", senders, flows, dropped)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %v flows, %v in, %v dropped of %d", flows, in, dropped, senders)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A reload that removes a UDP service closes its port; one that brings
// it back opens it again.
func TestUDPPortFollowsReloads(t *testing.T) {
	machine := dnsMachine(t)
	port := proctest.FreePorts(t, 1)[0]
	withUDP := fmt.Sprintf("[proxy]\nbind = \"127.0.0.1\"\nport_map = { 53 = %d, 8080 = 0 }\n", port) + udpConfig(machine, 100) + `
[[apps]]
name = "web"
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 8080
  [[apps.machines]]
  id = "w1"
  address = "127.0.0.1"
`
	p := proxytest.Start(t, withUDP, proxytest.Options{})
	path := filepath.Join(p.Dir, "edgeproxy.toml")
	query := func() error {
		q := new(dns.Msg)
		q.SetQuestion("reload.example.", dns.TypeA)
		_, _, err := (&dns.Client{Net: "udp", Timeout: time.Second}).Exchange(q, fmt.Sprintf("127.0.0.1:%d", port))
		return err
	}
	without := strings.Replace(withUDP, "protocol = \"udp\"", "protocol = \"tcp\"", 1)
	if err := os.WriteFile(path, []byte(without), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Server.Reload(path); err != nil {
		t.Fatal(err)
	}
	if p.Server.UDPAddr(53) != nil || query() == nil {
		t.Fatal("the UDP port still answers after a reload removed its service")
	}
	if err := os.WriteFile(path, []byte(withUDP), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Server.Reload(path); err != nil {
		t.Fatal(err)
	}
	if err := query(); err != nil {
		t.Fatalf("after the reload that brought the service back: %v", err)
	}
}
