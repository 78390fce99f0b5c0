package httpproxy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/replay"
)

func TestReplayBodyResendsFromStart(t *testing.T) {
	b := newReplayBody(io.NopCloser(strings.NewReader("hello world")), 11)
	first, err := io.ReadAll(b.Attempt())
	if err != nil || string(first) != "hello world" {
		t.Fatalf("first attempt: %q, %v", first, err)
	}
	if !b.Complete() || !b.Replayable() || b.Size() != 11 {
		t.Fatalf("complete %v replayable %v size %d", b.Complete(), b.Replayable(), b.Size())
	}
	second, err := io.ReadAll(b.Attempt())
	if err != nil || string(second) != "hello world" {
		t.Fatalf("second attempt: %q, %v", second, err)
	}
}

// A replaced attempt stops at its next read, and a new attempt started
// half way gets every byte once, in order: what the old one read is kept.
func TestReplayBodyHandsOverMidStream(t *testing.T) {
	pr, pw := io.Pipe()
	b := newReplayBody(pr, -1)
	old := b.Attempt()
	go pw.Write([]byte("abc"))
	p := make([]byte, 8)
	n, err := old.Read(p)
	if err != nil || string(p[:n]) != "abc" {
		t.Fatalf("old read: %q %v", p[:n], err)
	}
	// The old reader blocks on the client; the new attempt starts.
	oldErr := make(chan error, 1)
	go func() {
		_, err := old.Read(p)
		oldErr <- err
	}()
	time.Sleep(10 * time.Millisecond)
	fresh := b.Attempt()
	got := make(chan string, 1)
	go func() {
		all, _ := io.ReadAll(fresh)
		got <- string(all)
	}()
	pw.Write([]byte("def"))
	if err := <-oldErr; !errors.Is(err, errStaleAttempt) {
		t.Fatalf("replaced reader: %v, want errStaleAttempt", err)
	}
	pw.Write([]byte("ghi"))
	pw.Close()
	if s := <-got; s != "abcdefghi" {
		t.Fatalf("new attempt read %q, want abcdefghi", s)
	}
}

func TestReplayBodyOverflow(t *testing.T) {
	big := bytes.Repeat([]byte("x"), replay.MaxBufferedBody+10)
	b := newReplayBody(io.NopCloser(bytes.NewReader(big)), -1)
	n, err := io.Copy(io.Discard, b.Attempt())
	if err != nil || n != int64(len(big)) {
		t.Fatalf("streamed %d, %v", n, err)
	}
	if b.Replayable() || b.Complete() {
		t.Fatal("a body past the limit must not be replayable")
	}
	if _, err := b.Attempt().Read(make([]byte, 1)); !errors.Is(err, errNotReplayable) {
		t.Fatalf("attempt after overflow: %v", err)
	}
	// Known too large from Content-Length: nothing is copied, but a
	// connect failure before any byte can still start over.
	b = newReplayBody(io.NopCloser(bytes.NewReader(big)), int64(len(big)))
	if !b.Replayable() {
		t.Fatal("nothing read yet: the first byte can still be sent")
	}
	io.Copy(io.Discard, b.Attempt())
	if b.Replayable() {
		t.Fatal("large body replayable after streaming")
	}
}

func TestReplayBodyClientCutShort(t *testing.T) {
	pr, pw := io.Pipe()
	b := newReplayBody(pr, 100)
	go func() {
		pw.Write([]byte("part"))
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}()
	_, err := io.ReadAll(b.Attempt())
	if !errors.Is(err, io.ErrUnexpectedEOF) || !b.failed.Load() || b.Complete() {
		t.Fatalf("err %v failed %v complete %v", err, b.failed.Load(), b.Complete())
	}
}

// Many attempts racing with a slow client never lose, duplicate or reorder
// a byte for the attempt that wins (run under -race).
func TestReplayBodyConcurrentAttempts(t *testing.T) {
	want := strings.Repeat("0123456789", 5000)
	pr, pw := io.Pipe()
	b := newReplayBody(pr, -1)
	go func() {
		for i := 0; i < len(want); i += 777 {
			pw.Write([]byte(want[i:min(i+777, len(want))]))
		}
		pw.Close()
	}()
	var wg sync.WaitGroup
	for range 5 {
		r := b.Attempt()
		wg.Go(func() { io.Copy(io.Discard, r) })
		time.Sleep(time.Millisecond)
	}
	last := b.Attempt()
	all, err := io.ReadAll(last)
	wg.Wait()
	if err != nil || string(all) != want {
		t.Fatalf("last attempt got %d bytes (%v), want %d intact", len(all), err, len(want))
	}
}
