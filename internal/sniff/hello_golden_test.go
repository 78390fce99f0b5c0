package sniff

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/hello/go-*.bin from the running crypto/tls")

type golden struct {
	file string
	// cfg is the crypto/tls client config that produced the file, or nil for
	// files captured from `openssl s_client` (see testdata/hello/README).
	cfg  *tls.Config
	want HelloInfo // Len is checked against the file size
}

func goldens() []golden {
	tls13 := []uint16{tls.VersionTLS13, tls.VersionTLS12}
	return []golden{
		{"go-sni.bin", &tls.Config{ServerName: "example.com"},
			HelloInfo{ServerName: "example.com", Versions: tls13}},
		// crypto/tls sends no SNI without a ServerName (or for an IP address).
		{"go-nosni.bin", &tls.Config{InsecureSkipVerify: true},
			HelloInfo{Versions: tls13}},
		{"go-alpn.bin", &tls.Config{ServerName: "edge.example.net", NextProtos: []string{"h2", "http/1.1"}},
			HelloInfo{ServerName: "edge.example.net", ALPN: []string{"h2", "http/1.1"}, Versions: tls13}},
		{"go-tls12.bin", &tls.Config{ServerName: "legacy.example.com", MaxVersion: tls.VersionTLS12},
			HelloInfo{ServerName: "legacy.example.com", Versions: []uint16{tls.VersionTLS12}}},
		// OpenSSL 3.0's default configuration here still offers TLS 1.0 and 1.1.
		{"openssl-sni-alpn.bin", nil,
			HelloInfo{ServerName: "www.example.org", ALPN: []string{"h2", "http/1.1"},
				Versions: []uint16{tls.VersionTLS13, tls.VersionTLS12, tls.VersionTLS11, tls.VersionTLS10}}},
		// OpenSSL sends no supported_versions when limited to TLS 1.2, so
		// the version comes from legacy_version.
		{"openssl-tls12-nosni.bin", nil,
			HelloInfo{Versions: []uint16{tls.VersionTLS12}}},
		{"openssl-tls13.bin", nil,
			HelloInfo{ServerName: "api_v2.internal-host.test", Versions: []uint16{tls.VersionTLS13}}},
	}
}

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "hello", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestClientHelloGolden(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.file, func(t *testing.T) {
			b := readGolden(t, g.file)
			want := g.want
			want.Len = len(b)
			// Every cut of the stored records must be NeedMore, the whole a
			// Match, and bytes after the hello (early data, junk) ignored.
			junk := append(bytes.Clone(b), "\x17\x03\x03\x00\x05hello"...)
			v := checkPrefixes(t, junk, helloVerdict(t))
			if v.r != Match {
				_, _, err := ClientHello(b)
				t.Fatalf("ClientHello = %v, %v; want Match", v.r, err)
			}
			if got := v.info.(HelloInfo); !reflect.DeepEqual(got, want) {
				t.Errorf("ClientHello info = %+v, want %+v", got, want)
			}
			if cryptoTLSHello(b) == nil {
				t.Fatal("crypto/tls refused a real client's hello")
			}
			agreeWithCryptoTLS(t, b, want)
		})
	}
}

// TestClientHelloLive captures hellos from the crypto/tls in use now, so a
// toolchain whose client grows a new extension or shape is caught here rather
// than on the edge. With -update it refreshes the stored Go goldens.
func TestClientHelloLive(t *testing.T) {
	for _, g := range goldens() {
		if g.cfg == nil {
			continue
		}
		t.Run(g.file, func(t *testing.T) {
			b := captureGoHello(t, g.cfg)
			r, got, err := ClientHello(b)
			want := g.want
			want.Len = len(b)
			if r != Match || !reflect.DeepEqual(got, want) {
				t.Fatalf("ClientHello = %v, %+v, %v; want Match, %+v", r, got, err, want)
			}
			if *update {
				if err := os.WriteFile(filepath.Join("testdata", "hello", g.file), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestClientHelloRefragment re-frames every golden message into records of
// many sizes: record boundaries must not change the answer.
func TestClientHelloRefragment(t *testing.T) {
	for _, g := range goldens() {
		msg := stripRecords(t, readGolden(t, g.file))
		for _, size := range []int{1, 2, 3, 4, 5, 7, 64, 255, 1000, maxRecordLen} {
			b := records(msg, size)
			r, got, err := ClientHello(b)
			want := g.want
			want.Len = len(b)
			if r != Match || !reflect.DeepEqual(got, want) {
				t.Errorf("%s in %d-byte records: %v, %+v, %v; want Match, %+v", g.file, size, r, got, err, want)
			}
		}
		checkPrefixes(t, records(msg, 7), helloVerdict(t))
	}
}

// stripRecords returns the handshake bytes carried by well-formed records.
func stripRecords(t *testing.T, b []byte) []byte {
	t.Helper()
	var msg []byte
	for len(b) >= recordHeaderLen {
		n := int(binary.BigEndian.Uint16(b[3:]))
		if len(b) < recordHeaderLen+n {
			t.Fatalf("truncated record")
		}
		msg = append(msg, b[recordHeaderLen:recordHeaderLen+n]...)
		b = b[recordHeaderLen+n:]
	}
	return msg
}

// captureGoHello runs a crypto/tls client against a pipe and returns the
// records it wrote before waiting for a ServerHello. It frames them by the
// record and handshake headers alone, so it does not depend on the code
// under test.
func captureGoHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- tls.Client(client, cfg.Clone()).Handshake() }()
	t.Cleanup(func() {
		server.Close()
		<-done
		client.Close()
	})
	var out, msg []byte
	for total := -1; total < 0 || len(msg) < total; {
		hdr := make([]byte, recordHeaderLen)
		if _, err := io.ReadFull(server, hdr); err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
		if _, err := io.ReadFull(server, payload); err != nil {
			t.Fatal(err)
		}
		out = append(append(out, hdr...), payload...)
		msg = append(msg, payload...)
		if len(msg) >= handshakeHeaderLen {
			total = handshakeHeaderLen + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		}
	}
	return out
}
