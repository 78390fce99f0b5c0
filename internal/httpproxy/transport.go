package httpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/proxyproto"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// Pools holds the machine connections shared by all client connections:
// HTTP/1.1 with keep-alive (the proxy's own client, upstream_h1.go), and
// h2c with prior knowledge for services with http_options.h2_backend.
type Pools struct {
	h1   *h1Pool
	h2c  *h2cClient
	opts PoolOptions
}

// PoolOptions tunes the shared pools.
type PoolOptions struct {
	ResponseHeaderTimeout time.Duration
	MaxIdlePerMachine     int
	IdleConnTimeout       time.Duration
}

// machineClient sends one request to a machine and reads the head of its
// answer.
type machineClient interface {
	roundTrip(x *Exchange, addr netip.AddrPort, out []byte, body io.Reader, length int64) (*upResponse, error)
	closeIdle()
}

// upResponse is a machine's answer as the core reads it.
type upResponse struct {
	Status int
	// Head holds the fields; its bytes are valid until headDone.
	Head *h1.Head
	// Body is nil when none follows; Length is -1 when unknown.
	Body   io.Reader
	Length int64
	// keep: the machine keeps the connection for another request.
	keep bool
	// chunked, if set, holds the trailers once Body ended.
	chunked *h1.ChunkedReader
	// trailerFn, if set, returns trailer lines once Body ended (h2c).
	trailerFn func() []byte
	// tunnel is the machine's side of a 101.
	tunnel net.Conn
	src    upSource
}

// upSource is the connection a response came on.
type upSource interface {
	headDone()
	release(clean bool)
}

// trailers returns the trailer field lines, once the body ended.
func (r *upResponse) trailers() []byte {
	switch {
	case r.chunked != nil:
		return r.chunked.Trailers()
	case r.trailerFn != nil:
		return r.trailerFn()
	}
	return nil
}

type transportKey struct {
	h2c   bool
	proxy int // PROXY header version, 0 for none
}

// NewPools makes the shared pools.
func NewPools(o PoolOptions) *Pools {
	if o.MaxIdlePerMachine == 0 {
		o.MaxIdlePerMachine = 128
	}
	if o.IdleConnTimeout == 0 {
		o.IdleConnTimeout = 90 * time.Second
	}
	p := &Pools{opts: o}
	p.h1 = newH1Pool(p.dialer(nil), o)
	p.h2c = newH2CClient(p, nil)
	return p
}

// Close drops idle machine connections and stops pooling.
func (p *Pools) Close() {
	p.h1.shut()
	p.h2c.closeIdle()
}

// dialer connects to a machine for an exchange; header, when set, writes
// a PROXY header first.
func (p *Pools) dialer(header func(net.Conn) error) func(context.Context, *Exchange, netip.AddrPort) (net.Conn, error) {
	return func(ctx context.Context, x *Exchange, addr netip.AddrPort) (net.Conn, error) {
		var c net.Conn
		var err error
		if l := x.target.lease; l != nil && l.Addr == addr {
			c, err = x.env.Dialer.DialMachine(ctx, x.app(), l.Machine, l.Service().InternalPort, x.Conn.Client)
		} else {
			c, err = x.env.Dialer.Dial(ctx, x.app(), "", addr)
		}
		if err != nil {
			return nil, err
		}
		if w := x.env.WrapUpstream; w != nil {
			c = w(c)
		}
		if header != nil {
			if err := header(c); err != nil {
				c.Close()
				return nil, upstream.ClassifyDial(err)
			}
		}
		return c, nil
	}
}

// client returns what sends a request on conn c to port cp.
func (p *Pools) client(c *Conn, cp *catalog.Port) machineClient {
	if cp.ProxyProto == 0 {
		if cp.HTTP.H2Backend {
			return p.h2c
		}
		return p.h1
	}
	// A PROXY header names one client, so such machine connections are
	// not shared between client connections.
	key := transportKey{h2c: cp.HTTP.H2Backend, proxy: cp.ProxyProto}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.own[key]; t != nil {
		return t
	}
	client := net.TCPAddrFromAddrPort(c.Client)
	header := func(up net.Conn) error {
		hdr, err := proxyproto.Header(key.proxy, client, net.TCPAddrFromAddrPort(c.Local))
		if err != nil {
			return err
		}
		_, err = up.Write(hdr)
		return err
	}
	var t machineClient
	if key.h2c {
		t = newH2CClient(p, header)
	} else {
		t = newH1Pool(p.dialer(header), p.opts)
	}
	if c.own == nil {
		c.own = map[transportKey]machineClient{}
	}
	c.own[key] = t
	return t
}

// classify codes a failed attempt and decides whether another machine
// may be tried: only when no response byte arrived, the body can be sent
// again from its start, and either nothing reached an app (a failed
// connect) or sending twice is safe (an idempotent method, or a body the
// proxy holds whole).
func classify(err error, x *Exchange) error {
	body := x.body
	pe, ok := perr.As(err)
	if !ok {
		switch {
		case errors.Is(err, context.Canceled):
			return perr.New(perr.ClientClosed, err)
		case iox.IsTimeout(err):
			// The machine had the request and said nothing: it may be
			// working on it, so it is never sent elsewhere.
			return perr.New(perr.ResponseTimeout, err)
		case errors.Is(err, errStaleAttempt), errors.Is(err, errNotReplayable):
			return perr.New(perr.InternalError, err)
		}
		// EOF, a reset, a closed connection: the machine ended it before
		// any response byte.
		pe = perr.New(perr.InstanceClosed, err)
		if body != nil && body.failed.Load() {
			return pe
		}
		if idempotent(x.Req) || body == nil || body.Fill(x.Body.Length) {
			pe.Retryable = true
		}
	}
	if pe.Retryable && body != nil && !body.Replayable() {
		c := *pe
		c.Retryable = false
		return &c
	}
	return pe
}

// idempotent reports whether sending the request twice has the effect of
// sending it once (RFC 9110 section 9.2.2), or the client said so with an
// idempotency key, as net/http's own retry rule does.
func idempotent(h *h1.Head) bool {
	switch string(h.Bytes(h.Method)) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return h.Has("Idempotency-Key") || h.Has("X-Idempotency-Key")
}
