package tlsterm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"time"
)

// DefaultSelfSignedName is the name used when the client sent no SNI. The
// .invalid TLD (RFC 2606) can never collide with a real host.
const DefaultSelfSignedName = "edgeproxy.invalid"

const (
	// maxSelfSigned bounds the cache: the SNI is chosen by the client, so an
	// unbounded cache would let anyone grow memory one handshake at a time.
	maxSelfSigned = 1024
	// selfSignedLifetime and selfSignedRenew keep a cached certificate from
	// expiring under a long-running process.
	selfSignedLifetime = 365 * 24 * time.Hour
	selfSignedRenew    = 24 * time.Hour
)

// SelfSigner mints self-signed ECDSA P-256 certificates on first use and
// caches them per name; it backs tls_options.default_self_signed. It is safe
// for concurrent use and its zero value is ready to use.
type SelfSigner struct {
	mu sync.Mutex
	// key is shared by every name: per-name certificates cost one signature,
	// whereas a key per attacker-chosen SNI would cost a key generation.
	key   *ecdsa.PrivateKey
	certs map[string]*tls.Certificate
}

// NewSelfSigner returns an empty SelfSigner; keys are generated on first Get.
func NewSelfSigner() *SelfSigner { return &SelfSigner{} }

// Get returns the self-signed certificate for name, or for
// DefaultSelfSignedName when name is empty. Repeated calls for the same name
// return the same *tls.Certificate until it nears expiry.
func (s *SelfSigner) Get(name string) (*tls.Certificate, error) {
	n := normalize(name)
	if n == "" {
		n = DefaultSelfSignedName
	}
	now := time.Now()
	// One lock around signing keeps concurrent first calls for a name from
	// minting two certificates; a signature is cheap next to the handshake
	// that asked for it.
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.certs[n]; ok && now.Before(c.Leaf.NotAfter.Add(-selfSignedRenew)) {
		return c, nil
	}
	if s.key == nil {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		s.key = key
	}
	c, err := issue(s.key, []string{n}, now.Add(-time.Hour), now.Add(selfSignedLifetime))
	if err != nil {
		return nil, err
	}
	if s.certs == nil {
		s.certs = make(map[string]*tls.Certificate)
	}
	if _, ok := s.certs[n]; !ok && len(s.certs) >= maxSelfSigned {
		for k := range s.certs { // map order is unspecified: evicts an arbitrary entry
			delete(s.certs, k)
			break
		}
	}
	s.certs[n] = c
	return c, nil
}

// issue creates a self-signed certificate for names. Names that parse as IP
// addresses become IP SANs so tools can reach https://127.0.0.1 directly. The
// certificate is marked as a CA so it can serve as its own trust root in
// clients' CA files (curl --cacert, openssl -CAfile).
func issue(key crypto.Signer, names []string, notBefore, notAfter time.Time) (*tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"edgeproxy self-signed"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
