package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// h1Client sends requests that carry no body and ask for no upgrade (most
// GETs) to machines over pooled HTTP/1.1 connections, on the calling
// goroutine. http.Transport keeps a reader and a writer goroutine per
// connection and hands every request and response between them over
// channels; for a request with nothing to stream alongside its response
// that costs more CPU than the rest of the exchange. Requests with a body
// or an Upgrade still go through http.Transport, which sends a body while
// it reads the answer.
//
// Without a reader goroutine the client does not notice that a machine
// closed an idle connection until it next uses it. Every request it takes
// is idempotent and bodiless, so a reused connection that fails before any
// response byte is retried on the next one, as http.Transport retries the
// same failure.
type h1Client struct {
	dial func(ctx context.Context, addr string) (net.Conn, error)
	// maxIdle bounds the idle connections kept per machine address.
	maxIdle int
	// idleTimeout closes a connection that has been idle that long.
	idleTimeout time.Duration
	// headerTimeout bounds the wait for a response's header (0: none).
	headerTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*h1Conn // by address, most recently used last
	closed bool
}

// maxResponseHeader bounds a machine's response header, for both the
// bodiless path and http.Transport, so a broken app cannot make the proxy
// buffer without end.
const maxResponseHeader = 1 << 20

// max1xx bounds the informational responses read before the final one.
const max1xx = 10

const (
	h1ReadBuffer  = 8 << 10
	h1WriteBuffer = 4 << 10
)

var (
	errH1Closed        = errors.New("upstream connection pool closed")
	errHeaderTooLarge  = fmt.Errorf("machine's response header exceeds %d bytes", maxResponseHeader)
	errUnexpectedUpgr  = errors.New("machine switched protocols for a request that asked for no upgrade")
	errTooMany1xx      = errors.New("too many informational (1xx) responses from the machine")
	aLongTimeAgo       = time.Unix(1, 0)
	errReusedBeforeAny = errors.New("reused connection closed before the response")
)

// fastPath reports whether the bodiless client can carry req.
func fastPath(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody || req.ContentLength != 0 || len(req.TransferEncoding) != 0 {
		return false
	}
	if req.Header["Upgrade"] != nil || req.Close {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete:
		return true
	}
	return false
}

// h1Conn is one pooled connection to a machine.
type h1Conn struct {
	client *h1Client
	addr   string
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	// probe looks for bytes the machine sent while the connection idled.
	probe *upstream.IdleProbe
	// limit is what may still be read: the response header's budget while
	// it is read, unbounded for the body.
	limit int64
	// reused is true once the connection has carried a response.
	reused bool
	// idle is true while the connection is in the pool (under client.mu).
	idle      bool
	idleTimer *time.Timer

	// dl serialises read-deadline changes between the response path and a
	// cancelled request's context, so a cancellation is never undone.
	dl        sync.Mutex
	cancelled atomic.Bool
}

// Read feeds the bufio.Reader, counting the header budget.
func (pc *h1Conn) Read(p []byte) (int, error) {
	if pc.limit <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > pc.limit {
		p = p[:pc.limit]
	}
	n, err := pc.conn.Read(p)
	pc.limit -= int64(n)
	return n, err
}

func (c *h1Client) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// Each stale connection is dropped, so this ends after at most maxIdle
	// reused connections and one new one.
	for {
		pc, err := c.get(ctx, req.URL.Host)
		if err != nil {
			return nil, err
		}
		resp, err := pc.roundTrip(ctx, req)
		if err == nil {
			return resp, nil
		}
		pc.close()
		if !errors.Is(err, errReusedBeforeAny) || ctx.Err() != nil {
			return nil, err
		}
	}
}

// get takes the most recently used idle connection to addr, or dials one.
func (c *h1Client) get(ctx context.Context, addr string) (*h1Conn, error) {
	for {
		pc, err := c.takeIdle(addr)
		if err != nil {
			return nil, err
		}
		if pc == nil {
			break
		}
		// Whatever a machine sent while the connection sat idle answers
		// no one's request: retire the connection rather than hand those
		// bytes to this client.
		if pc.probe.Quiet() {
			return pc, nil
		}
		pc.close()
	}
	conn, err := c.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	pc := &h1Conn{client: c, addr: addr, conn: conn, probe: upstream.NewIdleProbe(conn)}
	pc.br = bufio.NewReaderSize(pc, h1ReadBuffer)
	pc.bw = bufio.NewWriterSize(conn, h1WriteBuffer)
	pc.idleTimer = time.AfterFunc(time.Hour, pc.expire)
	pc.idleTimer.Stop()
	return pc, nil
}

// takeIdle takes the most recently used idle connection to addr, or nil.
func (c *h1Client) takeIdle(addr string) (*h1Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errH1Closed
	}
	list := c.idle[addr]
	if len(list) == 0 {
		return nil, nil
	}
	pc := list[len(list)-1]
	list[len(list)-1] = nil
	c.idle[addr] = list[:len(list)-1]
	pc.idle = false
	pc.idleTimer.Stop()
	return pc, nil
}

// put returns a connection whose response was read to its end.
func (c *h1Client) put(pc *h1Conn) {
	c.mu.Lock()
	if c.closed || len(c.idle[pc.addr]) >= c.maxIdle {
		c.mu.Unlock()
		pc.close()
		return
	}
	if c.idle == nil {
		c.idle = map[string][]*h1Conn{}
	}
	pc.idle = true
	c.idle[pc.addr] = append(c.idle[pc.addr], pc)
	c.mu.Unlock()
	pc.idleTimer.Reset(c.idleTimeout)
}

// expire closes a connection idle for idleTimeout, unless it was taken.
func (pc *h1Conn) expire() {
	c := pc.client
	c.mu.Lock()
	if !pc.idle {
		c.mu.Unlock()
		return
	}
	pc.idle = false
	c.remove(pc)
	c.mu.Unlock()
	pc.close()
}

// remove drops pc from the idle list; c.mu is held.
func (c *h1Client) remove(pc *h1Conn) {
	list := c.idle[pc.addr]
	for i, x := range list {
		if x == pc {
			copy(list[i:], list[i+1:])
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(c.idle, pc.addr)
		return
	}
	c.idle[pc.addr] = list
}

// CloseIdleConnections closes every idle connection; later requests dial
// again.
func (c *h1Client) CloseIdleConnections() {
	c.mu.Lock()
	var all []*h1Conn
	for _, list := range c.idle {
		for _, pc := range list {
			pc.idle = false
			all = append(all, pc)
		}
	}
	c.idle = nil
	c.mu.Unlock()
	for _, pc := range all {
		pc.close()
	}
}

// Close closes the idle connections and stops pooling: connections that
// finish their response afterwards are closed.
func (c *h1Client) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.CloseIdleConnections()
}

func (pc *h1Conn) close() {
	pc.idleTimer.Stop()
	pc.conn.Close()
}

// roundTrip writes req and reads the response header.
func (pc *h1Conn) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	pc.cancelled.Store(false)
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, pc.cancel)
	}
	resp, err := pc.readResponse(ctx, req)
	if err != nil {
		if stop != nil {
			stop()
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	keep := !resp.Close && resp.ProtoAtLeast(1, 1)
	b := &h1Body{pc: pc, rc: resp.Body, stop: stop, keep: keep}
	if resp.Body == http.NoBody {
		// Nothing follows the header: the connection is free now.
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

func (pc *h1Conn) readResponse(ctx context.Context, req *http.Request) (*http.Response, error) {
	if err := req.Write(pc.bw); err != nil {
		return nil, pc.beforeResponse(err)
	}
	if err := pc.bw.Flush(); err != nil {
		return nil, pc.beforeResponse(err)
	}
	if t := pc.client.headerTimeout; t > 0 {
		pc.setReadDeadline(time.Now().Add(t))
	}
	pc.limit = maxResponseHeader
	if _, err := pc.br.Peek(1); err != nil {
		return nil, pc.beforeResponse(err)
	}
	var resp *http.Response
	for n1xx := 0; ; n1xx++ {
		r, err := http.ReadResponse(pc.br, req)
		if err != nil {
			return nil, malformed(err)
		}
		if r.StatusCode == http.StatusSwitchingProtocols {
			return nil, perr.New(perr.MalformedResponse, errUnexpectedUpgr)
		}
		if r.StatusCode >= 200 || r.StatusCode < 100 {
			resp = r
			break
		}
		if n1xx >= max1xx {
			return nil, perr.New(perr.MalformedResponse, errTooMany1xx)
		}
		// An informational response (103 Early Hints, 100 Continue): the
		// reverse proxy passes it on through its client trace.
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(r.StatusCode, textproto.MIMEHeader(r.Header)); err != nil {
				return nil, err
			}
		}
	}
	pc.limit = 1<<63 - 1
	if pc.client.headerTimeout > 0 {
		pc.setReadDeadline(time.Time{})
	}
	pc.reused = true
	return resp, nil
}

// malformed codes a failure to read a response header: the connection
// failing is left to the caller's rules, anything else is the app sending
// what is not HTTP (PU02), which another machine of the same app would
// most likely send too, so it is not retried.
func malformed(err error) error {
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne) {
		return err
	}
	return perr.New(perr.MalformedResponse, err)
}

// beforeResponse marks a failure on a reused connection before any
// response byte, which the caller may retry on another connection.
func (pc *h1Conn) beforeResponse(err error) error {
	var ne net.Error
	if !pc.reused || errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return fmt.Errorf("%w: %w", errReusedBeforeAny, err)
}

// setReadDeadline changes the read deadline unless the request was
// cancelled, whose deadline in the past must stay.
func (pc *h1Conn) setReadDeadline(t time.Time) {
	pc.dl.Lock()
	if !pc.cancelled.Load() {
		pc.conn.SetReadDeadline(t)
	}
	pc.dl.Unlock()
}

// cancel runs when the request's context ends: the blocked read returns.
func (pc *h1Conn) cancel() {
	pc.dl.Lock()
	pc.cancelled.Store(true)
	pc.conn.SetReadDeadline(aLongTimeAgo)
	pc.dl.Unlock()
}

// h1Body is a response body; read to its end it gives the connection back
// to the pool, closed early it closes the connection.
type h1Body struct {
	pc   *h1Conn
	rc   io.ReadCloser
	stop func() bool
	keep bool
	done atomic.Bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
		if b.pc.cancelled.Load() {
			err = fmt.Errorf("request cancelled while reading the response: %w", err)
		}
	}
	return n, err
}

func (b *h1Body) Close() error {
	b.finish(false)
	return nil
}

// finish ends the response once: the connection is pooled when the body
// was read to its end, the machine keeps the connection open and the
// request was not cancelled; otherwise it is closed.
func (b *h1Body) finish(eof bool) {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	live := true
	if b.stop != nil {
		live = b.stop()
	}
	// Bytes already read past the response's end are not part of it: a
	// body after a HEAD, 204 or 304, more body than Content-Length said,
	// or a second response. The next client must not get them.
	if eof && b.keep && live && b.pc.br.Buffered() == 0 {
		b.pc.client.put(b.pc)
		return
	}
	b.pc.close()
}
