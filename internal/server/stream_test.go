package server_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/demo"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

const h2cService = `
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 443
    handlers = ["tls", "http"]
    tls_options = { default_self_signed = true }
    http_options = { h2_backend = true }
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
    http_options = { h2_backend = true }
`

func TestH2CBackend(t *testing.T) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), h2cService), proxytest.Options{})
	for _, h2 := range []bool{false, true} {
		_, rep := get(t, p.Client(443, h2), "https://app.test/", nil)
		if rep.Proto != "HTTP/2.0" {
			t.Errorf("client h2=%v: machine spoke %q, want HTTP/2.0 (h2c)", h2, rep.Proto)
		}
	}
}

// TestH2CBidirectionalStream is a gRPC-shaped exchange: the client keeps
// its request body open and reads each echoed message before sending the
// next, so the proxy must stream both ways at once, over TLS h2 from the
// client and h2c to the machine.
func TestH2CBidirectionalStream(t *testing.T) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), h2cService), proxytest.Options{})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "https://app.test/echo", pr)
	req.Header.Set("Content-Type", "application/grpc")
	c := p.Client(443, true)
	c.Timeout = 0
	respc := make(chan *http.Response, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			errc <- err
			return
		}
		respc <- resp
	}()
	if _, err := pw.Write([]byte("message-0;")); err != nil {
		t.Fatal(err)
	}
	var resp *http.Response
	select {
	case resp = <-respc:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("no response headers while the request body is still open")
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("client proto %s", resp.Proto)
	}
	buf := make([]byte, 64)
	for i := 0; i < 5; i++ {
		if i > 0 {
			if _, err := fmt.Fprintf(pw, "message-%d;", i); err != nil {
				t.Fatal(err)
			}
		}
		want := fmt.Sprintf("message-%d;", i)
		if _, err := io.ReadFull(resp.Body, buf[:len(want)]); err != nil || string(buf[:len(want)]) != want {
			t.Fatalf("echo %d: %q %v", i, buf[:len(want)], err)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after close: %q %v", rest, err)
	}
}

// TestPriorKnowledgeH2CFromClient: gRPC clients without TLS speak h2c on
// plain http ports.
func TestPriorKnowledgeH2CFromClient(t *testing.T) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), h2cService), proxytest.Options{})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(p.URL("http", 80) + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Errorf("h2c client: %s %d", resp.Proto, resp.StatusCode)
	}
	tr.CloseIdleConnections()
}

func TestWebSocketEcho(t *testing.T) {
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService), proxytest.Options{})
	for _, tc := range []struct {
		port int
		tls  bool
	}{{80, false}, {443, true}} {
		var c net.Conn
		var err error
		if tc.tls {
			c, err = tls.Dial("tcp", p.Addr(tc.port), &tls.Config{ServerName: "app.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		} else {
			c, err = net.Dial("tcp", p.Addr(tc.port))
		}
		if err != nil {
			t.Fatal(err)
		}
		br := wsUpgrade(t, c)
		for _, msg := range []string{"hello", strings.Repeat("x", 70000)} {
			c.Write(wsFrame(0x1, []byte(msg)))
			op, payload := readWSFrame(t, br)
			if op != 0x1 || string(payload) != msg {
				t.Fatalf("echo: op %d len %d", op, len(payload))
			}
		}
		c.Write(wsFrame(0x8, []byte{0x03, 0xe8}))
		if op, _ := readWSFrame(t, br); op != 0x8 {
			t.Errorf("close not echoed: op %d", op)
		}
		c.Close()
	}
}

// wsUpgrade asks for a WebSocket to app.test's /ws on c (within 10 s),
// checks the 101 and its accept key, and returns the reader the frames
// then come through.
func wsUpgrade(t *testing.T, c net.Conn) *bufio.Reader {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != 101 || resp.Header.Get("Sec-Websocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("upgrade: %d %v", resp.StatusCode, resp.Header)
	}
	return br
}

// wsFrame builds a masked client frame (RFC 6455 section 5.2).
func wsFrame(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	return b
}

func readWSFrame(t *testing.T, r *bufio.Reader) (byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatal(err)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		io.ReadFull(r, e[:])
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		io.ReadFull(r, e[:])
		n = binary.BigEndian.Uint64(e[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatal(err)
	}
	return h[0] & 0x0f, p
}

func TestProxyProtoOverHTTP(t *testing.T) {
	for _, ver := range []int{1, 2} {
		svc := fmt.Sprintf(`
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 80
    handlers = ["http", "proxy_proto"]
    proxy_proto_options = { version = "v%d" }
`, ver)
		p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), svc), proxytest.Options{})
		var local string
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { local = i.Conn.LocalAddr().String() }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://app.test/", nil)
		resp, err := p.Client(80, false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var rep demo.Report
		json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if rep.Proxy == nil || rep.Proxy.Version != ver {
			t.Fatalf("v%d: machine saw PROXY %+v", ver, rep.Proxy)
		}
		// The header names the client's own address and the public port.
		if rep.Proxy.Source != local || !strings.HasSuffix(rep.Proxy.Destination, ":80") {
			t.Errorf("v%d: PROXY source %q (client %q) destination %q", ver, rep.Proxy.Source, local, rep.Proxy.Destination)
		}
	}
}
