//go:build linux

package security_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a machine that logs the exact bytes each connection sends
// it and answers with whatever its script writes: well-formed responses,
// or crafted bytes a broken or hostile app would send.
type recorder struct {
	ln     net.Listener
	script func(c *recConn)

	mu    sync.Mutex
	conns []*recConn
	wg    sync.WaitGroup
	// live counts connections whose script still runs: those the proxy
	// holds open.
	live atomic.Int32
	// peak is the most connections live at once.
	peak atomic.Int32
}

// recConn is one connection to the recorder.
type recConn struct {
	net.Conn
	br *bufio.Reader

	mu  sync.Mutex
	got bytes.Buffer // every byte read from the proxy, in order
}

// Read records what the script reads.
func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.got.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// Received returns a copy of the bytes read so far.
func (c *recConn) Received() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.got.Bytes())
}

// ReadRequest reads one HTTP/1.x request head and its body.
func (c *recConn) ReadRequest() (*http.Request, []byte, error) {
	req, err := http.ReadRequest(c.br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// startRecorder listens on a loopback port the kernel picks and runs
// script on every connection, each on its own goroutine. The listener and
// every connection are closed, and the scripts joined, when the test ends.
func startRecorder(t *testing.T, script func(c *recConn)) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, script: script}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

func (r *recorder) accept() {
	defer r.wg.Done()
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			return
		}
		c := &recConn{Conn: nc}
		c.br = bufio.NewReader(c)
		r.mu.Lock()
		r.conns = append(r.conns, c)
		r.mu.Unlock()
		r.wg.Add(1)
		if n := r.live.Add(1); n > r.peak.Load() {
			r.peak.Store(n) // accept is one goroutine: no lost update
		}
		go func() {
			defer r.wg.Done()
			defer r.live.Add(-1)
			defer nc.Close()
			r.script(c)
		}()
	}
}

func (r *recorder) close() {
	r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// Port is the port the recorder listens on.
func (r *recorder) Port() int { return r.ln.Addr().(*net.TCPAddr).Port }

// Conns returns the connections accepted so far.
func (r *recorder) Conns() []*recConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*recConn(nil), r.conns...)
}

// Requests counts the request lines received over every connection.
func (r *recorder) Requests() int {
	n := 0
	for _, c := range r.Conns() {
		for line := range strings.Lines(string(c.Received())) {
			if strings.HasSuffix(line, " HTTP/1.1\r\n") && !strings.HasPrefix(line, " ") {
				n++
			}
		}
	}
	return n
}

// Received is every byte received over every connection, in order of
// connection.
func (r *recorder) Received() []byte {
	var all []byte
	for _, c := range r.Conns() {
		all = append(all, c.Received()...)
	}
	return all
}

// serveEach answers every request on the connection with answer, until
// the proxy closes it or answer returns false.
func serveEach(answer func(c *recConn, req *http.Request, body []byte) bool) func(c *recConn) {
	return func(c *recConn) {
		for {
			req, body, err := c.ReadRequest()
			if err != nil {
				return
			}
			if !answer(c, req, body) {
				return
			}
		}
	}
}

// okResponse is a well-formed response whose body names what it answers.
func okResponse(body string) string {
	return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// rawExchange writes raw to addr on a new connection and returns what
// comes back until the proxy closes the connection or wait passes.
func rawExchange(t *testing.T, addr string, raw string, wait time.Duration) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(c)
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, net.ErrClosed) {
		t.Logf("reading the answer: %v", err)
	}
	return string(b)
}
