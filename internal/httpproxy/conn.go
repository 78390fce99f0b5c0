// Package httpproxy owns the HTTP stage of the data path: it routes each
// request by Host (or the TLS server name), redirects to https where the
// port asks for it, picks a machine, forwards the request over a pooled
// HTTP/1.1 connection or h2c, rewrites the platform's forwarding headers
// and turns every failure a client can see into a response carrying a
// stable error code.
//
// The server hands each client connection to net/http with a *Conn in its
// context; everything a request needs is reached from there, so one
// Handler serves every port and every runtime.
package httpproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/route"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// Env is what one runtime (one loaded config) gives the handler.
type Env struct {
	Region string
	// HTTPSPort is the local port public port 443 listens on, for
	// force_https redirects (0 or 443 means the default port).
	HTTPSPort int
	Dialer    *upstream.Dialer
	Log       *slog.Logger
	// Pools are shared by every runtime so upstream connections survive
	// reloads.
	Pools *Pools
	// WrapUpstream, if set, wraps each new upstream connection (the
	// server puts its progress guard there).
	WrapUpstream func(net.Conn) net.Conn
}

// Conn describes the client connection requests arrive on.
type Conn struct {
	ID     uint64
	Env    *Env
	Port   *route.Port
	Client netip.AddrPort
	// Local is the address the client connected to, with the public port
	// (not a port_map'd local one): the destination a PROXY header names.
	Local netip.AddrPort
	TLS   bool
	// SNIEntry is the app service the TLS server name chose, if any.
	SNIEntry *catalog.Port
	// AdmitApp charges the connection to an app's connection limit, for
	// connections whose app is known only from a request's Host.
	AdmitApp func(app string) error
	// AbortOnClose cancels in-flight requests when the client half-closes.
	AbortOnClose bool

	mu sync.Mutex
	// pin is the machine a client connection holds for services whose
	// concurrency counts connections: its requests go there while it
	// stays reachable, and it counts once against that machine.
	pin *upstream.Lease
	// own holds upstream transports private to this client connection,
	// for ports that send a PROXY header naming the client.
	own map[transportKey]*http.Transport

	// inflight counts requests being served; idle is closed when it drops
	// to zero while someone waits (see Idle). bodies counts those whose
	// request body has not been read to its end.
	inflight int
	bodies   int
	idle     chan struct{}
}

// bodyDone marks a request body read to its end (or abandoned).
func (c *Conn) bodyDone() {
	c.mu.Lock()
	c.bodies--
	c.mu.Unlock()
}

// pendingBody wraps a request body to note when it has been read to its
// end, so that a client's end of stream is held back only once its
// requests are complete.
type pendingBody struct {
	io.ReadCloser
	c    *Conn
	once sync.Once
	// failed records a read error other than the body's normal end: the
	// client cut the body short, which is its error, not the machine's.
	failed *atomic.Bool
}

func (b *pendingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		if err != io.EOF {
			b.failed.Store(true)
		}
		b.once.Do(b.c.bodyDone)
	}
	return n, err
}

func (b *pendingBody) Close() error {
	b.once.Do(b.c.bodyDone)
	return b.ReadCloser.Close()
}

// begin and end bracket a request; begin also starts tracking its body.
func (c *Conn) begin(r *http.Request, bodyFailed *atomic.Bool) {
	c.mu.Lock()
	c.inflight++
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if hasBody {
		c.bodies++
	}
	c.mu.Unlock()
	if hasBody {
		r.Body = &pendingBody{ReadCloser: r.Body, c: c, failed: bodyFailed}
	}
}

func (c *Conn) end() {
	c.mu.Lock()
	c.inflight--
	if c.inflight == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
	c.mu.Unlock()
}

// Idle returns nil when no request is in flight, else a channel closed
// when the last one ends. The server uses it to hold back a client's
// half-close until its responses are written. A request whose body is
// still being read is not complete: the end of stream is that body's
// truncation and must reach it, so Idle returns nil then too.
func (c *Conn) Idle() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight == 0 || c.bodies > 0 {
		return nil
	}
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	return c.idle
}

type connKey struct{}

// WithConn puts c in ctx; the server's ConnContext calls it.
func WithConn(ctx context.Context, c *Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// ConnFrom returns the Conn of a request's context, or nil.
func ConnFrom(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// Close releases what the connection holds: its pinned machine and any
// private upstream connections. The server calls it once the client
// connection is closed.
func (c *Conn) Close() {
	c.mu.Lock()
	pin, own := c.pin, c.own
	c.pin, c.own = nil, nil
	c.mu.Unlock()
	pin.Release()
	for _, t := range own {
		t.CloseIdleConnections()
	}
}

// pinned returns the lease held for svc, if any.
func (c *Conn) pinned(svc *catalog.Service) *upstream.Lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pin != nil && c.pin.Service() == svc {
		return c.pin
	}
	return nil
}

// setPin makes l the connection's machine, releasing any previous one.
func (c *Conn) setPin(l *upstream.Lease) {
	c.mu.Lock()
	old := c.pin
	c.pin = l
	c.mu.Unlock()
	if old != l {
		old.Release()
	}
}

// unpin drops l if it is still the pinned lease.
func (c *Conn) unpin(l *upstream.Lease) {
	c.mu.Lock()
	if c.pin == l {
		c.pin = nil
	}
	c.mu.Unlock()
	l.Release()
}

// route finds the app service for a request: by Host on a shared port,
// falling back to the TLS server name.
func (c *Conn) route(host string) *catalog.Port {
	if cp := c.Port.Lookup(host); cp != nil {
		return cp
	}
	return c.SNIEntry
}

// IdleTimeout is the keep-alive idle limit for a port: the first
// http_options.idle_timeout among its apps, else def. net/http has one
// idle limit per server, and the server runs one per port.
func IdleTimeout(p *route.Port, def time.Duration) time.Duration {
	for _, e := range p.Entries() {
		if e.HTTP.IdleTimeout > 0 {
			return e.HTTP.IdleTimeout
		}
	}
	return def
}
