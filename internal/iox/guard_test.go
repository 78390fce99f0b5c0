package iox

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// stubConn is a net.Conn whose Read is scripted.
type stubConn struct {
	net.Conn
	read   func(p []byte) (int, error)
	write  func(p []byte) (int, error)
	closed bool
	mu     sync.Mutex
}

func (s *stubConn) Read(p []byte) (int, error)  { return s.read(p) }
func (s *stubConn) Write(p []byte) (int, error) { return s.write(p) }
func (s *stubConn) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}
func (s *stubConn) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// brokenAfterEOF returns its data, then swallows the EOF of the layer
// below and returns (0, nil) forever: the bug class of docs/incident.md (a TLS
// reader that neither reads nor reports the end after close_notify).
type brokenAfterEOF struct {
	net.Conn
	data []byte
}

func (b *brokenAfterEOF) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	if _, err := b.Conn.Read(p); err == io.EOF {
		return 0, nil
	}
	return 0, nil
}

func (b *brokenAfterEOF) Unwrap() net.Conn { return b.Conn }

func newTestGuard(raw net.Conn) (*Guard, *Stats, *[]Kill) {
	stats := &Stats{}
	var kills []Kill
	g := NewGuard(raw, DefaultGuardLimits(), stats, func(k Kill) { kills = append(kills, k) })
	return g, stats, &kills
}

func TestGuardKillsZeroProgressReader(t *testing.T) {
	calls := 0
	raw := &stubConn{read: func(p []byte) (int, error) { calls++; return 0, nil }}
	g, stats, kills := newTestGuard(raw)
	l := g.Wrap("tls", raw)
	buf := make([]byte, 16)
	// A naive copy loop would spin forever; the guard ends it.
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = l.Read(buf)
	}
	if !errors.Is(err, ErrSpinKilled) || calls != 100 {
		t.Fatalf("err %v after %d calls, want ErrSpinKilled after 100", err, calls)
	}
	if !raw.isClosed() || !g.Killed() {
		t.Error("the socket was not closed on the kill")
	}
	ls := stats.Layer("tls")
	if ls.ZeroProgressReads.Load() != 100 || ls.KillCount(KillZeroProgress) != 1 {
		t.Errorf("stats: zero %d kills %d", ls.ZeroProgressReads.Load(), ls.KillCount(KillZeroProgress))
	}
	if len(*kills) != 1 || (*kills)[0].Reason != KillZeroProgress || !strings.Contains((*kills)[0].Chain, "*iox.Guarded(tls) -> *iox.stubConn") {
		t.Errorf("kill log: %+v", *kills)
	}
	// io.Copy over the guarded layer ends too, rather than spinning.
	if _, err := io.Copy(io.Discard, l); !errors.Is(err, ErrSpinKilled) {
		t.Errorf("io.Copy after kill: %v", err)
	}
}

// TestGuardCatchesBrokenLayerBelow: a wrapper that returns (0, nil) after
// EOF under the guard, the exact shape of the incident's TLS reader.
func TestGuardCatchesBrokenLayerBelow(t *testing.T) {
	raw := &stubConn{read: func(p []byte) (int, error) { return 0, io.EOF }}
	g, _, kills := newTestGuard(raw)
	broken := &brokenAfterEOF{Conn: raw, data: []byte("hello")}
	top := g.Wrap("plaintext", broken)
	var out bytes.Buffer
	// bufio-free copy as a proxy would do it: it keeps reading because
	// the broken layer never reports EOF again.
	buf := make([]byte, 4)
	for i := 0; i < 10_000; i++ {
		n, err := top.Read(buf)
		out.Write(buf[:n])
		if errors.Is(err, ErrSpinKilled) {
			break
		}
	}
	if out.String() != "hello" || len(*kills) != 1 {
		t.Fatalf("read %q, kills %+v", out.String(), *kills)
	}
	k := (*kills)[0]
	if k.Reason != KillZeroProgress || k.Chain != "*iox.Guarded(plaintext) -> *iox.brokenAfterEOF -> *iox.stubConn" {
		t.Errorf("kill %+v", k)
	}
}

func TestGuardReadsAfterEOF(t *testing.T) {
	calls := 0
	raw := &stubConn{read: func(p []byte) (int, error) { calls++; return 0, io.EOF }}
	g, stats, kills := newTestGuard(raw)
	l := g.Wrap("tcp", raw)
	buf := make([]byte, 8)
	for i := 0; i < 150; i++ {
		l.Read(buf)
	}
	if calls != 1 {
		t.Errorf("layer below read %d times after EOF, want once", calls)
	}
	if stats.Layer("tcp").KillCount(KillAfterEOF) != 1 || len(*kills) != 1 {
		t.Errorf("kills %+v", *kills)
	}
	// A caller reading EOF a few times (as net/http does) is not killed.
	raw2 := &stubConn{read: func(p []byte) (int, error) { return 0, io.EOF }}
	g2, _, kills2 := newTestGuard(raw2)
	l2 := g2.Wrap("tcp", raw2)
	for i := 0; i < 5; i++ {
		l2.Read(buf)
	}
	if len(*kills2) != 0 || g2.Killed() {
		t.Error("a few reads after EOF killed the connection")
	}
}

func TestGuardZeroByteWrites(t *testing.T) {
	raw := &stubConn{write: func(p []byte) (int, error) { return 0, nil }}
	g, stats, _ := newTestGuard(raw)
	l := g.Wrap("tcp", raw)
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		_, err = l.Write([]byte("x"))
	}
	if !errors.Is(err, ErrSpinKilled) || stats.Layer("tcp").ZeroWrites.Load() != 100 {
		t.Errorf("err %v zero writes %d", err, stats.Layer("tcp").ZeroWrites.Load())
	}
}

// TestGuardCallRate: a reader that returns a timeout at once, forever, is
// not zero-progress by the letter (it returns an error) but it spins; the
// call-rate check catches it within about a second.
func TestGuardCallRate(t *testing.T) {
	raw := &stubConn{read: func(p []byte) (int, error) { return 0, timeoutErr{} }}
	g, stats, kills := newTestGuard(raw)
	l := g.Wrap("tls", raw)
	buf := make([]byte, 8)
	deadline := time.Now().Add(10 * time.Second)
	for !g.Killed() && time.Now().Before(deadline) {
		l.Read(buf)
	}
	if !g.Killed() || stats.Layer("tls").KillCount(KillCallRate) != 1 || (*kills)[0].Reason != KillCallRate {
		t.Fatalf("call-rate spin not killed: %+v", *kills)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestGuardHealthyTraffic: a real loopback stream through a guarded layer
// is never killed and its reads are all counted.
func TestGuardHealthyTraffic(t *testing.T) {
	a, b := tcpPair(t)
	stats := &Stats{}
	g := NewGuard(a, DefaultGuardLimits(), stats, func(k Kill) { t.Errorf("killed: %+v", k) })
	l := g.Wrap("tcp", a)
	payload := bytes.Repeat([]byte("x"), 1<<20)
	go func() {
		b.Write(payload)
		b.Close()
	}()
	got, err := io.ReadAll(l)
	if err != nil || len(got) != len(payload) {
		t.Fatalf("read %d, %v", len(got), err)
	}
	ls := stats.Layer("tcp")
	if ls.Reads.Load() == 0 || ls.ZeroProgressReads.Load() != 0 || ls.ReadsAfterEOF.Load() != 0 {
		t.Errorf("stats reads %d zero %d after %d", ls.Reads.Load(), ls.ZeroProgressReads.Load(), ls.ReadsAfterEOF.Load())
	}
	a.Close()
}

// readerConn returns len(p) bytes on every read: it isolates the guard's
// own cost from any I/O.
type readerConn struct{ net.Conn }

func (readerConn) Read(p []byte) (int, error) { return len(p), nil }

// BenchmarkGuardRead measures what the guard adds to one Read: compare
// with BenchmarkUnguardedRead (target: under 5 ns).
func BenchmarkGuardRead(b *testing.B) {
	raw := readerConn{}
	g := NewGuard(raw, DefaultGuardLimits(), &Stats{}, nil)
	var r io.Reader = g.Wrap("tcp", raw)
	buf := make([]byte, 512)
	b.ReportAllocs()
	for b.Loop() {
		r.Read(buf)
	}
}

func BenchmarkUnguardedRead(b *testing.B) {
	var r io.Reader = readerConn{}
	buf := make([]byte, 512)
	b.ReportAllocs()
	for b.Loop() {
		r.Read(buf)
	}
}
