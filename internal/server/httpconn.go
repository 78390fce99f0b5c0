package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/h1scan"
	"github.com/edgeproxy/edgeproxy/internal/h2watch"
	"github.com/edgeproxy/edgeproxy/internal/httpproxy"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/route"
	"github.com/edgeproxy/edgeproxy/internal/wsframe"
)

// httpConn is a client connection handed to net/http. It carries the
// connection's facts to the handler and finishes the connection
// (lingering close, permits, counters) when net/http closes it.
type httpConn struct {
	net.Conn
	c    *conn
	info *httpproxy.Conn

	// A WebSocket tunnel is drained by adding a close frame (1001, going
	// away) to the client's stream at a frame boundary: the machine answers
	// it as if the client had said goodbye, the client gets the machine's
	// close, and both ends finish cleanly.
	ws        atomic.Bool
	goingAway atomic.Bool
	frames    wsframe.Tracker // reader-owned
	inject    []byte          // reader-owned
	sentClose bool            // reader-owned

	// While a handler runs, net/http reads one byte from the client in the
	// background, only to notice a disconnect and cancel the request's
	// context. An HTTP/1 request that ignores that cancellation (see
	// httpproxy.Conn.IgnoresClose) gains nothing from it, and on a quiet
	// socket the read costs a system call that finds nothing, every
	// request. So that read waits here instead, without touching the
	// socket, until net/http aborts it (a read deadline in the past: it
	// returns the timeout the abort expects), a later deadline is set or
	// the connection closes (it then reads the socket as asked).
	rmu      sync.Mutex
	rwaiting bool
	rclosed  bool
	// rpast is true while the read deadline last set is in the past: a
	// read arriving then (the abort can come first) returns at once, as
	// the socket's would.
	rpast bool
	rwake chan bool // true: aborted

	// Inspection of the client's bytes (inspect.go): reader-owned but
	// for answer, which Close reads.
	scan   *h1scan.Scanner
	h2     *h2watch.Watcher
	h2conf h2watch.Config
	h2err  error // a read error held until the watcher's output is read
	// scanned counts the bytes scanned, up to the length of the HTTP/2
	// preface: where a connection that began with it switches to frames.
	scanned  int
	held     error // returned by the next read
	switched atomic.Bool
	mute     atomic.Bool
	answer   atomic.Pointer[perr.Code]
	// bodyRefused is the code of a request body refused in its middle,
	// for the handler reading it (Conn.BodyRefused).
	bodyRefused atomic.Pointer[perr.Code]
	// The write side of HTTP/2 (inspect.go), under wmu.
	h2Writes atomic.Bool
	wmu      sync.Mutex
	out      h2watch.Boundaries
	calmLast uint32 // GOAWAY to send at the next frame boundary
	calmed   bool   // GOAWAY sent: later writes are dropped
}

// Read passes the client's bytes on; on a draining WebSocket it slips a
// close frame in between two of the client's frames.
func (h *httpConn) Read(p []byte) (int, error) {
	if len(p) == 1 && h.info.IgnoresClose() && h.deferRead() {
		return 0, os.ErrDeadlineExceeded
	}
	return h.read(p)
}

func (h *httpConn) read(p []byte) (int, error) {
	if h.held != nil {
		return 0, h.deliverRefusal(p)
	}
	if !h.ws.Load() {
		if h.h2 != nil {
			return h.readH2(p)
		}
		n, err := h.Conn.Read(p)
		if h.scan != nil && h.switched.Load() {
			h.scan = nil // a tunnel now, not requests
		}
		if n > 0 && h.scan != nil {
			return h.inspect(p, n, err)
		}
		return n, err
	}
	for {
		if len(h.inject) > 0 {
			n := copy(p, h.inject)
			h.inject = h.inject[n:]
			return n, nil
		}
		if h.goingAway.Load() && !h.sentClose && h.frames.AtBoundary() {
			h.sentClose = true
			h.inject = wsframe.ClientClose()
			h.Conn.SetReadDeadline(time.Time{})
			continue
		}
		n, err := h.Conn.Read(p)
		h.frames.Feed(p[:n])
		if n == 0 && err != nil && h.goingAway.Load() && !h.sentClose && isTimeout(err) {
			// The wake-up from GoAway, not a real timeout. Clear it, so a
			// client in the middle of a frame is read normally (not in a
			// loop of instant timeouts) until the frame ends.
			h.Conn.SetReadDeadline(time.Time{})
			continue
		}
		return n, err
	}
}

// deferRead holds net/http's background read (see rwake) and reports
// whether it was aborted.
func (h *httpConn) deferRead() bool {
	h.rmu.Lock()
	if h.rclosed || h.rpast {
		defer h.rmu.Unlock()
		return h.rpast
	}
	if h.rwake == nil {
		h.rwake = make(chan bool, 1)
	}
	h.rwaiting = true
	h.rmu.Unlock()
	return <-h.rwake
}

// endDeferredRead notes a new read deadline and releases a held read, if
// there is one: as aborted when the deadline is in the past, else to read
// the socket.
func (h *httpConn) endDeferredRead(deadline time.Time) {
	h.rmu.Lock()
	defer h.rmu.Unlock()
	past := !deadline.IsZero() && deadline.Before(time.Now())
	h.rpast = past
	if h.rwaiting {
		h.rwaiting = false
		h.rwake <- past
	}
}

// SetReadDeadline is how net/http aborts its background read.
func (h *httpConn) SetReadDeadline(t time.Time) error {
	h.endDeferredRead(t)
	return h.Conn.SetReadDeadline(t)
}

func (h *httpConn) SetDeadline(t time.Time) error {
	h.endDeferredRead(t)
	return h.Conn.SetDeadline(t)
}

// GoAway asks a WebSocket tunnel to close (see Read); false if the
// connection is not one.
func (h *httpConn) GoAway() bool {
	if !h.ws.Load() || !h.goingAway.CompareAndSwap(false, true) {
		return false
	}
	// Wake a Read blocked on the socket so it can add the close frame.
	h.Conn.SetReadDeadline(time.Now())
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
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

func (c *conn) httpConn(entry *catalog.Port) net.Conn {
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
	h := &httpConn{Conn: c.top, c: c, info: info}
	info.BodyRefused = h.bodyRefused.Load
	h.startInspection(c.tls != nil && c.tls.ConnectionState().NegotiatedProtocol == "h2")
	info.WebSocket = func() { h.ws.Store(true) }
	info.Switched = func() { h.switched.Store(true) }
	c.mu.Lock()
	c.httpc = h
	c.mu.Unlock()
	if c.tls != nil {
		return &tlsHTTPConn{httpConn: h, state: c.tls.ConnectionState()}
	}
	return h
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
// so does an upgraded (WebSocket) connection's proxy when the tunnel ends.
func (h *httpConn) Close() error {
	h.answerRefused()
	h.info.Close()
	h.c.finish()
	h.closeHeldRead()
	return nil
}

// closeHeldRead sends a held background read to the closed socket, and
// any later one straight there.
func (h *httpConn) closeHeldRead() {
	h.rmu.Lock()
	h.rclosed = true
	h.rmu.Unlock()
	h.endDeferredRead(time.Time{})
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
