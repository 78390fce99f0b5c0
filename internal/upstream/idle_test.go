package upstream

import (
	"net"
	"testing"
	"time"
)

// wrapped stands for the guard and meter layers over a pooled connection.
type wrapped struct{ net.Conn }

func (w wrapped) Unwrap() net.Conn { return w.Conn }

func TestIdleProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (net.Conn, net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		return wrapped{c}, s
	}
	// settle gives the loopback a moment to deliver what the peer did.
	settle := func() { time.Sleep(20 * time.Millisecond) }

	c, _ := pair()
	if !NewIdleProbe(c).Quiet() {
		t.Error("an idle open connection is not quiet")
	}
	if !NewIdleProbe(c).Quiet() {
		t.Error("checking consumed something: second check not quiet")
	}

	c, s := pair()
	s.Write([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n"))
	settle()
	if NewIdleProbe(c).Quiet() {
		t.Error("bytes from the machine while idle: still quiet")
	}
	buf := make([]byte, 4)
	if n, _ := c.Read(buf); string(buf[:n]) != "HTTP" {
		t.Errorf("the check consumed bytes: read %q", buf[:n])
	}

	c, s = pair()
	s.Close()
	settle()
	if NewIdleProbe(c).Quiet() {
		t.Error("machine closed the connection: still quiet")
	}

	if !NewIdleProbe(wrapped{}).Quiet() {
		t.Error("a connection with no socket below counts as quiet")
	}
}
