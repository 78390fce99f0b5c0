package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pires/go-proxyproto"
)

// echoRoundTrip writes payload concurrently with reading (a large payload would otherwise fill
// both socket buffers and deadlock), half-closes, and returns everything read up to EOF.
func echoRoundTrip(t *testing.T, c *net.TCPConn, payload []byte) []byte {
	t.Helper()
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	return got
}

func TestTCPEchoHalfClose(t *testing.T) {
	addr := startMachine(t, "m")
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(rand.N(256))
	}
	tests := []struct {
		name    string
		payload []byte
	}{
		{"binary", []byte("\x00\x01hello, echo\xff")},
		// A prefix of "GET " cut short by the half-close is not HTTP.
		{"method prefix then EOF", []byte("GE")},
		{"method without space", []byte("POSTMAN says hi\n")},
		{"PROXY without space", []byte("PROXYISH\r\n")},
		{"one megabyte", big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := echoRoundTrip(t, dial(t, addr), tt.payload)
			if !bytes.Equal(got, tt.payload) {
				t.Errorf("echoed %d bytes %.40q, want %d bytes %.40q", len(got), got, len(tt.payload), tt.payload)
			}
		})
	}
}

// TestTCPEchoAfterProxyHeader checks that the header is consumed, not echoed.
func TestTCPEchoAfterProxyHeader(t *testing.T) {
	addr := startMachine(t, "m")
	for _, version := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			c := dial(t, addr)
			hdr := proxyproto.HeaderProxyFromAddrs(version, c.LocalAddr(), c.RemoteAddr())
			if _, err := hdr.WriteTo(c); err != nil {
				t.Fatal(err)
			}
			if got := echoRoundTrip(t, c, []byte("ping\n")); string(got) != "ping\n" {
				t.Errorf("echo = %q, want %q", got, "ping\n")
			}
		})
	}
}

// pipeListener hands out in-memory connections so synctest can fake the sniff timeout.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestProxyHeaderThenSilenceIsTCP: when nothing follows the PROXY header within the sniff
// timeout, the connection is raw TCP, so even HTTP-looking bytes sent later are echoed.
func TestProxyHeaderThenSilenceIsTCP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- serve(ctx, ln, config{id: "m", sniffTimeout: time.Second}) }()

		client, server := net.Pipe()
		ln.conns <- server
		if _, err := io.WriteString(client, "PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		const req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
		if _, err := io.WriteString(client, req); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(req))
		if _, err := io.ReadFull(client, got); err != nil || string(got) != req {
			t.Errorf("echo = %q, %v; want the request bytes echoed", got, err)
		}
		client.Close()
		cancel()
		close(ln.done)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

func TestMalformedProxyHeaderCloses(t *testing.T) {
	addr := startMachine(t, "m")
	sigV2 := "\r\n\r\n\x00\r\nQUIT\n"
	tests := []struct {
		name string
		data string
	}{
		{"v1 bad address", "PROXY TCP4 not-an-ip 192.0.2.2 1000 80\r\n"},
		{"v1 no CRLF", "PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\n"},
		{"v2 bad version", sigV2 + "\x31\x11\x00\x0c" + "\xc0\x00\x02\x01\xc0\x00\x02\x02\x03\xe8\x00\x50"},
		{"v2 short addresses", sigV2 + "\x21\x11\x00\x04" + "\xc0\x00\x02\x01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			if _, err := io.WriteString(c, tt.data+"GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			// The machine closes without answering; unread bytes may turn its FIN into a reset.
			got, err := io.ReadAll(c)
			if len(got) != 0 {
				t.Errorf("got %q, want the connection closed without a reply", got)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("connection left open: %v", err)
			}
		})
	}
}

// TestShutdownClosesLiveConnections cancels Serve while an echo, an HTTP stream and a WebSocket
// are open; Serve must close them all and return, and goleak checks nothing is left running.
func TestShutdownClosesLiveConnections(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ln, errc, err := Listen(ctx, "127.0.0.1:0", "m", testLogger())
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()

	echo := dial(t, addr)
	if _, err := io.WriteString(echo, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(echo, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	c := h1Client(t)
	resp, err := c.Do(newRequest(t, http.MethodGet, "http://"+addr+"/stream?n=2&interval=10s", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}

	ws, _ := wsDial(t, addr)

	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Serve = %v, want nil after cancel", err)
	}
	for name, r := range map[string]io.Reader{"echo": echo, "stream": resp.Body, "websocket": ws} {
		_, err := io.ReadAll(r)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: still open after Serve returned", name)
		}
	}
}

func TestServeReturnsWhenListenerClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), ln, "m", nil) }()
	echo := dial(t, ln.Addr().String())
	if _, err := io.WriteString(echo, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(echo, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	if _, err := io.ReadAll(echo); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Error("echo connection still open after Serve returned")
		}
	}
}
