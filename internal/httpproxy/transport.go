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
	// bodiless carries the requests fastPath admits on the h1 pool's
	// machines (h1client.go).
	bodiless *h1Client
	opts     PoolOptions
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
	p.bodiless = &h1Client{
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return p.dial(ctx, addr, nil)
		},
		maxIdle:       o.MaxIdlePerMachine,
		idleTimeout:   o.IdleConnTimeout,
		headerTimeout: o.ResponseHeaderTimeout,
	}
	return p
}

// Close drops idle upstream connections.
func (p *Pools) Close() {
	p.h1.CloseIdleConnections()
	p.h2c.CloseIdleConnections()
	p.bodiless.Close()
}

// newTransport builds a transport; header, when set, writes a PROXY
// header on each new upstream connection.
func (p *Pools) newTransport(h2c bool, header func(net.Conn) error) *http.Transport {
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return p.dial(ctx, addr, header)
		},
		// The proxy passes the client's Accept-Encoding through untouched;
		// asking for gzip itself would change what the app sends.
		DisableCompression:     true,
		MaxIdleConnsPerHost:    p.opts.MaxIdlePerMachine,
		IdleConnTimeout:        p.opts.IdleConnTimeout,
		ResponseHeaderTimeout:  p.opts.ResponseHeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		WriteBufferSize:        32 << 10,
		ReadBufferSize:         32 << 10,
		MaxResponseHeaderBytes: maxResponseHeader,
	}
	t.Protocols = new(http.Protocols)
	if h2c {
		t.Protocols.SetUnencryptedHTTP2(true)
	} else {
		t.Protocols.SetHTTP1(true)
	}
	return t
}

// dial connects to a machine for the request whose state ctx carries;
// header, when set, writes a PROXY header first.
func (p *Pools) dial(ctx context.Context, addr string, header func(net.Conn) error) (net.Conn, error) {
	st := stateFrom(ctx)
	ap, err := netip.ParseAddrPort(addr)
	if st == nil || err != nil {
		return nil, perr.New(perr.InternalError, fmt.Errorf("upstream dial without request state to %q", addr))
	}
	region := ""
	if l := st.lease; l != nil && l.Addr == ap {
		region = l.Machine.Region
	}
	c, err := st.env.Dialer.Dial(ctx, st.entry.Service.App.Name, region, ap)
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
}

// roundTripper returns what sends req to port cp for conn c: the
// bodiless client where it can, else the port's transport.
func (p *Pools) roundTripper(c *Conn, cp *catalog.Port, req *http.Request) http.RoundTripper {
	t := p.transport(c, cp)
	if t == p.h1 && fastPath(req) {
		return p.bodiless
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

// roundTripper sends a request to a machine of the routed service: it
// applies the routing headers, retries on another machine while that is
// safe, and follows fly-replay instructions (replay.go).
type roundTripper struct{ pools *Pools }

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateFrom(req.Context())
	want := &st.want
	if err := routingWant(req.Header, want); err != nil {
		return nil, err
	}
	want.Explain = st.entry.HTTP.DebugRouting
	return rt.serve(req, st, want)
}

// forward sends req to a machine of entry's service chosen as want says,
// trying others while the failure allows it. acquire bounds the wait for
// a machine and the attempts (a replay's timeout); the request itself runs
// under its own context.
func (rt roundTripper) forward(acquire context.Context, req *http.Request, st *reqState, entry *catalog.Port, want *upstream.Want) (*http.Response, error) {
	svc := entry.Service
	t := rt.pools.roundTripper(st.conn, entry, req)
	app := svc.App.Name
	var lastCode perr.Code
	w := *want
	hasBody := st.body != nil && req.Body != nil
	send := func(l *upstream.Lease) (*http.Response, error) {
		// req is the reverse proxy's own copy for the machine: each
		// attempt points it at its machine and restarts its body, rather
		// than copying the whole request per attempt.
		req.URL.Host = l.Addr.String()
		if hasBody {
			req.Body = st.body.Attempt()
			// The transport may resend on a pooled connection that died
			// before use; give it the same replayable body.
			req.GetBody = st.getBody
		}
		if lastCode != "" && st.env.Metrics != nil {
			st.env.Metrics.RequestRetries.WithLabelValues(app, string(lastCode)).Inc()
		}
		st.lease = l
		if w.Instance != "" && !w.ForceInstance {
			// The machine learns it was not the one the client asked for.
			if l.Machine.ID != w.Instance {
				req.Header.Set(hdrPreferredGone, w.Instance)
			} else {
				req.Header.Del(hdrPreferredGone)
			}
		}
		start := time.Now()
		resp, err := t.RoundTrip(req)
		if err != nil {
			err = classify(err, req, st.body)
			if pe, ok := perr.As(err); ok {
				lastCode = pe.Code
			}
			return nil, err
		}
		// Time to the response header: what p2c-latency weighs machines by.
		l.Load().ObserveLatency(time.Since(start))
		return resp, nil
	}
	plain := want.Instance == "" && len(want.Regions) == 0 && len(want.Exclude) == 0
	pinning := svc.Unit == catalog.Connections && plain
	if pinning {
		if pin := st.conn.pinned(svc); pin != nil {
			resp, err := send(pin)
			if err == nil {
				st.pinned = true
				return resp, nil
			}
			if pe, ok := perr.As(err); !ok || !pe.Retryable {
				return nil, err
			}
			st.conn.unpin(pin)
			w.Exclude = append(w.Exclude, pin.Machine)
			w.Attempted++
		}
	}
	resp, lease, err := upstream.Retry(acquire, st.env.Dialer, svc, &w, send)
	if err != nil {
		return nil, err
	}
	if pinning {
		st.conn.setPin(lease)
		return resp, nil
	}
	// Work routed by headers or replays holds its machine for the request
	// only: the connection's pin stays where the balancer put it.
	resp.Body = &releasingBody{ReadCloser: resp.Body, lease: lease}
	return resp, nil
}

// getBody restarts the request body for the transport's own retry.
func (st *reqState) getBody() (io.ReadCloser, error) {
	if !st.body.Replayable() {
		return nil, errNotReplayable
	}
	return st.body.Attempt(), nil
}

// classify codes a transport error and decides whether another machine
// may be tried: only when no response byte arrived, the body can be sent
// again from its start, and either nothing reached an app (a failed
// connect) or sending twice is safe (an idempotent method, or a body the
// proxy holds whole).
func classify(err error, req *http.Request, body *replayBody) error {
	pe, ok := perr.As(err)
	if !ok {
		var ne net.Error
		switch {
		case errors.Is(err, context.Canceled):
			return perr.New(perr.ClientClosed, err)
		case errors.As(err, &ne) && ne.Timeout():
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
		if idempotent(req) || body == nil || body.Fill(req.ContentLength) {
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

// idempotent reports whether sending req twice has the effect of sending
// it once (RFC 9110 section 9.2.2), or the client said so with an
// idempotency key, as net/http's own retry rule does.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
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
