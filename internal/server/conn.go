package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/listen"
	"github.com/edgeproxy/edgeproxy/internal/meter"
	"github.com/edgeproxy/edgeproxy/internal/peek"
	"github.com/edgeproxy/edgeproxy/internal/permit"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/route"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// serveConn is the data path of one accepted connection, in order:
//
//	PROXY-in -> permit -> guard+peek -> meter -> sniff -> TLS -> app permit
//	         -> HTTP (routes each request by Host) or raw TCP duplex
//
// Every layer from the socket up is wrapped by the progress guard, every
// stage runs under a deadline, and every exit goes through finish, which
// settles the meter, releases permits and closes with a lingering close.
func (s *Server) serveConn(ps *portServer, raw net.Conn) {
	c := s.accept(ps, raw)
	if c == nil {
		return
	}
	handedOff := false
	defer func() {
		if !handedOff {
			c.finish()
		}
	}()

	// A trusted load balancer's PROXY header names the real client; it is
	// read first because permits count that client, not the balancer.
	if !c.proxyIn() {
		return
	}
	if !c.admit() {
		return
	}
	c.wrapLayers() // guard(tcp) -> peek -> meter -> guard(wire)

	// Sniff what the client speaks, under the handshake deadline: the
	// ClientHello's server name on TLS ports, an HTTP request line or h2
	// preface on plain HTTP ports. Raw TCP ports do not wait for the
	// client, since some protocols have the server speak first.
	entry := c.pr.Lookup("") // the only app of an unshared port
	switch h := c.pr.Handlers; {
	case h.PgTLS, h.TLS:
		if entry = c.frontTLS(); entry == nil {
			return
		}
	case h.HTTP:
		if !c.sniffHTTP() {
			return
		}
	}
	if entry != nil && !c.admitApp(entry.Service.App.Name) {
		return
	}

	if c.pr.Handlers.HTTP {
		// HTTP/2 goes to net/http's server; HTTP/1.x stays on this
		// goroutine, served by the proxy's own front end.
		handedOff = true
		h2 := c.h2c || c.tls != nil && c.tls.ConnectionState().NegotiatedProtocol == "h2"
		hc := c.httpConn(entry, h2)
		if !h2 {
			c.serveH1(hc)
			return
		}
		var served net.Conn = hc
		if c.tls != nil {
			// net/http serves HTTP/2 by ALPN only on a TLS connection.
			served = &tlsHTTPConn{httpConn: hc, state: c.tls.ConnectionState()}
		}
		if !ps.httpLn.Handoff(context.Background(), served) {
			hc.Close()
		}
		return
	}
	c.proxyTCP(entry)
}

// conn is one client connection's state across the stages.
type conn struct {
	s     *Server
	rt    *Runtime
	ps    *portServer
	pr    *route.Port
	id    uint64
	start time.Time
	// proxiedFrom is the balancer that sent a PROXY header, if one did.
	proxiedFrom string

	raw    net.Conn       // the socket
	prefix []byte         // bytes read while looking for a PROXY header
	client netip.AddrPort // the real client (PROXY header or socket)
	local  netip.AddrPort // where the client connected, public port

	guard   *iox.Guard
	peek    *peek.Conn
	meter   *meter.Conn
	tls     *tls.Conn
	top     net.Conn // outermost layer so far
	permit  *permit.Permit
	app     string
	settled [2]int64
	mu      sync.Mutex // guards app, reason, meter and guard: set by the connection, read by h2 streams, timers and the admin API

	ageTimer   *time.Timer
	finishOnce sync.Once
	reason     string // why the connection ended, for metrics
	code       perr.Code
	// for the raw TCP access log line
	tcp     bool
	machine *catalog.Machine
	// span is the connection's "accept" span when tracing is on; ctx
	// carries it to the stages' child spans.
	span trace.Span
	ctx  context.Context
	// httpc is the connection as served by HTTP, if it is.
	httpc *httpConn
	// h2c: the plain-text connection began with the HTTP/2 preface.
	h2c bool
}

// accept registers a new connection; nil means it was refused (server
// closing, or its port removed by a reload).
func (s *Server) accept(ps *portServer, raw net.Conn) *conn {
	rt := s.runtime() // this connection keeps this runtime to the end
	pr := rt.Routes.Port(ps.public)
	if pr == nil {
		raw.Close()
		return nil
	}
	c := &conn{s: s, rt: rt, ps: ps, pr: pr, id: s.nextID.Add(1), start: time.Now(), raw: raw, top: raw,
		client: listen.AddrPort(raw.RemoteAddr()), reason: "done"}
	if !s.track(raw, c) {
		raw.Close()
		return nil
	}
	ps.accepted.Inc()
	ps.active.Inc()
	c.ctx = context.Background()
	if tr := s.tracing; tr.Enabled {
		c.ctx, c.span = tr.Tracer.Start(c.ctx, "accept", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.Int64("edgeproxy.conn_id", int64(c.id)), attribute.Int("server.port", pr.Public),
				attribute.String("client.address", c.client.String())))
	}
	c.local = netip.AddrPortFrom(listen.AddrPort(raw.LocalAddr()).Addr(), uint16(pr.Public))
	if age := rt.Config.Proxy.MaxConnectionAge.D(); age > 0 {
		c.ageTimer = time.AfterFunc(age, func() {
			c.setReason("max_age")
			s.metrics.Timeouts.WithLabelValues("max_age").Inc()
			raw.Close()
			// A parked HTTP/1.1 connection has no read to fail on the
			// closed socket: let it go, so it finishes now.
			c.mu.Lock()
			h := c.httpc
			c.mu.Unlock()
			if h != nil {
				h.drain()
			}
		})
	}
	return c
}

func (c *conn) setReason(r string) {
	c.mu.Lock()
	c.reason = r
	c.mu.Unlock()
}

func (c *conn) getReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// logger is the connection's logger, built only when there is something
// to log: most connections never log, and a per-connection logger would
// cost an allocation each.
func (c *conn) logger() *slog.Logger {
	l := c.s.log.With("conn_id", c.id, "port", c.pr.Public)
	if c.proxiedFrom != "" {
		l = l.With("proxied_from", c.proxiedFrom)
	}
	return l
}

// fail ends the connection for a reason counted in metrics.
func (c *conn) fail(reason string, msg string, attrs ...any) {
	c.setReason(reason)
	if msg == "" {
		return
	}
	attrs = append(attrs, "peer", c.client.String())
	// A line with an error code also says what to check.
	for i := 0; i+1 < len(attrs); i += 2 {
		if k, _ := attrs[i].(string); k == "code" {
			if code, ok := attrs[i+1].(string); ok {
				if hint := perr.HintOf(perr.Code(code)); hint != "" {
					attrs = append(attrs, "hint", hint)
				}
			}
			break
		}
	}
	c.logger().Info(msg, attrs...)
}

// admit takes the global, port, IP and accept-rate permits.
func (c *conn) admit() bool {
	p, err := c.s.permits.Admit(c.pr.Public, c.client.Addr())
	if err != nil {
		var r *permit.Refused
		if errors.As(err, &r) {
			c.s.metrics.Refused.WithLabelValues(string(r.Scope)).Inc()
		}
		c.fail("refused", "")
		return false
	}
	c.permit = p
	return true
}

// admitApp charges the connection to its app once routing names it.
func (c *conn) admitApp(app string) bool {
	c.mu.Lock()
	if c.app == "" {
		c.app = app // the first app routed owns the connection's bytes
	}
	c.mu.Unlock()
	// A connection counts against the first app routing names (ErrOtherApp
	// for later ones); ErrReleased means it is already closing.
	if err := c.permit.AdmitApp(app); err != nil && !errors.Is(err, permit.ErrOtherApp) && !errors.Is(err, permit.ErrReleased) {
		c.s.metrics.Refused.WithLabelValues(string(permit.ScopeApp)).Inc()
		c.fail("refused", "app connection limit reached", "app", app, "code", string(perr.AppConnLimit))
		return false
	}
	return true
}

// wrapLayers builds guard(tcp) -> peek -> meter -> guard(wire).
func (c *conn) wrapLayers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.guard = iox.NewGuard(c.raw, c.rt.guardLimits, c.s.guardStats, c.onKill)
	var sock net.Conn = c.raw
	if len(c.prefix) > 0 {
		sock = &replayConn{Conn: c.raw, prefix: c.prefix}
	}
	c.peek = peek.New(c.guard.Wrap("tcp", sock), c.rt.Config.Proxy.SniffMaxBytes)
	c.meter = meter.New(c.peek)
	var wire net.Conn = c.meter
	if c.s.wrapWire != nil {
		wire = c.s.wrapWire(wire)
	}
	c.top = c.guard.Wrap("wire", wire)
}

// onKill logs a spin kill once, with what an operator needs to find the
// culprit: the connection, its age and bytes, the counters and the chain
// of layer types.
func (c *conn) onKill(k iox.Kill) {
	c.mu.Lock()
	c.reason = "spin_killed"
	app, m := c.app, c.meter
	c.mu.Unlock()
	var in, out int64
	if m != nil {
		in, out = m.Bytes()
	}
	c.logger().Error("spin detector killed a connection", "layer", k.Layer, "reason", string(k.Reason),
		"peer", c.client.String(), "app", app, "age", time.Since(c.start).String(),
		"bytes_in", in, "bytes_out", out, "counters", k.Counts.String(), "chain", k.Chain)
}

// handshakeDeadline bounds everything before the first request: sniffing,
// the TLS handshake and the request line.
func (c *conn) handshakeDeadline() time.Time {
	return c.start.Add(c.rt.Config.Proxy.HandshakeTimeout.D())
}

// timedOut counts a deadline that ended a stage.
func (c *conn) timedOut(kind string, err error) bool {
	if iox.IsTimeout(err) {
		c.s.metrics.Timeouts.WithLabelValues(kind).Inc()
		c.fail("timeout", "")
		return true
	}
	return false
}

// proxyTCP connects to a machine and copies both ways, half-closes passed
// on, under the idle and half-closed timeouts.
func (c *conn) proxyTCP(entry *catalog.Port) {
	if entry == nil {
		return
	}
	p := c.rt.Config.Proxy
	c.tcp = true
	if _, span := c.startSpan("route", attribute.String("app", entry.Service.App.Name)); span != nil {
		span.End()
	}
	up, lease, err := c.rt.Dialer.Connect(c.ctx, entry.Service, c.client)
	if err != nil {
		pe, _ := perr.As(err)
		c.code = pe.Code
		c.fail("upstream_error", "tcp connect failed", "app", entry.Service.App.Name, "internal_port", entry.Service.InternalPort,
			"code", string(pe.Code), "error", err.Error())
		return
	}
	c.machine = lease.Machine
	defer lease.Release()
	upGuard := iox.NewGuard(up, c.rt.guardLimits, c.s.guardStats, c.onKill)
	upConn := upGuard.Wrap("upstream", up)
	defer up.Close()
	if entry.ProxyProto > 0 {
		if err := c.sendProxyHeader(up, entry.ProxyProto); err != nil {
			c.fail("upstream_error", "proxy header not sent", "error", err.Error())
			return
		}
	}
	// The access log line written at finish carries the byte counts.
	_, _, err = iox.Duplex(c.top, upConn, iox.DuplexOptions{Pool: c.s.bufs,
		IdleTimeout: p.IdleTimeout.D(), HalfClosedTimeout: p.HalfClosedTimeout.D(), NoSplice: !p.Splice})
	switch {
	case errors.Is(err, iox.ErrIdleTimeout):
		c.s.metrics.Timeouts.WithLabelValues("idle").Inc()
		c.setReason("timeout")
	case errors.Is(err, iox.ErrHalfClosedTimeout):
		c.s.metrics.Timeouts.WithLabelValues("half_closed").Inc()
		c.setReason("timeout")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func portLabel(p int) string { return strconv.Itoa(p) }

// replayConn returns bytes already taken off the socket before reading it
// again (the few a PROXY header check consumed from a client that sent
// none).
type replayConn struct {
	net.Conn
	prefix []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.prefix) > 0 {
		n := copy(p, r.prefix)
		r.prefix = r.prefix[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

func (r *replayConn) Unwrap() net.Conn { return r.Conn }

// Spliceable: the duplex may splice beneath once the prefix is replayed.
func (r *replayConn) Spliceable() bool            { return len(r.prefix) == 0 }
func (r *replayConn) SpliceRead(int, error) error { return nil }
func (r *replayConn) SpliceWrite(int)             {}

func (r *replayConn) CloseWrite() error {
	if hc, ok := r.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}
