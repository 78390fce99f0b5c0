package peek

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"testing/iotest"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/sniff"
)

// TestPeekSilentClient: a client that connects and sends nothing gets a
// timeout at the deadline, leaves no buffer behind, and the deadline does not
// outlive Peek.
func TestPeekSilentClient(t *testing.T) {
	client, server := tcpPair(t)
	c := New(server, 4096)
	deadline := time.Now().Add(100 * time.Millisecond)
	got, err := c.Peek(deadline, detect)
	if !isTimeoutErr(err) || len(got) != 0 {
		t.Fatalf("Peek = %q, %v; want nothing and a timeout", got, err)
	}
	if time.Now().Before(deadline) {
		t.Errorf("Peek returned before its deadline")
	}
	if c.buf != nil {
		t.Errorf("a silent client left a %d-byte buffer", cap(c.buf))
	}
	// Had the deadline stayed, this read would fail at once.
	if _, err := client.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 16)
	n, err := c.Read(p)
	if string(p[:n]) != "late" || err != nil {
		t.Fatalf("Read after the deadline = %q, %v; want \"late\"", p[:n], err)
	}
}

// TestPeekTrickle: a client that sends a byte every 20ms never completes a
// request line and is cut off at the deadline with what it sent so far, which
// is then replayed.
func TestPeekTrickle(t *testing.T) {
	client, server := tcpPair(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := client.Write([]byte{"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"[i%40]}); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()

	c := New(server, 4096)
	deadline := time.Now().Add(300 * time.Millisecond)
	got, err := c.Peek(deadline, detect)
	if !isTimeoutErr(err) {
		t.Fatalf("Peek = %q, %v; want a timeout", got, err)
	}
	if time.Now().Before(deadline) {
		t.Errorf("Peek returned before its deadline")
	}
	if len(got) == 0 || !bytes.HasPrefix([]byte("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), got) {
		t.Fatalf("Peek buffered %q, want a prefix of the trickle", got)
	}
	replay := make([]byte, len(got))
	if _, err := io.ReadFull(c, replay); err != nil || !bytes.Equal(replay, got) {
		t.Fatalf("replayed %q, %v; want %q", replay, err, got)
	}
}

// TestPeekCap: decide never settles; Peek stops at maxBytes, and everything,
// the capped prefix and the rest, is read back in order.
func TestPeekCap(t *testing.T) {
	client, server := tcpPair(t)
	sent := make([]byte, 10_000)
	for i := range sent {
		sent[i] = byte(rand.N(256))
	}
	go func() {
		client.Write(sent)
		client.CloseWrite()
	}()
	c := New(server, 1000)
	got, err := c.Peek(soon(), never)
	if !errors.Is(err, ErrTooLarge) || !bytes.Equal(got, sent[:1000]) {
		t.Fatalf("Peek = %d bytes, %v; want the first 1000 and ErrTooLarge", len(got), err)
	}
	if cap(c.buf) > 1000 {
		t.Errorf("buffer grew to %d bytes past the 1000-byte cap", cap(c.buf))
	}
	all, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(all, sent) {
		t.Fatalf("read back %d bytes, %v; want the %d sent", len(all), err, len(sent))
	}
}

// TestPeekReplay: a request line and a megabyte body, peeked then read with
// every read size testing/iotest tries, come back exactly.
func TestPeekReplay(t *testing.T) {
	client, server := tcpPair(t)
	sent := []byte("POST /upload HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n")
	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte(rand.N(256))
	}
	sent = append(sent, body...)
	go func() {
		client.Write(sent)
		client.CloseWrite()
	}()
	c := New(server, 4096)
	got, err := c.Peek(soon(), detect)
	if err != nil || !bytes.HasPrefix(got, []byte("POST /upload HTTP/1.1\r\n")) {
		t.Fatalf("Peek = %.40q, %v; want the request line", got, err)
	}
	if err := iotest.TestReader(c, sent); err != nil {
		t.Fatal(err)
	}
}

// TestPeekSeveralReads: bytes that arrive in small writes need several reads,
// and decide is asked after each one until it settles.
func TestPeekSeveralReads(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	line := "GET /several/reads HTTP/1.1\r\n"
	go func() {
		defer client.Close()
		// net.Pipe hands each write to one read, so this is 10 reads.
		for i := 0; i < len(line); i += 3 {
			if _, err := client.Write([]byte(line[i:min(i+3, len(line))])); err != nil {
				return
			}
		}
		client.Write([]byte("Host: a\r\n\r\n"))
	}()
	c := New(server, 4096)
	calls := 0
	got, err := c.Peek(soon(), func(b []byte) sniff.Result {
		calls++
		r, _ := sniff.HTTP1(b)
		return r
	})
	if err != nil || string(got) != line {
		t.Fatalf("Peek = %q, %v; want %q", got, err, line)
	}
	// Once for the empty buffer, then once per read.
	if want := 1 + (len(line)+2)/3; calls != want {
		t.Errorf("decide called %d times, want %d", calls, want)
	}
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != line+"Host: a\r\n\r\n" {
		t.Fatalf("ReadAll = %q, %v", rest, err)
	}
}

// TestPeekEOF: a peer that closes mid-line leaves its partial prefix, which
// Peek returns with io.EOF and Read replays before reporting io.EOF again.
func TestPeekEOF(t *testing.T) {
	client, server := tcpPair(t)
	client.Write([]byte("GET /"))
	client.CloseWrite()
	c := New(server, 4096)
	got, err := c.Peek(soon(), detect)
	if err != io.EOF || string(got) != "GET /" {
		t.Fatalf("Peek = %q, %v; want \"GET /\", io.EOF", got, err)
	}
	if again, err := c.Peek(soon(), detect); err != io.EOF || string(again) != "GET /" {
		t.Fatalf("second Peek = %q, %v; want the same", again, err)
	}
	p := make([]byte, 64)
	n, err := c.Read(p)
	if string(p[:n]) != "GET /" || err != nil {
		t.Fatalf("Read = %q, %v; want the prefix", p[:n], err)
	}
	for range 3 {
		if n, err := c.Read(p); n != 0 || err != io.EOF {
			t.Fatalf("Read after the prefix = %d, %v; want 0, io.EOF", n, err)
		}
	}
}

func TestCloseWrite(t *testing.T) {
	client, server := tcpPair(t)
	c := New(server, 16)
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite on TCP: %v", err)
	}
	client.SetReadDeadline(soon())
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("peer read %d, %v after CloseWrite; want io.EOF", n, err)
	}

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if err := New(a, 16).CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CloseWrite on a pipe = %v, want errors.ErrUnsupported", err)
	}
}

func TestUnwrap(t *testing.T) {
	_, server := tcpPair(t)
	if got := New(server, 16).Unwrap(); got != net.Conn(server) {
		t.Fatalf("Unwrap = %v, want the wrapped conn", got)
	}
}

func TestNewRejectsNoCap(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New(c, 0) did not panic")
		}
	}()
	New(&scriptConn{}, 0)
}
