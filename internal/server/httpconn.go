package server

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/httpproxy"
	"github.com/edgeproxy/edgeproxy/internal/route"
)

// httpConn is a client connection handed to net/http. It carries the
// connection's facts to the handler, finishes the connection (lingering
// close, permits) when net/http closes it, and holds back a client's
// half-close while its requests are in flight: net/http takes the EOF of
// a client that sent a complete request and then close_notify or FIN as
// "client gone" and cancels the request, but such a client is legal and
// expects its response (INCIDENT.md). Unless the app opts into
// abort_on_close, the EOF is delivered once the responses are written.
type httpConn struct {
	net.Conn
	c    *conn
	info *httpproxy.Conn

	eof bool // reader-owned: the client has ended its stream

	mu    sync.Mutex
	rdl   time.Time     // read deadline as last set by net/http
	rdlCh chan struct{} // closed when the read deadline changes
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
		TLS: c.tls != nil, SNIEntry: entry}
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
	h := &httpConn{Conn: c.top, c: c, info: info, rdlCh: make(chan struct{})}
	if c.tls != nil {
		return &tlsHTTPConn{httpConn: h, state: c.tls.ConnectionState()}
	}
	return h
}

var errAppLimit = &appLimitError{}

type appLimitError struct{}

func (*appLimitError) Error() string { return "app connection limit reached" }

func (h *httpConn) Read(p []byte) (int, error) {
	if h.eof {
		return 0, io.EOF
	}
	n, err := h.Conn.Read(p)
	if err == io.EOF && !h.info.AbortOnClose {
		h.eof = true
		if werr := h.waitIdle(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// waitIdle blocks until no request is in flight, or until the read
// deadline passes (net/http moves it into the past to abort a background
// read, and it must see that read end).
func (h *httpConn) waitIdle() error {
	for {
		idle := h.info.Idle()
		if idle == nil {
			return nil
		}
		h.mu.Lock()
		dl, changed := h.rdl, h.rdlCh
		h.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-idle:
			return nil
		case <-changed:
		case <-timeout:
			return os.ErrDeadlineExceeded
		}
	}
}

func (h *httpConn) SetReadDeadline(t time.Time) error {
	h.noteDeadline(t)
	return h.Conn.SetReadDeadline(t)
}

func (h *httpConn) SetDeadline(t time.Time) error {
	h.noteDeadline(t)
	return h.Conn.SetDeadline(t)
}

func (h *httpConn) noteDeadline(t time.Time) {
	h.mu.Lock()
	h.rdl = t
	close(h.rdlCh)
	h.rdlCh = make(chan struct{})
	h.mu.Unlock()
}

// Close finishes the connection: net/http calls it when it is done, and
// so does an upgraded (WebSocket) connection's proxy when the tunnel ends.
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

func (s *Server) newHTTPServer(rt *Runtime, pr *route.Port) *http.Server {
	p := rt.Config.Proxy
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: p.HandshakeTimeout.D(),
		IdleTimeout:       httpproxy.IdleTimeout(pr, p.IdleTimeout.D()),
		MaxHeaderBytes:    p.MaxHeaderBytes,
		ErrorLog:          slogLogger(s.log),
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

// connQueue is a net.Listener fed by serveConn, so net/http serves
// connections the server already accepted and terminated.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// slogLogger adapts the structured logger for net/http's error log, whose
// lines (TLS and protocol errors from clients) are debug material.
func slogLogger(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}
