// Package acme obtains and renews certificates for app hostnames from an
// ACME CA, with certmagic doing the protocol, the storage layout and the
// renewal schedule, and edgeproxy's own listeners answering the
// challenges: TLS-ALPN-01 in the TLS front end's ClientHello handling,
// HTTP-01 in the HTTP core before routing to a machine.
//
// A Manager is one per node and outlives reloads; each runtime tells it
// the names to manage (Manage), and the TLS front end asks it for a
// name's certificate (Has, GetCertificate).
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// Options configure a Manager.
type Options struct {
	// Email is the account's contact; Directory the CA's directory URL.
	Email, Directory string
	// Roots, if set, are trusted for the CA's HTTPS besides the system's.
	Roots *x509.CertPool
	// TLSALPN and HTTP enable the challenge types.
	TLSALPN, HTTP bool
	// ListenHost, TLSPort and HTTPPort are where this node's tls and http
	// listeners are: certmagic would listen there for challenges if no
	// one did, and, finding them taken, leaves the answers to us.
	ListenHost        string
	TLSPort, HTTPPort int
	// Storage holds accounts, keys, certificates and locks (a directory,
	// or the fleet's NATS).
	Storage certmagic.Storage
	Log     *slog.Logger
	// RenewCheck is how often certificates are checked for renewal (0:
	// certmagic's default, 10 minutes); tests with short-lived
	// certificates shorten it.
	RenewCheck time.Duration
	// Result, if set, is told each issuance's or renewal's outcome: kind
	// "issue" or "renew", result "ok" or "error".
	Result func(kind, result string)
}

// Manager is a node's ACME certificates.
type Manager struct {
	opts   Options
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	log    *slog.Logger

	mu      sync.Mutex
	managed map[string]bool
	ctx     context.Context
	cancel  context.CancelFunc
}

// New starts a Manager. It manages no name until Manage.
func New(o Options) *Manager {
	m := &Manager{opts: o, log: o.Log, managed: map[string]bool{}}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	zl := zapLogger(m.log)
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: o.RenewCheck,
		OCSPCheckInterval:  o.RenewCheck,
		Logger:             zl,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		Storage: o.Storage,
		Logger:  zl,
		OnEvent: m.event,
	})
	m.issuer = certmagic.NewACMEIssuer(m.magic, certmagic.ACMEIssuer{
		CA:                      o.Directory,
		Email:                   o.Email,
		Agreed:                  true,
		TrustedRoots:            o.Roots,
		DisableHTTPChallenge:    !o.HTTP,
		DisableTLSALPNChallenge: !o.TLSALPN,
		ListenHost:              o.ListenHost,
		AltHTTPPort:             o.HTTPPort,
		AltTLSALPNPort:          o.TLSPort,
		Logger:                  zl,
	})
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	return m
}

// SetPorts says where this node's tls (443) and http (80) listeners
// are, as bound; 0 means there is none, and the challenge that needs it
// is not offered. It reports which challenges remain, and must precede
// the first Manage.
func (m *Manager) SetPorts(tlsPort, httpPort int) (tlsALPN, http bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opts.TLSALPN = m.opts.TLSALPN && tlsPort != 0
	m.opts.HTTP = m.opts.HTTP && httpPort != 0
	m.issuer.AltTLSALPNPort, m.issuer.AltHTTPPort = tlsPort, httpPort
	m.issuer.DisableTLSALPNChallenge, m.issuer.DisableHTTPChallenge = !m.opts.TLSALPN, !m.opts.HTTP
	return m.opts.TLSALPN, m.opts.HTTP
}

// event turns certmagic's events into results and log lines.
func (m *Manager) event(_ context.Context, event string, data map[string]any) error {
	kind := "issue"
	if r, _ := data["renewal"].(bool); r {
		kind = "renew"
	}
	switch event {
	case "cert_obtained":
		m.log.Info("acme: certificate obtained", "name", data["identifier"], "kind", kind, "issuer", data["issuer"])
		m.result(kind, "ok")
	case "cert_failed":
		// The CA's problem document, when it sent one, says why in its
		// own words; certmagic retries with backoff, and the current
		// certificate, if any, keeps serving meanwhile.
		err, _ := data["error"].(error)
		attrs := []any{"name", data["identifier"], "kind", kind, "code", string(perr.CertificateNotIssued)}
		var problem acme.Problem
		if errors.As(err, &problem) {
			attrs = append(attrs, "problem_type", problem.Type, "problem_detail", problem.Detail)
		}
		if err != nil {
			attrs = append(attrs, "error", err.Error())
		}
		m.log.Error("acme: certificate not obtained; retrying with backoff", attrs...)
		m.result(kind, "error")
	}
	return nil
}

func (m *Manager) result(kind, result string) {
	if m.opts.Result != nil {
		m.opts.Result(kind, result)
	}
}

// Manage makes names the set of managed names: certificates for new ones
// are obtained in the background (from storage when another process or
// node already has them), names no longer listed stop being renewed.
func (m *Manager) Manage(names []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var add []string
	want := make(map[string]bool, len(names))
	for _, n := range names {
		n = strings.ToLower(n)
		want[n] = true
		if !m.managed[n] {
			add = append(add, n)
		}
	}
	var drop []certmagic.SubjectIssuer
	for n := range m.managed {
		if !want[n] {
			drop = append(drop, certmagic.SubjectIssuer{Subject: n})
		}
	}
	if len(drop) > 0 {
		m.cache.RemoveManaged(drop)
	}
	m.managed = want
	if len(add) == 0 {
		return nil
	}
	slices.Sort(add)
	if err := m.magic.ManageAsync(m.ctx, add); err != nil {
		return fmt.Errorf("acme: managing %s: %w", strings.Join(add, ", "), err)
	}
	return nil
}

// Manages reports whether name is one of the managed names.
func (m *Manager) Manages(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.managed[name]
}

// Has reports whether a certificate for name is in hand.
func (m *Manager) Has(name string) bool {
	return len(m.cache.AllMatchingCertificates(name)) > 0
}

// GetCertificate serves a managed name's certificate, with its OCSP
// staple, as certmagic keeps it current.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.magic.GetCertificate(hello)
}

// Certificates lists the certificates in hand: each name and when its
// certificate expires.
func (m *Manager) Certificates() map[string]time.Time {
	m.mu.Lock()
	names := make([]string, 0, len(m.managed))
	for n := range m.managed {
		names = append(names, n)
	}
	m.mu.Unlock()
	out := make(map[string]time.Time, len(names))
	for _, n := range names {
		for _, c := range m.cache.AllMatchingCertificates(n) {
			if c.Leaf != nil && c.Leaf.NotAfter.After(out[n]) {
				out[n] = c.Leaf.NotAfter
			}
		}
	}
	return out
}

// ALPN is the protocol a TLS-ALPN-01 validation offers, alone.
const ALPN = "acme-tls/1"

// IsChallenge reports whether a ClientHello is a TLS-ALPN-01 validation.
func IsChallenge(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ALPN
}

// ChallengeConfig is the handshake config for a TLS-ALPN-01 validation
// of a managed name: certmagic answers with the challenge certificate
// (its own, or another node's through the shared storage).
func (m *Manager) ChallengeConfig() *tls.Config {
	if !m.opts.TLSALPN {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{ALPN}, GetCertificate: m.magic.GetCertificate}
}

// ChallengePath starts the paths HTTP-01 validations request.
const ChallengePath = "/.well-known/acme-challenge/"

// HTTPChallenge answers an HTTP-01 validation request for host and path
// (the key authorization, for this node's challenges or, through the
// shared storage, another node's), or reports that it is none.
func (m *Manager) HTTPChallenge(ctx context.Context, host, path string) ([]byte, bool) {
	if !m.opts.HTTP || !strings.HasPrefix(path, ChallengePath) {
		return nil, false
	}
	// Only the managed names: a request for another host costs no
	// storage lookup (in a fleet, a NATS round trip).
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !m.Manages(strings.ToLower(host)) {
		return nil, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, false
	}
	req.Host = host
	rec := &recorder{header: http.Header{}}
	if !m.issuer.HandleHTTPChallenge(rec, req) || (rec.status != 0 && rec.status != http.StatusOK) {
		return nil, false
	}
	return rec.body, true
}

// recorder keeps what certmagic's challenge handler writes.
type recorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(status int)      { r.status = status }
func (r *recorder) Write(p []byte) (int, error) { r.body = append(r.body, p...); return len(p), nil }

// Close stops renewals and maintenance, and the storage's own work (a
// fleet storage's lock renewals).
func (m *Manager) Close() {
	m.cancel()
	m.cache.Stop()
	if c, ok := m.opts.Storage.(interface{ Close() }); ok {
		c.Close()
	}
}
