package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/proxyproto"
	"github.com/edgeproxy/edgeproxy/internal/sniff"

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
			if n == 0 && pp.Mode == "optional" && isTimeout(err) {
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
	if isTimeout(err) {
		c.s.metrics.Timeouts.WithLabelValues("proxy_header").Inc()
	}
	c.fail("proxy_header", "inbound PROXY header refused", "reason", reason, "error", err.Error())
	return false
}

// sniffTLS peeks the ClientHello, bounded in bytes and time, so that
// garbage and slow clients are dropped before any TLS work.
func (c *conn) sniffTLS() bool {
	b, err := c.peek.Peek(c.handshakeDeadline(), func(b []byte) sniff.Result {
		r, _, _ := sniff.ClientHello(b)
		return r
	})
	if err != nil {
		if !c.timedOut("sniff", err) {
			c.fail("sniff", "")
		}
		return false
	}
	if r, _, herr := sniff.ClientHello(b); r != sniff.Match {
		if !c.refuseUntrustedHeader(b) {
			c.fail("not_tls", "client did not send a TLS ClientHello", "error", errString(herr))
		}
		return false
	}
	return true
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
		if c.refuseUntrustedHeader(b) {
			return false
		}
		c.top.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(c.top, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"+
			"Edgeproxy-Error-Code: "+string(perr.MalformedRequest)+"\r\nContent-Length: 40\r\n\r\n"+
			string(perr.MalformedRequest)+": malformed HTTP request from client\n")
		c.fail("not_http", "")
		return false
	}
	return true
}

// terminateTLS runs the handshake, choosing app and certificate from the
// server name, and returns the app service or nil (refused; an unknown
// name or a name without certificate ends with an alert, not a hang).
func (c *conn) terminateTLS() *catalog.Port {
	tc := tls.Server(c.top, c.rt.baseTLS(c.pr, c.s.ticketKeys))
	ctx, cancel := context.WithDeadline(context.Background(), c.handshakeDeadline())
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
	return c.pr.Lookup(st.ServerName)
}

// pgSSLRequest answers PostgreSQL's SSLRequest on a pg_tls port.
func (c *conn) pgSSLRequest() bool {
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
			return false
		}
		r, kind := sniff.Postgres(b)
		switch {
		case r != sniff.Match:
			c.fail("pg_tls", "pg_tls: no SSLRequest", "error",
				"first message is not an SSLRequest (is the client using sslmode=disable?)")
			return false
		case kind == sniff.PgDirectTLS:
			// sslnegotiation=direct: the ClientHello comes at once.
			return true
		case kind == sniff.PgCancel:
			c.forwardPgCancel(deadline)
			return false
		}
		reply := byte('S')
		if kind == sniff.PgGSSENC {
			reply = 'N'
		}
		if err := answerPg(c.top, deadline, reply); err != nil {
			if !c.timedOut("handshake", err) {
				c.fail("pg_tls", "pg_tls: startup failed", "error", err.Error())
			}
			return false
		}
		if reply == 'S' {
			return true
		}
	}
	c.fail("pg_tls", "pg_tls: no SSLRequest after GSSENCRequest")
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
		for _, m := range svc.App.Machines {
			if !m.Started() {
				continue
			}
			wg.Go(func() {
				up, err := c.rt.Dialer.Dial(ctx, svc.App.Name, m.Region, m.AddrFor(svc.InternalPort))
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
