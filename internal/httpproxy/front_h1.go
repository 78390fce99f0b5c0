package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// The HTTP/1.1 front end: one goroutine per client connection reads a
// request head, hands the exchange to the core and writes what the core
// answers, then waits for the next request. Between requests it holds no
// buffer: the read buffer goes back to its pool, and on a plain-text
// connection the wait for the next request is a wait for readability of
// the socket (H1Options.WaitReadable), not a read into a buffer.

// H1Options are a client connection's settings for the HTTP/1.1 front end.
type H1Options struct {
	// HeaderTimeout bounds reading a request head from its first byte.
	HeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// connection (the first request's wait is the server's sniffing).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head.
	MaxHeaderBytes int
	// WaitReadable, if set, blocks until the client connection has bytes
	// to read or has ended, without reading them; it must honour the
	// connection's read deadline. Unset, the front end reads the next
	// request's first byte into a small array of its own.
	WaitReadable func() error
	// Park, if set, waits for the next request without a goroutine (or
	// any buffer the front end holds; a TLS layer keeps its own): it
	// returns at once, and wake runs on a new goroutine when the client
	// connection is readable (true), or its idle time ran out or Unpark
	// let it go (false). An error means it cannot park now (the caller
	// waits the usual way).
	Park   func(idle time.Duration, wake func(readable bool)) (uint64, error)
	Unpark func(token uint64)
	// OnEnd runs once when the connection is done (it closes it).
	OnEnd func()
}

// H1Front serves the HTTP/1.1 requests of one client connection.
type H1Front struct {
	h    *Handler
	conn net.Conn
	c    *Conn
	opts H1Options

	br *bufio.Reader // nil between requests
	bw *bufio.Writer // nil between requests
	// first holds a byte read ahead while waiting (see WaitReadable).
	first    [1]byte
	hasFirst bool
	lastPOST bool

	draining atomic.Bool
	idle     atomic.Bool
	// parked is the Park token while the connection is parked, else 0.
	parked atomic.Uint64

	// r is the state of the request in progress, nil between requests:
	// an idle connection holds none of it.
	r *h1Request
}

// h1Request is what serving one request takes, lent to a connection from
// a pool for as long as it has requests to serve.
type h1Request struct {
	head    h1.Head
	headBuf []byte
	w       h1Writer
	body    h1Body
	// x is the exchange in progress, and stalls its watch (with its
	// timer), reused by each request.
	x      Exchange
	stalls stallWatch
	// chunked decodes chunked request bodies.
	chunked h1.ChunkedReader
}

var h1Requests = sync.Pool{New: func() any { return new(h1Request) }}

// acquire takes request state for the connection.
func (f *H1Front) acquire() {
	if f.r == nil {
		f.r = h1Requests.Get().(*h1Request)
	}
}

// dropRequest gives the request state back: nothing of it may outlive
// this (the stall watch's tick is over when close returns).
func (f *H1Front) dropRequest() {
	r := f.r
	if r == nil {
		return
	}
	f.r = nil
	r.stalls.close()
	r.x = Exchange{}
	r.w = h1Writer{}
	r.body = h1Body{}
	r.chunked.Reset(nil, "", 0)
	if cap(r.headBuf) > 64<<10 {
		r.headBuf = nil
	}
	h1Requests.Put(r)
}

// NewH1Front makes the front end of one client connection.
func (h *Handler) NewH1Front(conn net.Conn, c *Conn, opts H1Options) *H1Front {
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 1 << 20
	}
	return &H1Front{h: h, conn: conn, c: c, opts: opts}
}

// readers and writers lend the client connections' buffers between
// requests.
var (
	clientReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}
	clientWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 8<<10) }}
)

// Drain asks the connection to close: at once when it waits between
// requests, else after the response in progress, which says so.
func (f *H1Front) Drain() {
	f.draining.Store(true)
	if f.idle.Load() {
		f.conn.SetReadDeadline(aLongTimeAgo)
	}
	if tok := f.parked.Load(); tok != 0 && tok != parking && f.opts.Unpark != nil {
		f.opts.Unpark(tok)
	}
}

// Serve serves requests until the connection ends or must close, then
// runs OnEnd. A connection that parks between requests (H1Options.Park)
// returns from Serve while it waits; a goroutine of the parker's goes on.
func (f *H1Front) Serve() { f.run() }

// run serves requests, the first of which has begun to arrive (the
// server sniffed it, or a parked connection woke for it).
func (f *H1Front) run() {
	for n := 0; ; n++ {
		if f.draining.Load() {
			break
		}
		if n > 0 {
			switch f.await() {
			case waitParked:
				return
			case waitEnded:
				f.end()
				return
			}
		}
		if !f.serveOne() {
			break
		}
	}
	f.end()
}

// end finishes the connection's part of the front end, once.
func (f *H1Front) end() {
	f.release()
	f.dropRequest()
	if f.opts.OnEnd != nil {
		f.opts.OnEnd()
	}
}

// wake goes on with a parked connection.
func (f *H1Front) wake(readable bool) {
	f.parked.Store(0)
	if !readable || f.draining.Load() {
		f.end()
		return
	}
	f.run()
}

// awaitOrPark waits for the next request of a connection that can be
// parked. A busy client's next request usually comes within moments: it
// is read at once into the read buffer the connection still has (no
// system call to look first); only a connection that stays quiet for
// parkAfter gives up its buffers and is parked, so busy ones pay for
// neither.
func (f *H1Front) awaitOrPark(idle time.Duration) waitOutcome {
	if f.bw != nil {
		f.bw.Reset(nil)
		clientWriters.Put(f.bw)
		f.bw = nil
	}
	if f.draining.Load() {
		f.release()
		return waitEnded
	}
	if f.br == nil {
		f.br = clientReaders.Get().(*bufio.Reader)
		f.br.Reset(firstReader{f})
	}
	f.conn.SetReadDeadline(time.Now().Add(parkAfter))
	f.idle.Store(true)
	_, err := f.br.Peek(1)
	f.idle.Store(false)
	switch {
	case f.draining.Load():
		f.release()
		return waitEnded
	case err == nil:
		return waitReady
	case iox.IsTimeout(err):
		f.release()
		return f.park(idle - parkAfter)
	}
	f.release()
	return waitEnded
}

// park parks the connection for what is left of its idle time.
func (f *H1Front) park(idle time.Duration) waitOutcome {
	f.idle.Store(false)
	f.dropRequest()
	// From here the connection may be another goroutine's at any moment:
	// nothing but atomics is touched after Park. The token is recorded
	// only if no wake-up has come yet (it clears it).
	f.parked.Store(parking)
	if tok, err := f.opts.Park(idle, f.wake); err == nil {
		f.parked.CompareAndSwap(parking, tok)
		if f.draining.Load() {
			f.opts.Unpark(tok)
		}
		return waitParked
	}
	f.parked.Store(0)
	// Not parked (bytes wait above the socket, or the parker is gone):
	// wait out the rest here.
	f.conn.SetReadDeadline(time.Now().Add(idle))
	f.idle.Store(true)
	defer f.idle.Store(false)
	if f.waitFirst() && !f.draining.Load() {
		return waitReady
	}
	return waitEnded
}

// waitFirst waits for the connection to be readable, without a buffer:
// by WaitReadable where the socket allows it, else by reading one byte
// ahead into first.
func (f *H1Front) waitFirst() bool {
	if f.opts.WaitReadable != nil {
		return f.opts.WaitReadable() == nil
	}
	if n, _ := f.conn.Read(f.first[:]); n == 1 {
		f.hasFirst = true
		return true
	}
	return false
}

// parkAfter is how long a quiet connection keeps its goroutine before it
// is parked. A client that sends its next request sooner (a load, a page's
// assets) never pays for parking; one that waits longer pays a few
// microseconds per request, and an idle one holds no stack. Shorter also
// bounds how many goroutines a burst of new connections holds at once.
const parkAfter = 100 * time.Millisecond

// parking marks a connection on its way to being parked.
const parking = ^uint64(0)

type waitOutcome uint8

const (
	waitReady waitOutcome = iota
	waitParked
	waitEnded
)

// await waits for the next request without a buffer held: parked when
// it can be, else in a wait for readability or a one-byte read.
func (f *H1Front) await() waitOutcome {
	if f.br != nil && f.br.Buffered() > 0 {
		return waitReady // pipelined
	}
	idle := f.opts.IdleTimeout
	if idle > parkAfter && f.opts.Park != nil && !f.hasFirst {
		return f.awaitOrPark(idle)
	}
	f.release()
	if f.draining.Load() {
		return waitEnded
	}
	if idle > 0 {
		f.conn.SetReadDeadline(time.Now().Add(idle))
	}
	f.idle.Store(true)
	defer f.idle.Store(false)
	if f.draining.Load() {
		return waitEnded
	}
	if f.waitFirst() && !f.draining.Load() {
		return waitReady
	}
	return waitEnded
}

// release gives the buffers back; a reader with unread bytes is kept.
func (f *H1Front) release() {
	if f.br != nil && f.br.Buffered() == 0 {
		f.br.Reset(nil)
		clientReaders.Put(f.br)
		f.br = nil
	}
	if f.bw != nil {
		f.bw.Reset(nil)
		clientWriters.Put(f.bw)
		f.bw = nil
	}
}

// firstReader feeds a byte read ahead before the connection's bytes.
type firstReader struct{ f *H1Front }

func (r firstReader) Read(p []byte) (int, error) {
	f := r.f
	if f.hasFirst && len(p) > 0 {
		p[0] = f.first[0]
		f.hasFirst = false
		return 1, nil
	}
	return f.conn.Read(p)
}

// serveOne reads one request and serves it; false ends the connection.
func (f *H1Front) serveOne() bool {
	f.acquire()
	if f.br == nil {
		f.br = clientReaders.Get().(*bufio.Reader)
		f.br.Reset(firstReader{f})
	}
	if d := f.opts.HeaderTimeout; d > 0 {
		f.conn.SetReadDeadline(time.Now().Add(d))
	}
	n, err := f.readHead()
	if err != nil {
		f.refuse(err)
		return false
	}
	// The head is copied out of the read buffer: the body is read
	// through that buffer while the core still needs the head.
	f.r.headBuf = append(f.r.headBuf[:0], f.r.head.Buf[:n]...)
	f.r.head.Buf = f.r.headBuf
	f.br.Discard(n)
	if err := f.absoluteForm(); err != nil {
		f.refuse(err)
		return false
	}
	f.conn.SetReadDeadline(time.Time{})
	if f.bw == nil {
		f.bw = clientWriters.Get().(*bufio.Writer)
		f.bw.Reset(f.conn)
	}
	r := &f.r.head
	f.lastPOST = string(r.Bytes(r.Method)) == "POST"
	closing := r.Close || f.draining.Load()
	f.r.w = h1Writer{f: f, minor: r.Minor, head: string(r.Bytes(r.Method)) == "HEAD", closing: closing}
	x := &f.r.x
	*x = Exchange{Conn: f.c, Req: r, W: &f.r.w, Ctx: context.Background(), stalls: &f.r.stalls}
	f.r.body = h1Body{}
	switch h1.RequestBody(r) {
	case h1.BodyLength:
		f.r.body = h1Body{f: f, src: f.br, left: r.ContentLength, expect: r.Expect100}
		x.Body = Body{R: &f.r.body, Length: r.ContentLength}
	case h1.BodyChunked:
		f.r.chunked.Reset(f.br, perr.MalformedRequest, f.opts.MaxHeaderBytes)
		f.r.body = h1Body{f: f, src: &f.r.chunked, left: -1, expect: r.Expect100}
		x.Body = Body{R: &f.r.body, Length: -1}
	}
	var stop func() bool
	if f.c.AbortOnClose && x.Body.R == nil && !r.Upgrade {
		stop = f.watchClose(x)
	}
	f.h.Serve(x)
	if f.r.w.err == nil && !f.r.w.tunneled {
		f.r.w.fail(f.bw.Flush())
	}
	if stop != nil && !stop() {
		return false
	}
	if x.Aborted() || f.r.w.closing || f.r.w.tunneled || x.Status() == 101 {
		return false
	}
	if err := f.r.w.err; err != nil {
		return false
	}
	// The rest of a body the machine did not read goes unread by anyone:
	// skip a little of it so the connection lives on, or close.
	if x.Body.R != nil && !f.r.body.finish() {
		return false
	}
	return true
}

// readHead buffers and parses a request head; n is its length.
func (f *H1Front) readHead() (int, error) {
	lim := h1.Limits{MaxHead: f.opts.MaxHeaderBytes}
	if f.lastPOST {
		// RFC 9112 section 2.2: one CRLF after a POST body is tolerated,
		// as old clients sent it.
		if b, err := f.br.Peek(2); err == nil && h1.SkipEmptyLine(b) == 2 {
			f.br.Discard(2)
		}
		f.lastPOST = false
	}
	for {
		b, _ := f.br.Peek(f.br.Buffered())
		if len(b) > 0 {
			n, err := h1.ParseRequest(b, &f.r.head, lim)
			if err != h1.ErrNeedMore {
				return n, err
			}
		}
		if len(b) >= f.br.Size() {
			if f.br.Size() >= f.opts.MaxHeaderBytes || f.br.Size() >= 1<<20 {
				return 0, &h1.Error{Code: perr.RequestHeadersTooLarge, Status: 431, Reason: "request head too large"}
			}
			// Longer than the buffer: move to a larger reader.
			big := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(b)), firstReader{f}), min(f.opts.MaxHeaderBytes+1, 2*f.br.Size()))
			f.br.Discard(len(b))
			f.br.Reset(nil)
			clientReaders.Put(f.br)
			f.br = big
			continue
		}
		if _, err := f.br.Peek(len(b) + 1); err != nil {
			if len(b) == 0 {
				return 0, errQuietEnd{err}
			}
			return 0, err
		}
	}
}

// errQuietEnd is a connection that ended (or timed out) between requests:
// closed without an answer.
type errQuietEnd struct{ err error }

func (e errQuietEnd) Error() string { return "client connection ended: " + e.err.Error() }

// refuse answers a request whose head could not be read, then the
// connection closes.
func (f *H1Front) refuse(err error) {
	var quiet errQuietEnd
	if errors.As(err, &quiet) {
		return
	}
	var he *h1.Error
	code := perr.MalformedRequest
	if errors.As(err, &he) {
		code = he.Code
	} else {
		if iox.IsTimeout(err) {
			// The head did not arrive in time: net/http's servers close
			// without an answer too, and so does nginx.
			return
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return
		}
	}
	if f.c.Refused != nil {
		f.c.Refused(code, err.Error())
	}
	if b := perr.RawResponse(code); b != nil {
		f.conn.SetWriteDeadline(time.Now().Add(time.Second))
		f.conn.Write(b)
	}
}

// watchClose cancels the exchange when the client ends its stream while
// the request runs (abort_on_close). A byte that arrives instead is kept
// for the next request. stop ends the watch; false means the connection
// ended.
func (f *H1Front) watchClose(x *Exchange) (stop func() bool) {
	ctx, cancel := context.WithCancel(x.Ctx)
	x.Ctx = ctx
	done := make(chan bool, 1)
	var b [1]byte
	got := 0
	go func() {
		n, err := f.br.Read(b[:])
		got = n
		if n == 0 && err != nil {
			if !iox.IsTimeout(err) {
				cancel()
				done <- false
				return
			}
		}
		done <- true
	}()
	return func() bool {
		f.conn.SetReadDeadline(aLongTimeAgo)
		ok := <-done
		f.conn.SetReadDeadline(time.Time{})
		cancel()
		if got == 1 {
			// The watch read a byte of the next request: put it back.
			f.br.UnreadByte()
		}
		return ok
	}
}

// absoluteForm reads a target in absolute form ("http://host/path"): its
// authority is the request's host, whatever Host says (RFC 9112 section
// 3.2.2), and the machine gets the path. Both are spans of the head's own
// copy; a missing path becomes "/", added after the head's bytes.
func (f *H1Front) absoluteForm() error {
	h := &f.r.head
	t := h.Bytes(h.Target)
	rest, ok := cutScheme(t)
	if !ok {
		return nil
	}
	end := 0
	for end < len(rest) && rest[end] != '/' && rest[end] != '?' {
		end++
	}
	authority := rest[:end]
	if len(authority) == 0 || !h1.ValidHost(authority) {
		return &h1.Error{Code: perr.MalformedRequest, Status: 400, Reason: "absolute-form target without a valid authority"}
	}
	off := h.Target.Off + uint32(len(t)-len(rest))
	h.Host, h.HasHost = h1.Span{Off: off, Len: uint32(end)}, true
	path := rest[end:]
	if len(path) > 0 && path[0] == '/' {
		h.Target = h1.Span{Off: off + uint32(end), Len: uint32(len(path))}
		return nil
	}
	// "http://host" or "http://host?q": the path is "/".
	start := len(f.r.headBuf)
	f.r.headBuf = append(append(f.r.headBuf, '/'), path...)
	h.Buf = f.r.headBuf
	h.Target = h1.Span{Off: uint32(start), Len: uint32(1 + len(path))}
	return nil
}

// cutScheme returns what follows "http://" or "https://" (any case).
func cutScheme(t []byte) ([]byte, bool) {
	for _, s := range []string{"http://", "https://"} {
		if len(t) >= len(s) && h1.EqualFold(t[:len(s)], s) {
			return t[len(s):], true
		}
	}
	return nil, false
}
