package backhaul

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
)

// Identity is a node's place in the fleet: the fleet CA it trusts and the
// certificate that names it. It is read from files at start and at every
// reload, so node certificates can be rotated without a restart.
type Identity struct {
	Node  string
	Cert  tls.Certificate
	Roots *x509.CertPool

	// server is built once: its session ticket keys are its own, and an
	// edge's next stream resumes only with the config that issued the
	// ticket.
	serverOnce sync.Once
	server     *tls.Config
}

// LoadIdentity reads the fleet CA and this node's certificate and key,
// and checks that the certificate chains to the CA and names node.
func LoadIdentity(caFile, certFile, keyFile, node string) (*Identity, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("backhaul CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("backhaul CA %s: no PEM certificate in it", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("backhaul certificate: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("backhaul certificate %s: %w", certFile, err)
		}
		cert.Leaf = leaf
	}
	name, err := verifyNode(leaf, cert.Certificate[1:], roots, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, fmt.Errorf("backhaul certificate %s: %w", certFile, err)
	}
	if name != node {
		return nil, fmt.Errorf("backhaul certificate %s names node %q, and this node is %q", certFile, name, node)
	}
	return &Identity{Node: node, Cert: cert, Roots: roots}, nil
}

// verifyNode checks a certificate against the fleet CA for a use and
// returns the node it names.
func verifyNode(leaf *x509.Certificate, chain [][]byte, roots *x509.CertPool, use x509.ExtKeyUsage) (string, error) {
	inter := x509.NewCertPool()
	for _, der := range chain {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{use}}); err != nil {
		return "", fmt.Errorf("not signed by the fleet CA: %w", err)
	}
	return NodeName(leaf)
}

// ALPN protocols on the backhaul: HTTP/2 carries HTTP requests, many at a
// time on one connection; a stream carries one raw TCP connection (or an
// HTTP connection that switches protocols) on a connection of its own.
const (
	ProtoHTTP   = "h2"
	ProtoStream = "edgeproxy-stream/1"
)

// ServerConfig is the worker's side: only a client with a certificate of
// the fleet's is served. It is the same config for the identity's life.
func (id *Identity) ServerConfig() *tls.Config {
	id.serverOnce.Do(func() { id.server = id.serverConfig() })
	return id.server
}

func (id *Identity) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.Roots,
		NextProtos:   []string{ProtoHTTP, ProtoStream},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := PeerNode(cs)
			return err
		},
	}
}

// ClientConfig is the edge's side, to the worker called peer: its
// certificate must chain to the fleet CA and name that node. Nodes are
// reached by address and named in their certificates by node name, so
// the check is made here rather than by host name.
func (id *Identity) ClientConfig(peer, proto string) *tls.Config {
	roots := id.Roots
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.Cert},
		NextProtos:         []string{proto},
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("backhaul: the worker sent no certificate")
			}
			var chain [][]byte
			for _, c := range cs.PeerCertificates[1:] {
				chain = append(chain, c.Raw)
			}
			name, err := verifyNode(cs.PeerCertificates[0], chain, roots, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return fmt.Errorf("backhaul: worker %s: %w", peer, err)
			}
			if name != peer {
				return fmt.Errorf("backhaul: expected worker %s, the certificate names %s", peer, name)
			}
			return nil
		},
		ClientSessionCache: tls.NewLRUClientSessionCache(64),
	}
}

// PeerNode is the fleet node on the other end of a verified connection.
func PeerNode(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", errors.New("backhaul: the client has no fleet certificate")
	}
	return NodeName(cs.VerifiedChains[0][0])
}
