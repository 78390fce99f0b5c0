package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/proxyproto"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// Pools holds the upstream HTTP transports shared by all client
// connections: HTTP/1.1 with keep-alive, and h2c with prior knowledge for
// services with http_options.h2_backend.
type Pools struct {
	h1, h2c *http.Transport
	opts    PoolOptions
}

// PoolOptions tunes the shared transports.
type PoolOptions struct {
	ResponseHeaderTimeout time.Duration
	MaxIdlePerMachine     int
	IdleConnTimeout       time.Duration
}

type transportKey struct {
	h2c   bool
	proxy int // PROXY header version, 0 for none
}

// NewPools makes the shared transports.
func NewPools(o PoolOptions) *Pools {
	if o.MaxIdlePerMachine == 0 {
		o.MaxIdlePerMachine = 128
	}
	if o.IdleConnTimeout == 0 {
		o.IdleConnTimeout = 90 * time.Second
	}
	p := &Pools{opts: o}
	p.h1 = p.newTransport(false, nil)
	p.h2c = p.newTransport(true, nil)
	return p
}

// Close drops idle upstream connections.
func (p *Pools) Close() {
	p.h1.CloseIdleConnections()
	p.h2c.CloseIdleConnections()
}

// newTransport builds a transport; header, when set, writes a PROXY
// header on each new upstream connection.
func (p *Pools) newTransport(h2c bool, header func(net.Conn) error) *http.Transport {
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			st := stateFrom(ctx)
			ap, err := netip.ParseAddrPort(addr)
			if st == nil || err != nil {
				return nil, perr.New(perr.InternalError, fmt.Errorf("upstream dial without request state to %q", addr))
			}
			c, err := st.env.Dialer.Dial(ctx, st.entry.Service.App.Name, ap)
			if err != nil {
				return nil, err
			}
			if w := st.env.WrapUpstream; w != nil {
				c = w(c)
			}
			if header != nil {
				if err := header(c); err != nil {
					c.Close()
					return nil, upstream.ClassifyDial(err)
				}
			}
			return c, nil
		},
		// The proxy passes the client's Accept-Encoding through untouched;
		// asking for gzip itself would change what the app sends.
		DisableCompression:    true,
		MaxIdleConnsPerHost:   p.opts.MaxIdlePerMachine,
		IdleConnTimeout:       p.opts.IdleConnTimeout,
		ResponseHeaderTimeout: p.opts.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	t.Protocols = new(http.Protocols)
	if h2c {
		t.Protocols.SetUnencryptedHTTP2(true)
	} else {
		t.Protocols.SetHTTP1(true)
	}
	return t
}

// transport returns the transport for a request on conn c to port cp.
func (p *Pools) transport(c *Conn, cp *catalog.Port) *http.Transport {
	if cp.ProxyProto == 0 {
		if cp.HTTP.H2Backend {
			return p.h2c
		}
		return p.h1
	}
	// A PROXY header names one client, so such upstream connections
	// cannot be shared between client connections.
	key := transportKey{h2c: cp.HTTP.H2Backend, proxy: cp.ProxyProto}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.own[key]; t != nil {
		return t
	}
	client := net.TCPAddrFromAddrPort(c.Client)
	t := p.newTransport(key.h2c, func(up net.Conn) error {
		hdr, err := proxyproto.Header(key.proxy, client, net.TCPAddrFromAddrPort(c.Local))
		if err != nil {
			return err
		}
		_, err = up.Write(hdr)
		return err
	})
	if c.own == nil {
		c.own = map[transportKey]*http.Transport{}
	}
	c.own[key] = t
	return t
}

// roundTripper sends a request to a machine of the routed service,
// retrying on another machine while nothing has reached an app.
type roundTripper struct{ pools *Pools }

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateFrom(req.Context())
	svc := st.entry.Service
	t := rt.pools.transport(st.conn, st.entry)
	send := func(l *upstream.Lease) (*http.Response, error) {
		out := *req
		u := *req.URL
		u.Host = l.Addr.String()
		out.URL = &u
		st.lease = l
		resp, err := t.RoundTrip(&out)
		if err != nil {
			return nil, classify(err, st.body)
		}
		return resp, nil
	}
	var failed []*catalog.Machine
	if svc.Unit == catalog.Connections {
		if pin := st.conn.pinned(svc); pin != nil {
			resp, err := send(pin)
			if err == nil {
				return resp, nil
			}
			if pe, ok := perr.As(err); !ok || !pe.Retryable {
				return nil, err
			}
			st.conn.unpin(pin)
			failed = append(failed, pin.Machine)
		}
	}
	resp, lease, err := upstream.Retry(req.Context(), st.env.Dialer, svc, failed, send)
	if err != nil {
		return nil, err
	}
	if svc.Unit == catalog.Connections {
		st.conn.setPin(lease)
		return resp, nil
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, lease: lease}
	return resp, nil
}

// classify codes a transport error. A failed dial is retryable only if the
// request body has not started to flow, since it could not be sent again.
func classify(err error, body *requestBody) error {
	if pe, ok := perr.As(err); ok {
		if pe.Retryable && body != nil && body.started.Load() {
			c := *pe
			c.Retryable = false
			return &c
		}
		return pe
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return perr.New(perr.ClientClosed, err)
	case errors.As(err, &ne) && ne.Timeout():
		return perr.New(perr.ResponseTimeout, err)
	default:
		// EOF, a reset, a closed connection: the machine ended it.
		return perr.New(perr.InstanceClosed, err)
	}
}

// releasingBody gives the machine's load unit back when the response
// (or upgraded connection) is finished.
type releasingBody struct {
	io.ReadCloser
	lease *upstream.Lease
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.lease.Release()
	return err
}

// Write passes through for upgraded (101) connections, whose body is the
// bidirectional stream.
func (b *releasingBody) Write(p []byte) (int, error) {
	if w, ok := b.ReadCloser.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, errors.New("response body is not writable")
}
