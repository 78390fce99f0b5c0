// Package backhaul owns the link between an edge and the worker that runs a
// machine: the fleet's identity (a CA of its own and a certificate per
// node, for mutual TLS), the worker's listener that connects only to its
// own machines, and the edge's client that reaches them through it.
package backhaul

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// File names in a CA directory and a node's certificate directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// NodeFiles are the certificate and key files IssueNode writes for node.
func NodeFiles(dir, node string) (cert, key string) {
	return filepath.Join(dir, node+".pem"), filepath.Join(dir, node+"-key.pem")
}

// nodeURIScheme names a node in its certificate: a URI SAN of the form
// edgeproxy-node:NAME. Node names are not host names (a node is reached
// by address), so they are not put where TLS would match them as one.
const nodeURIScheme = "edgeproxy-node"

// validNode is what a node name may be: it becomes a file name, a NATS
// subject token and a URI.
var validNode = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// ValidNodeName says why name cannot be a node's name, or nil.
func ValidNodeName(name string) error {
	if !validNode.MatchString(name) {
		return fmt.Errorf("node name %q: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// InitCA makes the fleet's CA in dir: a P-256 key and a self-signed
// certificate valid for validity. It never overwrites an existing CA,
// whose loss would strand every node certificate it signed.
func InitCA(dir, name string, validity time.Duration, now time.Time) error {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s exists: a fleet CA is made once (remove it by hand to start a new fleet identity)", p)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"edgeproxy fleet"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

// IssueNode signs a certificate for node with the CA in caDir, good for
// both ends of the backhaul (server and client), and writes it with its
// key into outDir (see NodeFiles).
func IssueNode(caDir, outDir, node string, validity time.Duration, now time.Time) error {
	if err := ValidNodeName(node); err != nil {
		return err
	}
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return err
	}
	if now.Add(validity).After(caCert.NotAfter) {
		validity = caCert.NotAfter.Sub(now)
	}
	if validity <= 0 {
		return fmt.Errorf("the fleet CA in %s expired on %s", caDir, caCert.NotAfter.Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: node, Organization: []string{"edgeproxy fleet"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{{Scheme: nodeURIScheme, Opaque: node}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return err
	}
	certPath, keyPath := NodeFiles(outDir, node)
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

// NodeName is the fleet node a certificate names, or an error if it
// names none (a certificate of another kind, even one the CA signed).
func NodeName(c *x509.Certificate) (string, error) {
	for _, u := range c.URIs {
		if u.Scheme == nodeURIScheme && ValidNodeName(u.Opaque) == nil {
			return u.Opaque, nil
		}
	}
	return "", errors.New("certificate names no fleet node")
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, nil, fmt.Errorf("fleet CA: %w (make one with `edgeproxy fleet ca init`)", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("fleet CA key: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("fleet CA in %s: not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet CA key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("fleet CA in %s: the key does not match the certificate", dir)
	}
	return cert, key, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

// writePEM writes through a temporary file and a rename, so a reload
// that reads the file meanwhile sees the old one or the new one whole.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}
