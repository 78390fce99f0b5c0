//go:build linux

package acme_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

const readyTimeout = 15 * time.Second

// startDNS answers every A query with 127.0.0.1 (and AAAA with nothing),
// over UDP and TCP on one port: pebble resolves the apps' names here, so
// its validations reach the proxy on loopback. It returns the address.
func startDNS(t *testing.T) string {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if question.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
					A:   net.IPv4(127, 0, 0, 1)})
			}
		}
		w.WriteMsg(m)
	})
	var addr string
	for tries := 0; ; tries++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			if tries < 20 {
				continue
			}
			t.Fatal(err)
		}
		serve(t, &dns.Server{PacketConn: pc, Handler: handler})
		serve(t, &dns.Server{Listener: ln, Handler: handler})
		return addr
	}
}

// serve runs a DNS server until the test ends.
func serve(t *testing.T, srv *dns.Server) {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		srv.Shutdown()
		<-done
	})
}

// pebbleEnv is a running pebble: its directory, the root its
// certificates chain to, and its process.
type pebbleEnv struct {
	proc      *proctest.Proc
	directory string
	// serverRoot is the certificate pebble's own HTTPS presents (the
	// proxy trusts it for the ACME API); issuingRoot the root of the
	// certificates it issues (curl trusts it).
	serverRoot  string
	issuingRoot string
	// management is the management API's base URL.
	management string
}

// pebbleOptions shape a pebble.
type pebbleOptions struct {
	// validity of the certificates, in seconds (0: pebble's 90 days).
	validity int
	// blocked names are refused with a rejectedIdentifier problem.
	blocked []string
	// ocsp is the OCSP responder URL put in certificates; it takes RSA
	// keys (pebble serves its issuer's key to a responder only then).
	ocsp string
}

// startPebble runs pebble validating HTTP-01 on httpPort and TLS-ALPN-01
// on tlsPort of 127.0.0.1, resolving names through dnsAddr.
func startPebble(t *testing.T, dnsAddr string, httpPort, tlsPort int, o pebbleOptions) *pebbleEnv {
	t.Helper()
	if pebbleErr != nil {
		t.Fatal(pebbleErr)
	}
	dir := t.TempDir()
	certFile, keyFile, err := tlsterm.WriteTestCert(dir, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ports := proctest.FreePorts(t, 2)
	validity := o.validity
	if validity == 0 {
		validity = 90 * 24 * 3600
	}
	keyAlg := "ecdsa"
	if o.ocsp != "" {
		keyAlg = "rsa"
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  "127.0.0.1:" + strconv.Itoa(ports[0]),
		"managementListenAddress":        "127.0.0.1:" + strconv.Itoa(ports[1]),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               o.ocsp,
		"externalAccountBindingRequired": false,
		"domainBlocklist":                append([]string{"blocked-domain.example"}, o.blocked...),
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   keyAlg,
		"profiles": map[string]any{"default": map[string]any{
			"description": "the suite's", "validityPeriod": validity}},
	}}
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// No random sleeps before validations, no random nonce rejections,
	// and every order validated afresh: the suite counts validations.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	p, err := proctest.Start("pebble", 5*time.Minute, pebbleBin, "-config", cfgFile, "-dnsserver", dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	// pebble has no graceful stop to check: it is killed.
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("pebble output:\n%s", p.Output())
		}
	})
	env := &pebbleEnv{proc: p, directory: fmt.Sprintf("https://localhost:%d/dir", ports[0]), serverRoot: certFile,
		management: fmt.Sprintf("https://127.0.0.1:%d", ports[1])}
	// The management API serves the issuing root once pebble is up.
	roots := x509.NewCertPool()
	pem, _ := os.ReadFile(certFile)
	roots.AppendCertsFromPEM(pem)
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	defer cl.CloseIdleConnections()
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := cl.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", ports[1]))
		if err == nil {
			root, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				env.issuingRoot = filepath.Join(dir, "issuing-root.pem")
				if err := os.WriteFile(env.issuingRoot, root, 0o600); err != nil {
					t.Fatal(err)
				}
				return env
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble's management API did not serve its root: %v\n%s", err, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxyEnv is a running edgeproxy with [acme] pointed at a pebble.
type proxyEnv struct {
	proc            *proctest.Proc
	admin           string
	httpPort, tlsPt int
}

// startMachine is an app's machine: it answers every request with its
// Host, so a test can tell the request arrived.
func startMachine(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "machine saw "+r.Host+"\n")
	}), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// proxyConfig is a config for one app, "web", with hostnames on an
// http_service (80 redirects to 443), and [acme] for pebble. extra is
// appended ([[certificates]], more apps).
func proxyConfig(pb *pebbleEnv, storage string, httpPort, tlsPort, machine int, challenges string, hostnames []string, extra string) string {
	q := make([]string, len(hostnames))
	for i, h := range hostnames {
		q[i] = strconv.Quote(h)
	}
	return fmt.Sprintf(`
[proxy]
region = "test"
bind = "127.0.0.1"
port_map = { 80 = %d, 443 = %d }

[admin]
listen = "127.0.0.1:0"

[log]
access_log = "off"

[acme]
email = "ops@example.test"
directory = %q
trusted_roots_file = %q
challenges = [%s]
storage_dir = %q
renew_check_interval = "1s"

[[apps]]
name = "web"
hostnames = [%s]
  [apps.http_service]
  internal_port = 8080
  force_https = true
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
  ports = { 8080 = %d }
%s`, httpPort, tlsPort, pb.directory, pb.serverRoot, challenges, storage, strings.Join(q, ", "), machine, extra)
}

// startProxy runs edgeproxy on cfg and waits for its ports.
func startProxy(t *testing.T, cfg string, httpPort, tlsPort int) *proxyEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgeproxy.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := proctest.Run(t, proctest.Limits{Lifetime: 5 * time.Minute, Grace: 10 * time.Second}, "edgeproxy run",
		bin.Path(t, "the ACME suite runs pebble and edgeproxy; skipped in -short mode"), "run", "-config", path)
	_, admin := p.AwaitListening(t, readyTimeout, 80, 443)
	return &proxyEnv{proc: p, admin: admin.String(), httpPort: httpPort, tlsPt: tlsPort}
}

// awaitMetric waits until series reaches at least want.
func (e *proxyEnv) awaitMetric(t *testing.T, series string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, _ := proctest.Metric(e.admin, series)
		if v >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v after %v, want %v\n%s", series, v, timeout, want, e.proc.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// served is the certificate the proxy serves for name (chain unverified).
func (e *proxyEnv) served(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	c := e.servedOrNil(name)
	if c == nil {
		t.Fatalf("handshake for %s failed", name)
	}
	return c
}

// servedOrNil is served, or nil if the handshake fails (no certificate).
func (e *proxyEnv) servedOrNil(name string) *x509.Certificate {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", "127.0.0.1:"+strconv.Itoa(e.tlsPt),
		&tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		return nil
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// curl fetches https://name/ through the proxy, verifying the chain
// against root, and returns the body.
func (e *proxyEnv) curl(t *testing.T, name, root string) string {
	t.Helper()
	url := fmt.Sprintf("https://%s:%d/", name, e.tlsPt)
	out, err := proctest.RunCommand(t, 20*time.Second, "curl", "-sS", "--fail", "--cacert", root,
		"--resolve", fmt.Sprintf("%s:%d:127.0.0.1", name, e.tlsPt), url)
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", url, err, out)
	}
	return out
}
