package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// upWait bounds every wait of these tests for something that must happen;
// none of them waits that long when the code works.
const upWait = 5 * time.Second

// upCheckLeaks verifies, after every other cleanup of t, that no goroutine
// started during t is left.
func upCheckLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// upMachine is a machine on loopback whose every connection runs a
// handler. It counts connections and reports each one the pool closed.
type upMachine struct {
	addr    netip.AddrPort
	accepts atomic.Int32
	// gone receives a connection's number when the pool closed it.
	gone chan int
	// seen holds the numbers taken from gone (test goroutine only).
	seen map[int]bool
}

func upServe(t *testing.T, handle func(n int, c net.Conn, br *bufio.Reader)) *upMachine {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &upMachine{addr: ln.Addr().(*net.TCPAddr).AddrPort(), gone: make(chan int, 64), seen: map[int]bool{}}
	done := make(chan struct{})
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		<-done
		// A test that stopped early may leave handlers waiting on the
		// pool: end them.
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(m.accepts.Add(1))
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				handle(n, c, br)
				// Whatever the handler left: wait for the pool to close
				// (a reset counts: the pool may close with bytes unread).
				c.SetReadDeadline(time.Now().Add(upWait))
				_, err := io.Copy(io.Discard, br)
				var ne net.Error
				if errors.Is(err, net.ErrClosed) || errors.As(err, &ne) && ne.Timeout() {
					return
				}
				m.gone <- n
			}()
		}
	}()
	return m
}

// waitGone waits until the pool closed the machine's connection number n.
func (m *upMachine) waitGone(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(upWait)
	for !m.seen[n] {
		select {
		case k := <-m.gone:
			m.seen[k] = true
		case <-timeout:
			t.Fatalf("connection %d was not closed", n)
		}
	}
}

// upReadRequest reads one request from br as the machine got it, head and
// body (framed by Content-Length or chunked), and returns its bytes. It
// returns io.EOF when the connection ended before a request.
func upReadRequest(br *bufio.Reader) (string, error) {
	var raw strings.Builder
	length, chunked := int64(0), false
	for {
		line, err := br.ReadString('\n')
		raw.WriteString(line)
		if err != nil {
			if raw.Len() == 0 {
				return "", io.EOF
			}
			return raw.String(), io.ErrUnexpectedEOF
		}
		if line == "\r\n" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			length, _ = strconv.ParseInt(value, 10, 64)
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
		}
	}
	if !chunked {
		b := make([]byte, length)
		n, err := io.ReadFull(br, b)
		raw.Write(b[:n])
		return raw.String(), err
	}
	for {
		line, err := br.ReadString('\n')
		raw.WriteString(line)
		if err != nil {
			return raw.String(), io.ErrUnexpectedEOF
		}
		size, err := strconv.ParseInt(strings.TrimSpace(line), 16, 64)
		if err != nil {
			return raw.String(), err
		}
		if size == 0 {
			break
		}
		b := make([]byte, size+2)
		n, err := io.ReadFull(br, b)
		raw.Write(b[:n])
		if err != nil {
			return raw.String(), err
		}
	}
	for {
		line, err := br.ReadString('\n')
		raw.WriteString(line)
		if err != nil {
			return raw.String(), io.ErrUnexpectedEOF
		}
		if line == "\r\n" {
			return raw.String(), nil
		}
	}
}

// upAnswer reads requests on a connection and answers each with resp,
// count times.
func upAnswer(count int, resp string) func(int, net.Conn, *bufio.Reader) {
	return func(_ int, c net.Conn, br *bufio.Reader) {
		for range count {
			if _, err := upReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	}
}

// upOneRequest reads one request on each connection and lets reply
// answer it; n numbers the connection.
func upOneRequest(reply func(n int, c net.Conn)) func(int, net.Conn, *bufio.Reader) {
	return func(n int, c net.Conn, br *bufio.Reader) {
		if _, err := upReadRequest(br); err == nil {
			reply(n, c)
		}
	}
}

// upDialer dials the scripted machines and keeps the connections, so a
// test can look at their sockets.
type upDialer struct {
	d     net.Dialer
	mu    sync.Mutex
	conns []net.Conn
}

func (d *upDialer) dial(ctx context.Context, x *Exchange, addr netip.AddrPort) (net.Conn, error) {
	if x == nil || x.Ctx != ctx {
		return nil, errors.New("dial without the exchange and its context")
	}
	c, err := d.d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return c, nil
}

func (d *upDialer) dials() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

func (d *upDialer) conn(i int) net.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[i]
}

// upPool makes a pool whose idle connections are closed before the
// machines' cleanup waits for them.
func upPool(t *testing.T, maxIdle int, idle, header time.Duration) (*h1Pool, *upDialer) {
	d := &upDialer{}
	p := newH1Pool(d.dial, PoolOptions{MaxIdlePerMachine: maxIdle, IdleConnTimeout: idle, ResponseHeaderTimeout: header})
	t.Cleanup(p.shut)
	return p, d
}

// upIdleCount is how many connections to addr the pool holds idle.
func upIdleCount(p *h1Pool, addr netip.AddrPort) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle[addr])
}

// upResponder is the client side of an exchange: it records what the
// pool passes to it.
type upResponder struct {
	mu      sync.Mutex
	interim []string // "status fields"
	cuts    int
}

func (w *upResponder) Interim(status int, fields []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.interim = append(w.interim, fmt.Sprintf("%d %s", status, fields))
	return nil
}

func (w *upResponder) Head(int, []byte, int64, bool) error { return nil }
func (w *upResponder) Write(p []byte) (int, error)         { return len(p), nil }
func (w *upResponder) Flush() error                        { return nil }
func (w *upResponder) End([]byte) error                    { return nil }
func (w *upResponder) Tunnel() (net.Conn, error)           { return nil, errors.New("no tunnel in this test") }
func (w *upResponder) Proto() int                          { return 1 }

func (w *upResponder) Cut(bool) {
	w.mu.Lock()
	w.cuts++
	w.mu.Unlock()
}

func (w *upResponder) interims() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.interim...)
}

func (w *upResponder) cutCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cuts
}

// upExchange is an exchange for the request head given.
func upExchange(t *testing.T, ctx context.Context, head string) (*Exchange, *upResponder) {
	t.Helper()
	buf := []byte(head)
	h := new(h1.Head)
	n, err := h1.ParseRequest(buf, h, h1.Limits{})
	if err != nil || n != len(buf) {
		t.Fatalf("request head %q: %d, %v", head, n, err)
	}
	w := &upResponder{}
	// The pool tells the exchange's stall watch which connection it uses.
	return &Exchange{Conn: &Conn{}, Req: h, W: w, Ctx: ctx, stalls: &stallWatch{}}, w
}

func upHead(method string) string { return method + " / HTTP/1.1\r\nHost: a\r\n\r\n" }

// upResult is a response as the core would have seen it, read to its end.
type upResult struct {
	status   int
	fields   map[string]string // lower-case names, first value
	nfields  int
	length   int64
	keep     bool
	hasBody  bool
	body     string
	trailers string
	readErr  error
	clean    bool
}

// upDo sends one request and reads the response to its end as the core
// does: the head, headDone, the body to EOF, release (clean only when the
// body ended at io.EOF).
func upDo(p *h1Pool, x *Exchange, addr netip.AddrPort, out string, body io.Reader, length int64) (*upResult, error) {
	return upDoHook(p, x, addr, out, body, length, nil)
}

// upDoHook is upDo that calls afterHead, if set, once roundTrip returned.
func upDoHook(p *h1Pool, x *Exchange, addr netip.AddrPort, out string, body io.Reader, length int64, afterHead func()) (*upResult, error) {
	resp, err := p.roundTrip(x, addr, []byte(out), body, length)
	if afterHead != nil {
		afterHead()
	}
	if err != nil {
		return nil, err
	}
	r := &upResult{status: resp.Status, length: resp.Length, keep: resp.keep,
		fields: map[string]string{}, nfields: len(resp.Head.Fields)}
	for _, f := range resp.Head.Fields {
		name := strings.ToLower(resp.Head.String(f.Name))
		if _, ok := r.fields[name]; !ok {
			r.fields[name] = resp.Head.String(f.Value)
		}
	}
	resp.src.headDone()
	r.clean = true
	if resp.Body != nil {
		r.hasBody = true
		b, err := io.ReadAll(resp.Body)
		r.body, r.readErr, r.clean = string(b), err, err == nil
		if err == nil {
			r.trailers = string(resp.trailers())
		}
	}
	resp.src.release(r.clean)
	return r, nil
}

// upGet sends a bodiless request with method.
func upGet(t *testing.T, p *h1Pool, ctx context.Context, method string, addr netip.AddrPort) (*upResult, error) {
	t.Helper()
	x, _ := upExchange(t, ctx, upHead(method))
	return upDo(p, x, addr, upHead(method), nil, 0)
}

// mustGet is upGet that must succeed with a clean body.
func mustGet(t *testing.T, p *h1Pool, method string, addr netip.AddrPort) *upResult {
	t.Helper()
	r, err := upGet(t, p, context.Background(), method, addr)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	if r.readErr != nil {
		t.Fatalf("%s: body: %v", method, r.readErr)
	}
	return r
}

// upWaitArrived waits until bytes or the machine's close are waiting
// unread on c's socket, or until the pool closed c. A test calls it so
// that what a machine sent has reached the pool before the next request.
// It gives up after a second without failing: the pool may have consumed
// the bytes already, and the next request then shows what it did with
// them.
func upWaitArrived(t *testing.T, c net.Conn) {
	t.Helper()
	if !upstream.PeekSupported {
		t.Skip("no non-blocking peek on this platform")
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		quiet := true
		if err := rc.Control(func(fd uintptr) { quiet = upstream.SocketQuiet(fd) }); err != nil {
			return // closed by the pool
		}
		if !quiet {
			return
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// upWantConns checks that the machine accepted, and the pool dialed, n
// connections.
func upWantConns(t *testing.T, m *upMachine, d *upDialer, n int) {
	t.Helper()
	if got, dials := int(m.accepts.Load()), d.dials(); got != n || dials != n {
		t.Fatalf("%d connections (%d dials), want %d", got, dials, n)
	}
}

// upWantMalformed checks a failure is PU02 and is not retried elsewhere.
func upWantMalformed(t *testing.T, err error, x *Exchange) {
	t.Helper()
	if pe, ok := perr.As(err); !ok || pe.Code != perr.MalformedResponse {
		t.Fatalf("err = %v, want %s", err, perr.MalformedResponse)
	}
	if pe, ok := perr.As(classify(err, x)); !ok || pe.Code != perr.MalformedResponse || pe.Retryable {
		t.Fatalf("classified as %v, want %s and not retryable", pe, perr.MalformedResponse)
	}
}
