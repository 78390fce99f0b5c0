package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/peek"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/proxyproto"
	"github.com/edgeproxy/edgeproxy/internal/sniff"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"

	"go.opentelemetry.io/otel/attribute"
)

// proxyIn reads an inbound PROXY header from a trusted source: required
// mode insists on one, optional mode takes one if it comes, and a
// malformed header closes the connection with the reason logged. Headers
// from untrusted sources are refused by the sniff stage (see
// refuseUntrustedHeader): reading here would make server-speaks-first
// clients wait.
func (c *conn) proxyIn() bool {
	pp := c.rt.Config.ProxyProtocol
	if pp.Mode == "off" || !proxyproto.Trusted(c.rt.proxyTrusted, c.client.Addr()) {
		return true
	}
	if err := c.raw.SetReadDeadline(time.Now().Add(pp.Timeout.D())); err != nil {
		return false
	}
	defer c.raw.SetReadDeadline(time.Time{})
	// Read byte-exactly from the socket: nothing past the header may be
	// consumed here, since the next layers have not been built yet.
	var buf [proxyHeaderMax]byte
	n := 0
	for {
		hl, err := proxyproto.HeaderLen(buf[:n])
		switch {
		case err == nil:
			if _, err := io.ReadFull(c.raw, buf[n:hl]); err != nil {
				return c.proxyFail("read", err)
			}
			return c.proxyHeader(buf[:hl])
		case errors.Is(err, proxyproto.ErrNotProxy):
			if pp.Mode == "required" {
				return c.proxyFail("missing", errors.New("a trusted source sent no PROXY header"))
			}
			// Not a header: those bytes belong to the client's stream.
			c.prefix = append(c.prefix, buf[:n]...)
			return true
		case !errors.Is(err, proxyproto.ErrNeedMore):
			return c.proxyFail("malformed", err)
		}
		// A byte at a time: headers are tiny and this happens once.
		if _, err := io.ReadFull(c.raw, buf[n:n+1]); err != nil {
			if n == 0 && pp.Mode == "optional" && iox.IsTimeout(err) {
				return true // a trusted client that speaks no header and waits
			}
			return c.proxyFail("read", err)
		}
		n++
	}
}

// refuseUntrustedHeader closes a connection whose first bytes are a PROXY
// header that no trusted source sent (true means refused).
func (c *conn) refuseUntrustedHeader(b []byte) bool {
	if c.rt.Config.ProxyProtocol.Mode == "off" {
		return false // no PROXY support: the bytes are just not TLS or HTTP
	}
	if _, err := proxyproto.HeaderLen(b); errors.Is(err, proxyproto.ErrNotProxy) {
		return false
	}
	c.proxyFail("untrusted", fmt.Errorf("PROXY header from untrusted source %s", c.client.Addr()))
	return true
}

// proxyHeaderMax bounds an inbound PROXY header (v2 with TLVs).
const proxyHeaderMax = 16 + 2048

func (c *conn) proxyHeader(hdr []byte) bool {
	p, err := proxyproto.Parse(hdr)
	if err != nil {
		return c.proxyFail("malformed", err)
	}
	if !p.Local {
		c.client = p.Src
		c.proxiedFrom = c.raw.RemoteAddr().String()
	}
	return true
}

func (c *conn) proxyFail(reason string, err error) bool {
	c.s.metrics.ProxyHeaderErrors.WithLabelValues(reason).Inc()
	if iox.IsTimeout(err) {
		c.s.metrics.Timeouts.WithLabelValues("proxy_header").Inc()
	}
	c.fail("proxy_header", "inbound PROXY header refused", "reason", reason, "error", err.Error())
	return false
}

// frontTLS runs the TLS front end of tls and pg_tls ports: PostgreSQL's
// SSLRequest, the ClientHello sniff, then the handshake. It returns the app
// service, or nil when the connection was refused.
func (c *conn) frontTLS() *catalog.Port {
	direct := false
	if c.pr.Handlers.PgTLS {
		var ok bool
		if direct, ok = c.pgSSLRequest(); !ok {
			return nil
		}
	}
	hello, ok := c.sniffTLS()
	if !ok || direct && !c.pgDirectALPN(hello) {
		return nil
	}
	return c.terminateTLS()
}

// sniffTLS peeks the ClientHello, bounded in bytes and time, so that
// garbage and slow clients are dropped before any TLS work. Every refusal
// a client can act on is answered, since a bare close looks like a dead
// proxy: a hello crypto/tls would refuse, or one over the byte cap, gets
// the alert crypto/tls would send, and plain HTTP a 400.
func (c *conn) sniffTLS() (sniff.HelloInfo, bool) {
	b, err := c.peek.Peek(c.handshakeDeadline(), decideTLS)
	if err != nil && !errors.Is(err, peek.ErrTooLarge) {
		if !c.timedOut("sniff", err) {
			c.fail("sniff", "")
		}
		return sniff.HelloInfo{}, false
	}
	r, hello, herr := sniff.ClientHello(b)
	switch {
	case r == sniff.Match:
		return hello, true
	case r == sniff.NeedMore: // a well-formed start, cut by the byte cap
		c.refuseHello("sniff", alertInternalError,
			fmt.Errorf("ClientHello exceeds proxy.sniff_max_bytes (%d bytes)", c.rt.Config.Proxy.SniffMaxBytes))
	case c.refuseUntrustedHeader(b):
	case isHTTP1(b):
		c.answerHTTPError("not_tls", perr.PlainHTTPOnTLSPort)
	case errors.Is(herr, sniff.ErrHelloTooLarge):
		c.refuseHello("not_tls", alertInternalError, herr)
	case errors.Is(herr, sniff.ErrMalformed):
		c.refuseHello("not_tls", alertDecodeError, herr)
	default:
		c.fail("not_tls", "client did not send a TLS ClientHello", "error", errString(herr))
	}
	return sniff.HelloInfo{}, false
}

// decideTLS waits for a whole ClientHello. Bytes that cannot start one are
// read on as far as an HTTP request line, so that plain HTTP sent to a TLS
// port is recognised however the request was split into reads.
func decideTLS(b []byte) sniff.Result {
	if r, _, _ := sniff.ClientHello(b); r != sniff.NoMatch {
		return r
	}
	r, _ := sniff.HTTP1(b)
	return r
}

func isHTTP1(b []byte) bool {
	r, _ := sniff.HTTP1(b)
	return r == sniff.Match
}

// TLS alerts the proxy sends itself, before crypto/tls has the connection
// (RFC 8446 section 6).
const (
	alertDecodeError           = 50
	alertInternalError         = 80
	alertNoApplicationProtocol = 120
)

// refuseHello ends a connection whose ClientHello is not handed to
// crypto/tls, with the alert crypto/tls would send for it: decode_error for
// a malformed hello, internal_error for one over a size limit.
func (c *conn) refuseHello(reason string, alert byte, err error) {
	c.sendAlert(alert)
	c.code = perr.TLSHandshakeFailed
	c.fail(reason, "tls handshake refused", "code", string(c.code), "alert", int(alert), "error", err.Error())
}

// sendAlert writes a fatal alert in a plaintext record, as a TLS server does
// before any key is agreed.
func (c *conn) sendAlert(alert byte) {
	const recordTypeAlert, levelFatal = 21, 2
	c.top.SetWriteDeadline(time.Now().Add(time.Second))
	c.top.Write([]byte{recordTypeAlert, 3, 3, 0, 2, levelFatal, alert})
}

// sniffHTTP peeks the request line or h2 preface on a plain HTTP port.
func (c *conn) sniffHTTP() bool {
	decide := func(b []byte) sniff.Result {
		if r := sniff.H2Preface(b); r != sniff.NoMatch {
			return r
		}
		r, _ := sniff.HTTP1(b)
		return r
	}
	b, err := c.peek.Peek(c.handshakeDeadline(), decide)
	if err != nil {
		if !c.timedOut("sniff", err) {
			c.fail("sniff", "")
		}
		return false
	}
	if decide(b) != sniff.Match {
		if !c.refuseUntrustedHeader(b) {
			c.refuseNotHTTP()
		}
		return false
	}
	c.h2c = sniff.H2Preface(b) == sniff.Match
	return true
}

// refuseNotHTTP ends a connection on an http port whose first bytes are
// neither an HTTP/1 request line nor the HTTP/2 preface. A malformed HTTP/1
// request (its first line names an HTTP/1 version) is answered 400 (PH01),
// as RFC 9112 asks; other bytes are closed without an answer, which their
// sender could not read: a connection that opens with a broken HTTP/2
// preface is to be closed (RFC 9113 section 3.4, h2spec http2/3.5/2), and
// TLS or another protocol sent to the port gains nothing from an HTTP/1
// reply. Both are logged and counted as not_http with PH01. The decision
// waits for the end of the first line; a text line that fills the sniff
// byte cap is answered as HTTP/1.
func (c *conn) refuseNotHTTP() {
	b, err := c.peek.Peek(c.handshakeDeadline(), sniff.HTTP1Attempt)
	switch {
	case sniff.HTTP1Attempt(b) == sniff.Match, errors.Is(err, peek.ErrTooLarge):
		c.answerHTTPError("not_http", perr.MalformedRequest)
	case err != nil && c.timedOut("sniff", err):
	default:
		c.code = perr.MalformedRequest
		c.fail("not_http", "")
	}
}

// answerHTTPError answers a client refused before any HTTP server ran with
// the proxy's error response for code (the format, headers and body that
// httpproxy's errors have), in HTTP/1.1, and ends the connection.
func (c *conn) answerHTTPError(reason string, code perr.Code) {
	if b := perr.RawResponse(code); b != nil {
		c.top.SetWriteDeadline(time.Now().Add(time.Second))
		c.top.Write(b)
	}
	c.code = code
	c.fail(reason, "")
}

// terminateTLS runs the handshake, choosing app and certificate from the
// server name, and returns the app service or nil (refused; an unknown
// name or a name without certificate ends with an alert, not a hang).
func (c *conn) terminateTLS() *catalog.Port {
	tc := tls.Server(c.top, c.rt.baseTLS(c.pr))
	var refused error // why GetConfigForClient refused the name, if it did
	ctx, cancel := context.WithDeadline(context.WithValue(context.Background(), nameRefusalKey{}, &refused),
		c.handshakeDeadline())
	defer cancel()
	_, span := c.startSpan("tls")
	start := time.Now()
	err := tc.HandshakeContext(ctx)
	if span != nil {
		span.SetAttributes(attribute.String("tls.server_name", tc.ConnectionState().ServerName),
			attribute.String("tls.version", tls.VersionName(tc.ConnectionState().Version)))
		endSpan(span, err)
	}
	if err != nil {
		c.s.metrics.TLSHandshakes.WithLabelValues("none", "failed").Inc()
		if refused != nil {
			err = refused
		}
		if c.timedOut("handshake", err) || errors.Is(err, context.DeadlineExceeded) {
			c.fail("timeout", "")
			return nil
		}
		pe, ok := perr.As(err)
		if !ok {
			pe = perr.New(perr.TLSHandshakeFailed, err)
		}
		c.code = pe.Code
		c.fail("tls_error", "tls handshake refused", "code", string(pe.Code), "error", err.Error())
		return nil
	}
	c.s.metrics.TLSHandshakeDuration.Observe(time.Since(start).Seconds())
	st := tc.ConnectionState()
	c.s.metrics.TLSHandshakes.WithLabelValues(tls.VersionName(st.Version), "ok").Inc()
	c.tls = tc
	c.top = c.guard.Wrap("tls", tc)
	// The same lookup GetConfigForClient made, so it finds the same app.
	return c.pr.Lookup(tlsterm.SNIHost(st.ServerName))
}

// nameRefusalKey finds, in a handshake's context, where refuseName leaves
// the classified reason a server name was refused, for terminateTLS to log
// and count in place of crypto/tls's own error.
type nameRefusalKey struct{}

// refuseName is GetConfigForClient's answer for a server name the port
// cannot serve (PR05, PT05). An error returned from that hook would make
// crypto/tls send internal_error, which blames the proxy; a config without
// certificates makes it send unrecognized_name (RFC 6066 section 3)
// instead. Session tickets are off in it, because a resumed session needs
// no certificate and would slip past the refusal.
func refuseName(hello *tls.ClientHelloInfo, why error) (*tls.Config, error) {
	if p, ok := hello.Context().Value(nameRefusalKey{}).(*error); ok {
		*p = why
	}
	return &tls.Config{SessionTicketsDisabled: true}, nil
}

// pgSSLRequest answers PostgreSQL's SSLRequest on a pg_tls port. direct
// reports a client that opened with TLS at once (sslnegotiation=direct).
func (c *conn) pgSSLRequest() (direct, ok bool) {
	deadline := c.handshakeDeadline()
	// A client may first ask for GSSAPI encryption (libpq does when it
	// holds a Kerberos ticket): it is declined and the client asks again.
	for range 2 {
		b, err := c.peek.Peek(deadline, func(b []byte) sniff.Result {
			r, _ := sniff.Postgres(b)
			return r
		})
		if err != nil {
			if !c.timedOut("handshake", err) {
				c.fail("pg_tls", "pg_tls: no SSLRequest", "error", err.Error())
			}
			return false, false
		}
		r, kind := sniff.Postgres(b)
		switch {
		case r != sniff.Match:
			c.fail("pg_tls", "pg_tls: no SSLRequest", "error",
				"first message is not an SSLRequest (is the client using sslmode=disable?)")
			return false, false
		case kind == sniff.PgDirectTLS:
			// sslnegotiation=direct: the ClientHello comes at once.
			return true, true
		case kind == sniff.PgCancel:
			c.forwardPgCancel(deadline)
			return false, false
		}
		reply := byte('S')
		if kind == sniff.PgGSSENC {
			reply = 'N'
		}
		if err := answerPg(c.top, deadline, reply); err != nil {
			if !c.timedOut("handshake", err) {
				c.fail("pg_tls", "pg_tls: startup failed", "error", err.Error())
			}
			return false, false
		}
		if reply == 'S' {
			return false, true
		}
	}
	c.fail("pg_tls", "pg_tls: no SSLRequest after GSSENCRequest")
	return false, false
}

// pgALPN is PostgreSQL's ALPN protocol name.
const pgALPN = "postgresql"

// pgDirectALPN refuses direct TLS without ALPN "postgresql", with alert
// no_application_protocol, as PostgreSQL 17 does. With no SSLRequest
// exchange, ALPN is all that shows the client means to speak PostgreSQL:
// without it, a TLS client of another protocol (a browser steered to the
// port by a cross-protocol attack) would have its bytes handed to the
// database.
func (c *conn) pgDirectALPN(hello sniff.HelloInfo) bool {
	if slices.Contains(hello.ALPN, pgALPN) {
		return true
	}
	c.s.metrics.TLSHandshakes.WithLabelValues("none", "failed").Inc()
	c.sendAlert(alertNoApplicationProtocol)
	c.code = perr.TLSHandshakeFailed
	c.fail("tls_error", "tls handshake refused", "code", string(c.code), "alert", alertNoApplicationProtocol,
		"error", "pg_tls: direct TLS without ALPN "+pgALPN, "alpn_offered", len(hello.ALPN))
	return false
}

// answerPg consumes the 8-byte request the peek saw and answers it.
func answerPg(c net.Conn, deadline time.Time, reply byte) error {
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	var msg [sniff.PgRequestLen]byte
	if _, err := io.ReadFull(c, msg[:]); err != nil {
		return err
	}
	if _, err := c.Write([]byte{reply}); err != nil {
		return err
	}
	return c.SetDeadline(time.Time{})
}

// forwardPgCancel passes a CancelRequest to the machines. It travels on
// its own plain connection (libpq before 17 never encrypts it) and names
// the backend only by process id and key, which the proxy cannot map to
// a machine without reading every session: every started machine of the
// port's apps gets it, and PostgreSQL ignores a key it does not know.
func (c *conn) forwardPgCancel(deadline time.Time) {
	var msg [sniff.PgCancelLen]byte
	if err := c.top.SetDeadline(deadline); err != nil {
		return
	}
	if _, err := io.ReadFull(c.top, msg[:]); err != nil {
		c.fail("pg_tls", "pg_tls: reading CancelRequest", "error", err.Error())
		return
	}
	ctx, cancel := context.WithDeadline(c.ctx, deadline)
	defer cancel()
	var wg sync.WaitGroup
	var sent atomic.Int32
	for _, e := range c.pr.Entries() {
		svc := e.Service
		for _, m := range svc.Machines {
			if !m.Started() {
				continue
			}
			wg.Go(func() {
				up, err := c.rt.Dialer.DialMachine(ctx, svc.App.Name, m, svc.InternalPort, c.client)
				if err != nil {
					return
				}
				defer up.Close()
				up.SetDeadline(deadline)
				if e.ProxyProto > 0 && c.sendProxyHeader(up, e.ProxyProto) != nil {
					return
				}
				if _, err := up.Write(msg[:]); err == nil {
					sent.Add(1)
				}
			})
		}
	}
	wg.Wait()
	c.setReason("pg_cancel")
	c.logger().Info("pg_tls: cancel request forwarded", "machines", int(sent.Load()), "peer", c.client.String())
}

// sendProxyHeader announces the client to the machine.
func (c *conn) sendProxyHeader(up net.Conn, version int) error {
	hdr, err := proxyproto.Header(version, net.TCPAddrFromAddrPort(c.client), net.TCPAddrFromAddrPort(c.local))
	if err != nil {
		return err
	}
	_, err = up.Write(hdr)
	return err
}
