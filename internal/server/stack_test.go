package server_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/demo"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/proxyproto"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// dialApp opens a client connection to the app's port, TLS on 443.
func dialApp(t *testing.T, p *proxytest.Proxy, port int) (net.Conn, *net.TCPConn) {
	t.Helper()
	raw, err := net.Dial("tcp", p.Addr(port))
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	if port != 443 {
		return raw, raw.(*net.TCPConn)
	}
	tc := tls.Client(raw, &tls.Config{ServerName: "app.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc, raw.(*net.TCPConn)
}

// TestHalfCloseAfterRequestGetsResponse: a client that sends a complete
// request and then ends its stream (close_notify over TLS, FIN in plain
// text) is legal and must get its whole response; net/http alone would
// cancel the request and the proxy would answer 502.
func TestHalfCloseAfterRequestGetsResponse(t *testing.T) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService), proxytest.Options{})
	for _, port := range []int{80, 443} {
		c, raw := dialApp(t, p, port)
		// The machine answers after 300ms: the half-close arrives while the
		// request is in flight.
		fmt.Fprintf(c, "GET /sleep?d=300ms HTTP/1.1\r\nHost: app.test\r\n\r\n")
		if tc, ok := c.(*tls.Conn); ok {
			tc.CloseWrite() // close_notify
		}
		raw.CloseWrite() // FIN
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
		var rep demo.Report
		err = json.NewDecoder(resp.Body).Decode(&rep)
		if resp.StatusCode != 200 || err != nil || rep.MachineID != "m1" {
			t.Errorf("port %d: status %d, report %+v, %v", port, resp.StatusCode, rep, err)
		}
		c.Close()
	}
}

// TestAbortOnClose: an app that opts in sees the request cancelled.
func TestAbortOnClose(t *testing.T) {
	svc := `
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
    http_options = { abort_on_close = true }
`
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), svc), proxytest.Options{})
	c, raw := dialApp(t, p, 80)
	defer c.Close()
	fmt.Fprintf(c, "GET /sleep?d=2s HTTP/1.1\r\nHost: app.test\r\n\r\n")
	raw.CloseWrite()
	if b, _ := io.ReadAll(c); bytes.Contains(b, []byte("200 OK")) {
		t.Errorf("abort_on_close request was still answered: %q", b)
	}
}

// TestLingeringCloseKeepsResponseTail: the client sends bytes the proxy
// never reads (after a Connection: close request). Closing with them
// unread would reset the connection and could destroy the response; the
// lingering close drains them first.
func TestLingeringCloseKeepsResponseTail(t *testing.T) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService), proxytest.Options{})
	for i := 0; i < 20; i++ {
		c, _ := dialApp(t, p, 80)
		junk := bytes.Repeat([]byte("j"), 256<<10)
		req := "GET /stream?n=50&interval=1ms HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
		go c.Write(append([]byte(req), junk...))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Contains(b, []byte("chunk 50\n")) {
			t.Fatalf("try %d: response cut (%d bytes): %v", i, len(b), err)
		}
	}
}

// TestLingeringClosesHoldNoBuffers: connections that reach their idle
// timeout together linger (waiting for the clients' FIN) without a copy
// buffer each; they used to hold 32 KiB apiece for the whole lingering
// time. Memory is counted after collections, so it is live memory only.
func TestLingeringClosesHoldNoBuffers(t *testing.T) {
	cfg := "[proxy]\nidle_timeout = \"300ms\"\nlingering_timeout = \"5s\"\n" +
		singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService)
	p := proxytest.Start(t, cfg, proxytest.Options{})
	const n = 200
	live := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC() // the pools' buffers go in the second
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", p.Addr(80))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.Write([]byte("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	before := live()
	// Each connection is at its idle timeout within 300 ms, sends its FIN
	// and lingers, as its client stays silent, for 5 s.
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range conns {
		c.SetReadDeadline(deadline)
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("want the proxy's FIN after the idle timeout, got %v", err)
		}
	}
	grew := int64(live()) - int64(before)
	t.Logf("%d lingering connections: live heap %+d KiB", n, grew>>10)
	if grew > n*8<<10 {
		t.Errorf("%d lingering connections hold %d KiB more, want no copy buffer each (%d KiB for %d)", n, grew>>10, n*32, n)
	}
}

const proxyProtoCfg = `
[proxy_protocol]
mode = "%s"
trusted = ["%s"]
`

func TestProxyProtocolIn(t *testing.T) {
	machinePort := proxytest.Machine(t, "m1")
	src := &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 40000}
	dst := &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 80}
	send := func(p *proxytest.Proxy, version int) (demo.Report, error) {
		c, err := net.Dial("tcp", p.Addr(80))
		if err != nil {
			return demo.Report{}, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if version > 0 {
			hdr, _ := proxyproto.Header(version, src, dst)
			c.Write(hdr)
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return demo.Report{}, err
		}
		defer resp.Body.Close()
		var rep demo.Report
		return rep, json.NewDecoder(resp.Body).Decode(&rep)
	}
	// Trusted loopback balancer: the header's address is the client's.
	p := proxytest.Start(t, fmt.Sprintf(proxyProtoCfg, "required", "127.0.0.0/8")+singleApp(machine("m1", machinePort), httpService), proxytest.Options{})
	for _, v := range []int{1, 2} {
		rep, err := send(p, v)
		if err != nil || http.Header(rep.Headers).Get("Fly-Client-Ip") != "203.0.113.9" {
			t.Errorf("v%d: Fly-Client-IP %q, %v", v, http.Header(rep.Headers).Get("Fly-Client-Ip"), err)
		}
	}
	// Required and missing: closed.
	if _, err := send(p, 0); err == nil {
		t.Error("required PROXY header missing, yet served")
	}
	waitLog(t, p, `"reason":"missing"`)

	// Optional: served without a header too.
	p2 := proxytest.Start(t, fmt.Sprintf(proxyProtoCfg, "optional", "127.0.0.1")+singleApp(machine("m1", machinePort), httpService), proxytest.Options{})
	if rep, err := send(p2, 0); err != nil || http.Header(rep.Headers).Get("Fly-Client-Ip") != "127.0.0.1" {
		t.Errorf("optional without header: %v", err)
	}

	// Untrusted source sending a header: refused.
	p3 := proxytest.Start(t, fmt.Sprintf(proxyProtoCfg, "optional", "10.0.0.0/8")+singleApp(machine("m1", machinePort), httpService), proxytest.Options{})
	if _, err := send(p3, 1); err == nil {
		t.Error("PROXY header from an untrusted source was accepted")
	}
	waitLog(t, p3, `"reason":"untrusted"`)
	if rep, err := send(p3, 0); err != nil || rep.MachineID != "m1" {
		t.Errorf("untrusted plain client: %v", err)
	}
}

func TestPerIPLimit(t *testing.T) {
	cfg := "[limits]\nmax_connections_per_ip = 2\n" + singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService)
	p := proxytest.Start(t, cfg, proxytest.Options{})
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, _ := dialApp(t, p, 80)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	c, _ := dialApp(t, p, 80)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("third connection from one IP was served: %q", b)
	}
	c.Close()
	waitMetric(t, p, `edgeproxy_connections_refused_total{scope="ip"}`, 1)
	for _, h := range held {
		h.Close()
	}
}

// scrape reads one sample from the admin /metrics endpoint.
func scrape(t *testing.T, p *proxytest.Proxy, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

// waitMetric waits until a series reaches want: counters are bumped as
// connections wind down, just after the client sees them end.
func waitMetric(t *testing.T, p *proxytest.Proxy, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := scrape(t, p, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", series, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// brokenReader is the incident's layer: after the stream below ends it
// neither reads nor reports the end, returning (0, nil) forever.
type brokenReader struct{ net.Conn }

func (b *brokenReader) Read(p []byte) (int, error) {
	n, err := b.Conn.Read(p)
	if err == io.EOF {
		return 0, nil
	}
	return n, err
}

func (b *brokenReader) Unwrap() net.Conn { return b.Conn }

// TestSpinDetectorKillsBrokenLayer inserts the broken layer under TLS and
// shows the detector ends the connection, logs its layer chain, counts
// the kill, and leaves the proxy serving.
func TestSpinDetectorKillsBrokenLayer(t *testing.T) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService),
		proxytest.Options{WrapWire: func(c net.Conn) net.Conn { return &brokenReader{c} }})
	for _, port := range []int{443, 80} {
		c, raw := dialApp(t, p, port)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
		raw.CloseWrite() // the end of stream the broken layer swallows
		io.ReadAll(c)    // returns when the proxy closes the connection
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.GuardStats().Layer("wire").KillCount(iox.KillZeroProgress) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := p.GuardStats().Layer("wire").KillCount(iox.KillZeroProgress); n != 2 {
		t.Fatalf("kills = %d, want 2", n)
	}
	waitLog(t, p, `"chain":"*iox.Guarded(wire) -> *server_test.brokenReader -> *meter.Conn -> *peek.Conn -> *iox.Guarded(tcp) -> *net.TCPConn"`)
	waitMetric(t, p, `edgeproxy_spin_kills_total{layer="wire",reason="zero_progress"}`, 2)

	// Nothing keeps spinning after the kills: over a quiet second the
	// process uses a small fraction of one core (a spin costs all of it).
	before := cpuTime(t)
	time.Sleep(time.Second)
	if used := cpuTime(t) - before; used > 100*time.Millisecond {
		t.Errorf("process used %v of CPU in an idle second after the kills", used)
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestTCPIdleAndHalfClosedTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		halfClose bool
		counter   string
	}{
		{"idle", "[proxy]\nidle_timeout = \"300ms\"\n", false, `edgeproxy_timeouts_total{kind="idle"}`},
		{"half_closed", "[proxy]\nhalf_closed_timeout = \"300ms\"\n", true, `edgeproxy_timeouts_total{kind="half_closed"}`},
	} {
		// A machine that reads but never answers nor closes.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					io.Copy(io.Discard, c)
					<-stop // holds its side open until the test ends
					c.Close()
				}()
			}
		}()
		p := proxytest.Start(t, tc.cfg+tcpApp(ln.Addr().(*net.TCPAddr).Port, "[]", ""), proxytest.Options{})
		c, err := net.Dial("tcp", p.Addr(5000))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("hello"))
		if tc.halfClose {
			c.(*net.TCPConn).CloseWrite()
		}
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("%s: connection not ended by the proxy: %v", tc.name, err)
		}
		c.Close()
		waitMetric(t, p, tc.counter, 1)
		close(stop)
		ln.Close()
	}
}

// TestSlowHandshakeTimesOut: a client that trickles bytes holds nothing
// past the handshake deadline.
func TestSlowHandshakeTimesOut(t *testing.T) {
	cfg := "[proxy]\nhandshake_timeout = \"500ms\"\n" + singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService)
	p := proxytest.Start(t, cfg, proxytest.Options{})
	for _, port := range []int{80, 443} {
		c, err := net.Dial("tcp", p.Addr(port))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		var err2 error
		for i := 0; err2 == nil && time.Since(start) < 5*time.Second; i++ {
			_, err2 = c.Write([]byte{"GET / HTTP/1.1\r\n"[i%16]})
			time.Sleep(100 * time.Millisecond)
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, rerr := c.Read(make([]byte, 1)); rerr == io.EOF {
				break
			}
		}
		if time.Since(start) >= 5*time.Second {
			t.Errorf("port %d: trickling client still connected after 5s", port)
		}
		c.Close()
	}
}

// TestFinMidBody: a client that half-closes in the middle of the body it
// announced gets a 400 PH04 promptly (its end of stream is not held back,
// since the request is not complete), and the machine is not blamed.
func TestFinMidBody(t *testing.T) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService), proxytest.Options{})
	for _, port := range []int{80, 443} {
		c, raw := dialApp(t, p, port)
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4096\r\n\r\n%s", strings.Repeat("b", 2048))
		if tc, ok := c.(*tls.Conn); ok {
			tc.CloseWrite()
		}
		raw.CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
		if resp.StatusCode != 400 || resp.Header.Get("Edgeproxy-Error-Code") != "PH04" {
			t.Errorf("port %d: %d %q", port, resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"))
		}
		c.Close()
	}
}
