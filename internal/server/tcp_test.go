package server_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

func tcpApp(port int, handlers, extra string) string {
	return fmt.Sprintf(`
[[apps]]
name = "tcp"
hostnames = ["tcp.test"]
  [[apps.services]]
  internal_port = 9000
    [[apps.services.ports]]
    port = 5000
    handlers = %s
    %s
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
  ports = { 9000 = %d }
`, handlers, extra, port)
}

// TestTCPEchoClientHalfClose: the client sends, half-closes, and still
// receives every echoed byte and then EOF (the machine's own half-close
// passed back), copied, spliced (proxy.splice) and over TLS.
func TestTCPEchoClientHalfClose(t *testing.T) {
	for _, tc := range []struct {
		handlers, extra string
		tls             bool
		proxy           string
	}{
		{"[]", "", false, ""},
		{"[]", "", false, "[proxy]\nsplice = true\n"},
		{`["tls"]`, "tls_options = { default_self_signed = true }", true, ""},
	} {
		p := proxytest.Start(t, tc.proxy+tcpApp(proxytest.Machine(t, "m1"), tc.handlers, tc.extra), proxytest.Options{})
		var c net.Conn
		var err error
		if tc.tls {
			c, err = tls.Dial("tcp", p.Addr(5000), &tls.Config{ServerName: "tcp.test", InsecureSkipVerify: true})
		} else {
			c, err = net.Dial("tcp", p.Addr(5000))
		}
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		payload := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB, more than any buffer
		go func() {
			c.Write(payload)
			c.(interface{ CloseWrite() error }).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, payload) {
			t.Errorf("tls=%v %q: echoed %d of %d bytes, err %v", tc.tls, tc.proxy, len(got), len(payload), err)
		}
		c.Close()
	}
}

// TestTCPServerHalfClose: the machine sends a greeting and half-closes
// first; the client sees EOF yet can keep sending, and the machine gets it.
func TestTCPServerHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("greeting"))
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	p := proxytest.Start(t, tcpApp(ln.Addr().(*net.TCPAddr).Port, "[]", ""), proxytest.Options{})
	c, err := net.Dial("tcp", p.Addr(5000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	greet, err := io.ReadAll(c)
	if err != nil || string(greet) != "greeting" {
		t.Fatalf("greeting %q %v", greet, err)
	}
	c.Write([]byte("after your EOF"))
	c.(*net.TCPConn).CloseWrite()
	if s := <-got; s != "after your EOF" {
		t.Errorf("machine received %q", s)
	}
}

// TestTCPProxyProto parses the header with go-proxyproto on the machine side.
func TestTCPProxyProto(t *testing.T) {
	for _, ver := range []string{"v1", "v2"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pl := &proxyproto.Listener{Listener: ln, Policy: func(net.Addr) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }}
		type seen struct{ src, dst string }
		res := make(chan seen, 1)
		go func() {
			c, err := pl.Accept()
			if err != nil {
				res <- seen{src: err.Error()}
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 4)
			io.ReadFull(c, buf) // reading makes the listener parse the header
			res <- seen{c.RemoteAddr().String(), c.LocalAddr().String()}
		}()
		p := proxytest.Start(t, tcpApp(ln.Addr().(*net.TCPAddr).Port, `["proxy_proto"]`, fmt.Sprintf("proxy_proto_options = { version = %q }", ver)), proxytest.Options{})
		c, err := net.Dial("tcp", p.Addr(5000))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("ping"))
		s := <-res
		c.Close()
		pl.Close()
		if s.src != c.LocalAddr().String() || s.dst != "127.0.0.1:5000" {
			t.Errorf("%s: machine saw source %q (client %s) destination %q", ver, s.src, c.LocalAddr(), s.dst)
		}
	}
}

// TestPgTLSHandshake speaks PostgreSQL's SSLRequest, then TLS, then bytes
// that reach the machine (a TCP echo here; psql itself is exercised with
// the routing issue's PostgreSQL tests).
func TestPgTLSHandshake(t *testing.T) {
	p := proxytest.Start(t, tcpApp(proxytest.Machine(t, "m1"), `["pg_tls"]`, "tls_options = { default_self_signed = true }"), proxytest.Options{})
	c, err := net.Dial("tcp", p.Addr(5000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}) // length 8, code 80877103
	var answer [1]byte
	if _, err := io.ReadFull(c, answer[:]); err != nil || answer[0] != 'S' {
		t.Fatalf("SSLRequest answer %q %v", answer, err)
	}
	tc := tls.Client(c, &tls.Config{ServerName: "tcp.test", InsecureSkipVerify: true})
	tc.Write([]byte("startup"))
	buf := make([]byte, 7)
	if _, err := io.ReadFull(tc, buf); err != nil || string(buf) != "startup" {
		t.Fatalf("after TLS: %q %v", buf, err)
	}

	// A client that skips SSLRequest is refused, not proxied in plaintext.
	c2, err := net.Dial("tcp", p.Addr(5000))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	c2.Write([]byte{0, 0, 0, 9, 0, 3, 0, 0, 0})
	if n, err := c2.Read(make([]byte, 1)); err == nil {
		t.Errorf("plaintext startup got %d bytes back", n)
	}

	// GSSAPI encryption is declined ('N'); the client then asks for TLS.
	c3, err := net.Dial("tcp", p.Addr(5000))
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	c3.SetDeadline(time.Now().Add(10 * time.Second))
	c3.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}) // GSSENCRequest, 80877104
	if _, err := io.ReadFull(c3, answer[:]); err != nil || answer[0] != 'N' {
		t.Fatalf("GSSENCRequest answer %q %v", answer, err)
	}
	c3.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f})
	if _, err := io.ReadFull(c3, answer[:]); err != nil || answer[0] != 'S' {
		t.Fatalf("SSLRequest after GSSENCRequest: %q %v", answer, err)
	}

	// sslnegotiation=direct (PostgreSQL 17): TLS at once, ALPN postgresql.
	d, err := tls.Dial("tcp", p.Addr(5000), &tls.Config{ServerName: "tcp.test", InsecureSkipVerify: true, NextProtos: []string{"postgresql"}})
	if err != nil {
		t.Fatalf("direct TLS: %v", err)
	}
	defer d.Close()
	if got := d.ConnectionState().NegotiatedProtocol; got != "postgresql" {
		t.Errorf("direct TLS negotiated ALPN %q, want postgresql", got)
	}
	d.Write([]byte("direct"))
	buf = make([]byte, 6)
	if _, err := io.ReadFull(d, buf); err != nil || string(buf) != "direct" {
		t.Fatalf("after direct TLS: %q %v", buf, err)
	}
}
