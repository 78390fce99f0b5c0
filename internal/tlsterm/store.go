package tlsterm

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

// CertSpec is one [[certificates]] entry of the config.
type CertSpec struct {
	CertFile string
	KeyFile  string
	// Hostnames, when set, replace the names read from the certificate, so an
	// operator can serve a multi-name certificate for only some of its names.
	Hostnames []string
}

// CertError is one problem with one [[certificates]] entry. Index and File
// point the operator at the entry and the file to fix.
type CertError struct {
	Index int
	File  string
	Err   error
}

func (e *CertError) Error() string {
	return fmt.Sprintf("certificates[%d]: %s: %v", e.Index, e.File, e.Err)
}

func (e *CertError) Unwrap() error { return e.Err }

// Store holds loaded certificates indexed by name. It is immutable after
// Load, so handshakes read it without locks; a reload builds a new Store.
// A nil *Store is an empty store.
type Store struct {
	exact    map[string]*tls.Certificate // normalized name, wildcards included literally
	wild     map[string]*tls.Certificate // "example.com" for a "*.example.com" entry
	names    []string
	warnings []string
}

// Load reads every certificate. All problems are reported at once, joined,
// each a *CertError, so one reload attempt shows everything to fix. An
// expired certificate still loads (a stale certificate gives clients a
// clearer failure than none) and is reported through Warnings.
//
// Without explicit Hostnames an entry is indexed under the certificate's DNS
// SANs, wildcards included, or its CN when it has no SANs. When two entries
// claim the same name the first one wins.
func Load(specs []CertSpec) (*Store, error) {
	return load(specs, time.Now())
}

func load(specs []CertSpec, now time.Time) (*Store, error) {
	s := &Store{
		exact: make(map[string]*tls.Certificate),
		wild:  make(map[string]*tls.Certificate),
	}
	var errs []error
	for i, spec := range specs {
		cert, perr := loadPair(i, spec)
		if perr != nil {
			errs = append(errs, perr...)
			continue
		}
		names, err := namesFor(spec, cert.Leaf)
		if err != nil {
			errs = append(errs, &CertError{Index: i, File: spec.CertFile, Err: err})
			continue
		}
		s.warnings = append(s.warnings, checkLeaf(i, spec, cert.Leaf, now)...)
		for _, n := range names {
			if !s.add(n, cert) {
				s.warnings = append(s.warnings, fmt.Sprintf(
					"certificates[%d]: %s: name %q is listed more than once; the first listing wins",
					i, spec.CertFile, n))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.Sort(s.names)
	return s, nil
}

// add indexes cert under an already normalized name; false if the name is
// taken.
func (s *Store) add(name string, cert *tls.Certificate) bool {
	if _, taken := s.exact[name]; taken {
		return false
	}
	s.exact[name] = cert
	if suffix, ok := wildcardSuffix(name); ok {
		s.wild[suffix] = cert
	}
	s.names = append(s.names, name)
	return true
}

// Lookup finds the certificate for an SNI name: an exact match first (ASCII
// case-insensitive, trailing dot ignored), then a wildcard one label deep.
// It returns nil when nothing matches, including for an empty SNI.
func (s *Store) Lookup(sni string) *tls.Certificate {
	if s == nil {
		return nil
	}
	n := normalize(sni)
	if n == "" {
		return nil
	}
	if c, ok := s.exact[n]; ok {
		return c
	}
	if parent, ok := parentOf(n); ok {
		return s.wild[parent]
	}
	return nil
}

// Names returns every indexed name, normalized and sorted.
func (s *Store) Names() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.names)
}

// Warnings returns problems that do not stop the certificates from loading.
func (s *Store) Warnings() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.warnings)
}

// loadPair reads both files before judging either, so a missing certificate
// and a missing key are reported together.
func loadPair(i int, spec CertSpec) (*tls.Certificate, []error) {
	chain, certErr := readChain(spec.CertFile)
	key, keyErr := readKey(spec.KeyFile)
	var errs []error
	if certErr != nil {
		errs = append(errs, &CertError{Index: i, File: spec.CertFile, Err: certErr})
	}
	if keyErr != nil {
		errs = append(errs, &CertError{Index: i, File: spec.KeyFile, Err: keyErr})
	}
	if errs != nil {
		return nil, errs
	}
	leaf := chain[0]
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, []error{&CertError{Index: i, File: spec.KeyFile,
			Err: fmt.Errorf("private key does not match certificate %s", spec.CertFile)}}
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

func readChain(file string) ([]*x509.Certificate, error) {
	data, err := readFile(file, "cert_file")
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	sawKey := false
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		switch {
		case block.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate %d in file: %w", len(chain)+1, err)
			}
			chain = append(chain, c)
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			sawKey = true
		}
	}
	if len(chain) == 0 {
		if sawKey {
			return nil, errors.New("bad PEM: found a private key where a certificate was expected (cert_file and key_file swapped?)")
		}
		return nil, errors.New("bad PEM: no CERTIFICATE block")
	}
	return chain, nil
}

func readKey(file string) (crypto.Signer, error) {
	data, err := readFile(file, "key_file")
	if err != nil {
		return nil, err
	}
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		switch block.Type {
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported")
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			return parseKey(block.Bytes)
		}
		// Other blocks, such as the EC PARAMETERS openssl writes first, are skipped.
	}
	return nil, errors.New("bad PEM: no PRIVATE KEY block")
}

// parseKey accepts the three encodings tools commonly emit rather than
// trusting the PEM type, which hand-edited files often get wrong.
func parseKey(der []byte) (crypto.Signer, error) {
	var key any
	var err error
	if key, err = x509.ParsePKCS8PrivateKey(der); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(der); err != nil {
			if key, err = x509.ParseECPrivateKey(der); err != nil {
				return nil, errors.New("cannot parse private key (want PKCS#8, PKCS#1 or SEC 1)")
			}
		}
	}
	// PKCS#8 can also carry X25519 keys, which cannot sign a handshake.
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
	return signer, nil
}

// readFile strips the path from the error because CertError already names
// the file; errors.Is(err, fs.ErrNotExist) still holds.
func readFile(file, field string) ([]byte, error) {
	if file == "" {
		return nil, fmt.Errorf("%s is not set", field)
	}
	data, err := os.ReadFile(file)
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return nil, fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return data, err
}

func namesFor(spec CertSpec, leaf *x509.Certificate) ([]string, error) {
	raw := spec.Hostnames
	if len(raw) == 0 {
		raw = leaf.DNSNames
		if len(raw) == 0 && leaf.Subject.CommonName != "" {
			raw = []string{leaf.Subject.CommonName}
		}
	}
	var names []string
	for j, h := range raw {
		n := normalize(h)
		if n == "" {
			return nil, fmt.Errorf("hostnames[%d] is empty", j)
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		// It could never be selected by SNI, which is surely not what was meant.
		return nil, errors.New("certificate has no DNS names and no hostnames are set")
	}
	return names, nil
}

// checkLeaf reports problems a client will notice but which should not stop
// the proxy from starting: refusing to load would turn a renewal delay into
// an outage for every other name.
func checkLeaf(i int, spec CertSpec, leaf *x509.Certificate, now time.Time) []string {
	var w []string
	at := fmt.Sprintf("certificates[%d]: %s", i, spec.CertFile)
	if now.After(leaf.NotAfter) {
		w = append(w, fmt.Sprintf("%s: certificate expired at %s", at, leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
	if now.Before(leaf.NotBefore) {
		w = append(w, fmt.Sprintf("%s: certificate not valid until %s", at, leaf.NotBefore.UTC().Format(time.RFC3339)))
	}
	for _, h := range spec.Hostnames {
		probe := normalize(h)
		if suffix, ok := wildcardSuffix(probe); ok {
			probe = "edgeproxy-probe." + suffix
		}
		if leaf.VerifyHostname(probe) != nil {
			w = append(w, fmt.Sprintf("%s: hostname %q is not covered by the certificate; clients will reject it", at, h))
		}
	}
	return w
}
