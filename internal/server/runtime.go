package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/acme"
	"github.com/edgeproxy/edgeproxy/internal/backhaul"
	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/httpproxy"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/route"
	"github.com/edgeproxy/edgeproxy/internal/rtt"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
	"github.com/edgeproxy/edgeproxy/internal/upstream"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// endSpan ends a span, marking it failed when err is not nil.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Runtime is everything built from one loaded config. It is immutable:
// a connection keeps the runtime it started with until it ends.
type Runtime struct {
	Config *config.Config
	Snap   *catalog.Snapshot
	Routes *route.Table
	Certs  *tlsterm.Store
	Dialer *upstream.Dialer
	Env    *httpproxy.Env
	// RTT orders regions from this edge; measurements carry across reloads.
	RTT *rtt.Table
	// observeRTT takes a connect time to a region's machine: a TCP
	// connect is one round trip, from traffic and health checks alike.
	observeRTT func(region string, took time.Duration)
	// changed names the apps this runtime rebuilt from the one it
	// replaced, when that was all that differed (nil: anything may have).
	changed map[string]bool

	guardLimits  iox.GuardLimits
	proxyTrusted []netip.Prefix

	// identity is this node's fleet identity for the backhaul, read from
	// its files at every reload (nil: none).
	identity *backhaul.Identity
	// udpPorts maps each public UDP port to its service, built once per
	// runtime: every new flow looks its service up here.
	udpPorts map[int]*catalog.Service

	selfSigned *tlsterm.SelfSigner
	tickets    *tlsterm.Tickets
	acme       *acme.Manager
	tlsConfigs sync.Map // tlsKey -> *tls.Config
	baseTLSs   sync.Map // *route.Port -> *tls.Config
}

// Deps are what a runtime borrows from the long-lived server.
type Deps struct {
	Log        *slog.Logger
	Pools      *httpproxy.Pools
	SelfSigned *tlsterm.SelfSigner
	// Tickets are the node's session-ticket keys (nil: keys of this
	// runtime's own).
	Tickets *tlsterm.Tickets
	// ACME is the node's ACME manager (nil: no [acme]).
	ACME *acme.Manager
	// Intn breaks balancing ties; nil uses math/rand/v2.
	Intn func(int) int
	// GuardStats collects the progress guard's counters.
	GuardStats *iox.Stats
	// Metrics and AccessLog record traffic; either may be nil.
	Metrics   *telemetry.Metrics
	AccessLog *slog.Logger
	// Tracing traces connections and requests; nil means off.
	Tracing *telemetry.Tracing
	// Dial, if set, opens upstream TCP connections instead of a
	// net.Dialer (tests inject per-region round-trip times here).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Autostart and Current are the picker's, for apps whose machines a
	// driver starts (see upstream.Picker).
	Autostart func(ctx context.Context, svc *catalog.Service, want *upstream.Want, wait bool) (*catalog.Service, string, error)
	Current   func(svc *catalog.Service) *catalog.Service
	// Backhaul, Relay and Down reach the machines other nodes run (nil
	// without a fleet certificate).
	Backhaul upstream.Backhaul
	Relay    httpproxy.Relayer
	Down     func(*catalog.Machine) bool
}

// BuildRuntime turns a validated config into a runtime: catalog, routes,
// certificates and the upstream dialer. prev, if any, lends its load
// counters. Certificate problems come back as config problems with the
// certificate's key path.
func BuildRuntime(cfg *config.Config, prev *Runtime, d Deps) (*Runtime, error) {
	return buildRuntime(cfg, prev, d, nil)
}

// buildRuntime is BuildRuntime for a config that differs from prev's only
// in the apps named in changed (nil: anything may differ): certificates
// and the other apps' catalog entries are prev's, not read or built again.
func buildRuntime(cfg *config.Config, prev *Runtime, d Deps, changed map[string]bool) (*Runtime, error) {
	var certs *tlsterm.Store
	var prevSnap *catalog.Snapshot
	var prevRoutes *route.Table
	if prev != nil {
		prevSnap, prevRoutes = prev.Snap, prev.Routes
	}
	if changed != nil && prev != nil {
		certs = prev.Certs
	} else {
		specs := make([]tlsterm.CertSpec, len(cfg.Certificates))
		for i, c := range cfg.Certificates {
			specs[i] = tlsterm.CertSpec{CertFile: cfg.Resolve(c.CertFile), KeyFile: cfg.Resolve(c.KeyFile), Hostnames: c.Hostnames}
		}
		var err error
		if certs, err = tlsterm.Load(specs); err != nil {
			return nil, certProblems(cfg, err)
		}
	}
	snap, err := catalog.Rebuild(cfg, prevSnap, changed)
	if err != nil {
		return nil, err
	}
	var id *backhaul.Identity
	if f := cfg.Fleet; changed != nil && prev != nil {
		id = prev.identity
	} else if f.Backhaul() {
		if id, err = backhaul.LoadIdentity(cfg.Resolve(f.BackhaulCAFile), cfg.Resolve(f.BackhaulCertFile),
			cfg.Resolve(f.BackhaulKeyFile), f.Node); err != nil {
			return nil, &config.Error{Problems: []config.Problem{{File: cfg.File, Key: "fleet.backhaul_cert_file",
				Line: cfg.Line("fleet.backhaul_cert_file"), Msg: err.Error()}}}
		}
	}
	intn := d.Intn
	if intn == nil {
		intn = rand.IntN
	}
	p := cfg.Proxy
	rtts := rtt.New(p.Region, durations(p.RegionRTT), durations(p.RegionRTTFixed))
	if prev != nil {
		rtts.Carry(prev.RTT)
	}
	dialer := &upstream.Dialer{
		Picker: &upstream.Picker{Region: p.Region, Distance: rtts.Distance, Intn: intn, QueueTimeout: p.QueueTimeout.D(),
			Autostart: d.Autostart, Current: d.Current, Down: d.Down},
		Timeout:     p.ConnectTimeout.D(),
		Attempts:    p.ConnectAttempts,
		DialContext: upstreamDial(cfg, d.Dial),
		Backhaul:    d.Backhaul,
	}
	m := d.Metrics
	observeRTT := func(region string, took time.Duration) {
		// A TCP connect takes one round trip: the continuous
		// measurement of how far each region is.
		rtts.Observe(region, took)
		if m != nil && region != "" {
			if v, ok := rtts.RTT(region); ok {
				m.RegionRTT.WithLabelValues(region).Set(v.Seconds())
			}
		}
	}
	if m != nil {
		for _, e := range rtts.Regions() {
			m.RegionRTT.WithLabelValues(e.Region).Set(e.RTT.Seconds())
		}
	}
	dialer.Observe = func(app, region string, took time.Duration, err *perr.Error) {
		if err == nil {
			observeRTT(region, took)
		}
		if m == nil {
			return
		}
		m.UpstreamConnectDuration.WithLabelValues(app).Observe(took.Seconds())
		if err != nil {
			m.UpstreamConnectFailures.WithLabelValues(app, string(err.Code)).Inc()
		}
	}
	selfSigned := d.SelfSigned
	if selfSigned == nil {
		selfSigned = tlsterm.NewSelfSigner()
	}
	tickets := d.Tickets
	if tickets == nil {
		tickets = tlsterm.NewTickets(cfg.Proxy.SessionTicketRotation.D(), cfg.Proxy.SessionTicketLifetime.D(), nil)
	}
	limits := guardLimits(cfg)
	stats := d.GuardStats
	if stats == nil {
		stats = &iox.Stats{}
	}
	if tr := d.Tracing; tr != nil && tr.Enabled {
		dialer.Span = func(ctx context.Context, app string, addr netip.AddrPort) (context.Context, func(error)) {
			ctx, span := tr.Tracer.Start(ctx, "upstream connect", trace.WithSpanKind(trace.SpanKindClient),
				trace.WithAttributes(attribute.String("app", app), attribute.String("server.address", addr.String())))
			return ctx, func(err error) { endSpan(span, err) }
		}
	}
	env := &httpproxy.Env{Region: p.Region, HTTPSPort: p.LocalPort(443), Dialer: dialer, Log: d.Log, Pools: d.Pools,
		Metrics: d.Metrics, AccessLog: d.AccessLog, Tracing: d.Tracing, Catalog: snap, Relay: d.Relay,
		Challenge:   httpChallenge(d.ACME),
		BodyTimeout: p.BodyTimeout.D(), BodyMinBytes: int64(p.BodyMinBytes),
		CompressMinSize: int64(p.CompressMinSize), CompressLimit: int64(max(cfg.Limits.MaxCompressedResponses, 0)),
		WrapUpstream: func(c net.Conn) net.Conn {
			// Upstream connections are guarded too; a spin there is logged
			// by the guard with the chain and counted like any other.
			return iox.NewGuard(c, limits, stats, func(k iox.Kill) {
				d.Log.Error("spin detector killed an upstream connection", "layer", k.Layer, "reason", string(k.Reason),
					"machine", c.RemoteAddr().String(), "counters", k.Counts.String(), "chain", k.Chain)
			}).Wrap("upstream", c)
		}}
	return &Runtime{
		Config:       cfg,
		Snap:         snap,
		Routes:       route.Rebuild(prevRoutes, snap, changed),
		changed:      changed,
		Certs:        certs,
		Dialer:       dialer,
		Env:          env,
		RTT:          rtts,
		observeRTT:   observeRTT,
		guardLimits:  limits,
		proxyTrusted: cfg.ProxyProtocol.Prefixes(),
		selfSigned:   selfSigned,
		tickets:      tickets,
		acme:         d.ACME,
		identity:     id,
		udpPorts:     route.UDPPorts(snap),
	}, nil
}

func durations(m map[string]config.Duration) map[string]time.Duration {
	out := make(map[string]time.Duration, len(m))
	for k, v := range m {
		out[k] = v.D()
	}
	return out
}

func certProblems(cfg *config.Config, err error) error {
	var out []config.Problem
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var ce *tlsterm.CertError
		p := config.Problem{File: cfg.File, Key: "certificates", Msg: e.Error()}
		if errors.As(e, &ce) {
			p.Key = fmt.Sprintf("certificates[%d]", ce.Index)
			p.Msg = ce.Err.Error()
			p.Line = cfg.Line(p.Key)
		}
		out = append(out, p)
	}
	return &config.Error{Problems: out}
}

// baseTLS is the handshake config of a port: it chooses the app and its
// config per ClientHello. Session tickets are the node's (tlsterm.Tickets
// on each chosen config), so they resume across ports, runtimes and
// processes.
func (rt *Runtime) baseTLS(pr *route.Port) *tls.Config {
	if c, ok := rt.baseTLSs.Load(pr); ok {
		return c.(*tls.Config)
	}
	c := &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if c := rt.acmeChallenge(hello); c != nil {
				return c, nil
			}
			name := tlsterm.SNIHost(hello.ServerName)
			entry := pr.Lookup(name)
			if entry == nil {
				return refuseName(hello, perr.New(perr.UnknownHost, fmt.Errorf("sni %q on port %d", hello.ServerName, pr.Public)))
			}
			cfg, err := rt.tlsConfig(name, entry)
			if pe, ok := perr.As(err); ok && pe.Code == perr.NoCertificate {
				return refuseName(hello, err)
			}
			return cfg, err
		},
	}
	actual, _ := rt.baseTLSs.LoadOrStore(pr, c)
	return actual.(*tls.Config)
}

type tlsKey struct {
	entry *catalog.Port
	cert  *tls.Certificate
	acme  string // the name an ACME certificate serves
}

// tlsConfig chooses the certificate for a server name on an app's port and
// returns the handshake config, cached per (port entry, certificate) so a
// handshake does not rebuild it.
func (rt *Runtime) tlsConfig(sni string, entry *catalog.Port) (*tls.Config, error) {
	// A file's certificate first, then ACME's, then self-signed.
	cert := rt.Certs.Lookup(sni)
	if cert == nil {
		if c := rt.acmeConfig(strings.ToLower(sni), entry); c != nil {
			return c, nil
		}
	}
	if cert == nil && sni == "" {
		// Clients that send no SNI (IP literals, old tools) get the
		// certificate of the app's first hostname that has one.
		for _, h := range entry.Service.App.Hostnames {
			if cert = rt.Certs.Lookup(h); cert != nil {
				break
			}
			if c := rt.acmeConfig(strings.ToLower(h), entry); c != nil {
				return c, nil
			}
		}
	}
	if cert == nil && entry.TLS.DefaultSelfSigned {
		c, err := rt.selfSigned.Get(sni)
		if err != nil {
			return nil, perr.New(perr.InternalError, err)
		}
		cert = c
	}
	if cert == nil {
		return nil, perr.New(perr.NoCertificate, fmt.Errorf("sni %q", sni))
	}
	key := tlsKey{entry: entry, cert: cert}
	if c, ok := rt.tlsConfigs.Load(key); ok {
		return c.(*tls.Config), nil
	}
	c := tlsterm.ServerConfig(cert, entry.TLS.ALPN, entry.TLS.MinVersion, entry.TLS.MaxVersion)
	rt.tickets.Apply(c)
	actual, _ := rt.tlsConfigs.LoadOrStore(key, c)
	return actual.(*tls.Config), nil
}

// guardLimits are the progress guard's limits from [guard].
func guardLimits(cfg *config.Config) iox.GuardLimits {
	g := cfg.Guard
	return iox.GuardLimits{ZeroProgressReads: g.ZeroProgressReads, ReadsAfterEOF: g.ReadsAfterEOF, MaxCallsPerSecond: g.MaxCallsPerSecond}
}

// upstreamDial opens connections to machines: dial (tests) if set, else
// from [proxy] upstream_bind when it is set (nil: a plain net.Dialer).
func upstreamDial(cfg *config.Config, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial != nil || cfg.Proxy.UpstreamBind == "" {
		return dial
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(cfg.Proxy.UpstreamBind)}}
	return d.DialContext
}
