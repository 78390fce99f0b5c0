package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// h1Pool sends requests to machines over pooled HTTP/1.1 connections, on
// the request's own goroutine: no goroutine per machine connection, and
// none per request but one that streams a request body while the answer
// is read. An idle connection holds no read buffer; it takes one from the
// pool for each response.
//
// A connection goes back to the pool only when its response ended exactly
// where its framing said, the machine did not ask to close, and the body
// of the request was sent whole. Without a reader goroutine the pool does
// not see a machine close an idle connection until it next uses it: a
// non-blocking peek before reuse retires a connection that has bytes
// waiting or is closed, and a reused connection that fails before any
// response byte is retried on another (or a new) connection when the
// request may be sent twice.
type h1Pool struct {
	dial          func(ctx context.Context, x *Exchange, addr netip.AddrPort) (net.Conn, error)
	maxIdle       int
	idleTimeout   time.Duration
	headerTimeout time.Duration
	bufs          *sync.Pool // *bufio.Reader, h1ReadBuffer bytes

	mu     sync.Mutex
	idle   map[netip.AddrPort][]*upConn // most recently used last
	closed bool
}

// maxResponseHeader bounds a machine's response head, so a broken app
// cannot make the proxy buffer without end.
const maxResponseHeader = 1 << 20

// max1xx bounds the informational responses read before the final one.
const max1xx = 10

const h1ReadBuffer = 16 << 10

// noStop stands for context.AfterFunc's stop when nothing was registered.
func noStop() bool { return true }

// senderGrace is how long a finished response waits for its request
// body's writer to return before both ends are cut.
const senderGrace = 100 * time.Millisecond

var (
	errPoolClosed     = errors.New("upstream connection pool closed")
	errUnexpectedUpgr = errors.New("machine switched protocols for a request that asked for no upgrade")
	errTooMany1xx     = errors.New("too many informational (1xx) responses from the machine")
	errReusedClosed   = errors.New("reused connection closed before the response")
	aLongTimeAgo      = time.Unix(1, 0)
)

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, h1ReadBuffer) }}

func newH1Pool(dial func(context.Context, *Exchange, netip.AddrPort) (net.Conn, error), o PoolOptions) *h1Pool {
	return &h1Pool{dial: dial, maxIdle: o.MaxIdlePerMachine, idleTimeout: o.IdleConnTimeout,
		headerTimeout: o.ResponseHeaderTimeout, bufs: &readerPool}
}

// upConn is one machine connection.
type upConn struct {
	pool  *h1Pool
	addr  netip.AddrPort
	conn  net.Conn
	br    *bufio.Reader // nil while idle
	probe *upstream.IdleProbe
	// reused: the connection has carried a response before.
	reused    bool
	idle      bool // in the pool, under pool.mu
	idleTimer *time.Timer
	head      h1.Head
	chunked   h1.ChunkedReader
	// big holds a response head longer than the read buffer.
	big []byte
	// The exchange in progress: its response, the head's length, the
	// body's sender and the cancellation hook.
	resp    upResponse
	lb      lengthBody
	headLen int
	sent    *bodySender
	stop    func() bool
	x       *Exchange

	// dl serialises read-deadline changes with a cancellation, so that a
	// cancellation's deadline in the past is never undone.
	dl        sync.Mutex
	cancelled atomic.Bool
	// owner is the exchange using the connection (see cancelFor).
	owner atomic.Pointer[Exchange]
}

func (p *h1Pool) roundTrip(x *Exchange, addr netip.AddrPort, out []byte, body io.Reader, length int64) (*upResponse, error) {
	// Each stale connection is dropped, so this ends after at most maxIdle
	// reused connections and one new one.
	for {
		pc, err := p.get(x, addr)
		if err != nil {
			return nil, err
		}
		resp, err := pc.roundTrip(x, out, body, length)
		if err == nil {
			return resp, nil
		}
		pc.close()
		if !errors.Is(err, errReusedClosed) || x.ended() || body != nil {
			return nil, err
		}
	}
}

// get takes the most recently used idle connection to addr, or dials one.
func (p *h1Pool) get(x *Exchange, addr netip.AddrPort) (*upConn, error) {
	for {
		pc, err := p.takeIdle(addr)
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
	conn, err := p.dial(x.Ctx, x, addr)
	if err != nil {
		return nil, err
	}
	pc := &upConn{pool: p, addr: addr, conn: conn, probe: upstream.NewIdleProbe(conn)}
	pc.idleTimer = time.AfterFunc(time.Hour, pc.expire)
	pc.idleTimer.Stop()
	return pc, nil
}

func (p *h1Pool) takeIdle(addr netip.AddrPort) (*upConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errPoolClosed
	}
	list := p.idle[addr]
	if len(list) == 0 {
		return nil, nil
	}
	pc := list[len(list)-1]
	list[len(list)-1] = nil
	p.idle[addr] = list[:len(list)-1]
	pc.idle = false
	pc.idleTimer.Stop()
	return pc, nil
}

// put pools a connection whose exchange ended cleanly; its read buffer
// goes back to the buffer pool.
func (p *h1Pool) put(pc *upConn) {
	if pc.br != nil {
		pc.br.Reset(nil)
		p.bufs.Put(pc.br)
		pc.br = nil
	}
	p.mu.Lock()
	if p.closed || len(p.idle[pc.addr]) >= p.maxIdle {
		p.mu.Unlock()
		pc.close()
		return
	}
	if p.idle == nil {
		p.idle = map[netip.AddrPort][]*upConn{}
	}
	pc.idle = true
	p.idle[pc.addr] = append(p.idle[pc.addr], pc)
	p.mu.Unlock()
	pc.idleTimer.Reset(p.idleTimeout)
}

// expire closes a connection idle for idleTimeout, unless it was taken.
func (pc *upConn) expire() {
	p := pc.pool
	p.mu.Lock()
	if !pc.idle {
		p.mu.Unlock()
		return
	}
	pc.idle = false
	list := p.idle[pc.addr]
	for i, x := range list {
		if x == pc {
			copy(list[i:], list[i+1:])
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(p.idle, pc.addr)
	} else {
		p.idle[pc.addr] = list
	}
	p.mu.Unlock()
	pc.close()
}

// closeIdle closes every idle connection.
func (p *h1Pool) closeIdle() {
	p.mu.Lock()
	var all []*upConn
	for _, list := range p.idle {
		for _, pc := range list {
			pc.idle = false
			all = append(all, pc)
		}
	}
	p.idle = nil
	p.mu.Unlock()
	for _, pc := range all {
		pc.close()
	}
}

// shut closes the idle connections and stops pooling.
func (p *h1Pool) shut() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.closeIdle()
}

func (pc *upConn) close() {
	pc.idleTimer.Stop()
	pc.conn.Close()
	if pc.br != nil {
		pc.br.Reset(nil)
		pc.pool.bufs.Put(pc.br)
		pc.br = nil
	}
}

// roundTrip sends the head and body and reads the final response's head.
func (pc *upConn) roundTrip(x *Exchange, out []byte, body io.Reader, length int64) (*upResponse, error) {
	pc.cancelled.Store(false)
	x.stalls.attempt.Store(pc)
	pc.owner.Store(x)
	stop := noStop
	if x.Ctx.Done() != nil {
		stop = context.AfterFunc(x.Ctx, pc.cancel)
	}
	var sent *bodySender
	if body == nil {
		if _, err := pc.conn.Write(out); err != nil {
			stop()
			return nil, pc.beforeResponse(err)
		}
	} else {
		// The body streams while the answer is read: a machine may answer
		// (and stop reading) before the body ends.
		sent = startBody(pc.conn, out, body, length)
	}
	resp, err := pc.readHead(x)
	if err != nil {
		stop()
		if sent != nil {
			pc.conn.Close()
			if berr := sent.wait(); berr != nil && x.body != nil && x.body.failed.Load() {
				err = berr
			}
		}
		x.stalls.attempt.Store(nil)
		if code, cut := x.cutCode(); cut {
			return nil, perr.New(code, err)
		}
		if ctxErr := x.Ctx.Err(); ctxErr != nil {
			return nil, context.Cause(x.Ctx)
		}
		return nil, err
	}
	pc.sent, pc.stop, pc.x = sent, stop, x
	return resp, nil
}

// readHead reads response heads up to the final one, passing 1xx ones on.
func (pc *upConn) readHead(x *Exchange) (*upResponse, error) {
	if pc.br == nil {
		pc.br = pc.pool.bufs.Get().(*bufio.Reader)
		pc.br.Reset(pc.conn)
	}
	if t := pc.pool.headerTimeout; t > 0 {
		pc.setReadDeadline(time.Now().Add(t))
	}
	method := x.Req.Bytes(x.Req.Method)
	for n1xx := 0; ; n1xx++ {
		n, err := pc.parseHead(method)
		if err != nil {
			return nil, err
		}
		h := &pc.head
		if h.Status >= 200 || h.Status == 101 {
			if pc.pool.headerTimeout > 0 {
				pc.setReadDeadline(time.Time{})
			}
			pc.reused = true
			return pc.response(x, n)
		}
		if n1xx >= max1xx {
			return nil, perr.New(perr.MalformedResponse, errTooMany1xx)
		}
		// 100 Continue answers an Expect the proxy took off (it answers
		// the client itself); others (103 Early Hints) go to the client.
		if h.Status != 100 {
			x.W.Interim(h.Status, interimFields(h))
		}
		pc.discard(n)
	}
}

// parseHead reads until a whole response head is buffered and parses it;
// n is the head's length.
func (pc *upConn) parseHead(method []byte) (int, error) {
	lim := h1.Limits{MaxHead: maxResponseHeader}
	for {
		if pc.big == nil {
			b, _ := pc.br.Peek(pc.br.Buffered())
			if len(b) > 0 {
				n, err := h1.ParseResponse(b, &pc.head, method, lim)
				if err != h1.ErrNeedMore {
					return n, pc.headErr(err)
				}
			}
			if len(b) < pc.br.Size() {
				if _, err := pc.br.Peek(len(b) + 1); err != nil {
					return 0, pc.readErr(err, len(b))
				}
				continue
			}
			// Longer than the read buffer: collect it apart.
			pc.big = append(make([]byte, 0, 2*len(b)), b...)
			pc.br.Discard(len(b))
		}
		n, err := h1.ParseResponse(pc.big, &pc.head, method, lim)
		if err != h1.ErrNeedMore {
			return n, pc.headErr(err)
		}
		if len(pc.big) >= maxResponseHeader {
			return 0, perr.New(perr.MalformedResponse, fmt.Errorf("machine's response head exceeds %d bytes", maxResponseHeader))
		}
		if len(pc.big) == cap(pc.big) {
			pc.big = append(pc.big, 0)[:len(pc.big)]
		}
		m, err := pc.br.Read(pc.big[len(pc.big):min(cap(pc.big), maxResponseHeader)])
		pc.big = pc.big[:len(pc.big)+m]
		if err != nil && m == 0 {
			return 0, pc.readErr(err, len(pc.big))
		}
	}
}

func (pc *upConn) headErr(err error) error {
	if err == nil {
		return nil
	}
	var he *h1.Error
	if errors.As(err, &he) {
		return perr.New(perr.MalformedResponse, err)
	}
	return err
}

// readErr is a read failing while a head is awaited: before any byte on a
// reused connection it may be retried elsewhere (see beforeResponse).
func (pc *upConn) readErr(err error, got int) error {
	if got == 0 {
		return pc.beforeResponse(err)
	}
	return err
}

// discard drops a head (or what is left of a big one) that was parsed.
func (pc *upConn) discard(n int) {
	if pc.big != nil {
		rest := pc.big[n:]
		if len(rest) > 0 {
			// Bytes past a big head: keep them in front of the reader.
			pc.big = append(pc.big[:0], rest...)
			return
		}
		pc.big = nil
		return
	}
	pc.br.Discard(n)
}

// response makes the final head into an upResponse; the head's bytes stay
// where they are until the body is read.
func (pc *upConn) response(x *Exchange, n int) (*upResponse, error) {
	h := &pc.head
	pc.resp = upResponse{Status: h.Status, Head: h, Length: -1, keep: !h.Close && h.Minor == 1, src: pc}
	r := &pc.resp
	pc.headLen = n
	var src io.Reader = pc.br
	if pc.big != nil {
		// The head was longer than the buffer: the bytes after it are in
		// big. Rare; such a connection is not reused.
		src = io.MultiReader(&bigRest{pc: pc, off: n}, pc.br)
		r.keep = false
	}
	if h.Status == 101 {
		if !x.Req.Upgrade {
			return nil, perr.New(perr.MalformedResponse, errUnexpectedUpgr)
		}
		r.tunnel = &tunnelSide{Conn: pc.conn, r: src}
		r.keep = false
		return r, nil
	}
	switch h1.ResponseBody(h, x.Req.Bytes(x.Req.Method)) {
	case h1.BodyNone:
		r.Length = 0
	case h1.BodyLength:
		r.Length = h.ContentLength
		pc.lb = lengthBody{r: src, left: h.ContentLength}
		r.Body = &pc.lb
	case h1.BodyChunked:
		pc.chunked.Reset(asBufio(src, pc.br), perr.MalformedResponse, maxResponseHeader)
		r.Body = &pc.chunked
		r.chunked = &pc.chunked
	default:
		r.Body = src
		r.keep = false
	}
	return r, nil
}

// headDone is the core done with the head's bytes: the body may now be
// read over them.
func (pc *upConn) headDone() {
	if pc.big == nil && pc.headLen > 0 {
		pc.br.Discard(pc.headLen)
	}
	pc.headLen = 0
}

// release ends the exchange (see finish).
func (pc *upConn) release(clean bool) {
	sent, stop, x := pc.sent, pc.stop, pc.x
	pc.sent, pc.stop, pc.x = nil, nil, nil
	if x != nil {
		x.stalls.attempt.Store(nil)
	}
	pc.owner.Store(nil)
	pc.finish(clean, sent, stop, x)
}

// asBufio returns r as a *bufio.Reader, br itself when r is it.
func asBufio(r io.Reader, br *bufio.Reader) *bufio.Reader {
	if r == io.Reader(br) {
		return br
	}
	return bufio.NewReader(r)
}

// bigRest reads the bytes that followed a big head.
type bigRest struct {
	pc  *upConn
	off int
}

func (b *bigRest) Read(p []byte) (int, error) {
	if b.pc.big == nil || b.off >= len(b.pc.big) {
		b.pc.big = nil
		return 0, io.EOF
	}
	n := copy(p, b.pc.big[b.off:])
	b.off += n
	return n, nil
}

// beforeResponse marks a failure on a reused connection before any
// response byte, which the caller may retry on another connection.
func (pc *upConn) beforeResponse(err error) error {
	if !pc.reused || iox.IsTimeout(err) {
		return err
	}
	return fmt.Errorf("%w: %w", errReusedClosed, err)
}

func (pc *upConn) setReadDeadline(t time.Time) {
	pc.dl.Lock()
	if !pc.cancelled.Load() {
		pc.conn.SetReadDeadline(t)
	}
	pc.dl.Unlock()
}

// cancelFor cancels the exchange x on the connection, if it is still
// x's: a cut that races with the end of its request must not reach the
// next request on a pooled connection.
func (pc *upConn) cancelFor(x *Exchange) {
	pc.dl.Lock()
	defer pc.dl.Unlock()
	if pc.owner.Load() == x {
		pc.cancelLocked()
	}
}

// cancel runs when the request's context ends: blocked reads return.
func (pc *upConn) cancel() {
	pc.dl.Lock()
	pc.cancelLocked()
	pc.dl.Unlock()
}

func (pc *upConn) cancelLocked() {
	pc.cancelled.Store(true)
	pc.conn.SetReadDeadline(aLongTimeAgo)
	pc.conn.SetWriteDeadline(aLongTimeAgo)
}

// finish ends an exchange on the connection: pooled when the response
// was read exactly to its end, the request's body was sent whole, the
// machine keeps the connection and nothing was cancelled; else closed.
func (pc *upConn) finish(clean bool, sent *bodySender, stop func() bool, x *Exchange) {
	live := stop()
	if sent != nil && !sent.done() {
		// Usually the writer is a moment from returning: the machine
		// answered after reading the body. If it is still blocked after
		// a grace period, the machine answered before taking the whole
		// body (the rest would be read as its next request) or the client
		// is not sending it (it may be waiting for a 100 Continue that
		// never came): both ends are made to return.
		cutDone := make(chan struct{})
		t := time.AfterFunc(senderGrace, func() {
			defer close(cutDone)
			pc.conn.Close()
			if x != nil {
				x.W.Cut(false)
			}
		})
		sent.wait()
		if !t.Stop() {
			// The cut ran, or is running: it must be over before the
			// exchange ends, or it would reach the next one.
			<-cutDone
			clean = false
		}
	}
	if sent != nil && !sent.done() {
		clean = false
	}
	if clean && live && pc.resp.keep && !pc.cancelled.Load() && pc.br != nil && pc.br.Buffered() == 0 && pc.big == nil {
		pc.pool.put(pc)
		return
	}
	pc.close()
}

// lengthBody reads a Content-Length body, never past its end.
type lengthBody struct {
	r    io.Reader
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left == 0 && (err == nil || err == io.EOF) {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// tunnelSide is the machine's side of an upgraded connection: bytes read
// ahead after the 101 come first.
type tunnelSide struct {
	net.Conn
	r io.Reader
}

func (t *tunnelSide) Read(p []byte) (int, error) { return t.r.Read(p) }

func (t *tunnelSide) CloseWrite() error {
	if cw, ok := t.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
