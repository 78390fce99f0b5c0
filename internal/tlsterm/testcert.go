package tlsterm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"sync"
	"time"
)

// WriteTestCert writes a fresh self-signed ECDSA P-256 certificate and key as
// PEM files in dir and returns their paths. It serves other packages' tests
// and the quick start, hence exported non-test code. The certificate is valid
// from an hour ago, tolerating clock skew, until 24 hours from now: long
// enough for a session, short enough that nobody ships it. With no names it
// is issued for DefaultSelfSignedName. Files get unique names, so several
// calls may share one dir.
func WriteTestCert(dir string, names ...string) (certFile, keyFile string, err error) {
	if len(names) == 0 {
		names = []string{DefaultSelfSignedName}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	cert, err := issue(key, names, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	// CreateTemp makes the key file 0600, which is what a key file should be.
	if certFile, err = writePEM(dir, "cert-*.pem", "CERTIFICATE", cert.Certificate[0]); err != nil {
		return "", "", err
	}
	if keyFile, err = writePEM(dir, "key-*.pem", "PRIVATE KEY", keyDER); err != nil {
		return "", "", errors.Join(err, os.Remove(certFile))
	}
	return certFile, keyFile, nil
}

func writePEM(dir, pattern, typ string, der []byte) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	err = pem.Encode(f, &pem.Block{Type: typ, Bytes: der})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", errors.Join(err, os.Remove(f.Name()))
	}
	return f.Name(), nil
}

// AnyNameCache is a TLS client session cache that offers the one session
// it holds for any server name: a client resuming a session under
// another name than it began it under, which tests use to check that a
// server refuses that (RFC 6066 §3).
type AnyNameCache struct {
	mu sync.Mutex
	cs *tls.ClientSessionState
}

func (c *AnyNameCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.cs != nil
}

func (c *AnyNameCache) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs != nil {
		c.cs = cs
	}
}
