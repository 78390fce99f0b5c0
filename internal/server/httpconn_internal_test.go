package server

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/httpproxy"
)

// watchedConn counts what reaches the socket.
type watchedConn struct {
	net.Conn
	reads atomic.Int32
}

func (w *watchedConn) Read(p []byte) (int, error) {
	w.reads.Add(1)
	return w.Conn.Read(p)
}

// heldRead runs the deferred background read as Read does once the
// handler says the client need not be watched.
func heldRead(h *httpConn) chan error {
	done := make(chan error, 1)
	go func() {
		if h.deferRead() {
			done <- os.ErrDeadlineExceeded
			return
		}
		_, err := h.read(make([]byte, 1))
		done <- err
	}()
	// Until the read is parked, there is nothing to release.
	for {
		h.rmu.Lock()
		w := h.rwaiting
		h.rmu.Unlock()
		if w {
			return done
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDeferredBackgroundRead(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	wire := &watchedConn{Conn: server}
	h := &httpConn{Conn: wire, info: &httpproxy.Conn{}}

	// net/http's abort: a deadline in the past ends the held read with
	// the timeout it expects, without a read of the socket.
	done := heldRead(h)
	if err := h.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	if err := <-done; !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("aborted read: %v, want a timeout", err)
	}
	if r := wire.reads.Load(); r != 0 {
		t.Fatalf("socket saw %d reads, want none", r)
	}
	// The abort can also come before the read is held: the read then
	// returns at once, as the socket's would.
	aborted := make(chan bool, 1)
	go func() { aborted <- h.deferRead() }()
	select {
	case a := <-aborted:
		if !a {
			t.Fatal("a read after the abort was not aborted")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read after the abort was held")
	}
	if err := h.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	// A later deadline lets the read go to the socket, which answers it.
	done = heldRead(h)
	if err := h.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	go client.Write([]byte("x"))
	if err := <-done; err != nil {
		t.Fatalf("released read: %v", err)
	}
	if r := wire.reads.Load(); r != 1 {
		t.Fatalf("socket saw %d reads, want 1", r)
	}
}

func TestDeferredBackgroundReadEndsOnClose(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	h := &httpConn{Conn: server, info: &httpproxy.Conn{}}
	done := heldRead(h)
	server.Close()
	h.closeHeldRead()
	if err := <-done; err == nil {
		t.Fatal("read on a closed connection succeeded")
	}
	// Once closed, a background read is not held at all.
	if h.deferRead() {
		t.Fatal("held read after close")
	}
}
