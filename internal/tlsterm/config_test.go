package tlsterm

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestVersions(t *testing.T) {
	tests := []struct {
		in       []string
		min, max uint16
		wantErr  string
	}{
		{nil, tls.VersionTLS12, tls.VersionTLS13, ""},
		{[]string{"TLSv1.2", "TLSv1.3"}, tls.VersionTLS12, tls.VersionTLS13, ""},
		{[]string{"TLSv1.3", "TLSv1.2"}, tls.VersionTLS12, tls.VersionTLS13, ""},
		{[]string{"TLSv1.3"}, tls.VersionTLS13, tls.VersionTLS13, ""},
		{[]string{"tlsv1.2"}, tls.VersionTLS12, tls.VersionTLS12, ""},
		{[]string{"TLSv1.1", "TLSv1.2"}, 0, 0, `"TLSv1.1" is not supported`},
		{[]string{"TLSv1.0"}, 0, 0, `"TLSv1.0" is not supported`},
		{[]string{"SSLv3"}, 0, 0, "not supported"},
		{[]string{"TLS1.3"}, 0, 0, "unknown tls version"},
	}
	for _, tt := range tests {
		min, max, err := Versions(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Versions(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || min != tt.min || max != tt.max {
			t.Errorf("Versions(%q) = %x, %x, %v; want %x, %x", tt.in, min, max, err, tt.min, tt.max)
		}
	}
}

// handshake runs one TLS connection over loopback and returns what the
// client saw. The server writes a byte after its handshake so the client
// reads it and, with it, any TLS 1.3 session ticket.
func handshake(t *testing.T, srv, cli *tls.Config) (state tls.ConnectionState, clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		tc := tls.Server(c, srv)
		if err := tc.Handshake(); err != nil {
			served <- err
			return
		}
		_, err = tc.Write([]byte{'k'})
		served <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(deadline)
	tc := tls.Client(c, cli)
	defer tc.Close()
	if clientErr = tc.Handshake(); clientErr == nil {
		_, clientErr = io.ReadFull(tc, make([]byte, 1))
	} else {
		c.Close() // unblock a server still waiting for the client's flight
	}
	return tc.ConnectionState(), clientErr, <-served
}

func clientFor(t *testing.T, cert *tls.Certificate, name string, alpn ...string) *tls.Config {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	return &tls.Config{RootCAs: roots, ServerName: name, NextProtos: alpn}
}

func TestServerConfigHandshake(t *testing.T) {
	cert, err := NewSelfSigner().Get("app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		alpn         []string
		min, max     uint16
		clientALPN   []string
		clientMax    uint16
		wantProto    string
		wantVersion  uint16
		wantRejected bool
	}{
		{"server preference wins", []string{"h2", "http/1.1"}, 0, 0, []string{"http/1.1", "h2"}, 0, "h2", tls.VersionTLS13, false},
		{"http/1.1 only", []string{"http/1.1"}, 0, 0, []string{"h2", "http/1.1"}, 0, "http/1.1", tls.VersionTLS13, false},
		{"no ALPN from client", []string{"h2"}, 0, 0, nil, 0, "", tls.VersionTLS13, false},
		{"TLS 1.2 pinned", []string{"h2"}, tls.VersionTLS12, tls.VersionTLS12, []string{"h2"}, 0, "h2", tls.VersionTLS12, false},
		{"client limited to 1.2", []string{"h2"}, 0, 0, []string{"h2"}, tls.VersionTLS12, "h2", tls.VersionTLS12, false},
		{"1.3 only refuses a 1.2 client", nil, tls.VersionTLS13, tls.VersionTLS13, nil, tls.VersionTLS12, "", 0, true},
		{"TLS 1.1 raised to 1.2", nil, tls.VersionTLS11, 0, nil, tls.VersionTLS11, "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cli := clientFor(t, cert, "app.example.com", tt.clientALPN...)
			cli.MinVersion, cli.MaxVersion = tls.VersionTLS10, tt.clientMax
			state, cerr, serr := handshake(t, ServerConfig(cert, tt.alpn, tt.min, tt.max), cli)
			if tt.wantRejected {
				if cerr == nil || serr == nil {
					t.Fatalf("handshake succeeded (client %v, server %v), want it refused", cerr, serr)
				}
				return
			}
			if cerr != nil || serr != nil {
				t.Fatalf("client error %v, server error %v", cerr, serr)
			}
			if state.NegotiatedProtocol != tt.wantProto || state.Version != tt.wantVersion {
				t.Errorf("negotiated %q over %s, want %q over %s", state.NegotiatedProtocol,
					tls.VersionName(state.Version), tt.wantProto, tls.VersionName(tt.wantVersion))
			}
			if tt.wantVersion == tls.VersionTLS13 && state.CurveID != tls.X25519MLKEM768 {
				t.Errorf("key exchange %v, want X25519MLKEM768", state.CurveID)
			}
		})
	}
}

func TestServerConfigWithoutCertificateRefuses(t *testing.T) {
	cert, err := NewSelfSigner().Get("app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	_, cerr, serr := handshake(t, ServerConfig(nil, nil, 0, 0), clientFor(t, cert, "app.example.com"))
	if cerr == nil || !errors.Is(serr, ErrNoCertificate) {
		t.Errorf("client error %v, server error %v; want refusal with ErrNoCertificate", cerr, serr)
	}
}

// TestSessionResumption wires the pieces the way the server does: a
// long-lived base config choosing the certificate per handshake, whose
// ticket keys make resumption work across connections.
func TestSessionResumption(t *testing.T) {
	certFile, keyFile := testPair(t, "*.example.com")
	store, err := Load([]CertSpec{{CertFile: certFile, KeyFile: keyFile}})
	if err != nil {
		t.Fatal(err)
	}
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			base := &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				return ServerConfig(store.Lookup(hello.ServerName), []string{"h2"}, version, version), nil
			}}
			cli := clientFor(t, store.Lookup("a.example.com"), "a.example.com", "h2")
			cli.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			for i, wantResume := range []bool{false, true} {
				state, cerr, serr := handshake(t, base, cli)
				if cerr != nil || serr != nil {
					t.Fatalf("connection %d: client error %v, server error %v", i, cerr, serr)
				}
				if state.DidResume != wantResume {
					t.Errorf("connection %d: DidResume = %v, want %v", i, state.DidResume, wantResume)
				}
			}
		})
	}
}
