//go:build unix

package main

// The end-to-end suite: it builds the real edgeproxy binary once, runs it
// and two demo machines as subprocesses, and talks to the proxy with real
// clients (curl, openssl s_client), so what is tested is what an operator
// runs, down to flag parsing, logging and signal handling. The in-process
// tests of this package (validate_test.go) run in the same test binary.
// It is built on Unix only: it stops subprocesses with SIGTERM.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/demo"
)

const (
	// buildTimeout bounds "go build", which may have to compile the whole
	// module on a cold cache.
	buildTimeout = 5 * time.Minute
	// procLifetime bounds every long-running subprocess, so one that a
	// crashed test fails to stop still dies on its own.
	procLifetime = 2 * time.Minute
	// stopGrace is how long a subprocess gets to exit after SIGTERM before
	// it is killed; the proxy and the demo machine both stop at once.
	stopGrace = 5 * time.Second
	// readyTimeout bounds waiting for a subprocess to say it listens.
	readyTimeout = 10 * time.Second
	// clientTimeout bounds one curl or openssl run.
	clientTimeout = 10 * time.Second
)

var (
	// binPath is the built binary; buildErr says why there is none.
	binPath  string
	buildErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

// runTests is TestMain's body, so the deferred cleanup of the build
// directory runs before os.Exit.
func runTests(m *testing.M) int {
	if testing.Short() {
		buildErr = errors.New("not built in -short mode")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "edgeproxy-e2e-")
	if err != nil {
		buildErr = err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	binPath, buildErr = buildBinary(dir)
	return m.Run()
}

// buildBinary runs "go build" on this package. The environment, including
// GOTOOLCHAIN, is inherited unchanged so the binary is built with the
// toolchain the tests themselves were built with.
func buildBinary(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out := filepath.Join(dir, "edgeproxy")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, b)
	}
	return out, nil
}

// binary returns the built edgeproxy, skipping in -short mode and failing
// when the build failed (the in-process tests still ran).
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end tests build and run the binary; skipped in -short mode")
	}
	if buildErr != nil {
		t.Fatalf("edgeproxy binary not built: %v", buildErr)
	}
	return binPath
}

// requireTool finds an external client. CI must install it, so there a
// missing tool fails; on a developer machine the test is skipped instead.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI for the end-to-end tests: %v", name, err)
	}
	t.Skipf("%s not installed; skipping (CI installs it)", name)
	return ""
}

// procLog collects a subprocess's output and wakes waiters on each write,
// so readiness is awaited without sleeping.
type procLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newProcLog() *procLog { return &procLog{changed: make(chan struct{})} }

func (l *procLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *procLog) snapshot() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String(), l.changed
}

func (l *procLog) String() string {
	s, _ := l.snapshot()
	return s
}

// proc is a running edgeproxy subprocess.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *procLog
	done chan struct{} // closed once Wait returned
}

// startProc runs the binary with args until the test ends. Cleanup sends
// SIGTERM, as an operator stopping it would, and kills the process if it
// is not gone after stopGrace; either way it waits for the process, so
// none outlives the test.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	bin := binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), procLifetime)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	killWithParent(cmd)
	p := &proc{name: name, cmd: cmd, log: newProcLog(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait() // the outcome is read from ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		exitedEarly := false
		select {
		case <-p.done:
			exitedEarly = true
		default:
		}
		cancel()
		<-p.done
		switch st := cmd.ProcessState; {
		case exitedEarly:
			t.Errorf("%s exited before the test ended: %v", name, st)
		case !st.Success():
			// A graceful stop exits 0; anything else means SIGTERM was
			// not handled or the process had to be killed.
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", name, st)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.log)
		}
	})
	return p
}

// logRecord is one JSON log line of a subprocess.
type logRecord map[string]any

// waitLog waits until match has accepted a JSON log line of p, feeding it
// every complete line seen so far each time output arrives. It fails the
// test if the process exits or readyTimeout passes first.
func (p *proc) waitLog(t *testing.T, what string, match func(logRecord) bool) {
	t.Helper()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	for {
		text, changed := p.log.snapshot()
		// Output arrives in arbitrary chunks; a last line without its
		// newline is read again, whole, after the next write.
		complete := text[:strings.LastIndexByte(text, '\n')+1]
		for line := range strings.Lines(complete) {
			var r logRecord
			if json.Unmarshal([]byte(line), &r) == nil && match(r) {
				return
			}
		}
		select {
		case <-changed:
		case <-p.done:
			t.Fatalf("%s exited while waiting for %s: %v\n%s", p.name, what, p.cmd.ProcessState, p.log)
		case <-timer.C:
			t.Fatalf("%s: no %s within %v\n%s", p.name, what, readyTimeout, p.log)
		}
	}
}

// listenAddr reads an "addr" field of a log record as a loopback address.
func listenAddr(t *testing.T, r logRecord) netip.AddrPort {
	t.Helper()
	s, _ := r["addr"].(string)
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatalf("log record %v: bad addr: %v", r, err)
	}
	return ap
}

// startDemoMachine runs "edgeproxy demo-machine" on a port the kernel
// picks: the machine logs the address it bound, so there is no window in
// which another process could take a port chosen in advance.
func startDemoMachine(t *testing.T, id string) int {
	t.Helper()
	p := startProc(t, "demo-machine "+id, "demo-machine", "-listen", "127.0.0.1:0", "-id", id)
	var addr netip.AddrPort
	p.waitLog(t, "listening log line", func(r logRecord) bool {
		if r["msg"] != "demo machine listening" {
			return false
		}
		addr = listenAddr(t, r)
		return true
	})
	return int(addr.Port())
}

// waitAccepting polls until addr accepts TCP connections. The proxy logs
// a port only after binding it, so this normally succeeds at once; it
// guards against the log and the socket ever drifting apart.
func waitAccepting(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not accepting connections after %v: %v", addr, readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// e2eConfig: apps a and b share public port 443 (tls + http, routed by
// SNI) and port 80 (http, routed by Host). port_map sends both public
// ports to port 0, so the kernel picks free local ports; the proxy logs
// which.
const e2eConfig = `
[proxy]
bind = "127.0.0.1"
port_map = { 80 = 0, 443 = 0 }
log_level = "debug"

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
	dir      string
	certFile string
	// httpsPort and httpPort are the local ports of public 443 and 80.
	httpsPort, httpPort int
}

func startE2E(t *testing.T) *e2eEnv {
	t.Helper()
	bin := binary(t)
	dir := t.TempDir()
	env := &e2eEnv{dir: dir, certFile: filepath.Join(dir, "cert.pem")}

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
	addrs := map[float64]netip.AddrPort{}
	p.waitLog(t, "listening log lines for ports 80 and 443", func(r logRecord) bool {
		if r["msg"] == "listening" {
			port, _ := r["port"].(float64)
			addrs[port] = listenAddr(t, r)
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

// runClient runs a short-lived command bounded by clientTimeout and
// returns its combined output. Running out of time fails the test: a
// client that hangs means the proxy hung.
func runClient(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %v: %v\n%s", name, strings.Join(args, " "), clientTimeout, ctx.Err(), out)
	}
	return string(out), err
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
