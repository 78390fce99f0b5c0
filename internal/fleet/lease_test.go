package fleet

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// embeddedStore starts an embedded NATS server on loopback for one test
// and returns a store on it.
func embeddedStore(t *testing.T) *Store {
	t.Helper()
	f := &config.Fleet{Embedded: true, Listen: "127.0.0.1:0", Node: "test", DataDir: t.TempDir()}
	emb, err := StartEmbedded(f, func(p string) string { return p })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	nc, err := nats.Connect(emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s, err := NewStore(nc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLease: one holder at a time; the holder renews; a lease its holder
// stopped renewing is free once it expires.
func TestLease(t *testing.T) {
	s := embeddedStore(t)
	ctx := t.Context()
	take := func(holder string, ttl time.Duration) bool {
		t.Helper()
		ok, err := s.Lease(ctx, "autostop.web.iad", holder, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !take("a", 300*time.Millisecond) {
		t.Fatal("a free lease was not granted")
	}
	if take("b", 300*time.Millisecond) {
		t.Fatal("a lease held by a was granted to b")
	}
	if !take("a", 300*time.Millisecond) {
		t.Fatal("the holder could not renew")
	}
	time.Sleep(400 * time.Millisecond)
	if !take("b", time.Second) {
		t.Fatal("an expired lease was not granted")
	}
	if take("a", time.Second) {
		t.Fatal("the old holder took the lease back while b holds it")
	}
	// Many at once: exactly one wins a free lease.
	won := make(chan bool, 8)
	for i := range 8 {
		go func() {
			ok, err := s.Lease(ctx, "autostop.web.ord", string(rune('a'+i)), time.Minute)
			won <- ok && err == nil
		}()
	}
	n := 0
	for range 8 {
		if <-won {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d of 8 concurrent takers won a free lease, want 1", n)
	}
}

// TestStartRequests: a start asked of a node is answered once the start
// function returns, with its error code; a bad token is refused.
func TestStartRequests(t *testing.T) {
	s := embeddedStore(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(_ context.Context, app, id string) error {
		if id == "bad" {
			return perr.New(perr.MachineStartFailed, nil)
		}
		return nil
	}
	if _, err := ServeStarts(s.Conn(), "owner", func() string { return "tok" }, start, time.Second, log); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := RequestStart(ctx, s.Conn(), "owner", "web", "m1", "tok"); err != nil {
		t.Errorf("start: %v", err)
	}
	err := RequestStart(ctx, s.Conn(), "owner", "web", "bad", "tok")
	if pe, ok := perr.As(err); !ok || pe.Code != perr.MachineStartFailed {
		t.Errorf("failed start: %v, want PM01", err)
	}
	err = RequestStart(ctx, s.Conn(), "owner", "web", "m1", "wrong")
	if pe, ok := perr.As(err); !ok || pe.Code != perr.MachineDriverFailed {
		t.Errorf("bad token: %v, want PM03", err)
	}
	short, cancel2 := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel2()
	err = RequestStart(short, s.Conn(), "nobody", "web", "m1", "tok")
	if pe, ok := perr.As(err); !ok || pe.Code != perr.MachineDriverFailed {
		t.Errorf("no such node: %v, want PM03", err)
	}
}
