package listen

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestParkRefusesAndFreesTheAddress: a parked listener refuses clients at
// once even while another descriptor of the same socket stays open (the
// copy a graceful restart keeps), and the address can be bound again.
func TestParkRefusesAndFreesTheAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	dup, err := ln.(*net.TCPListener).File() // the handoff's copy
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Close()
	if err := Park(ln); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after park: %v, want connection refused", err)
	}
	again, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("address not free after park: %v", err)
	}
	again.Close()
}

// TestOpenerReplacesParkedSocket: a parked socket handed down (here: the
// first open returns it) is replaced by a listening one.
func TestOpenerReplacesParkedSocket(t *testing.T) {
	parked, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := parked.Addr().String()
	f, _ := parked.(*net.TCPListener).File()
	defer f.Close()
	Park(parked)
	inherited, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	if Listening(inherited) {
		t.Fatal("a parked socket reports listening")
	}
	calls := 0
	open := Opener(func(network, a string) (net.Listener, error) {
		calls++
		if calls == 1 {
			return inherited, nil
		}
		return net.Listen(network, a)
	})
	ln, err := open("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if calls != 2 || !Listening(ln) {
		t.Fatalf("calls %d, listening %v", calls, Listening(ln))
	}
}

func TestQueue(t *testing.T) {
	q := NewQueue(&net.TCPAddr{})
	a, b := net.Pipe()
	defer b.Close()
	go q.Handoff(context.Background(), a)
	c, err := q.Accept()
	if err != nil || c != a {
		t.Fatalf("accept: %v", err)
	}
	c.Close()
	q.Close()
	q.Close()
	if _, err := q.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("accept after close: %v", err)
	}
	if q.Handoff(context.Background(), b) {
		t.Error("handoff to a closed queue succeeded")
	}
}
