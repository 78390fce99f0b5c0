//go:build unix

package main

// The end-to-end suite: the real edgeproxy binary and two demo machines
// run as subprocesses (see e2e_harness_test.go) and real clients, curl and
// openssl s_client, talk to the proxy, so what is tested is what an
// operator runs, down to flag parsing, certificate files and logging.

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/demo"
	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// e2eConfig: apps a and b share public port 443 (tls + http, routed by
// SNI) and port 80 (http, routed by Host). port_map sends both public
// ports to port 0, so the kernel picks free local ports; the proxy logs
// which.
const e2eConfig = `
[proxy]
bind = "127.0.0.1"
port_map = { 80 = 0, 443 = 0 }
log_level = "debug"

[admin]
listen = "127.0.0.1:0"

[[certificates]]
cert_file = "cert.pem"
key_file = "key.pem"
%s%s`

const e2eApp = `
[[apps]]
name = %q
hostnames = [%q]
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 443
    handlers = ["tls", "http"]
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
  [[apps.machines]]
  id = %q
  address = "127.0.0.1"
  ports = { 8080 = %d }
`

// e2eEnv is a running proxy with its two demo machines.
type e2eEnv struct {
	proxy    *proctest.Proc
	certFile string
	// httpsPort and httpPort are the local ports of public 443 and 80.
	httpsPort, httpPort int
}

func startE2E(t *testing.T) *e2eEnv {
	t.Helper()
	bin := binary(t)
	dir := t.TempDir()
	env := &e2eEnv{certFile: filepath.Join(dir, "cert.pem")}

	// The certificate comes from the binary too, as the quick start makes it.
	out, err := runClient(t, bin, "gen-cert", "-cert", env.certFile, "-key", filepath.Join(dir, "key.pem"), "a.test", "b.test")
	if err != nil {
		t.Fatalf("gen-cert: %v\n%s", err, out)
	}

	m1 := startDemoMachine(t, "m1")
	m2 := startDemoMachine(t, "m2")
	cfg := fmt.Sprintf(e2eConfig, fmt.Sprintf(e2eApp, "a", "a.test", "m1", m1), fmt.Sprintf(e2eApp, "b", "b.test", "m2", m2))
	path := filepath.Join(dir, "edgeproxy.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	p := startProc(t, "edgeproxy run", "run", "-config", path)
	env.proxy = p
	addrs := map[float64]netip.AddrPort{}
	p.Await(t, "listening log lines for ports 80 and 443", readyTimeout, func(r proctest.Record) bool {
		if r["msg"] == "listening" {
			port, _ := r["port"].(float64)
			addrs[port] = proctest.MustAddr(t, r)
		}
		return len(addrs) == 2
	})
	env.httpsPort, env.httpPort = int(addrs[443].Port()), int(addrs[80].Port())
	if env.httpsPort == 0 || env.httpPort == 0 {
		t.Fatalf("proxy listens on %v, want public ports 80 and 443", addrs)
	}
	waitAccepting(t, addrs[443].String())
	waitAccepting(t, addrs[80].String())
	return env
}

// curl runs curl with settings that keep the user's environment out of
// the test: -q ignores ~/.curlrc and --noproxy stops an http_proxy
// variable from routing loopback requests elsewhere.
func curl(t *testing.T, args ...string) string {
	t.Helper()
	bin := requireTool(t, "curl")
	all := append([]string{"-q", "-sS", "--noproxy", "*", "--max-time", "5"}, args...)
	out, err := runClient(t, bin, all...)
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func readJSONReport(t *testing.T, file string) demo.Report {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rep demo.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("response is not a demo report: %v\n%s", err, b)
	}
	return rep
}

// header returns the single value of a forwarded request header, failing
// if it is missing or repeated.
func header(t *testing.T, rep demo.Report, name string) string {
	t.Helper()
	v := rep.Headers[name]
	if len(v) != 1 {
		t.Errorf("request header %s = %q, want exactly one value", name, v)
		return ""
	}
	return v[0]
}

// checkForwarded asserts the forwarding headers the machine saw for a
// request from curl on loopback to public port public.
func checkForwarded(t *testing.T, rep demo.Report, public, proto, ssl, via string) {
	t.Helper()
	want := map[string]string{
		"Fly-Client-Ip":      "127.0.0.1",
		"X-Forwarded-For":    "127.0.0.1",
		"X-Forwarded-Proto":  proto,
		"X-Forwarded-Ssl":    ssl,
		"Fly-Region":         "local",
		"Via":                via,
		"X-Forwarded-Port":   public,
		"Fly-Forwarded-Port": public,
	}
	for name, v := range want {
		if got := header(t, rep, name); got != v {
			t.Errorf("request header %s = %q, want %q", name, got, v)
		}
	}
	if id := header(t, rep, "Fly-Request-Id"); !strings.HasSuffix(id, "-local") || len(id) <= len("-local") {
		t.Errorf("Fly-Request-Id = %q, want an id ending in the region", id)
	}
}

func TestE2E(t *testing.T) {
	env := startE2E(t)
	https := func(host string) []string {
		return []string{"-k", "--resolve", fmt.Sprintf("%s:%d:127.0.0.1", host, env.httpsPort),
			fmt.Sprintf("https://%s:%d/", host, env.httpsPort)}
	}
	plain := func(host string) []string {
		return []string{"--resolve", fmt.Sprintf("%s:%d:127.0.0.1", host, env.httpPort),
			fmt.Sprintf("http://%s:%d/", host, env.httpPort)}
	}

	t.Run("curl http1.1 over tls routes a.test by SNI", func(t *testing.T) {
		body := filepath.Join(t.TempDir(), "body")
		version := curl(t, append([]string{"--http1.1", "-o", body, "-w", "%{http_version}"}, https("a.test")...)...)
		if version != "1.1" {
			t.Errorf("curl negotiated HTTP %q, want 1.1", version)
		}
		rep := readJSONReport(t, body)
		if rep.MachineID != "m1" {
			t.Errorf("machine_id = %q, want m1", rep.MachineID)
		}
		checkForwarded(t, rep, "443", "https", "on", "1.1 edgeproxy")
	})

	t.Run("curl http2 over tls routes b.test by SNI", func(t *testing.T) {
		body := filepath.Join(t.TempDir(), "body")
		version := curl(t, append([]string{"--http2", "-o", body, "-w", "%{http_version}"}, https("b.test")...)...)
		if version != "2" {
			t.Errorf("curl negotiated HTTP %q, want 2", version)
		}
		rep := readJSONReport(t, body)
		if rep.MachineID != "m2" {
			t.Errorf("machine_id = %q, want m2", rep.MachineID)
		}
		checkForwarded(t, rep, "443", "https", "on", "2 edgeproxy")
	})

	t.Run("curl plain http routes by Host", func(t *testing.T) {
		for host, machine := range map[string]string{"a.test": "m1", "b.test": "m2"} {
			body := filepath.Join(t.TempDir(), "body")
			curl(t, append([]string{"-o", body}, plain(host)...)...)
			rep := readJSONReport(t, body)
			if rep.MachineID != machine {
				t.Errorf("%s: machine_id = %q, want %s", host, rep.MachineID, machine)
			}
			checkForwarded(t, rep, "80", "http", "off", "1.1 edgeproxy")
		}
	})

	t.Run("curl unknown Host gets 404 PR05", func(t *testing.T) {
		dir := t.TempDir()
		body, headers := filepath.Join(dir, "body"), filepath.Join(dir, "headers")
		status := curl(t, append([]string{"-o", body, "-D", headers, "-w", "%{http_code}"}, plain("unknown.test")...)...)
		if status != "404" {
			t.Errorf("status %s, want 404", status)
		}
		if b, _ := os.ReadFile(body); !bytes.Contains(b, []byte("PR05")) {
			t.Errorf("body %q does not contain PR05", b)
		}
		if h, _ := os.ReadFile(headers); !bytes.Contains(bytes.ToLower(h), []byte("edgeproxy-error-code: pr05")) {
			t.Errorf("response headers lack Edgeproxy-Error-Code: PR05:\n%s", h)
		}
	})

	for _, alpn := range []string{"h2", "http/1.1"} {
		t.Run("openssl ALPN "+alpn, func(t *testing.T) {
			out, err := sClient(t, env.httpsPort, "a.test", alpn)
			if err != nil {
				t.Fatalf("s_client: %v\n%s", err, out)
			}
			if want := "ALPN protocol: " + alpn + "\n"; !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
			checkServedCert(t, out, env.certFile)
		})
	}

	t.Run("openssl unknown SNI is refused", func(t *testing.T) {
		// runClient fails the test if s_client is still waiting when its
		// timeout ends, which is the hang this guards against.
		out, err := sClient(t, env.httpsPort, "unknown.test", "h2")
		if strings.Contains(out, "ALPN protocol:") {
			t.Errorf("handshake for an unknown name completed:\n%s", out)
		}
		if err == nil && !strings.Contains(out, "alert") {
			t.Errorf("s_client succeeded without an alert:\n%s", out)
		}
		// Refused for the right reason: no app has the name (PR05), not
		// a missing certificate or a broken handshake.
		env.proxy.Await(t, "a PR05 handshake refusal", readyTimeout, func(r proctest.Record) bool {
			return r["msg"] == "tls handshake refused" && r["code"] == "PR05"
		})
		// The refused handshake must not have hurt the listener.
		waitAccepting(t, fmt.Sprintf("127.0.0.1:%d", env.httpsPort))
	})
}

// sClient runs openssl s_client against the proxy with stdin closed, so
// it ends right after the handshake, and returns its combined output.
// -showcerts prints the served chain as PEM for checkServedCert.
func sClient(t *testing.T, port int, serverName, alpn string) (string, error) {
	t.Helper()
	bin := requireTool(t, "openssl")
	return runClient(t, bin, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port),
		"-servername", serverName, "-alpn", alpn, "-showcerts")
}

// checkServedCert asserts that the first certificate in s_client's
// output is the one gen-cert wrote, for a.test.
func checkServedCert(t *testing.T, out, certFile string) {
	t.Helper()
	// pem.Decode skips the text before the first block.
	block, _ := pem.Decode([]byte(out))
	if block == nil {
		t.Errorf("no certificate in s_client output:\n%s", out)
		return
	}
	served, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("served certificate: %v", err)
	}
	if served.Subject.CommonName != "a.test" || !slices.Contains(served.DNSNames, "a.test") {
		t.Errorf("served certificate subject %q, SANs %v; want a.test", served.Subject, served.DNSNames)
	}
	if !strings.Contains(out, "CN = a.test") && !strings.Contains(out, "CN=a.test") {
		t.Errorf("s_client did not print subject CN a.test:\n%s", out)
	}
	raw, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := pem.Decode(raw); want == nil || !bytes.Equal(want.Bytes, block.Bytes) {
		t.Errorf("served certificate is not the configured %s", certFile)
	}
}
