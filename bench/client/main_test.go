package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// serve answers every request on ln with a 5-byte 200, keeping the
// connection open, as the proxies do.
func serve(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					for {
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if l == "\r\n" {
							break
						}
					}
					c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
				}
			}()
		}
	}()
}

func rsaCert(t *testing.T) tls.Certificate {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rsa.test"},
		DNSNames: []string{"rsa.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestOpenIdlePlain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln)
	conn, err := openIdle(context.Background(), &net.Dialer{}, ln.Addr().String(), nil, request("/small", "bench.local"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, ok := conn.(*tls.Conn); ok {
		t.Error("a nil config opened a TLS connection")
	}
}

func TestHandshakeNamesCert(t *testing.T) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{rsaCert(t)}})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln)
	var rec recorder
	cfg := newTLSConfig("rsa.test", tls.X25519, []string{"http/1.1"})
	if _, err := oneHandshake(context.Background(), &net.Dialer{}, ln.Addr().String(), cfg, request("/small", "rsa.test"), &rec); err != nil {
		t.Fatal(err)
	}
	if got := rec.result("handshake", time.Second).Cert; got != "RSA-2048" {
		t.Errorf("cert %q, want RSA-2048", got)
	}
	conn, err := openIdle(context.Background(), &net.Dialer{}, ln.Addr().String(), newTLSConfig("rsa.test", tls.X25519, nil), request("/small", "rsa.test"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}
