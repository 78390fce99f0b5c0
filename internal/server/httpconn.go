package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/h2watch"
	"github.com/edgeproxy/edgeproxy/internal/httpproxy"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/route"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
	"github.com/edgeproxy/edgeproxy/internal/wsframe"
)

// httpConn is a client connection served by HTTP: by the proxy's own
// HTTP/1.1 front end, or handed to net/http for HTTP/2. It carries the
// connection's facts to the core and finishes the connection (lingering
// close, permits, counters) when it is closed.
type httpConn struct {
	net.Conn
	c    *conn
	info *httpproxy.Conn
	// h1 is the HTTP/1.1 front end serving the connection, if it is one.
	h1 *httpproxy.H1Front

	// ws is set when the connection became a WebSocket tunnel, and *h2in
	// when it speaks HTTP/2: most connections are neither, and an idle
	// one should hold no more than it needs.
	ws   atomic.Pointer[wsDrain]
	h2in *h2Inspect
}

// wsDrain drains a WebSocket tunnel by adding a close frame (1001, going
// away) to the client's stream at a frame boundary: the machine answers
// it as if the client had said goodbye, the client gets the machine's
// close, and both ends finish cleanly.
type wsDrain struct {
	goingAway atomic.Bool
	frames    wsframe.Tracker // reader-owned
	inject    []byte          // reader-owned
	sentClose bool            // reader-owned
}

// h2Inspect is the HTTP/2 inspection of the client's bytes (inspect.go).
type h2Inspect struct {
	// Reader-owned.
	h2     *h2watch.Watcher
	h2conf h2watch.Config
	h2err  error // a read error held until the watcher's output is read
	held   error // returned by the next read
	// The write side, under wmu.
	wmu      sync.Mutex
	out      h2watch.Boundaries
	calmLast uint32 // GOAWAY to send at the next frame boundary
	calmed   bool   // GOAWAY sent: later writes are dropped
}

// Read passes the client's bytes on; on a draining WebSocket it slips a
// close frame in between two of the client's frames.
func (h *httpConn) Read(p []byte) (int, error) {
	ws := h.ws.Load()
	if ws == nil {
		if h.h2in != nil {
			return h.readH2(p)
		}
		return h.Conn.Read(p)
	}
	for {
		if len(ws.inject) > 0 {
			n := copy(p, ws.inject)
			ws.inject = ws.inject[n:]
			return n, nil
		}
		if ws.goingAway.Load() && !ws.sentClose && ws.frames.AtBoundary() {
			ws.sentClose = true
			ws.inject = wsframe.ClientClose()
			h.Conn.SetReadDeadline(time.Time{})
			continue
		}
		n, err := h.Conn.Read(p)
		ws.frames.Feed(p[:n])
		if n == 0 && err != nil && ws.goingAway.Load() && !ws.sentClose && iox.IsTimeout(err) {
			// The wake-up from GoAway, not a real timeout. Clear it, so a
			// client in the middle of a frame is read normally (not in a
			// loop of instant timeouts) until the frame ends.
			h.Conn.SetReadDeadline(time.Time{})
			continue
		}
		return n, err
	}
}

// GoAway asks a WebSocket tunnel to close (see Read); false if the
// connection is not one.
func (h *httpConn) GoAway() bool {
	ws := h.ws.Load()
	if ws == nil || !ws.goingAway.CompareAndSwap(false, true) {
		return false
	}
	// Wake a Read blocked on the socket so it can add the close frame.
	h.Conn.SetReadDeadline(time.Now())
	return true
}

// drain closes an HTTP/1.1 connection between requests at once, and one
// in the middle of a request after its response.
func (h *httpConn) drain() {
	if h.h1 != nil {
		h.h1.Drain()
	}
}

// tlsHTTPConn adds what net/http needs to serve TLS (and h2 by ALPN) on a
// connection that is not a bare *tls.Conn.
type tlsHTTPConn struct {
	*httpConn
	state tls.ConnectionState
}

func (t *tlsHTTPConn) ConnectionState() tls.ConnectionState { return t.state }

// HandshakeContext is a no-op: the handshake is done before net/http gets
// the connection.
func (t *tlsHTTPConn) HandshakeContext(context.Context) error { return nil }

// httpConn makes the HTTP connection; h2 says whether it speaks HTTP/2
// (by ALPN, or the plain-text preface) and goes to net/http.
func (c *conn) httpConn(entry *catalog.Port, h2 bool) *httpConn {
	info := &httpproxy.Conn{ID: c.id, Env: c.rt.Env, Port: c.pr, Client: c.client, Local: c.local,
		TLS: c.tls != nil, SNIEntry: entry,
		Current: func() (*httpproxy.Env, *route.Port) {
			rt := c.s.runtime()
			return rt.Env, rt.Routes.Port(c.pr.Public)
		}}
	if c.tls != nil {
		info.SNI = c.tls.ConnectionState().ServerName
		info.CertCovers = c.certCovers(info.SNI, entry)
	}
	if entry != nil {
		info.AbortOnClose = entry.HTTP.AbortOnClose
	} else {
		info.AdmitApp = func(app string) error {
			if !c.admitApp(app) {
				return errAppLimit
			}
			return nil
		}
	}
	// Settle the wire bytes after each request, so long keep-alive and h2
	// connections show up in the app's totals before they close. The
	// connection's app is the first one routed (as for permits).
	info.RequestDone = func(app string) {
		c.mu.Lock()
		if c.app == "" {
			c.app = app
		}
		c.meter.Settle(c.s.meters, c.app, &c.settled)
		c.mu.Unlock()
	}
	info.Refused = func(code perr.Code, reason string) {
		c.mu.Lock()
		c.code = code
		c.mu.Unlock()
		c.fail("refused_request", "request refused", "code", string(code), "reason", reason)
	}
	h := &httpConn{Conn: c.top, c: c, info: info}
	if h2 {
		h.startH2Inspection()
	}
	info.WebSocket = func() { h.ws.Store(&wsDrain{}) }
	c.mu.Lock()
	c.httpc = h
	c.mu.Unlock()
	return h
}

// serveH1 serves the connection's HTTP/1.1 requests with the proxy's own
// front end, on the connection's goroutine.
func (c *conn) serveH1(h *httpConn) {
	p := c.rt.Config.Proxy
	opts := httpproxy.H1Options{
		HeaderTimeout:  p.HandshakeTimeout.D(),
		IdleTimeout:    httpproxy.IdleTimeout(c.pr, p.IdleTimeout.D()),
		MaxHeaderBytes: p.MaxHeaderBytes,
	}
	if c.tls == nil {
		opts.WaitReadable = c.waitReadable()
	}
	// A TLS connection parks too: the front end parks only after a read
	// through crypto/tls found no whole record within its window, so any
	// bytes crypto/tls holds are part of a record whose rest the socket
	// will signal. Parked, it holds no goroutine stack (a TLS one has
	// grown in the handshake) and no buffers of the front end's.
	if pk := c.s.parker; pk != nil && (c.tls != nil || opts.WaitReadable != nil) {
		opts.Park, opts.Unpark = c.park(pk), pk.Unpark
	}
	opts.OnEnd = func() { h.Close() }
	f := c.s.handler.NewH1Front(h, h.info, opts)
	c.mu.Lock()
	h.h1 = f
	c.mu.Unlock()
	f.Serve()
}

// errNotQuiet: bytes wait above the socket, so it cannot be parked.
var errNotQuiet = errors.New("connection has bytes buffered above its socket")

// park parks the connection with the server's parker, while no layer
// above the socket holds bytes of its own.
func (c *conn) park(pk *iox.Parker) func(time.Duration, func(bool)) (uint64, error) {
	sc, ok := c.raw.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(idle time.Duration, wake func(bool)) (uint64, error) {
		if !c.peek.Spliceable() {
			return 0, errNotQuiet
		}
		fd := -1
		if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
			return 0, err
		}
		return pk.Park(fd, idle, wake)
	}
}

// waitReadable waits for the client's socket to have bytes (or end)
// without reading them, so that an idle keep-alive connection holds no
// read buffer. It is used only while no layer above the socket holds
// bytes of its own (the sniffed prefix has been read).
func (c *conn) waitReadable() func() error {
	sc, ok := c.raw.(syscall.Conn)
	if !ok || !upstream.PeekSupported {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &readyWait{raw: raw, peek: c.peek}
	w.fn = w.ready
	return w.wait
}

// readyWait waits for a socket to become readable; its callback is made
// once per connection, not per wait.
type readyWait struct {
	raw   syscall.RawConn
	peek  interface{ Spliceable() bool }
	first bool
	fn    func(fd uintptr) bool
}

func (w *readyWait) wait() error {
	if !w.peek.Spliceable() {
		return nil // bytes are waiting in the sniffed prefix
	}
	w.first = true
	return w.raw.Read(w.fn)
}

// ready is RawConn.Read's callback: at first, whether the socket already
// has bytes or has ended (then no wait); after the poller's wake-up, yes.
func (w *readyWait) ready(fd uintptr) bool {
	if w.first {
		w.first = false
		return !upstream.SocketQuiet(fd)
	}
	return true
}

// certCovers reports, for the Host of a request on a TLS connection, whether
// the certificate the handshake served covers it (a Host of another app is
// admitted only then, see httpproxy's 421 rule). The certificate is looked
// up only when a request asks: most connections never do.
func (c *conn) certCovers(sni string, entry *catalog.Port) func(string) bool {
	if entry == nil {
		return nil
	}
	return func(host string) bool {
		cfg, err := c.rt.tlsConfig(sni, entry)
		if err != nil || len(cfg.Certificates) == 0 || cfg.Certificates[0].Leaf == nil {
			return false
		}
		return cfg.Certificates[0].Leaf.VerifyHostname(host) == nil
	}
}

var errAppLimit = &appLimitError{}

type appLimitError struct{}

func (*appLimitError) Error() string { return "app connection limit reached" }

// Close finishes the connection: net/http calls it when it is done, and
// so does the HTTP/1.1 front end.
func (h *httpConn) Close() error {
	h.info.Close()
	h.c.finish()
	return nil
}

// CloseWrite sends close_notify (TLS) or a FIN.
func (h *httpConn) CloseWrite() error {
	if hc, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}

// Unwrap returns the layer below, for layer chains.
func (h *httpConn) Unwrap() net.Conn { return h.Conn }

// The HTTP/2 server's reading limits, which h2watch follows too (see
// startInspection).
const (
	// h2MaxFrameSize is the SETTINGS_MAX_FRAME_SIZE announced, and the
	// largest frame read: 16 KiB, the protocol's initial value. net/http's
	// default, 1 MiB, made a 17 KiB HEADERS frame legal (h2spec
	// http2/4.2/3 wants FRAME_SIZE_ERROR for it), and it bounds what
	// h2watch holds back of a header block.
	h2MaxFrameSize = 16 << 10
	// h2HeaderTableSize is the HPACK decoding table's size (net/http's
	// default), which h2watch's table mirrors.
	h2HeaderTableSize = 4096
)

func (s *Server) newHTTPServer(rt *Runtime, pr *route.Port) *http.Server {
	p := rt.Config.Proxy
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: p.HandshakeTimeout.D(),
		IdleTimeout:       httpproxy.IdleTimeout(pr, p.IdleTimeout.D()),
		MaxHeaderBytes:    p.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:      p.H2MaxConcurrentStreams,
			MaxReadFrameSize:          h2MaxFrameSize,
			MaxDecoderHeaderTableSize: h2HeaderTableSize,
		},
		ErrorLog: slogLogger(s.log),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			switch x := c.(type) {
			case *httpConn:
				return httpproxy.WithConn(ctx, x.info)
			case *tlsHTTPConn:
				return httpproxy.WithConn(ctx, x.info)
			}
			return ctx
		},
	}
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetHTTP2(true)
	// Prior-knowledge h2c lets gRPC clients use plain-text ports too.
	hs.Protocols.SetUnencryptedHTTP2(true)
	return hs
}

// slogLogger adapts the structured logger for net/http's error log, whose
// lines (TLS and protocol errors from clients) are debug material.
func slogLogger(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}
