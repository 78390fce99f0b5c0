package iox

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// hangGuard bounds every blocking call in these tests so a bug fails the
// test instead of hanging CI. It is not a speed assertion.
const hangGuard = 10 * time.Second

// tcpPair returns both ends of a fresh loopback TCP connection.
func tcpPair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepts := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepts <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepts
	if s == nil {
		t.Fatal("accept failed")
	}
	deadline := time.Now().Add(hangGuard)
	for _, conn := range []net.Conn{c, s} {
		conn.SetDeadline(deadline)
		t.Cleanup(func() { conn.Close() })
	}
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// proxied is client <-> [a Duplex b] <-> server over real loopback TCP.
type proxied struct {
	client, a, b, server *net.TCPConn
}

func newProxied(t *testing.T) proxied {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	return proxied{client: client, a: a, b: b, server: server}
}

type result struct {
	aToB, bToA int64
	err        error
}

func runDuplex(a, b net.Conn, opts DuplexOptions) <-chan result {
	done := make(chan result, 1)
	go func() {
		ab, ba, err := Duplex(a, b, opts)
		done <- result{ab, ba, err}
	}()
	return done
}

func randomBytes(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rand.Uint32())
	}
	return p
}

// sendAndHalfClose writes p then shuts down the write side, reporting any
// error on errs.
func sendAndHalfClose(c *net.TCPConn, p []byte, errs chan<- error) {
	_, err := c.Write(p)
	if err == nil {
		err = c.CloseWrite()
	}
	errs <- err
}

// A side that half-closes must still receive everything the other side
// sends afterwards, in both orders, with exact byte counts.
func TestDuplexHalfClose(t *testing.T) {
	for _, clientFirst := range []bool{true, false} {
		name := map[bool]string{true: "client closes first", false: "server closes first"}[clientFirst]
		t.Run(name, func(t *testing.T) {
			p := newProxied(t)
			request, response := randomBytes(300<<10), randomBytes(1<<20)
			done := runDuplex(p.a, p.b, DuplexOptions{Pool: NewBufferPool(0)})

			first, firstData, second, secondData := p.client, request, p.server, response
			if !clientFirst {
				first, firstData, second, secondData = p.server, response, p.client, request
			}
			errs := make(chan error, 2)
			go sendAndHalfClose(first, firstData, errs)

			// ReadAll returning means the peer's half-close arrived as EOF.
			got, err := io.ReadAll(second)
			if err != nil || !bytes.Equal(got, firstData) {
				t.Fatalf("first half: read %d bytes, err %v; want %d bytes", len(got), err, len(firstData))
			}
			go sendAndHalfClose(second, secondData, errs)
			got, err = io.ReadAll(first)
			if err != nil || !bytes.Equal(got, secondData) {
				t.Fatalf("second half: read %d bytes, err %v; want %d bytes", len(got), err, len(secondData))
			}
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}

			r := <-done
			if r.err != nil || r.aToB != int64(len(request)) || r.bToA != int64(len(response)) {
				t.Errorf("Duplex = %d, %d, %v; want %d, %d, nil", r.aToB, r.bToA, r.err, len(request), len(response))
			}
		})
	}
}

// faultyConn injects failures into one side of a duplex and counts Close.
type faultyConn struct {
	net.Conn
	readErr  error // returned by Read when set
	writeErr error // returned by Write when set
	stuck    bool  // Read returns (0, nil)
	reads    atomic.Int64
	closes   atomic.Int64
}

func (c *faultyConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	switch {
	case c.stuck:
		return 0, nil
	case c.readErr != nil:
		return 0, c.readErr
	}
	return c.Conn.Read(p)
}

func (c *faultyConn) Write(p []byte) (int, error) {
	if c.writeErr != nil {
		return 0, c.writeErr
	}
	return c.Conn.Write(p)
}

func (c *faultyConn) Close() error {
	c.closes.Add(1)
	return c.Conn.Close()
}

// expectClosedByPeer checks that c's peer is gone: a read ends without data.
func expectClosedByPeer(t *testing.T, name string, c net.Conn) {
	t.Helper()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("%s: read %d bytes, err %v after the duplex failed; want the connection closed", name, n, err)
	}
}

// A failing direction closes both connections, so the other direction,
// blocked in a read, ends too, and the failure is what Duplex reports.
func TestDuplexErrorClosesBoth(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		a, b    func(*faultyConn)
		wantErr error
	}{
		{name: "read error", a: func(c *faultyConn) { c.readErr = boom }, wantErr: boom},
		{name: "write error", b: func(c *faultyConn) { c.writeErr = boom }, wantErr: boom},
		{name: "zero progress", a: func(c *faultyConn) { c.stuck = true }, wantErr: io.ErrNoProgress},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxied(t)
			a, b := &faultyConn{Conn: p.a}, &faultyConn{Conn: p.b}
			if tc.a != nil {
				tc.a(a)
			}
			if tc.b != nil {
				tc.b(b)
			}
			done := runDuplex(a, b, DuplexOptions{})
			if _, err := p.client.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}

			r := <-done
			if !errors.Is(r.err, tc.wantErr) {
				t.Errorf("Duplex err = %v, want %v", r.err, tc.wantErr)
			}
			if a.closes.Load() != 1 || b.closes.Load() != 1 {
				t.Errorf("closes: a %d, b %d; want 1 each", a.closes.Load(), b.closes.Load())
			}
			if a.stuck && a.reads.Load() != maxEmptyReads {
				t.Errorf("stuck reader called %d times, want %d", a.reads.Load(), maxEmptyReads)
			}
			expectClosedByPeer(t, "client", p.client)
			expectClosedByPeer(t, "server", p.server)
		})
	}
}

// Over real TCP, the idle timeout unblocks reads on both sides. Durations are
// short, and nothing asserts how long it took.
func TestDuplexIdleTimeoutTCP(t *testing.T) {
	p := newProxied(t)
	r := <-runDuplex(p.a, p.b, DuplexOptions{IdleTimeout: 20 * time.Millisecond})
	if !errors.Is(r.err, ErrIdleTimeout) {
		t.Fatalf("Duplex err = %v, want ErrIdleTimeout", r.err)
	}
	expectClosedByPeer(t, "client", p.client)
	expectClosedByPeer(t, "server", p.server)
}

// In a synctest bubble time is virtual, so the exact idle window can be
// checked: an idle duplex ends between IdleTimeout and 1.25x after its last
// byte, and traffic in either direction keeps it alive.
func TestDuplexIdleTimeoutWindow(t *testing.T) {
	const idle = time.Second
	tests := []struct {
		name   string
		writes int           // one byte each, client to server
		every  time.Duration // between writes
	}{
		{name: "idle from the start"},
		{name: "traffic keeps it alive", writes: 8, every: idle / 2},
		{name: "gaps just under the timeout", writes: 3, every: idle - time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client, a := net.Pipe()
				b, server := net.Pipe()
				defer client.Close()
				defer server.Close()
				go Copy(io.Discard, server, make([]byte, 64))

				start := time.Now()
				done := runDuplex(a, b, DuplexOptions{IdleTimeout: idle})
				var last time.Duration
				for range tc.writes {
					time.Sleep(tc.every)
					if _, err := client.Write([]byte{1}); err != nil {
						t.Fatalf("write at %v: %v", time.Since(start), err)
					}
					last = time.Since(start)
				}
				r := <-done
				ended := time.Since(start)
				if !errors.Is(r.err, ErrIdleTimeout) || r.aToB != int64(tc.writes) {
					t.Fatalf("Duplex = %d, %d, %v; want %d bytes and ErrIdleTimeout", r.aToB, r.bToA, r.err, tc.writes)
				}
				if quiet := ended - last; quiet < idle || quiet > idle+idle/idleChecks {
					t.Errorf("ended %v after the last byte, want within [%v, %v]", quiet, idle, idle+idle/idleChecks)
				}
			})
		})
	}
}
