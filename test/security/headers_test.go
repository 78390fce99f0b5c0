//go:build linux

package security_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// hdrOK answers every request with okResponse, keeping the connection.
var hdrOK = serveEach(func(c *recConn, _ *http.Request, _ []byte) bool {
	io.WriteString(c, okResponse("ok"))
	return true
})

// hdrStartProxy is startProxy for tests that end within milliseconds. The
// proxy installs its SIGTERM handler only after it logs that it listens
// (cmd/edgeproxy/run.go), so a stop sent in between kills it instead of
// draining it and the suite reports an unclean exit; the stop waits until
// the proxy has run a little.
func hdrStartProxy(t *testing.T, cfg string, machinePort int) *proxyEnv {
	t.Helper()
	env := startProxy(t, cfg, machinePort)
	started := time.Now()
	// Cleanups run last-registered first: this one before the stop.
	t.Cleanup(func() { time.Sleep(time.Until(started.Add(200 * time.Millisecond))) })
	return env
}

// hdrRequestHead returns the request line and header lines of the first
// request the recorder received, without the body.
func hdrRequestHead(t *testing.T, rec *recorder) string {
	t.Helper()
	conns := rec.Conns()
	if len(conns) == 0 {
		t.Fatal("the machine got no connection")
	}
	got := string(conns[0].Received())
	head, _, ok := strings.Cut(got, "\r\n\r\n")
	if !ok {
		t.Fatalf("the machine got no complete request head: %q", got)
	}
	return head
}

// hdrField returns the values of a header field in a raw request head,
// matched case-insensitively, and whether the field was there at all.
func hdrField(head, name string) ([]string, bool) {
	var vals []string
	found := false
	for i, line := range strings.Split(head, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if i == 0 || !ok || !strings.EqualFold(k, name) {
			continue
		}
		found = true
		vals = append(vals, strings.TrimSpace(v))
	}
	return vals, found
}

// hdrResponse parses a raw HTTP/1.1 answer.
func hdrResponse(t *testing.T, raw string) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("not an HTTP response (%v): %q", err, raw)
	}
	return resp
}

// TestHeadersUnderscoreSpoofing: CGI, WSGI and Rack turn "-" into "_" in
// header names, so a client's Fly_Client_IP lands in the same variable
// (HTTP_FLY_CLIENT_IP) as the proxy's Fly-Client-IP. The proxy-owned
// names must not reach a machine in any underscore spelling; other names
// with underscores pass.
func TestHeadersUnderscoreSpoofing(t *testing.T) {
	rec := startRecorder(t, hdrOK)
	env := hdrStartProxy(t, baseConfig, rec.Port())
	spoofed := []string{
		"Fly_Client_IP", "fly_client_ip", "X_Forwarded_For", "X-Forwarded_For", "x_real_ip",
		"FLY_REGION", "X_Forwarded_Proto", "X_FORWARDED_SSL", "Fly_Request_Id", "X_Forwarded_Host",
		"X_Request_Start", "Fly_Forwarded_Port", "Fly_Replay_Src", "Fly_Replay_Failed", "Fly_Preferred_Instance_Unavailable",
		"Transfer_Encoding", "Content_Length",
	}
	var req strings.Builder
	req.WriteString("GET / HTTP/1.1\r\nHost: sec.test\r\nConnection: close\r\nMy_Header: kept\r\n")
	for _, name := range spoofed {
		req.WriteString(name + ": 6.6.6.6\r\n")
	}
	req.WriteString("\r\n")
	if got := rawExchange(t, env.plainAddr, req.String(), 5*time.Second); !strings.HasPrefix(got, "HTTP/1.1 200 ") {
		t.Fatalf("request answered %q", got)
	}
	head := hdrRequestHead(t, rec)
	for _, name := range spoofed {
		if vals, ok := hdrField(head, name); ok && strings.Contains(name, "_") {
			t.Errorf("the machine got the client's %s: %q", name, vals)
		}
	}
	if strings.Contains(head, "6.6.6.6") {
		t.Errorf("a spoofed value reached the machine:\n%s", head)
	}
	if vals, _ := hdrField(head, "My_Header"); len(vals) != 1 || vals[0] != "kept" {
		t.Errorf("My_Header = %q, want the client's own header with an underscore kept", vals)
	}
}

// TestMisdirectedRequestOtherApp: on a TLS port two apps share, a client
// that handshakes under one app's name (and its TLS policy) must not reach
// the other app by naming it in Host: that app requires TLS 1.3 and the
// certificate served does not cover its name. The answer is 421, so a
// client opens a connection of its own for that name.
func TestMisdirectedRequestOtherApp(t *testing.T) {
	lax := startRecorder(t, hdrOK)
	strict := startRecorder(t, hdrOK)
	cfg := withApps(baseConfig, `
[[apps]]
name = "strict"
hostnames = ["strict.test"]
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.tls_options]
    default_self_signed = true
    versions = ["TLSv1.3"]
  [[apps.machines]]
  id = "s1"
  address = "127.0.0.1"
  ports = { 8080 = `+strconv.Itoa(strict.Port())+` }
`)
	env := hdrStartProxy(t, cfg, lax.Port())

	// The strict app's own policy holds for its name.
	if _, err := hdrTLSExchange(env.tlsAddr, "strict.test", tls.VersionTLS12, ""); err == nil {
		t.Fatal("a TLS 1.2 handshake for strict.test succeeded; the test's premise is wrong")
	}
	req := "GET /secret HTTP/1.1\r\nHost: strict.test\r\nConnection: close\r\n\r\n"
	got, err := hdrTLSExchange(env.tlsAddr, "sec.test", tls.VersionTLS12, req)
	if err != nil {
		t.Fatal(err)
	}
	resp := hdrResponse(t, got)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusMisdirectedRequest || resp.Header.Get("Edgeproxy-Error-Code") != "PR06" {
		t.Errorf("Host strict.test over a TLS 1.2 handshake for sec.test: status %d, code %q, body %q; want 421 PR06",
			resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"), body)
	}
	if n := strict.Requests(); n != 0 {
		t.Errorf("the strict app got %d requests over a connection it never accepted", n)
	}
	// The connection's own app is still served, and so is a Host of it
	// with a port and another case.
	got, err = hdrTLSExchange(env.tlsAddr, "sec.test", tls.VersionTLS12,
		"GET / HTTP/1.1\r\nHost: SEC.test:443\r\nConnection: close\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if resp := hdrResponse(t, got); resp.StatusCode != http.StatusOK {
		t.Errorf("Host of the handshake's own app: status %d, want 200", resp.StatusCode)
	}
}

// hdrTLSExchange handshakes as serverName with at most maxVersion, sends
// raw (if any) and returns what comes back until the proxy closes.
func hdrTLSExchange(addr, serverName string, maxVersion uint16, raw string) (string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{
		ServerName: serverName, InsecureSkipVerify: true,
		MaxVersion: maxVersion, NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	if raw == "" {
		return "", nil
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return "", err
	}
	// The answer is what arrived before the proxy closed or the deadline.
	b, _ := io.ReadAll(c)
	return string(b), nil
}

// TestHeadersEmptyHost: a request without a Host (HTTP/1.0) or with an
// empty one must not reach the machine as "Host: <machine address>": the
// machine's own address is not the client's, and apps echo Host into
// links and redirects. The app's name goes instead.
func TestHeadersEmptyHost(t *testing.T) {
	for _, raw := range []string{
		"GET /a HTTP/1.0\r\n\r\n",
		"GET /b HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
	} {
		rec := startRecorder(t, hdrOK)
		env := hdrStartProxy(t, baseConfig, rec.Port())
		if got := rawExchange(t, env.plainAddr, raw, 5*time.Second); !strings.Contains(got, " 200 ") {
			t.Fatalf("%q answered %q", raw, got)
		}
		head := hdrRequestHead(t, rec)
		hosts, _ := hdrField(head, "Host")
		if len(hosts) != 1 || hosts[0] != "sec.test" {
			t.Errorf("%q reached the machine with Host %q, want the app's hostname sec.test (machine is 127.0.0.1:%d)",
				raw, hosts, rec.Port())
		}
	}
}

// TestHeadersNoSniffedContentType: a response the machine sent without
// Content-Type must reach the client without one, over HTTP/1.1 and
// HTTP/2; guessing one from the body (net/http's default) turns a
// harmless upload into text/html, even when the app said nosniff.
func TestHeadersNoSniffedContentType(t *testing.T) {
	const page = "<html><script>alert(1)</script></html>"
	rec := startRecorder(t, serveEach(func(c *recConn, _ *http.Request, _ []byte) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Content-Type-Options: nosniff\r\nContent-Length: "+
			strconv.Itoa(len(page))+"\r\n\r\n"+page)
		return true
	}))
	env := hdrStartProxy(t, baseConfig, rec.Port())
	for _, h2 := range []bool{false, true} {
		resp, err := client(t, h2).Get("https://" + env.tlsAddr + "/upload.txt")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != page {
			t.Fatalf("h2=%v: body %q", h2, body)
		}
		if ct, ok := resp.Header["Content-Type"]; ok {
			t.Errorf("h2=%v: the proxy added Content-Type %q to a response that had none", h2, ct)
		}
	}
}

// TestHeadersExpectContinueNoDelay: a client that sends Expect:
// 100-continue must not be held a fixed second, whether it sends its
// body at once or waits for the 100, when the machine does not answer
// 100 itself (most apps never do).
func TestHeadersExpectContinueNoDelay(t *testing.T) {
	rec := startRecorder(t, hdrOK)
	env := hdrStartProxy(t, baseConfig, rec.Port())
	const head = "POST /up HTTP/1.1\r\nHost: sec.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
	// The body already on its way.
	start := time.Now()
	got := rawExchange(t, env.plainAddr, strings.Replace(head, "\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)+"hello", 5*time.Second)
	if took := time.Since(start); !strings.Contains(got, "HTTP/1.1 200 ") || took > 500*time.Millisecond {
		t.Errorf("body sent with the header: answered after %v (want < 500ms): %q", took, got)
	}
	// A client that waits for the 100 before its body.
	c, err := net.DialTimeout("tcp", env.plainAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start = time.Now()
	io.WriteString(c, head)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("waiting for 100 Continue: %q, %v", line, err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("100 Continue came after %v, want < 500ms", took)
	}
	br.ReadString('\n') // the 100's empty line
	io.WriteString(c, "hello")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("after the 100: %v, %v", resp, err)
	}
}

// TestErrorsBadMethodH2: a method that is not a token (a space in an h2
// :method) is the client's error, not the app's: 400, PH06. net/http's
// HTTP/1 server refuses it itself; its HTTP/2 server lets it through.
func TestErrorsBadMethodH2(t *testing.T) {
	rec := startRecorder(t, hdrOK)
	env := hdrStartProxy(t, baseConfig, rec.Port())
	status, h := hdrH2CRequest(t, env.plainAddr,
		":method", "GET X", ":scheme", "http", ":path", "/", ":authority", "sec.test")
	if status != "400" || h["edgeproxy-error-code"] != "PH06" {
		t.Errorf("h2 :method \"GET X\": status %s, code %q; want 400 PH06", status, h["edgeproxy-error-code"])
	}
	if n := rec.Requests(); n != 0 {
		t.Errorf("the machine got %d requests", n)
	}
}

// TestErrorsConnect: CONNECT is a tunnel request the proxy does not
// offer: 405 with a stable code, not a 500 blaming the proxy.
func TestErrorsConnect(t *testing.T) {
	rec := startRecorder(t, hdrOK)
	env := hdrStartProxy(t, baseConfig, rec.Port())
	got := rawExchange(t, env.plainAddr, "CONNECT sec.test:443 HTTP/1.1\r\nHost: sec.test:443\r\n\r\n", 2*time.Second)
	resp := hdrResponse(t, got)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Edgeproxy-Error-Code") != "PH07" {
		t.Errorf("HTTP/1.1 CONNECT: status %d, code %q; want 405 PH07", resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"))
	}
	status, h := hdrH2CRequest(t, env.plainAddr, ":method", "CONNECT", ":authority", "sec.test:443")
	if status != "405" || h["edgeproxy-error-code"] != "PH07" {
		t.Errorf("h2 CONNECT: status %s, code %q; want 405 PH07", status, h["edgeproxy-error-code"])
	}
}

// TestHeadersTargetAsSent: the machine gets the request target exactly as
// the client sent it: a "#" stays a "#" (not %23, which names another
// resource) and a query that does not parse is not rewritten.
func TestHeadersTargetAsSent(t *testing.T) {
	rec := startRecorder(t, hdrOK)
	env := hdrStartProxy(t, baseConfig, rec.Port())
	const target = "/a#b/%7e{x}?q=%zz;y&b=2"
	got := rawExchange(t, env.plainAddr, "GET "+target+" HTTP/1.1\r\nHost: sec.test\r\nConnection: close\r\n\r\n", 5*time.Second)
	if !strings.HasPrefix(got, "HTTP/1.1 200 ") {
		t.Fatalf("answered %q", got)
	}
	line, _, _ := strings.Cut(hdrRequestHead(t, rec), "\r\n")
	if want := "GET " + target + " HTTP/1.1"; line != want {
		t.Errorf("the machine got %q, want %q", line, want)
	}
}

// TestErrorsMalformedRequestLength: the proxy's own 400 for a malformed
// HTTP/1 request line declares exactly the body it sends; a Content-Length
// one short leaves a byte that a keep-alive client reads as the start of
// its next response.
func TestErrorsMalformedRequestLength(t *testing.T) {
	rec := startRecorder(t, hdrOK)
	env := hdrStartProxy(t, baseConfig, rec.Port())
	got := rawExchange(t, env.plainAddr, "GET /not a target HTTP/1.1\r\n\r\n", 2*time.Second)
	br := bufio.NewReader(strings.NewReader(got))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("not an HTTP response (%v): %q", err, got)
	}
	body, _ := io.ReadAll(resp.Body)
	rest, _ := io.ReadAll(br)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Edgeproxy-Error-Code") != "PH01" {
		t.Errorf("status %d code %q, want 400 PH01", resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"))
	}
	if len(rest) != 0 {
		t.Errorf("Content-Length %d, body %q, then %d bytes past the declared length: %q",
			resp.ContentLength, body, len(rest), rest)
	}
}

// TestErrorsNotHTTPClosed: bytes that are not HTTP at all (neither an
// HTTP/1 request line nor the HTTP/2 preface) get no HTTP/1 answer, which
// their sender could not read: the connection is closed without a byte. A
// connection that opens with a broken HTTP/2 preface is one (RFC 9113
// section 3.4, h2spec http2/3.5/2).
func TestErrorsNotHTTPClosed(t *testing.T) {
	rec := startRecorder(t, hdrOK)
	env := hdrStartProxy(t, baseConfig, rec.Port())
	for _, in := range []string{
		"INVALID CONNECTION PREFACE\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
		"\x00\x01 not http\r\n\r\n",
		"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", // TLS on the plain port
	} {
		start := time.Now()
		got := rawExchange(t, env.plainAddr, in, 5*time.Second)
		if took := time.Since(start); got != "" || took > 4*time.Second {
			t.Errorf("%q: got %q after %v, want the connection closed without a byte", in, got, took.Round(time.Millisecond))
		}
	}
	if n := rec.Requests(); n != 0 {
		t.Errorf("the machine received %d requests", n)
	}
}

// TestHeadersWebSocketLogged: a WebSocket session is logged and counted
// as what it was, a 101 and the bytes it carried, not as a 499 that sent
// nothing.
func TestHeadersWebSocketLogged(t *testing.T) {
	rec := startRecorder(t, func(c *recConn) {
		if _, err := http.ReadRequest(c.br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n0123456789")
		io.Copy(c, c.br) // echo until the client leaves
	})
	env := hdrStartProxy(t, baseConfig, rec.Port())
	c, err := net.DialTimeout("tcp", env.plainAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: sec.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "hello")
	buf := make([]byte, 15)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "0123456789hello" {
		t.Fatalf("tunnel: read %q, %v", buf, err)
	}
	c.Close()
	var line proctest.Record
	env.proxy.Await(t, "the WebSocket's access log line", 5*time.Second, func(r proctest.Record) bool {
		if r["msg"] == "access" && r["path"] == "/ws" {
			line = r
			return true
		}
		return false
	})
	if line["status"] != float64(101) || line["bytes_out"] != float64(15) || line["bytes_in"] != float64(5) {
		t.Errorf("access log: status %v bytes_out %v bytes_in %v; want 101, 15, 5", line["status"], line["bytes_out"], line["bytes_in"])
	}
}

// TestErrorsGRPC: a gRPC client cannot read a text/plain 502; the proxy's
// own errors reach it as a gRPC status (trailers-only response: HTTP 200
// with grpc-status and grpc-message in the header), Unavailable when no
// machine could be reached.
func TestErrorsGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there: connections are refused
	env := hdrStartProxy(t, baseConfig, dead)
	req, _ := http.NewRequest(http.MethodPost, "https://"+env.tlsAddr+"/pkg.Svc/Call",
		bytes.NewReader([]byte{0, 0, 0, 0, 0}))
	req.Header.Set("Content-Type", "application/grpc+proto")
	req.Header.Set("TE", "trailers")
	resp, err := client(t, true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	st := resp.Header.Get("Grpc-Status")
	if resp.StatusCode != http.StatusOK || st != "14" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc") {
		t.Errorf("status %d, content-type %q, grpc-status %q, body %q; want 200, application/grpc, 14 (Unavailable)",
			resp.StatusCode, resp.Header.Get("Content-Type"), st, body)
	}
	if msg := resp.Header.Get("Grpc-Message"); !strings.HasPrefix(msg, "P") {
		t.Errorf("grpc-message %q, want the proxy's error code and message", msg)
	}
	if len(body) != 0 {
		t.Errorf("trailers-only response has a body: %q", body)
	}
}

// hdrH2CRequest sends one request with the given pseudo and regular
// header fields over prior-knowledge h2c, bypassing the checks of Go's
// client, and returns the response's :status and header fields.
func hdrH2CRequest(t *testing.T, addr string, fields ...string) (string, map[string]string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(),
		EndHeaders: true, EndStream: fields[1] != "CONNECT"}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the response: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset: %v", f.ErrCode)
		case *http2.GoAwayFrame:
			t.Fatalf("connection refused with GOAWAY %v: %s", f.ErrCode, f.DebugData())
		case *http2.MetaHeadersFrame:
			h := map[string]string{}
			for _, hf := range f.RegularFields() {
				h[hf.Name] = hf.Value
			}
			return f.PseudoValue("status"), h
		}
	}
}
