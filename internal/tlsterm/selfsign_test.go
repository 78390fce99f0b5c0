package tlsterm

import (
	"crypto/tls"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestSelfSignerConcurrentGetReturnsOneCertificate(t *testing.T) {
	s := NewSelfSigner()
	const workers = 16
	got := make([]*tls.Certificate, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			name := "app.example.com"
			if i%2 == 1 {
				name = "APP.example.com." // same host, other spelling
			}
			c, err := s.Get(name)
			if err != nil {
				t.Error(err)
			}
			got[i] = c
		})
	}
	wg.Wait()
	for i, c := range got {
		if c == nil || c != got[0] {
			t.Fatalf("Get #%d returned %p, want %p", i, c, got[0])
		}
	}
	if err := got[0].Leaf.VerifyHostname("app.example.com"); err != nil {
		t.Error(err)
	}
	other, err := s.Get("other.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if other == got[0] {
		t.Error("different names should get different certificates")
	}
}

func TestSelfSignerDefaultName(t *testing.T) {
	var s SelfSigner // the zero value works too
	c, err := s.Get("")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Leaf.DNSNames, []string{DefaultSelfSignedName}) {
		t.Errorf("DNSNames = %q, want %q", c.Leaf.DNSNames, DefaultSelfSignedName)
	}
	if c.Leaf.PublicKeyAlgorithm.String() != "ECDSA" {
		t.Errorf("key algorithm %v, want ECDSA", c.Leaf.PublicKeyAlgorithm)
	}
}

func TestSelfSignerCacheIsBounded(t *testing.T) {
	s := NewSelfSigner()
	for i := range maxSelfSigned + 10 {
		if _, err := s.Get(fmt.Sprintf("h%d.example.com", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.certs); n != maxSelfSigned {
		t.Errorf("cache holds %d certificates, want %d", n, maxSelfSigned)
	}
}

func TestSelfSignerRenewsNearExpiry(t *testing.T) {
	s := NewSelfSigner()
	c, err := s.Get("a.example.com")
	if err != nil {
		t.Fatal(err)
	}
	s.certs["a.example.com"].Leaf.NotAfter = time.Now().Add(time.Hour)
	renewed, err := s.Get("a.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if renewed == c {
		t.Error("a certificate about to expire should be replaced")
	}
}
