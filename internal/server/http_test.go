package server_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/demo"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// get sends a request through the proxy and decodes the demo machine's
// report.
func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (*http.Response, demo.Report) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var rep demo.Report
	if resp.Header.Get("Demo-Machine-Id") != "" {
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatalf("bad report %q: %v", body, err)
		}
	} else {
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
	}
	return resp, rep
}

func twoApps(portA, portB int, handlers string, extra string) string {
	return fmt.Sprintf(`
[[apps]]
name = "a"
hostnames = ["a.test"]
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 443
    handlers = %[3]s
    tls_options = { default_self_signed = true }
    %[4]s
  [[apps.machines]]
  id = "ma"
  address = "127.0.0.1"
  ports = { 8080 = %[1]d }

[[apps]]
name = "b"
hostnames = ["b.test", "*.wild.test"]
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 443
    handlers = %[3]s
    tls_options = { default_self_signed = true }
    %[4]s
  [[apps.machines]]
  id = "mb"
  address = "127.0.0.1"
  ports = { 8080 = %[2]d }
`, portA, portB, handlers, extra)
}

func TestSNIRoutingTwoAppsOnePort(t *testing.T) {
	p := proxytest.Start(t, twoApps(proxytest.Machine(t, "ma"), proxytest.Machine(t, "mb"), `["tls", "http"]`, ""), proxytest.Options{})
	for _, tc := range []struct{ host, machine string }{{"a.test", "ma"}, {"b.test", "mb"}, {"x.wild.test", "mb"}} {
		for _, h2 := range []bool{false, true} {
			resp, rep := get(t, p.Client(443, h2), "https://"+tc.host+"/", nil)
			if resp.StatusCode != 200 || rep.MachineID != tc.machine {
				t.Errorf("%s h2=%v: status %d machine %q, want %q", tc.host, h2, resp.StatusCode, rep.MachineID, tc.machine)
			}
			wantProto := "HTTP/1.1"
			if h2 {
				wantProto = "HTTP/2.0"
			}
			if resp.Proto != wantProto || resp.TLS.ServerName != tc.host {
				t.Errorf("%s: client proto %s sni %q", tc.host, resp.Proto, resp.TLS.ServerName)
			}
			if rep.Proto != "HTTP/1.1" {
				t.Errorf("machine spoke %s, want HTTP/1.1 pool", rep.Proto)
			}
		}
	}
	// An unknown server name is refused during the handshake, not hung.
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.Addr(443), &tls.Config{ServerName: "nobody.test", InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Fatal("handshake for an unknown SNI succeeded")
	}
}

func TestNoCertificateRefusesHandshake(t *testing.T) {
	cfg := strings.ReplaceAll(twoApps(proxytest.Machine(t, "ma"), proxytest.Machine(t, "mb"), `["tls", "http"]`, ""),
		"tls_options = { default_self_signed = true }", "")
	p := proxytest.Start(t, cfg, proxytest.Options{})
	_, err := tls.Dial("tcp", p.Addr(443), &tls.Config{ServerName: "a.test", InsecureSkipVerify: true})
	if err == nil {
		t.Fatal("handshake without any certificate succeeded")
	}
	waitLog(t, p, `"code":"PT05"`)
}

func waitLog(t *testing.T, p *proxytest.Proxy, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.Logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never contained %s:\n%s", want, p.Logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHostRoutingPlainHTTP(t *testing.T) {
	cfg := strings.ReplaceAll(twoApps(proxytest.Machine(t, "ma"), proxytest.Machine(t, "mb"), `["http"]`, ""),
		"tls_options = { default_self_signed = true }", "")
	cfg = strings.ReplaceAll(cfg, "port = 443", "port = 80")
	p := proxytest.Start(t, cfg, proxytest.Options{})
	c := p.Client(80, false)
	for host, machine := range map[string]string{"a.test": "ma", "B.TEST:80": "mb", "q.wild.test": "mb"} {
		resp, rep := get(t, c, "http://"+host+"/", nil)
		if resp.StatusCode != 200 || rep.MachineID != machine {
			t.Errorf("Host %s: %d %q", host, resp.StatusCode, rep.MachineID)
		}
		if rep.Host != host {
			t.Errorf("machine saw Host %q, want %q", rep.Host, host)
		}
	}
	resp, _ := get(t, c, "http://unknown.test/", nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 404 || resp.Header.Get("Edgeproxy-Error-Code") != "PR05" || !strings.Contains(string(body), "PR05") {
		t.Errorf("unknown host: %d %q %q", resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"), body)
	}
}

func singleApp(machines string, service string) string {
	return `
[[apps]]
name = "app"
hostnames = ["app.test"]
` + service + machines
}

func machine(id string, port int) string {
	return fmt.Sprintf(`
  [[apps.machines]]
  id = %q
  address = "127.0.0.1"
  ports = { 8080 = %d }
`, id, port)
}

const httpService = `
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.tls_options]
    default_self_signed = true
`

func TestForwardingHeadersAndSpoofing(t *testing.T) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService), proxytest.Options{})
	spoof := map[string]string{
		"Fly-Client-IP": "6.6.6.6", "Fly-Region": "evil", "Fly-Forwarded-Port": "1",
		"X-Forwarded-Proto": "gopher", "X-Forwarded-Port": "2", "X-Forwarded-Ssl": "maybe",
		"Fly-Request-Id": "forged", "X-Forwarded-For": "10.9.9.9",
	}
	for _, tc := range []struct {
		port        int
		scheme, ssl string
	}{{80, "http", "off"}, {443, "https", "on"}} {
		resp, rep := get(t, p.Client(tc.port, true), tc.scheme+"://app.test/", spoof)
		h := http.Header(rep.Headers)
		want := map[string]string{
			"Fly-Client-Ip": "127.0.0.1", "Fly-Region": "local", "Fly-Forwarded-Port": fmt.Sprint(tc.port),
			"X-Forwarded-Proto": tc.scheme, "X-Forwarded-Port": fmt.Sprint(tc.port), "X-Forwarded-Ssl": tc.ssl,
			"X-Forwarded-For": "10.9.9.9, 127.0.0.1",
		}
		for k, v := range want {
			if got := strings.Join(h.Values(k), ","); got != v {
				t.Errorf("%s: %s = %q, want %q", tc.scheme, k, got, v)
			}
		}
		id := h.Get("Fly-Request-Id")
		if id == "" || id == "forged" || resp.Header.Get("Fly-Request-Id") != id {
			t.Errorf("request id: machine saw %q, client got %q", id, resp.Header.Get("Fly-Request-Id"))
		}
		if !strings.Contains(h.Get("Via"), "edgeproxy") || !strings.Contains(resp.Header.Get("Via"), "edgeproxy") {
			t.Errorf("Via missing: request %q response %q", h.Get("Via"), resp.Header.Get("Via"))
		}
		if resp.Header.Get("Server") != "edgeproxy" {
			t.Errorf("Server = %q", resp.Header.Get("Server"))
		}
	}
}

func TestResponseHeaderOptions(t *testing.T) {
	svc := `
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
      [apps.services.ports.http_options.response]
      pristine = true
      headers = { X-Added = "yes", Demo-Machine-Id = false, X-Multi = ["1", "2"] }
`
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), svc), proxytest.Options{})
	resp, err := p.Client(80, false).Get("http://app.test/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := resp.Header
	if h.Get("X-Added") != "yes" || h.Get("Demo-Machine-Id") != "" || len(h.Values("X-Multi")) != 2 {
		t.Errorf("response headers not applied: %v", h)
	}
	if h.Get("Via") != "" || h.Get("Fly-Request-Id") != "" || h.Get("Server") != "" {
		t.Errorf("pristine response got proxy headers: %v", h)
	}
}

func TestForceHTTPS(t *testing.T) {
	svc := strings.Replace(httpService, "internal_port = 8080", "internal_port = 8080\n  force_https = true", 1)
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), svc), proxytest.Options{})
	resp, err := p.Client(80, false).Get("http://app.test/x?y=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "https://app.test/x?y=1" {
		t.Errorf("force_https: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp2, rep := get(t, p.Client(443, false), "https://app.test/", nil)
	if resp2.StatusCode != 200 || rep.MachineID != "m1" {
		t.Errorf("https after redirect: %d", resp2.StatusCode)
	}
}

func TestStreamingFlushedAsItComes(t *testing.T) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService), proxytest.Options{})
	for _, h2 := range []bool{false, true} {
		// The second chunk comes 10 s after the first: a proxy that buffered
		// the response could not deliver the first line within the client's
		// 5 s timeout.
		c := p.Client(443, h2)
		c.Timeout = 5 * time.Second
		resp, err := c.Get("https://app.test/stream?n=2&interval=10s")
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "chunk 1\n" {
			t.Errorf("h2=%v: first chunk %q %v", h2, line, err)
		}
		resp.Body.Close()
	}
}

func TestNoStartedMachine(t *testing.T) {
	cfg := singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService)
	cfg = strings.Replace(cfg, `id = "m1"`, "id = \"m1\"\n  state = \"stopped\"", 1)
	p := proxytest.Start(t, cfg, proxytest.Options{})
	resp, _ := get(t, p.Client(80, false), "http://app.test/", nil)
	if resp.StatusCode != 503 || resp.Header.Get("Edgeproxy-Error-Code") != "PR01" {
		t.Errorf("stopped machine: %d %q", resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"))
	}
}

// A PR01 page tells a public client the code, not the app's machine ids
// and why each fails; with debug_routing on, the page says why.
func TestNoStartedMachineDetailOnlyWithDebug(t *testing.T) {
	for _, debug := range []bool{false, true} {
		svc := httpService
		if debug {
			svc += "    [apps.http_service.http_options]\n    debug_routing = true\n"
		}
		cfg := singleApp(machine("m1", proxytest.Machine(t, "m1")), svc)
		cfg = strings.Replace(cfg, `id = "m1"`, "id = \"m1\"\n  state = \"stopped\"", 1)
		p := proxytest.Start(t, cfg, proxytest.Options{})
		req, _ := http.NewRequest("GET", "http://app.test/", nil)
		resp, err := p.Client(80, false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		detailed := strings.Contains(string(body), "has no started machine")
		if resp.StatusCode != 503 || detailed != debug {
			t.Errorf("debug_routing=%v: %d %q", debug, resp.StatusCode, body)
		}
	}
}

func TestResponseTimeout(t *testing.T) {
	cfg := "[proxy]\nresponse_header_timeout = \"200ms\"\n" + singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService)
	p := proxytest.Start(t, cfg, proxytest.Options{})
	resp, _ := get(t, p.Client(80, false), "http://app.test/sleep?d=3s", nil)
	if resp.StatusCode != 504 || resp.Header.Get("Edgeproxy-Error-Code") != "PU01" {
		t.Errorf("slow machine: %d %q", resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"))
	}
}

// oneByteReads counts the one-byte reads of a client connection: net/http
// reads one byte in the background while a handler runs.
type oneByteReads struct {
	net.Conn
	n *atomic.Int32
}

func (c *oneByteReads) Read(p []byte) (int, error) {
	if len(p) == 1 {
		c.n.Add(1)
	}
	return c.Conn.Read(p)
}

// TestRequestsLeaveClientSocketAlone: while an HTTP/1 request runs, the
// client's socket is not read behind its back (net/http's server read one
// byte in the background for every request), and between requests a
// plain-text connection waits for readability, not in a read.
func TestRequestsLeaveClientSocketAlone(t *testing.T) {
	var n atomic.Int32
	cfg := singleApp(machine("m", proxytest.Machine(t, "m")), `
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
`)
	p := proxytest.Start(t, cfg, proxytest.Options{WrapWire: func(c net.Conn) net.Conn { return &oneByteReads{c, &n} }})
	c := p.Client(80, false)
	const requests = 40
	for range requests {
		if resp, _ := get(t, c, "http://app.test/", nil); resp.StatusCode != 200 {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
	}
	bodiless := n.Swap(0)
	for range requests {
		resp, err := c.Post("http://app.test/", "text/plain", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	withBody := n.Load()
	if bodiless != 0 || withBody != 0 {
		t.Errorf("one-byte reads of the client socket: %d for %d GETs, %d for %d POSTs; want none",
			bodiless, requests, withBody, requests)
	}
}

// TestIdleConnectionsHoldNoGoroutine: plain-text keep-alive connections
// waiting for their next request are parked, without a goroutine each;
// a parked connection serves its next request, and a drain closes the
// parked ones at once.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	for _, tc := range []struct {
		name string
		port int
		tls  bool
	}{{"plain", 80, false}, {"tls", 443, true}} {
		t.Run(tc.name, func(t *testing.T) { testIdleHoldsNoGoroutine(t, tc.port, tc.tls) })
	}
}

// testIdleHoldsNoGoroutine: idle keep-alive connections on the port are
// parked, go on when a request comes, and end on a drain.
func testIdleHoldsNoGoroutine(t *testing.T, port int, useTLS bool) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService), proxytest.Options{})
	dial := func() net.Conn {
		t.Helper()
		var c net.Conn
		var err error
		if useTLS {
			c, err = tls.Dial("tcp", p.Addr(port), &tls.Config{ServerName: "app.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		} else {
			c, err = net.Dial("tcp", p.Addr(port))
		}
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const idle = 40
	var conns []*bufio.ReadWriter
	settle := func() int {
		// Goroutines that served a request may still be on their way out,
		// and a quiet connection is parked after a moment.
		n := runtime.NumGoroutine()
		for range 200 {
			time.Sleep(10 * time.Millisecond)
			n = min(n, runtime.NumGoroutine())
		}
		return n
	}
	ask := func(rw *bufio.ReadWriter) {
		t.Helper()
		rw.WriteString("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
		rw.Flush()
		resp, err := http.ReadResponse(rw.Reader, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// One connection first, so the machine side's pooled connection and
	// the proxy's own goroutines are there before counting.
	first := dial()
	defer first.Close()
	ask(bufio.NewReadWriter(bufio.NewReader(first), bufio.NewWriter(first)))
	before := settle()
	for range idle {
		c := dial()
		defer c.Close()
		rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
		ask(rw)
		conns = append(conns, rw)
	}
	grew := settle() - before
	t.Logf("%d idle keep-alive connections: %d more goroutines", idle, grew)
	if grew > idle/4 {
		t.Errorf("%d idle connections hold %d goroutines, want (almost) none", idle, grew)
	}
	for _, rw := range conns[:5] {
		ask(rw) // a parked connection goes on
	}
	if err := p.Drain(); err != nil {
		t.Fatal(err)
	}
	for i, rw := range conns {
		if _, err := rw.ReadByte(); err == nil {
			t.Fatalf("connection %d: a byte after the drain, want its end", i)
		}
	}
}

// TestMaxAgeEndsParkedConnection: a keep-alive connection parked between
// requests still ends at its max_connection_age, not at its (longer) idle
// timeout, and is counted as closed for its age.
func TestMaxAgeEndsParkedConnection(t *testing.T) {
	cfg := "[proxy]\nmax_connection_age = \"1s\"\nidle_timeout = \"60s\"\n" +
		singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService)
	p := proxytest.Start(t, cfg, proxytest.Options{})
	c, err := net.Dial("tcp", p.Addr(80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	c.Write([]byte("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("a byte on an idle connection")
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("the connection ended after %v, want about its 1s age", waited)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.ActiveConns() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := p.ActiveConns(); n != 0 {
		t.Fatalf("%d connections still active after the age limit", n)
	}
}
