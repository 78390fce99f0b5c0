package tlsterm

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrNoCertificate refuses a handshake for which no certificate was found
// (error code PT05). The message is the one users search for.
var ErrNoCertificate = errors.New("no valid tls certificate was found for SNI")

// Versions parses fly.toml's tls_options.versions (e.g. ["TLSv1.2",
// "TLSv1.3"]) into the lowest and highest listed version. An empty list means
// TLS 1.2 through 1.3. TLS 1.0 and 1.1 are refused outright rather than
// ignored, so a config asking for them fails loudly instead of silently
// serving something else.
func Versions(v []string) (min, max uint16, err error) {
	if len(v) == 0 {
		return tls.VersionTLS12, tls.VersionTLS13, nil
	}
	for _, s := range v {
		ver, err := parseVersion(s)
		if err != nil {
			return 0, 0, err
		}
		if min == 0 || ver < min {
			min = ver
		}
		if ver > max {
			max = ver
		}
	}
	return min, max, nil
}

func parseVersion(s string) (uint16, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tlsv1.2":
		return tls.VersionTLS12, nil
	case "tlsv1.3":
		return tls.VersionTLS13, nil
	case "tlsv1", "tlsv1.0", "tlsv1.1", "sslv2", "sslv3":
		return 0, fmt.Errorf("tls version %q is not supported: only TLSv1.2 and TLSv1.3 are", s)
	}
	return 0, fmt.Errorf("unknown tls version %q (want \"TLSv1.2\" or \"TLSv1.3\")", s)
}

// ServerConfig builds the *tls.Config for one handshake once the certificate
// has been chosen. A nil cert yields a config that refuses the handshake with
// ErrNoCertificate, so the caller has one path for both cases.
//
// alpn is in server preference order: the first entry the client also offers
// wins. min and max come from Versions; zero means the default, and anything
// below TLS 1.2 is raised to it because the platform never speaks older TLS.
//
// Session tickets are on, but resumption only works across connections if
// the ticket keys outlive one connection: return this config from
// GetConfigForClient of a long-lived base *tls.Config (whose keys crypto/tls
// then uses), or set keys with SetSessionTicketKeys. A config used directly
// with tls.Server per connection gets fresh keys every time.
func ServerConfig(cert *tls.Certificate, alpn []string, min, max uint16) *tls.Config {
	if min < tls.VersionTLS12 {
		min = tls.VersionTLS12
	}
	if max == 0 {
		max = tls.VersionTLS13
	}
	cfg := &tls.Config{
		MinVersion: min,
		MaxVersion: max,
		// Hybrid post-quantum first: it costs about a kilobyte per handshake
		// and protects recorded traffic against future decryption. P-256 stays
		// for clients limited to FIPS curves.
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256},
		// Cloned because the caller's slice belongs to config that may be
		// rebuilt while this handshake is still running.
		NextProtos: slices.Clone(alpn),
		// Cipher suites are left to crypto/tls: its TLS 1.2 defaults are
		// already ECDHE-only with AEADs preferred, and they follow security
		// fixes with each Go release instead of freezing today's list.
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	} else {
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return nil, ErrNoCertificate
		}
	}
	return cfg
}
