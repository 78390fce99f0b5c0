package server

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/httpproxy"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/listen"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/proxyproto"
	"github.com/edgeproxy/edgeproxy/internal/route"
)

// serveConn is the data path of one accepted connection, in order:
// TLS termination with routing by server name, then either the HTTP
// stage (which routes each request by Host) or a raw TCP duplex to a
// machine chosen by the balancer.
func (s *Server) serveConn(ps *portServer, raw net.Conn) {
	rt := s.runtime() // this connection keeps this runtime to the end
	pr := rt.Routes.Port(ps.public)
	if pr == nil || !s.track(raw) {
		raw.Close()
		return
	}
	id := s.nextID.Add(1)
	log := s.log.With("conn_id", id, "port", ps.public, "peer", raw.RemoteAddr().String())
	conn := net.Conn(raw)
	entry := pr.Lookup("") // the only app on an unshared port; nil when shared

	// TLS: pg_tls first answers PostgreSQL's SSLRequest in plaintext.
	if pr.Handlers.PgTLS {
		if err := acceptSSLRequest(conn, rt.Config.Proxy.HandshakeTimeout.D()); err != nil {
			log.Info("pg_tls: no SSLRequest", "error", err.Error())
			s.closeRaw(raw)
			return
		}
	}
	if pr.Handlers.TLS || pr.Handlers.PgTLS {
		tc, e, err := s.terminateTLS(rt, pr, conn)
		if err != nil {
			pe, _ := perr.As(err)
			log.Info("tls handshake refused", "code", string(pe.Code), "error", err.Error())
			s.closeRaw(raw)
			return
		}
		conn, entry = tc, e
	}

	// HTTP: net/http parses requests on this connection; the handler
	// routes each one by Host and proxies it.
	if pr.Handlers.HTTP {
		info := &httpproxy.Conn{ID: id, Env: rt.Env, Port: pr, Client: listen.AddrPort(raw.RemoteAddr()),
			Local: publicAddr(raw, pr.Public), TLS: pr.Handlers.TLS, SNIEntry: entry}
		ps.httpLn.push(s.wrapHTTP(conn, raw, info))
		return
	}

	// Raw TCP: pick a machine, connect, announce the client with a PROXY
	// header if asked, then copy both ways with half-close passed on.
	defer s.closeRaw(raw)
	defer conn.Close()
	if entry == nil {
		return
	}
	up, lease, err := rt.Dialer.Connect(context.Background(), entry.Service)
	if err != nil {
		pe, _ := perr.As(err)
		log.Warn("tcp connect failed", "app", entry.Service.App.Name, "code", string(pe.Code), "error", err.Error())
		return
	}
	defer lease.Release()
	defer up.Close()
	if entry.ProxyProto > 0 {
		hdr, err := proxyproto.Header(entry.ProxyProto, raw.RemoteAddr(), net.TCPAddrFromAddrPort(publicAddr(raw, pr.Public)))
		if err == nil {
			_, err = up.Write(hdr)
		}
		if err != nil {
			log.Warn("proxy header not sent", "error", err.Error())
			return
		}
	}
	in, out, err := iox.Duplex(conn, up, iox.DuplexOptions{Pool: s.bufs, IdleTimeout: rt.Config.Proxy.IdleTimeout.D()})
	log.Debug("tcp connection done", "app", entry.Service.App.Name, "machine", lease.Machine.ID,
		"bytes_in", in, "bytes_out", out, "error", errString(err))
}

// publicAddr is the address a client connected to as the app sees it:
// the local IP with the public port, which port_map may have moved.
func publicAddr(c net.Conn, public int) netip.AddrPort {
	return netip.AddrPortFrom(listen.AddrPort(c.LocalAddr()).Addr(), uint16(public))
}

func (s *Server) closeRaw(raw net.Conn) {
	raw.Close()
	s.untrack(raw)
}

// terminateTLS runs the handshake, choosing app and certificate from the
// server name. An unknown name or a name without certificate ends the
// handshake with an alert rather than a hang.
func (s *Server) terminateTLS(rt *Runtime, pr *route.Port, c net.Conn) (*tls.Conn, *catalog.Port, error) {
	tc := tls.Server(c, rt.baseTLS(pr, s.ticketKeys))
	ctx, cancel := context.WithTimeout(context.Background(), rt.Config.Proxy.HandshakeTimeout.D())
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		if _, ok := perr.As(err); !ok {
			err = perr.New(perr.TLSHandshakeFailed, err)
		}
		return nil, nil, err
	}
	// The same lookup GetConfigForClient made, so it finds the same app.
	return tc, pr.Lookup(tc.ConnectionState().ServerName), nil
}

func (s *Server) newHTTPServer(rt *Runtime, pr *route.Port) *http.Server {
	p := rt.Config.Proxy
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: p.HandshakeTimeout.D(),
		IdleTimeout:       httpproxy.IdleTimeout(pr, p.IdleTimeout.D()),
		MaxHeaderBytes:    p.MaxHeaderBytes,
		ErrorLog:          slogLogger(s.log),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if hc, ok := c.(httpConn); ok {
				return httpproxy.WithConn(ctx, hc.info())
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

// httpConn is a client connection handed to net/http with its facts.
type httpConn interface {
	net.Conn
	info() *httpproxy.Conn
}

// plainHTTPConn and tlsHTTPConn carry the connection facts to the
// handler. The TLS one embeds *tls.Conn so net/http sees its
// ConnectionState and serves HTTP/2 when ALPN chose h2.
type plainHTTPConn struct {
	net.Conn
	closer
}

type tlsHTTPConn struct {
	*tls.Conn
	closer
}

type closer struct {
	conn  *httpproxy.Conn
	once  *sync.Once
	after func()
}

func (c closer) info() *httpproxy.Conn { return c.conn }

func (c *plainHTTPConn) Close() error { return c.close(c.Conn) }
func (c *tlsHTTPConn) Close() error   { return c.close(c.Conn) }

func (c closer) close(inner net.Conn) error {
	err := inner.Close()
	c.once.Do(func() {
		c.conn.Close()
		c.after()
	})
	return err
}

func (s *Server) wrapHTTP(conn, raw net.Conn, info *httpproxy.Conn) httpConn {
	cl := closer{conn: info, once: new(sync.Once), after: func() { s.closeRaw(raw) }}
	if tc, ok := conn.(*tls.Conn); ok {
		return &tlsHTTPConn{Conn: tc, closer: cl}
	}
	return &plainHTTPConn{Conn: conn, closer: cl}
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

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
