package peek

import (
	"errors"
	"io"
	"net"
	"reflect"
	"testing"
	"testing/synctest"
	"time"
)

// TestPeekTrickleSynctest is the slowloris case on a fake clock: one byte a
// second, a deadline at 10.5s. Peek gives up at exactly 10.5s with the ten
// bytes sent, and the stream carries on from there with no deadline.
func TestPeekTrickleSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, server := net.Pipe()
		done := make(chan struct{})
		defer func() {
			// The writer must be gone before the bubble ends: close, then
			// let fake time run until its next write fails.
			server.Close()
			<-done
			client.Close()
		}()
		go func() {
			defer close(done)
			for {
				time.Sleep(time.Second)
				if _, err := client.Write([]byte{'A'}); err != nil {
					return
				}
			}
		}()
		start := time.Now()
		c := New(server, 4096)
		// "AAAA..." stays a valid method prefix for 24 bytes: NeedMore.
		got, err := c.Peek(start.Add(10500*time.Millisecond), detect)
		if !isTimeoutErr(err) || string(got) != "AAAAAAAAAA" {
			t.Fatalf("Peek = %q, %v; want ten bytes and a timeout", got, err)
		}
		if d := time.Since(start); d != 10500*time.Millisecond {
			t.Fatalf("Peek returned after %v, want 10.5s", d)
		}
		p := make([]byte, 64)
		if n, err := c.Read(p); n != 10 || err != nil {
			t.Fatalf("Read = %d, %v; want the ten buffered bytes", n, err)
		}
		if n, err := c.Read(p); n != 1 || err != nil || time.Since(start) != 11*time.Second {
			t.Fatalf("Read = %d, %v at %v; want the next byte at 11s", n, err, time.Since(start))
		}
	})
}

func TestPeekSilentSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, server := net.Pipe()
		defer client.Close()
		defer server.Close()
		start := time.Now()
		got, err := New(server, 4096).Peek(start.Add(5*time.Second), detect)
		if !isTimeoutErr(err) || got != nil || time.Since(start) != 5*time.Second {
			t.Fatalf("Peek = %q, %v after %v; want nil and a timeout at 5s", got, err, time.Since(start))
		}
	})
}

// TestPeekDeadlineOwnership: Peek arms the deadline it was given and clears
// it, and a prefix that is already decided costs no I/O and no deadline.
func TestPeekDeadlineOwnership(t *testing.T) {
	s := &scriptConn{chunks: [][]byte{[]byte("GET / HTTP/1.1\r\n"), []byte("Host: a\r\n\r\n")}}
	c := New(s, 4096)
	deadline := time.Now().Add(time.Minute)
	if got, err := c.Peek(deadline, detect); err != nil || string(got) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("Peek = %q, %v", got, err)
	}
	if want := []time.Time{deadline, {}}; !reflect.DeepEqual(s.deadlines, want) {
		t.Fatalf("deadlines set = %v, want %v", s.deadlines, want)
	}
	reads := s.reads
	if got, err := c.Peek(deadline, detect); err != nil || string(got) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("second Peek = %q, %v", got, err)
	}
	if s.reads != reads || len(s.deadlines) != 2 {
		t.Fatalf("second Peek read %d times and set %d deadlines; want none", s.reads-reads, len(s.deadlines)-2)
	}
	if _, err := c.Peek(time.Time{}, never); err != ErrNoDeadline || s.reads != reads {
		t.Fatalf("Peek without a deadline = %v after %d reads; want ErrNoDeadline and none", err, s.reads-reads)
	}
}

// TestZeroProgress: a wrapped conn that returns (0, nil) forever is the
// incident's shape; neither Peek nor Read may pass it on or spin on it.
func TestZeroProgress(t *testing.T) {
	s := &scriptConn{zero: true}
	c := New(s, 4096)
	if _, err := c.Peek(time.Now().Add(time.Minute), never); err != io.ErrNoProgress {
		t.Fatalf("Peek = %v, want io.ErrNoProgress", err)
	}
	if s.reads != maxEmptyReads {
		t.Fatalf("Peek read %d times, want %d", s.reads, maxEmptyReads)
	}
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.ErrNoProgress {
		t.Fatalf("Read = %d, %v; want 0, io.ErrNoProgress", n, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
}

// TestErrorWithDecidingBytes: bytes that arrive with EOF and settle decide
// make Peek succeed; EOF then follows the replay, without another read of
// the wrapped conn.
func TestErrorWithDecidingBytes(t *testing.T) {
	s := &scriptConn{chunks: [][]byte{[]byte("GET / HTTP/1.1\r\n")}, withLast: true}
	c := New(s, 4096)
	if got, err := c.Peek(time.Now().Add(time.Minute), detect); err != nil || len(got) != 16 {
		t.Fatalf("Peek = %q, %v; want the line and no error", got, err)
	}
	reads := s.reads
	if n, err := c.Read(make([]byte, 8)); n != 8 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) with bytes buffered = %d, %v; want 0, nil", n, err)
	}
	if n, err := c.Read(make([]byte, 64)); n != 8 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if n, err := c.Read(make([]byte, 64)); n != 0 || err != io.EOF || s.reads != reads {
		t.Fatalf("Read = %d, %v after %d more reads; want 0, io.EOF from the stash", n, err, s.reads-reads)
	}
}

// TestPeekAfterPartialRead: a second Peek counts only what is still unread.
func TestPeekAfterPartialRead(t *testing.T) {
	stream := "0123456789abcdefghijklmnopqrstuvwxyz"
	s := &scriptConn{chunks: [][]byte{[]byte(stream[:10]), []byte(stream[10:])}}
	c := New(s, 20)
	var calls int
	if got, err := c.Peek(time.Now().Add(time.Minute), needBytes(10, &calls)); string(got) != stream[:10] || err != nil {
		t.Fatalf("Peek = %q, %v", got, err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	got, err := c.Peek(time.Now().Add(time.Minute), needBytes(20, &calls))
	if string(got) != stream[4:24] || err != nil {
		t.Fatalf("second Peek = %q, %v; want %q", got, err, stream[4:24])
	}
	rest, err := io.ReadAll(c)
	if string(rest) != stream[4:] || err != nil {
		t.Fatalf("ReadAll = %q, %v", rest, err)
	}
}

type liarConn struct{ scriptConn }

func (l *liarConn) Read(p []byte) (int, error) { return len(p) + 1, nil }

func TestPeekInvalidCount(t *testing.T) {
	c := New(&liarConn{}, 64)
	if _, err := c.Peek(time.Now().Add(time.Minute), never); err == nil || errors.Is(err, ErrTooLarge) {
		t.Fatalf("Peek over a conn that over-reports = %v, want an error", err)
	}
	if _, err := c.Read(make([]byte, 4)); err == nil {
		t.Fatal("Read after an invalid count succeeded")
	}
}
