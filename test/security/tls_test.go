//go:build linux

package security_test

import (
	"bufio"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

// The TLS front end: what a ClientHello the proxy cannot serve gets back.
// A client refused in silence cannot tell a bad name from a dead proxy, so
// every refusal here must be a TLS alert (or, for plain HTTP, an HTTP 400).

// TLS alert descriptions (RFC 8446 section 6).
const (
	alertInternalError   = 80
	alertDecodeError     = 50
	alertUnrecognized    = 112
	alertNoAppProtocol   = 120
	recordTypeAlert      = 0x15
	recordTypeHandshake  = 0x16
	handshakeServerHello = 2
)

// bigALPN returns ALPN protocols that make a crypto/tls ClientHello about
// size bytes long, with "http/1.1" last so that the proxy can pick it: the
// way browsers' post-quantum key shares and long ALPN lists grow real hellos.
func bigALPN(size int) []string {
	var protos []string
	for n := 0; n < size; n += 201 {
		protos = append(protos, fmt.Sprintf("x-%03d-%s", len(protos), strings.Repeat("p", 194)))
	}
	return append(protos, "http/1.1")
}

// tlsGet runs a whole handshake with cfg and one HTTP/1.1 request.
func tlsGet(t *testing.T, addr string, cfg *tls.Config) (*http.Response, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: sec.test\r\nConnection: close\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return resp, err
}

func TestTLSLargeClientHello(t *testing.T) {
	rec := startRecorder(t, serveEach(func(c *recConn, req *http.Request, _ []byte) bool {
		io.WriteString(c, okResponse("big hello served"))
		return true
	}))
	// 48 KiB: the hellos below are 20 and 40 KiB, each several records.
	env := startProxy(t, withProxy("sniff_max_bytes = 49152"), rec.Port())
	for _, size := range []int{20 << 10, 40 << 10} {
		t.Run(fmt.Sprintf("%d KiB", size>>10), func(t *testing.T) {
			cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "sec.test", NextProtos: bigALPN(size)}
			resp, err := tlsGet(t, env.tlsAddr, cfg)
			if err != nil {
				t.Fatalf("a %d-byte ClientHello within sniff_max_bytes: %v", size, err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
		})
	}
	t.Run("over sniff_max_bytes", func(t *testing.T) {
		// Past the cap the hello is refused, but with an alert.
		hello := buildHello(helloSpec{sni: "sec.test", pad: 56 << 10})
		if typ, desc := helloAnswer(t, env.tlsAddr, hello); typ != recordTypeAlert || desc != alertInternalError {
			t.Fatalf("a %d-byte ClientHello over sniff_max_bytes got %s, want alert %d", len(hello), answerString(typ, desc), alertInternalError)
		}
	})
}

// certConfig is baseConfig with a configured certificate for sec.test and
// no self-signed fallback: a handshake without SNI then gets the app's
// certificate, one with an SNI must name a host that has one.
func certConfig(t *testing.T) string {
	t.Helper()
	certFile, keyFile, err := tlsterm.WriteTestCert(t.TempDir(), "sec.test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(withProxy(""), "default_self_signed = true", "default_self_signed = false", 1)
	return withApps(cfg, fmt.Sprintf("\n[[certificates]]\ncert_file = %q\nkey_file = %q\n", certFile, keyFile))
}

func TestTLSIPLiteralSNI(t *testing.T) {
	rec := startRecorder(t, func(c *recConn) { io.Copy(io.Discard, c) })
	env := startProxy(t, certConfig(t), rec.Port())
	// wrk and some OpenSSL-based tools send the address they dial as SNI,
	// though RFC 6066 says not to: it is no name, so no name is needed.
	for _, sni := range []string{"", "127.0.0.1", "::1"} {
		t.Run("sni="+sni, func(t *testing.T) {
			if typ, desc := helloAnswer(t, env.tlsAddr, buildHello(helloSpec{sni: sni})); typ != handshakeServerHello {
				t.Fatalf("SNI %q got %s, want a ServerHello", sni, answerString(typ, desc))
			}
		})
	}
	t.Run("crypto/tls without SNI", func(t *testing.T) {
		// Control: Go sends no SNI for an address, and the app's certificate
		// serves it.
		c, err := tls.Dial("tcp", env.tlsAddr, &tls.Config{InsecureSkipVerify: true, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := c.ConnectionState().PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "sec.test" {
			t.Errorf("certificate for %q, want sec.test", got)
		}
	})
}

func TestTLSTrailingDotSNI(t *testing.T) {
	rec := startRecorder(t, func(c *recConn) { io.Copy(io.Discard, c) })
	env := startProxy(t, baseConfig, rec.Port())
	// "sec.test." is sec.test fully qualified. RFC 6066 forbids the dot and
	// crypto/tls refuses such a hello: the client must at least be told.
	typ, desc := helloAnswer(t, env.tlsAddr, buildHello(helloSpec{sni: "sec.test."}))
	if typ != recordTypeAlert || desc != alertDecodeError {
		t.Fatalf("SNI %q got %s, want alert %d (decode_error)", "sec.test.", answerString(typ, desc), alertDecodeError)
	}
}

// otherApp is a second app on 443, so that names are told apart.
const otherApp = `
[[apps]]
name = "other"
hostnames = ["other.test"]
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.tls_options]
    default_self_signed = true
  [[apps.machines]]
  id = "o1"
  address = "127.0.0.1"
  ports = { 8080 = MACHINE_PORT }
`

func TestTLSUnknownSNIAlert(t *testing.T) {
	rec := startRecorder(t, func(c *recConn) { io.Copy(io.Discard, c) })
	// A second app on 443, so that names are told apart and some are unknown.
	env := startProxy(t, withApps(withProxy(""), otherApp), rec.Port())
	for _, sni := range []string{"nope.test", ""} {
		t.Run("sni="+sni, func(t *testing.T) {
			typ, desc := helloAnswer(t, env.tlsAddr, buildHello(helloSpec{sni: sni}))
			if typ != recordTypeAlert || desc != alertUnrecognized {
				t.Fatalf("SNI %q on a shared port got %s, want alert %d (unrecognized_name)", sni, answerString(typ, desc), alertUnrecognized)
			}
		})
	}
	// The log still says why: the name, not a failed handshake.
	awaitRefusal(t, env, "PR05")
	t.Run("known name", func(t *testing.T) {
		if typ, desc := helloAnswer(t, env.tlsAddr, buildHello(helloSpec{sni: "other.test"})); typ != handshakeServerHello {
			t.Fatalf("SNI other.test got %s, want a ServerHello", answerString(typ, desc))
		}
	})
	t.Run("name without certificate", func(t *testing.T) {
		// PT05: the port's only app takes every name, but this one has no
		// certificate and no self-signed fallback.
		env := startProxy(t, certConfig(t), rec.Port())
		typ, desc := helloAnswer(t, env.tlsAddr, buildHello(helloSpec{sni: "nocert.test"}))
		if typ != recordTypeAlert || desc != alertUnrecognized {
			t.Fatalf("SNI nocert.test without a certificate got %s, want alert %d (unrecognized_name)", answerString(typ, desc), alertUnrecognized)
		}
		awaitRefusal(t, env, "PT05")
	})
}

// awaitRefusal waits for the proxy to log a handshake refused with code.
func awaitRefusal(t *testing.T, env *proxyEnv, code string) {
	t.Helper()
	env.proxy.Await(t, "a handshake refused with "+code, readyTimeout, func(r proctest.Record) bool {
		return r["msg"] == "tls handshake refused" && r["code"] == code
	})
}

func TestTLSPlainHTTPOnTLSPort(t *testing.T) {
	rec := startRecorder(t, func(c *recConn) { io.Copy(io.Discard, c) })
	env := startProxy(t, baseConfig, rec.Port())
	check := func(t *testing.T, got string) {
		t.Helper()
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
		if err != nil {
			t.Fatalf("plain HTTP on the TLS port got %q, want an HTTP response: %v", got, err)
		}
		body, _ := io.ReadAll(resp.Body)
		const want = "PH05: plain HTTP request sent to a TLS port\n"
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Edgeproxy-Error-Code") != "PH05" || string(body) != want {
			t.Fatalf("got %q, want a 400 with code PH05 and body %q", got, want)
		}
		if !resp.Close {
			t.Errorf("the 400 does not say Connection: close")
		}
	}
	t.Run("one write", func(t *testing.T) {
		check(t, rawExchange(t, env.tlsAddr, "GET / HTTP/1.1\r\nHost: sec.test\r\n\r\n", 5*time.Second))
	})
	t.Run("request line in pieces", func(t *testing.T) {
		// The first byte alone rules TLS out; the answer waits for the line.
		c, err := net.DialTimeout("tcp", env.tlsAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, piece := range []string{"G", "ET / HT", "TP/1.1\r\nHost: sec.test\r\n\r\n"} {
			if _, err := io.WriteString(c, piece); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c)
		check(t, string(got))
	})
	if n := rec.Requests(); n != 0 {
		t.Errorf("the machine received %d requests sent in plain text to the TLS port", n)
	}
}

func TestTLSPgDirectNeedsALPN(t *testing.T) {
	rec := startRecorder(t, func(c *recConn) { io.Copy(io.Discard, c) })
	// A pg_tls service on public port 5432 of the sec app, on the recorder.
	cfg := strings.Replace(withProxy(""), "port_map = { 80 = 0, 443 = 0 }", "port_map = { 80 = 0, 443 = 0, 5432 = 0 }", 1)
	if !strings.Contains(cfg, "5432 = 0") {
		t.Fatal("baseConfig's port_map changed: port 5432 would not be remapped")
	}
	env := startProxy(t, withApps(cfg, `
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 5432
    handlers = ["pg_tls"]
    tls_options = { default_self_signed = true }
`), rec.Port())
	var pgAddr string
	env.proxy.Await(t, "the listening line for port 5432", readyTimeout, func(r proctest.Record) bool {
		if port, _ := r["port"].(float64); r["msg"] == "listening" && port == 5432 {
			pgAddr = proctest.MustAddr(t, r).String()
			return true
		}
		return false
	})

	t.Run("without ALPN", func(t *testing.T) {
		// PostgreSQL 17 refuses direct TLS without ALPN "postgresql", which
		// guards against cross-protocol attacks; so must a proxy in front.
		typ, desc := helloAnswer(t, pgAddr, buildHello(helloSpec{sni: "sec.test"}))
		if typ != recordTypeAlert || desc != alertNoAppProtocol {
			t.Fatalf("direct TLS without ALPN got %s, want alert %d (no_application_protocol)", answerString(typ, desc), alertNoAppProtocol)
		}
	})
	t.Run("other ALPN", func(t *testing.T) {
		typ, desc := helloAnswer(t, pgAddr, buildHello(helloSpec{sni: "sec.test", alpn: []string{"http/1.1"}}))
		if typ != recordTypeAlert || desc != alertNoAppProtocol {
			t.Fatalf("direct TLS with ALPN http/1.1 got %s, want alert %d (no_application_protocol)", answerString(typ, desc), alertNoAppProtocol)
		}
	})
	t.Run("ALPN postgresql", func(t *testing.T) {
		// Control: a PostgreSQL 17 client's direct TLS reaches the machine.
		c, err := tls.Dial("tcp", pgAddr, &tls.Config{InsecureSkipVerify: true, ServerName: "sec.test", NextProtos: []string{"postgresql"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "direct startup"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(string(receivedAll(rec)), "direct startup") {
			if time.Now().After(deadline) {
				t.Fatalf("the machine received %q", receivedAll(rec))
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// receivedAll is every byte the recorder's connections received.
func receivedAll(rec *recorder) []byte {
	var b []byte
	for _, c := range rec.Conns() {
		b = append(b, c.Received()...)
	}
	return b
}

// helloSpec describes a hand-built ClientHello: crypto/tls as a client
// never sends an IP literal or a trailing dot as SNI, so those hellos are
// written byte by byte.
type helloSpec struct {
	sni  string   // none when empty
	alpn []string // no ALPN extension when nil
	pad  int      // bytes of a padding extension (RFC 7685), none when 0
}

// buildHello returns a TLS 1.3 ClientHello (with TLS 1.2 offered too) in
// records of at most 2^14 bytes, as a real client frames it.
func buildHello(s helloSpec) []byte {
	var exts []byte
	ext := func(typ uint16, data []byte) {
		exts = binary.BigEndian.AppendUint16(exts, typ)
		exts = append(exts, vec16(data)...)
	}
	if s.sni != "" {
		ext(0, vec16(append([]byte{0}, vec16([]byte(s.sni))...)))
	}
	ext(10, vec16([]byte{0x00, 0x1d}))                                     // supported_groups: x25519
	ext(11, []byte{1, 0})                                                  // ec_point_formats: uncompressed
	ext(13, vec16([]byte{0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x08, 0x07})) // signature_algorithms
	if s.alpn != nil {
		var list []byte
		for _, p := range s.alpn {
			list = append(append(list, byte(len(p))), p...)
		}
		ext(16, vec16(list))
	}
	ext(43, []byte{4, 0x03, 0x04, 0x03, 0x03}) // supported_versions: 1.3, 1.2
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	share := append([]byte{0x00, 0x1d}, vec16(key.PublicKey().Bytes())...)
	ext(51, vec16(share)) // key_share
	if s.pad > 0 {
		ext(21, make([]byte, s.pad))
	}

	body := []byte{0x03, 0x03}
	body = append(body, make([]byte, 32)...) // random
	rand.Read(body[2:])
	sid := make([]byte, 32)
	rand.Read(sid)
	body = append(append(body, 32), sid...)
	body = append(body, vec16([]byte{0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f})...)
	body = append(body, 1, 0) // compression: null
	body = append(body, vec16(exts)...)

	msg := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	var wire []byte
	for len(msg) > 0 {
		n := min(len(msg), 1<<14)
		wire = append(wire, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		wire = append(wire, msg[:n]...)
		msg = msg[n:]
	}
	return wire
}

func vec16(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

// helloAnswer sends a ClientHello and reads the first record of the answer:
// (handshakeServerHello, 0) for a ServerHello, (recordTypeAlert, the
// alert's description) for an alert, (0, 0) when the proxy closed in
// silence and (other type, 0) for anything else.
func helloAnswer(t *testing.T, addr string, hello []byte) (byte, byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// Written apart from reading: the proxy may answer before it has read
	// all of a hello it refuses.
	wg.Go(func() { c.Write(hello) })
	var hdr [6]byte
	switch _, err := io.ReadFull(c, hdr[:]); {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return 0, 0
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no answer to the ClientHello: %v", err)
		}
		return 0, 0 // reset
	}
	switch hdr[0] {
	case recordTypeHandshake:
		if hdr[5] == handshakeServerHello {
			return handshakeServerHello, 0
		}
		return recordTypeHandshake, hdr[5]
	case recordTypeAlert:
		var desc [1]byte
		if _, err := io.ReadFull(c, desc[:]); err != nil {
			t.Fatalf("reading the alert: %v", err)
		}
		return recordTypeAlert, desc[0]
	}
	return hdr[0], 0
}

func answerString(typ, desc byte) string {
	switch typ {
	case 0:
		return "a close without an alert"
	case handshakeServerHello:
		return "a ServerHello"
	case recordTypeAlert:
		return fmt.Sprintf("alert %d", desc)
	}
	return fmt.Sprintf("a record of type %d (%d)", typ, desc)
}

// A session begun with one app must not resume at another (RFC 6066 §3):
// a resumption skips the certificate, so the client would talk to an app
// it never authenticated. TLS 1.2 resumed it before tickets were bound to
// their name.
func TestTLSResumptionUnderAnotherName(t *testing.T) {
	rec := startRecorder(t, serveEach(func(c *recConn, req *http.Request, body []byte) bool {
		_, err := io.WriteString(c, okResponse("ok"))
		return err == nil
	}))
	env := startProxy(t, withApps(withProxy(""), otherApp), rec.Port())
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			for _, tc := range []struct {
				second     string
				wantResume bool
			}{{"sec.test", true}, {"other.test", false}} {
				cache := &tlsterm.AnyNameCache{}
				for i, name := range []string{"sec.test", tc.second} {
					c, err := tls.Dial("tcp", env.tlsAddr, &tls.Config{ServerName: name, InsecureSkipVerify: true,
						MaxVersion: version, ClientSessionCache: cache, NextProtos: []string{"http/1.1"}})
					if err != nil {
						t.Fatalf("connection %d (%s): %v", i, name, err)
					}
					// A request and its answer: TLS 1.3's ticket arrives
					// after the handshake.
					fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", name)
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						t.Fatalf("connection %d (%s): %v", i, name, err)
					}
					resp.Body.Close()
					resumed := c.ConnectionState().DidResume
					c.Close()
					if i == 1 && resumed != tc.wantResume {
						t.Errorf("a session begun under sec.test, offered under %s: resumed %v, want %v", name, resumed, tc.wantResume)
					}
				}
			}
		})
	}
}
