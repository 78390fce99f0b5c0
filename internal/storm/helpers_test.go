package storm

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// echoHandler answers like the proxy's usual test backend: the body back,
// or 400 when the body is cut short.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Write(b)
}

// newTLSServer is a net/http server speaking HTTP/1.1 over TLS on
// 127.0.0.1:0; the storm offers only http/1.1 anyway.
func newTLSServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// rawServer accepts on 127.0.0.1:0 and hands each connection to handle,
// which must return once the client has gone. Cleanup closes the listener
// and waits for every handler.
func rawServer(t *testing.T, handle func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				// Handlers wait for the client; this bounds a test bug.
				c.SetDeadline(time.Now().Add(20 * time.Second))
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// tlsServer is rawServer with a TLS handshake done first.
func tlsServer(t *testing.T, handle func(raw *net.TCPConn, tc *tls.Conn)) string {
	t.Helper()
	conf := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	return rawServer(t, func(raw *net.TCPConn) {
		tc := tls.Server(raw, conf)
		if tc.Handshake() != nil {
			return
		}
		handle(raw, tc)
	})
}

// readRequestBody reads one request and its body from br.
func readRequestBody(br *bufio.Reader) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return err
}

// untilClientGone reads TLS to close_notify, then the socket to the
// client's close: the server side of a connection nobody closes.
func untilClientGone(raw *net.TCPConn, r io.Reader) {
	io.Copy(io.Discard, r)
	io.Copy(io.Discard, raw)
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "storm.test"},
		DNSNames:     []string{"storm.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// small is a storm config sized for tests: tens of connections at most,
// short bounds.
func small(target string, shapes ...Shape) Config {
	cfg := Config{
		Target:          target,
		SNI:             "storm.test",
		Count:           6,
		Concurrency:     3,
		Hold:            time.Second, // servers that close end it early
		Timeout:         5 * time.Second,
		RequestsPerConn: 3,
	}
	for _, s := range shapes {
		cfg.Shapes = append(cfg.Shapes, ShapeWeight{s, 1})
	}
	return cfg
}
