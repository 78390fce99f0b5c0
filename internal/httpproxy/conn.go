// Package httpproxy owns the HTTP stage of the data path: it routes each
// request by Host (or the TLS server name), redirects to https where the
// port asks for it, picks a machine, forwards the request over a pooled
// HTTP/1.1 connection or h2c, rewrites the platform's forwarding headers
// and turns every failure a client can see into a response carrying a
// stable error code.
//
// Front ends (HTTP/1.1 of our own, HTTP/2 on net/http's server) parse each
// request into an Exchange carrying the connection's *Conn, and the
// forwarding core (core.go) serves it; one Handler serves every port and
// every runtime.
package httpproxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/route"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
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
	// Metrics and AccessLog record each request; either may be nil.
	Metrics   *telemetry.Metrics
	AccessLog *slog.Logger
	// Tracing traces requests (nil: off).
	Tracing *telemetry.Tracing
	// BodyTimeout and BodyMinBytes cut requests whose client stalls
	// (stall.go): fewer than BodyMinBytes moved while a read or write
	// waited on the client across a BodyTimeout. 0: never.
	BodyTimeout  time.Duration
	BodyMinBytes int64
	// CompressMinSize is the smallest body of known length that
	// http_options.compress compresses; CompressLimit bounds the
	// responses being compressed at once (0: no bound).
	CompressMinSize int64
	CompressLimit   int64
	// Catalog is the runtime's apps, for fly-replay's app=.
	Catalog *catalog.Snapshot
	// Relay sends requests for machines other nodes run to their worker
	// (nil: every machine is reached from here).
	Relay Relayer
	// Challenge answers an ACME HTTP-01 validation (host, path) with the
	// key authorization, or reports it is none (nil: no ACME).
	Challenge func(ctx context.Context, host, path string) ([]byte, bool)
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
	// SNIEntry is the app service the TLS server name chose, if any, and
	// SNI that name.
	SNIEntry *catalog.Port
	SNI      string
	// CertCovers, if set, reports whether the certificate the TLS
	// handshake served is valid for a host name. Unset, no other app's
	// Host is served on the connection (see misdirected).
	CertCovers func(host string) bool
	// Current, if set, returns the current runtime's Env and this port's
	// routes (nil when a reload removed the port), so each request uses
	// the config in force when it arrives.
	Current func() (*Env, *route.Port)
	// AdmitApp charges the connection to an app's connection limit, for
	// connections whose app is known only from a request's Host.
	AdmitApp func(app string) error
	// AbortOnClose cancels in-flight requests when the client half-closes.
	AbortOnClose bool
	// Relay, if set, marks a connection from an edge over the backhaul:
	// its requests name their machine (relay.go).
	Relay *Relay
	// Refused, if set, is told of a request refused before the core saw
	// it (a malformed head), with its code.
	Refused func(code perr.Code, reason string)
	// RequestDone, if set, runs after each request (the server settles
	// the connection's byte counts into its app's totals there).
	RequestDone func(app string)
	// WebSocket, if set, runs when the connection becomes a WebSocket
	// tunnel (a 101 response to an Upgrade: websocket request).
	WebSocket func()
	// Switched, if set, runs on any 101 response: the client's bytes are
	// a tunnel's from then on, no longer requests.
	Switched func()

	// ip and port are the client's address and the public port as header
	// values, rendered once per connection (see clientIP).
	ipOnce   sync.Once
	ip, port string

	mu sync.Mutex
	// pin is the machine a client connection holds for services whose
	// concurrency counts connections: its requests go there while it
	// stays reachable, and it counts once against that machine.
	pin *upstream.Lease
	// own holds upstream transports private to this client connection,
	// for ports that send a PROXY header naming the client.
	own map[transportKey]machineClient
}

type connKey struct{}

// clientIP is the client's IP as Fly-Client-IP writes it.
func (c *Conn) clientIP() string {
	c.ipOnce.Do(c.render)
	return c.ip
}

// publicPort is the public port as Fly-Forwarded-Port writes it.
func (c *Conn) publicPort() string {
	c.ipOnce.Do(c.render)
	return c.port
}

func (c *Conn) render() {
	c.ip = c.Client.Addr().Unmap().String()
	c.port = strconv.Itoa(c.Port.Public)
}

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
		t.closeIdle()
	}
}

// pinned returns the lease held for svc, if any.
func (c *Conn) pinned(svc *catalog.Service) *upstream.Lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pin == nil {
		return nil
	}
	if c.pin.Service() == svc {
		if !svc.Usable(c.pin.Machine) {
			// Failing its checks: the connection moves to a healthy
			// machine at its next request.
			return nil
		}
		return c.pin
	}
	// After a reload the service is a new object. The pin stays if it is
	// the same service of the same app and its machine is still there,
	// started, at the same address: a reload must not reshuffle every
	// client connection (its load counter is carried over, so the unit it
	// holds is still counted).
	old := c.pin.Service()
	if old.App.Name != svc.App.Name || old.InternalPort != svc.InternalPort {
		return nil
	}
	for _, m := range svc.Machines {
		if m.ID == c.pin.Machine.ID {
			if svc.Usable(m) && m.AddrFor(svc.InternalPort) == c.pin.Addr {
				return c.pin
			}
			return nil
		}
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

// current returns the Env and routes a new request uses.
func (c *Conn) current() (*Env, *route.Port) {
	if c.Current != nil {
		// A relayed request's connection has no public port: it came over
		// the backhaul.
		if env, port := c.Current(); env != nil && (port != nil || c.Relay != nil) {
			return env, port
		}
	}
	return c.Env, c.Port
}

// route finds the app service for a request: by Host on a shared port,
// falling back to the TLS server name.
func (c *Conn) route(port *route.Port, host string) *catalog.Port {
	if cp := port.Lookup(host); cp != nil {
		return cp
	}
	if port == c.Port {
		return c.SNIEntry
	}
	return port.Lookup(c.SNI)
}

// misdirected reports whether a request for host, routed to entry, must
// be answered 421 (RFC 9110 section 15.5.20): it came over TLS, and the
// handshake was made for another app, whose certificate and tls_options
// (versions, ALPN) it used. Serving it would let a client pass the Host's
// app's TLS policy by naming a laxer app in SNI, and reach a host that the
// certificate served does not cover. Only when the certificate covers host
// and both apps' tls_options are identical could the connection have been
// the Host's app's own (HTTP/2 clients reuse one connection for every name
// of a certificate), and then it is served.
func (c *Conn) misdirected(port *route.Port, host string, entry *catalog.Port) bool {
	if !c.TLS {
		return false
	}
	own := c.SNIEntry
	if port != c.Port {
		// After a reload: the app the server name chooses now.
		own = port.Lookup(c.SNI)
	}
	if entry == own {
		return false
	}
	if own == nil || !sameTLS(own.TLS, entry.TLS) || c.CertCovers == nil {
		return true
	}
	name := route.NormalizeHost(host)
	return name == "" || !c.CertCovers(name)
}

// sameTLS reports whether two ports' TLS settings would make the same
// handshake.
func sameTLS(a, b catalog.TLSOptions) bool {
	return a.MinVersion == b.MinVersion && a.MaxVersion == b.MaxVersion &&
		a.DefaultSelfSigned == b.DefaultSelfSigned && slices.Equal(a.ALPN, b.ALPN)
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
