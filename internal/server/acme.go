package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/caddyserver/certmagic"

	"github.com/edgeproxy/edgeproxy/internal/acme"
	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

// newACME makes the node's ACME manager from [acme] (nil without one).
// It manages no name until startACME, once the ports it answers
// challenges on are bound.
func newACME(s *Server, cfg *config.Config) (*acme.Manager, error) {
	a := cfg.ACME
	if a == nil {
		return nil, nil
	}
	var roots *x509.CertPool
	if a.TrustedRootsFile != "" {
		pem, err := os.ReadFile(cfg.Resolve(a.TrustedRootsFile))
		if err != nil {
			return nil, fmt.Errorf("acme.trusted_roots_file: %w", err)
		}
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme.trusted_roots_file: no PEM certificate in %s", a.TrustedRootsFile)
		}
	}
	var storage certmagic.Storage = &certmagic.FileStorage{Path: cfg.Resolve(a.StorageDir)}
	if f := cfg.Fleet; f != nil {
		// One node orders a name and every node serves it: the fleet's
		// JetStream holds the files and its leases are the locks.
		storage = &fleet.CertStorage{Holder: f.Node, Fleet: func() *fleet.Store {
			if n := s.fleet.Load(); n != nil {
				return n.store
			}
			return nil
		}}
	}
	return acme.New(acme.Options{
		Email:      a.Email,
		Directory:  a.Directory,
		Roots:      roots,
		TLSALPN:    a.ACMEChallenge(config.ChallengeTLSALPN),
		HTTP:       a.ACMEChallenge(config.ChallengeHTTP),
		ListenHost: cfg.Proxy.Bind,
		Storage:    storage,
		Log:        s.log,
		RenewCheck: a.RenewCheckInterval.D(),
		Result: func(kind, result string) {
			s.metrics.ACMEOrders.WithLabelValues(kind, result).Inc()
		},
	}), nil
}

// startACME tells the manager where challenges arrive (public ports 443
// and 80, as bound) and starts managing the runtime's names.
func (s *Server) startACME(rt *Runtime) {
	if s.acme == nil {
		return
	}
	port := func(public int) int {
		if a, ok := s.Addr(public).(*net.TCPAddr); ok {
			return a.Port
		}
		return 0
	}
	tlsPort, httpPort := 0, 0
	if pr := rt.Routes.Port(443); pr != nil && pr.Handlers.TLS {
		tlsPort = port(443)
	}
	if pr := rt.Routes.Port(80); pr != nil && pr.Handlers.HTTP {
		httpPort = port(80)
	}
	tlsALPN, http := s.acme.SetPorts(tlsPort, httpPort)
	s.acmeStarted.Store(true)
	if !tlsALPN && !http {
		s.log.Error("acme: no challenge can be answered: it takes port 443 with the tls handler (tls-alpn-01) or port 80 with the http handler (http-01), as the challenges list allows",
			"code", string(perr.CertificateNotIssued))
	}
	s.manageCerts(rt)
}

// manageCerts gives the manager the runtime's names.
func (s *Server) manageCerts(rt *Runtime) {
	if s.acme == nil || !s.acmeStarted.Load() {
		return
	}
	names := acmeNames(rt.Snap, rt.Certs)
	if err := s.acme.Manage(names); err != nil {
		s.log.Error("acme: cannot manage the apps' names", "error", err.Error())
	}
}

// acmeNames are the names ACME obtains certificates for: the hostnames of
// apps with a tls or pg_tls port, less those a [[certificates]] file
// covers (files win) and wildcards (they take DNS-01; validation refuses
// a config that leaves one without a file).
func acmeNames(snap *catalog.Snapshot, files *tlsterm.Store) []string {
	var names []string
	for _, app := range snap.Apps {
		if !servesTLS(app) {
			continue
		}
		for _, h := range app.Hostnames {
			if strings.HasPrefix(h, "*.") || files.Lookup(h) != nil {
				continue
			}
			names = append(names, strings.ToLower(h))
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func servesTLS(app *catalog.App) bool {
	for _, svc := range app.Services {
		for _, p := range svc.Ports {
			if p.Handlers.TLS || p.Handlers.PgTLS {
				return true
			}
		}
	}
	return false
}

// acmeConfig is the handshake config for entry's port serving the ACME
// certificate of name, or nil if there is none in hand (yet).
func (rt *Runtime) acmeConfig(name string, entry *catalog.Port) *tls.Config {
	a := rt.acme
	if a == nil || name == "" || !a.Has(name) {
		return nil
	}
	key := tlsKey{entry: entry, acme: name}
	if c, ok := rt.tlsConfigs.Load(key); ok {
		return c.(*tls.Config)
	}
	c := tlsterm.ServerConfig(nil, entry.TLS.ALPN, entry.TLS.MinVersion, entry.TLS.MaxVersion)
	// certmagic keeps the certificate current (renewals, OCSP staples):
	// each handshake asks it.
	c.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if hello.ServerName != name {
			h := *hello
			h.ServerName = name
			hello = &h
		}
		return a.GetCertificate(hello)
	}
	rt.tickets.Apply(c)
	actual, _ := rt.tlsConfigs.LoadOrStore(key, c)
	return actual.(*tls.Config)
}

// acmeChallenge is the config for a TLS-ALPN-01 validation of one of the
// managed names, or nil if hello is none.
func (rt *Runtime) acmeChallenge(hello *tls.ClientHelloInfo) *tls.Config {
	if rt.acme == nil || !acme.IsChallenge(hello) || !rt.acme.Manages(strings.ToLower(hello.ServerName)) {
		return nil
	}
	return rt.acme.ChallengeConfig()
}

// httpChallenge answers HTTP-01 validations on plain HTTP ports.
func httpChallenge(a *acme.Manager) func(ctx context.Context, host, path string) ([]byte, bool) {
	if a == nil {
		return nil
	}
	return a.HTTPChallenge
}

// certStats lists the certificates for the metrics: the files' of the
// runtime in force, and ACME's.
func (s *Server) certStats() []telemetry.CertStat {
	var out []telemetry.CertStat
	files := s.runtime().Certs
	for _, n := range files.Names() {
		if c := files.Lookup(n); c != nil && c.Leaf != nil {
			out = append(out, telemetry.CertStat{Name: n, Source: "file", NotAfter: c.Leaf.NotAfter})
		}
	}
	if s.acme != nil {
		for n, exp := range s.acme.Certificates() {
			out = append(out, telemetry.CertStat{Name: n, Source: "acme", NotAfter: exp})
		}
	}
	return out
}
