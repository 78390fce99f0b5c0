package peek

import (
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeproxy/edgeproxy/internal/sniff"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tcpPair returns both ends of a real loopback TCP connection, closed when
// the test ends.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		c.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		c.Close()
		s.Close()
	})
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// scriptConn is an in-memory net.Conn whose reads return the given chunks in
// order (splitting one only when the reader's buffer is smaller), then end
// with err. It records what the code under test asked of it.
type scriptConn struct {
	chunks    [][]byte
	err       error // after the chunks; io.EOF when nil
	withLast  bool  // return the last chunk together with err
	zero      bool  // return (0, nil) forever instead
	reads     int
	deadlines []time.Time
}

func (s *scriptConn) Read(p []byte) (int, error) {
	s.reads++
	if s.zero {
		return 0, nil
	}
	err := s.err
	if err == nil {
		err = io.EOF
	}
	if len(s.chunks) == 0 {
		return 0, err
	}
	n := copy(p, s.chunks[0])
	if s.chunks[0] = s.chunks[0][n:]; len(s.chunks[0]) == 0 {
		s.chunks = s.chunks[1:]
	}
	if s.withLast && len(s.chunks) == 0 {
		return n, err
	}
	return n, nil
}

func (s *scriptConn) SetReadDeadline(t time.Time) error {
	s.deadlines = append(s.deadlines, t)
	return nil
}

func (s *scriptConn) Write(p []byte) (int, error)      { return len(p), nil }
func (s *scriptConn) Close() error                     { return nil }
func (s *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (s *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (s *scriptConn) SetDeadline(t time.Time) error    { return s.SetReadDeadline(t) }
func (s *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// needBytes decides once n bytes are buffered, and counts its calls.
func needBytes(n int, calls *int) func([]byte) sniff.Result {
	return func(b []byte) sniff.Result {
		*calls++
		if len(b) >= n {
			return sniff.Match
		}
		return sniff.NeedMore
	}
}

func never([]byte) sniff.Result { return sniff.NeedMore }

func detect(b []byte) sniff.Result {
	_, r := sniff.Detect(b)
	return r
}

func isTimeoutErr(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// soon is a deadline for tests that expect a decision well before it.
func soon() time.Time { return time.Now().Add(10 * time.Second) }
