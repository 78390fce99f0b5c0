//go:build linux

package iox

import (
	"net"
	"testing"
	"time"
)

// parkPair returns a connected pair and the fd of the server side.
func parkPair(t *testing.T) (client net.Conn, server *net.TCPConn, fd int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	server = s.(*net.TCPConn)
	t.Cleanup(func() { client.Close(); server.Close() })
	raw, err := server.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(f uintptr) { fd = int(f) })
	return client, server, fd
}

// TestParker: a parked socket wakes when it has bytes (which stay unread
// for the wake to read), when its peer ends it, when its idle time runs
// out, and when it is let go; each wake comes once.
func TestParker(t *testing.T) {
	p, err := NewParker()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	wait := func(ch <-chan bool) bool {
		t.Helper()
		select {
		case v := <-ch:
			return v
		case <-time.After(5 * time.Second):
			t.Fatal("no wake-up")
		}
		return false
	}
	park := func(fd int, idle time.Duration) (chan bool, uint64) {
		t.Helper()
		ch := make(chan bool, 2)
		tok, err := p.Park(fd, idle, func(r bool) { ch <- r })
		if err != nil {
			t.Fatal(err)
		}
		return ch, tok
	}

	c, s, fd := parkPair(t)
	ch, _ := park(fd, time.Minute)
	if p.Parked() != 1 {
		t.Fatalf("%d parked, want 1", p.Parked())
	}
	c.Write([]byte("GET"))
	if !wait(ch) {
		t.Fatal("bytes woke it as not readable")
	}
	buf := make([]byte, 8)
	if n, _ := s.Read(buf); string(buf[:n]) != "GET" {
		t.Fatalf("read %q after the wake, want the bytes", buf[:n])
	}

	// Already readable when parked: wakes at once.
	c.Write([]byte("x"))
	time.Sleep(10 * time.Millisecond)
	ch, _ = park(fd, time.Minute)
	if !wait(ch) {
		t.Fatal("waiting bytes woke it as not readable")
	}
	s.Read(buf)

	// The peer's end wakes it as readable: the read finds EOF.
	c2, _, fd2 := parkPair(t)
	ch, _ = park(fd2, time.Minute)
	c2.(*net.TCPConn).CloseWrite()
	if !wait(ch) {
		t.Fatal("the peer's FIN woke it as not readable")
	}

	// Idle time out, and Unpark.
	_, _, fd3 := parkPair(t)
	ch, _ = park(fd3, 20*time.Millisecond)
	if wait(ch) {
		t.Fatal("the idle timeout woke it as readable")
	}
	_, _, fd4 := parkPair(t)
	ch, tok := park(fd4, time.Minute)
	p.Unpark(tok)
	p.Unpark(tok)
	if wait(ch) {
		t.Fatal("Unpark woke it as readable")
	}
	select {
	case <-ch:
		t.Fatal("woken twice")
	case <-time.After(50 * time.Millisecond):
	}
	if p.Parked() != 0 {
		t.Fatalf("%d still parked", p.Parked())
	}
}

// TestParkerClose: Close lets every parked connection go before it
// returns, and later parks fail.
func TestParkerClose(t *testing.T) {
	p, err := NewParker()
	if err != nil {
		t.Fatal(err)
	}
	woken := make(chan bool, 3)
	for range 3 {
		_, _, fd := parkPair(t)
		if _, err := p.Park(fd, time.Minute, func(r bool) { woken <- r }); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	if len(woken) != 3 {
		t.Fatalf("%d of 3 woken when Close returned", len(woken))
	}
	for range 3 {
		if <-woken {
			t.Fatal("Close woke one as readable")
		}
	}
	_, _, fd := parkPair(t)
	if _, err := p.Park(fd, time.Minute, func(bool) {}); err != ErrParkerClosed {
		t.Fatalf("Park after Close: %v", err)
	}
}

// TestParkerFdReuse: a parked socket closed by someone else (a
// connection's age limit) whose number goes to a new connection, parked
// too: letting the old registration go must not silence the new one.
func TestParkerFdReuse(t *testing.T) {
	p, err := NewParker()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, oldServer, oldFd := parkPair(t)
	oldWoken := make(chan bool, 1)
	oldTok, err := p.Park(oldFd, time.Minute, func(r bool) { oldWoken <- r })
	if err != nil {
		t.Fatal(err)
	}
	// The next socket made takes the lowest free number: have the
	// listener and the client's socket first, so the accepted one gets it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	oldServer.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw, _ := s.(*net.TCPConn).SyscallConn()
	fd := -1
	raw.Control(func(f uintptr) { fd = int(f) })
	if fd != oldFd {
		t.Skipf("the closed socket's number %d went elsewhere (the new one is %d)", oldFd, fd)
	}
	woken := make(chan bool, 1)
	if _, err := p.Park(oldFd, time.Minute, func(r bool) { woken <- r }); err != nil {
		t.Fatal(err)
	}
	p.Unpark(oldTok) // the old connection's idle timer, say
	if <-oldWoken {
		t.Fatal("the old registration woke as readable")
	}
	client.Write([]byte("x"))
	select {
	case r := <-woken:
		if !r {
			t.Fatal("the new connection woke as not readable")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the new connection's bytes did not wake it")
	}
}
