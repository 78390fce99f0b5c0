package config

import (
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

// ACME defaults: Let's Encrypt's production directory (its staging one,
// for trying a setup without its rate limits, is in docs/certificates.md),
// both challenges that need no DNS provider, storage beside the config.
const (
	DefaultACMEDirectory  = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultACMEStorageDir = "acme"
	DefaultACMERenewCheck = 10 * time.Minute
)

// ACME challenge types.
const (
	ChallengeTLSALPN = "tls-alpn-01"
	ChallengeHTTP    = "http-01"
)

// DefaultACMEChallenges are both challenge types edgeproxy answers.
var DefaultACMEChallenges = []string{ChallengeTLSALPN, ChallengeHTTP}

func (c *checker) validateACME(cfg *Config, s *source) {
	a := cfg.ACME
	if a == nil {
		return
	}
	setStr(&a.Directory, DefaultACMEDirectory)
	setStr(&a.StorageDir, DefaultACMEStorageDir)
	setDur(&a.RenewCheckInterval, DefaultACMERenewCheck)
	if a.Challenges == nil {
		a.Challenges = slices.Clone(DefaultACMEChallenges)
	}
	if u, err := url.Parse(a.Directory); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		c.at(s, "acme.directory", "%q is not an ACME directory URL (https://...)", a.Directory)
	}
	if len(a.Challenges) == 0 {
		c.at(s, "acme.challenges", "names no challenge: give tls-alpn-01, http-01 or both (DNS-01 is not supported)")
	}
	for _, ch := range a.Challenges {
		switch ch {
		case ChallengeTLSALPN, ChallengeHTTP:
		case "dns-01":
			c.at(s, "acme.challenges", "dns-01 is not supported: use tls-alpn-01 or http-01, and [[certificates]] files for wildcard names")
		default:
			c.at(s, "acme.challenges", "%q is not a challenge type (tls-alpn-01, http-01)", ch)
		}
	}
	if a.TrustedRootsFile != "" {
		if _, err := os.Stat(cfg.Resolve(a.TrustedRootsFile)); err != nil {
			c.at(s, "acme.trusted_roots_file", "cannot read %s: %v", a.TrustedRootsFile, err)
		}
	}
}

// ACMEChallenge reports whether challenge type ch is enabled.
func (a *ACME) ACMEChallenge(ch string) bool { return a != nil && slices.Contains(a.Challenges, ch) }

// validateCoverage checks that each app hostname a TLS port serves can
// get a certificate: from a [[certificates]] file, from ACME (not for
// wildcard names: those need DNS-01), or from default_self_signed. An
// app that can get none is a note, not a problem: the file may be
// written before its certificates.
func (c *checker) validateCoverage(cfg *Config, srcs map[int]*source) {
	specs := make([]tlsterm.CertSpec, 0, len(cfg.Certificates))
	for _, cert := range cfg.Certificates {
		specs = append(specs, tlsterm.CertSpec{CertFile: cfg.resolve(cert.CertFile), KeyFile: cfg.resolve(cert.KeyFile), Hostnames: cert.Hostnames})
	}
	// Unreadable files are reported by certificate(); the rest cover.
	store, _ := tlsterm.Load(specs)
	for i := range cfg.Apps {
		a := &cfg.Apps[i]
		tlsPort, selfSigned := false, false
		for _, svc := range a.AllServices() {
			for _, p := range svc.Ports {
				if slices.Contains(p.Handlers, "tls") || slices.Contains(p.Handlers, "pg_tls") {
					tlsPort = true
					selfSigned = selfSigned || (p.TLSOptions != nil && p.TLSOptions.DefaultSelfSigned)
				}
			}
		}
		if !tlsPort || selfSigned {
			continue
		}
		key := fmt.Sprintf("apps[%d].hostnames", i)
		for _, h := range a.Hostnames {
			if store.Lookup(h) != nil {
				continue
			}
			wildcard := strings.HasPrefix(h, "*.")
			switch {
			case cfg.ACME != nil && wildcard:
				c.at(srcs[-1], key, "%s: ACME cannot issue wildcard names (that takes DNS-01, which edgeproxy does not do); give a [[certificates]] file that covers it", h)
			case cfg.ACME == nil:
				c.note(srcs[-1], key, "%s has no certificate: TLS handshakes for it will fail (PT05); add a [[certificates]] file for it, an [acme] table, or tls_options.default_self_signed", h)
			}
		}
	}
}
