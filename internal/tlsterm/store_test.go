package tlsterm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testPair writes a certificate and key for names into a fresh temp dir.
func testPair(t *testing.T, names ...string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := WriteTestCert(t.TempDir(), names...)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// customPair writes a certificate whose template the test shapes, for cases
// WriteTestCert deliberately cannot produce (expired, no SANs).
func customPair(t *testing.T, shape func(*x509.Certificate)) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	shape(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// certErrors flattens the joined error Load returns.
func certErrors(t *testing.T, err error) []*CertError {
	t.Helper()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %v (%T) is not a joined error", err, err)
	}
	var out []*CertError
	for _, e := range joined.Unwrap() {
		ce, ok := errors.AsType[*CertError](e)
		if !ok {
			t.Fatalf("joined error %v (%T) is not a *CertError", e, e)
		}
		out = append(out, ce)
	}
	return out
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	certA, keyA := testPair(t, "a.example.com")
	_, keyB := testPair(t, "b.example.com")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	writeFile(t, garbage, []byte("not a pem file\n"))
	missing := filepath.Join(t.TempDir(), "missing.pem")

	tests := []struct {
		name     string
		spec     CertSpec
		wantFile string
		wantText string
	}{
		{"missing cert", CertSpec{CertFile: missing, KeyFile: keyA}, missing, "no such file"},
		{"missing key", CertSpec{CertFile: certA, KeyFile: missing}, missing, "no such file"},
		{"bad cert PEM", CertSpec{CertFile: garbage, KeyFile: keyA}, garbage, "bad PEM"},
		{"bad key PEM", CertSpec{CertFile: certA, KeyFile: garbage}, garbage, "bad PEM"},
		{"swapped files", CertSpec{CertFile: keyA, KeyFile: certA}, keyA, "swapped"},
		{"key mismatch", CertSpec{CertFile: certA, KeyFile: keyB}, keyB, "does not match certificate " + certA},
		{"empty hostname", CertSpec{CertFile: certA, KeyFile: keyA, Hostnames: []string{"x.com", "."}}, certA, "hostnames[1] is empty"},
		{"unset cert_file", CertSpec{KeyFile: keyA}, "", "cert_file is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok := CertSpec{CertFile: certA, KeyFile: keyA}
			s, err := Load([]CertSpec{ok, tt.spec})
			if s != nil || err == nil {
				t.Fatalf("Load = %v, %v; want nil store and an error", s, err)
			}
			var found *CertError
			for _, ce := range certErrors(t, err) {
				if ce.Index != 1 {
					t.Errorf("error %v blames certificates[%d], want [1]", ce, ce.Index)
				}
				if ce.File == tt.wantFile && strings.Contains(ce.Error(), tt.wantText) {
					found = ce
				}
			}
			if found == nil {
				t.Fatalf("error %q should blame %q and say %q", err, tt.wantFile, tt.wantText)
			}
			if msg := found.Error(); tt.wantFile != "" && !strings.HasPrefix(msg, "certificates[1]: "+tt.wantFile+": ") {
				t.Errorf("error %q should start with the entry and the file", msg)
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	_, err := Load([]CertSpec{{CertFile: cert, KeyFile: key}, {CertFile: cert, KeyFile: key}})
	errs := certErrors(t, err)
	if len(errs) != 4 {
		t.Fatalf("got %d errors, want 4 (two files, two entries): %v", len(errs), err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(err, fs.ErrNotExist) = false for %v", err)
	}
}

func TestLoadExpiredIsAWarning(t *testing.T) {
	cert, key := customPair(t, func(c *x509.Certificate) {
		c.DNSNames = []string{"old.example.com"}
		c.NotBefore = time.Now().Add(-48 * time.Hour)
		c.NotAfter = time.Now().Add(-24 * time.Hour)
	})
	s, err := Load([]CertSpec{{CertFile: cert, KeyFile: key}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Lookup("old.example.com") == nil {
		t.Error("expired certificate should still be served")
	}
	w := s.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "expired") || !strings.Contains(w[0], cert) {
		t.Errorf("Warnings() = %q, want one naming %s as expired", w, cert)
	}
}

func TestLoadCommonNameWhenNoSANs(t *testing.T) {
	cert, key := customPair(t, func(c *x509.Certificate) { c.Subject = pkix.Name{CommonName: "Legacy.Example.com"} })
	s, err := Load([]CertSpec{{CertFile: cert, KeyFile: key}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Names(); !slices.Equal(got, []string{"legacy.example.com"}) {
		t.Errorf("Names() = %q", got)
	}
}

func TestLookup(t *testing.T) {
	exactCert, exactKey := testPair(t, "api.example.com", "Example.ORG.")
	wildCert, wildKey := testPair(t, "*.example.com")
	s, err := Load([]CertSpec{
		{CertFile: wildCert, KeyFile: wildKey},
		{CertFile: exactCert, KeyFile: exactKey},
	})
	if err != nil {
		t.Fatal(err)
	}
	exact, wild := s.Lookup("api.example.com"), s.Lookup("www.example.com")
	if exact == nil || wild == nil || exact == wild {
		t.Fatalf("exact %p and wildcard %p should be two distinct certificates", exact, wild)
	}
	tests := []struct {
		sni  string
		want *tls.Certificate
	}{
		{"api.example.com", exact}, // exact beats the wildcard listed first
		{"API.Example.COM", exact},
		{"api.example.com.", exact},
		{"example.org", exact},
		{"EXAMPLE.ORG.", exact},
		{"www.example.com", wild},
		{"WWW.EXAMPLE.COM.", wild},
		{"*.example.com", wild},
		{"a.b.example.com", nil},
		{"example.com", nil},
		{".example.com", nil},
		{"www.example.org", nil},
		{"", nil},
		{".", nil},
	}
	for _, tt := range tests {
		if got := s.Lookup(tt.sni); got != tt.want {
			t.Errorf("Lookup(%q) = %p, want %p", tt.sni, got, tt.want)
		}
	}
	want := []string{"*.example.com", "api.example.com", "example.org"}
	if got := s.Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
}

func TestHostnamesOverrideCertificateNames(t *testing.T) {
	cert, key := testPair(t, "a.example.com", "b.example.com")
	s, err := Load([]CertSpec{{CertFile: cert, KeyFile: key, Hostnames: []string{"A.example.com", "c.example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Lookup("a.example.com") == nil || s.Lookup("c.example.com") == nil {
		t.Error("explicit hostnames should be served")
	}
	if s.Lookup("b.example.com") != nil {
		t.Error("a certificate name left out of Hostnames should not be served")
	}
	w := s.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], `"c.example.com" is not covered`) {
		t.Errorf("Warnings() = %q, want one about c.example.com", w)
	}
}

func TestDuplicateNameFirstEntryWins(t *testing.T) {
	c1, k1 := testPair(t, "dup.example.com")
	c2, k2 := testPair(t, "dup.example.com")
	s, err := Load([]CertSpec{{CertFile: c1, KeyFile: k1}, {CertFile: c2, KeyFile: k2}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := Load([]CertSpec{{CertFile: c1, KeyFile: k1}})
	if err != nil {
		t.Fatal(err)
	}
	got, want := s.Lookup("dup.example.com"), first.Lookup("dup.example.com")
	if !slices.Equal(got.Certificate[0], want.Certificate[0]) {
		t.Error("the first entry should win a duplicated name")
	}
	if w := s.Warnings(); len(w) != 1 || !strings.Contains(w[0], "certificates[1]") {
		t.Errorf("Warnings() = %q, want one about certificates[1]", w)
	}
}

func TestNilAndEmptyStore(t *testing.T) {
	var nilStore *Store
	empty, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Store{nilStore, empty} {
		if s.Lookup("a.example.com") != nil || len(s.Names()) != 0 || len(s.Warnings()) != 0 {
			t.Errorf("store %v should be empty", s)
		}
	}
}
