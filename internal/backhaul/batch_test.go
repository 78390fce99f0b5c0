package backhaul

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpPair is a connected pair of loopback TCP connections.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		done <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-done
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Writes from many goroutines arrive whole and in each writer's order,
// and Close sends what is still queued.
func TestBatchConnKeepsEveryWrite(t *testing.T) {
	a, b := tcpPair(t)
	bc := newBatchConn(a)
	const writers, each = 16, 200
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		got <- all
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				msg := fmt.Sprintf("<%02d:%04d:%s>", w, i, bytes.Repeat([]byte{'x'}, i%97))
				if _, err := bc.Write([]byte(msg)); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := bc.Close(); err != nil {
		t.Fatal(err)
	}
	all := <-got
	next := make([]int, writers)
	for len(all) > 0 {
		var w, i int
		if _, err := fmt.Sscanf(string(all), "<%02d:%04d:", &w, &i); err != nil {
			t.Fatalf("stream corrupt at %q: %v", all[:min(len(all), 40)], err)
		}
		if i != next[w] {
			t.Fatalf("writer %d: message %d arrived when %d was due", w, i, next[w])
		}
		next[w]++
		end := bytes.IndexByte(all, '>')
		if want := 10 + i%97; end+1 != want {
			t.Fatalf("writer %d message %d: %d bytes, want %d", w, i, end+1, want)
		}
		all = all[end+1:]
	}
	for w, n := range next {
		if n != each {
			t.Errorf("writer %d: %d of %d messages arrived", w, n, each)
		}
	}
	if _, err := bc.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v, want net.ErrClosed", err)
	}
}

// A peer that stops reading holds writers once the queue is full, not
// memory, and Close still returns (bounded by the lingering time) and
// releases them with an error.
func TestBatchConnStuckPeer(t *testing.T) {
	a, _ := tcpPair(t)
	bc := newBatchConn(a)
	chunk := make([]byte, 64<<10)
	blocked := make(chan error, 1)
	go func() {
		for {
			if _, err := bc.Write(chunk); err != nil {
				blocked <- err
				return
			}
		}
	}()
	// The kernel's buffers fill, then the queue: the writer waits.
	deadline := time.Now().Add(10 * time.Second)
	for {
		bc.mu.Lock()
		full := bc.writing && len(bc.queue) >= batchLimit
		bc.mu.Unlock()
		if full {
			break
		}
		if time.Now().After(deadline) {
			bc.mu.Lock()
			t.Fatalf("the queue never filled: writing %v queued %d err %v", bc.writing, len(bc.queue), bc.err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	bc.mu.Lock()
	queued := len(bc.queue)
	bc.mu.Unlock()
	if queued > batchLimit+len(chunk) {
		t.Errorf("%d bytes queued, bound is %d", queued, batchLimit+len(chunk))
	}
	closed := make(chan error, 1)
	go func() { closed <- bc.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a peer that does not read")
	}
	select {
	case err := <-blocked:
		if err == nil {
			t.Error("blocked writer released without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a blocked writer was never released")
	}
}

// A failed write is reported by the writes after it.
func TestBatchConnReportsWriteError(t *testing.T) {
	a, b := tcpPair(t)
	bc := newBatchConn(a)
	b.(*net.TCPConn).SetLinger(0)
	b.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := bc.Write(make([]byte, 4096))
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes to a reset connection never failed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	bc.Close()
}
