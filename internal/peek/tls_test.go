package peek

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/sniff"
)

// TestPeekThenTLS is the edge's real use: peek a ClientHello that arrives in
// many small reads, route on its SNI and ALPN, then hand the same conn to
// crypto/tls, which must see the hello from its first byte.
func TestPeekThenTLS(t *testing.T) {
	cert := selfSigned(t, "peek.test")
	clientEnd, serverEnd := net.Pipe()
	defer serverEnd.Close()
	clientDone := make(chan error, 1)
	go func() {
		defer clientEnd.Close()
		tc := tls.Client(choppy{clientEnd, 100}, &tls.Config{
			ServerName: "peek.test", NextProtos: []string{"h2", "http/1.1"}, InsecureSkipVerify: true,
		})
		_, err := tc.Write([]byte("hello through peek"))
		if err == nil {
			err = tc.CloseWrite()
		}
		clientDone <- err
	}()

	c := New(serverEnd, sniff.MaxHelloLen+1024)
	calls := 0
	got, err := c.Peek(time.Now().Add(10*time.Second), func(b []byte) sniff.Result {
		calls++
		r, _, _ := sniff.ClientHello(b)
		return r
	})
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	r, info, err := sniff.ClientHello(got)
	if r != sniff.Match || info.ServerName != "peek.test" || len(info.ALPN) != 2 {
		t.Fatalf("ClientHello = %v %+v %v", r, info, err)
	}
	if calls < 3 {
		t.Errorf("decide called %d times for a hello written 100 bytes at a time", calls)
	}

	ts := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	data, err := io.ReadAll(ts)
	if err != nil || string(data) != "hello through peek" {
		t.Fatalf("TLS server read %q, %v", data, err)
	}
	if p := ts.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Errorf("negotiated %q, want h2", p)
	}
	ts.Close()
	if err := <-clientDone; err != nil {
		t.Fatalf("client: %v", err)
	}
}

// choppy splits every write into pieces of at most n bytes; over net.Pipe
// each piece is a separate read on the other end.
type choppy struct {
	net.Conn
	n int
}

func (c choppy) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k, err := c.Conn.Write(p[:min(c.n, len(p))])
		written += k
		if err != nil {
			return written, err
		}
		p = p[k:]
	}
	return written, nil
}

func selfSigned(t *testing.T, host string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
