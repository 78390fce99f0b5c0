package server_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proxytest"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

// reloadHeader keeps every public port on a kernel-chosen port and the
// admin API on loopback, so the file the server re-reads is safe to bind.
const reloadHeader = `
[proxy]
bind = "127.0.0.1"
port_map = { 80 = 0, 443 = 0, 5000 = 0, 6000 = 0 }
[admin]
listen = "127.0.0.1:0"
`

func writeConfig(t *testing.T, p *proxytest.Proxy, body string) string {
	t.Helper()
	path := filepath.Join(p.Dir, "edgeproxy.toml")
	if err := os.WriteFile(path, []byte(reloadHeader+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReloadPortsAndInvalidConfig(t *testing.T) {
	m1, m2 := proxytest.Machine(t, "m1"), proxytest.Machine(t, "m2")
	base := singleApp(machine("m1", m1), httpService)
	p := proxytest.Start(t, reloadHeader+base, proxytest.Options{})
	addr80 := p.Addr(80)
	c := p.Client(80, false)
	defer c.CloseIdleConnections()

	// Add a raw TCP port and a machine.
	path := writeConfig(t, p, singleApp(machine("m1", m1)+machine("m2", m2), httpService)+tcpApp(m1, "[]", ""))
	if err := p.Reload(path); err != nil {
		t.Fatal(err)
	}
	if p.Addr(80) != addr80 {
		t.Errorf("kept port 80 moved from %s to %s", addr80, p.Addr(80))
	}
	tc, err := net.Dial("tcp", p.Addr(5000))
	if err != nil {
		t.Fatalf("new port 5000 not served: %v", err)
	}
	tc.Write([]byte("hi"))
	tc.(*net.TCPConn).CloseWrite()
	if b, _ := io.ReadAll(tc); string(b) != "hi" {
		t.Errorf("echo through the new port: %q", b)
	}
	tc.Close()
	seen := map[string]bool{}
	for i := 0; i < 40 && len(seen) < 2; i++ {
		_, rep := get(t, c, "http://app.test/", nil)
		seen[rep.MachineID] = true
	}
	if !seen["m2"] {
		t.Errorf("the added machine never served: %v", seen)
	}

	// An invalid config is refused and changes nothing.
	path = writeConfig(t, p, base+"\n[limits]\nmax_connections = \"many\"\n")
	if err := p.Reload(path); err == nil {
		t.Fatal("invalid config reloaded")
	}
	waitLog(t, p, "reload refused")
	if _, rep := get(t, c, "http://app.test/", nil); rep.MachineID == "" {
		t.Error("service disturbed by a refused reload")
	}
	if p.Server.Addr(5000) == nil {
		t.Error("a refused reload removed port 5000")
	}

	// Remove the TCP port: it stops accepting; port 80 keeps serving on
	// the same keep-alive connection.
	path = writeConfig(t, p, base)
	if err := p.Reload(path); err != nil {
		t.Fatal(err)
	}
	if p.Server.Addr(5000) != nil {
		t.Error("removed port 5000 still listed")
	}
	// Requests on the keep-alive connection opened before the reload use
	// the new config: m2 is gone from it.
	for i := 0; i < 10; i++ {
		if _, rep := get(t, c, "http://app.test/", nil); rep.MachineID != "m1" {
			t.Fatalf("request %d after the reload reached %q, want m1", i, rep.MachineID)
		}
	}
	waitMetric(t, p, `edgeproxy_config_reloads_total{result="ok"}`, 2)
	waitMetric(t, p, `edgeproxy_config_reloads_total{result="failed"}`, 1)
}

// TestReloadRereadsCertificates: a certificate replaced on disk is served
// after a reload.
func TestReloadRereadsCertificates(t *testing.T) {
	dir := t.TempDir()
	certFor := func(name string) (string, string) {
		c, k, err := tlsterm.WriteTestCert(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	cert, key := certFor("app.test")
	body := func(c, k string) string {
		return "[[certificates]]\ncert_file = \"" + c + "\"\nkey_file = \"" + k + "\"\nhostnames = [\"app.test\"]\n" +
			singleApp(machine("m1", proxytest.Machine(t, "m1")), strings.ReplaceAll(httpService, "default_self_signed = true", ""))
	}
	p := proxytest.Start(t, reloadHeader+body(cert, key), proxytest.Options{})
	serial := func() string {
		c, err := tls.Dial("tcp", p.Addr(443), &tls.Config{ServerName: "app.test", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	cert2, key2 := certFor("app.test")
	if err := p.Reload(writeConfig(t, p, body(cert2, key2))); err != nil {
		t.Fatal(err)
	}
	if after := serial(); after == before {
		t.Error("the new certificate is not served after the reload")
	}
}

// TestDrain: a request in flight finishes, idle keep-alive connections
// close at once, /ready turns false, and the server ends.
func TestDrain(t *testing.T) {
	p := proxytest.Start(t, reloadHeader+singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService), proxytest.Options{})
	admin := "http://" + p.AdminAddr().String()
	idle, err := net.Dial("tcp", p.Addr(80))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Write([]byte("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"))
	idle.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	idle.Read(buf) // the response: the connection is now idle keep-alive

	var wg sync.WaitGroup
	var slowStatus int
	wg.Go(func() {
		resp, err := p.Client(80, false).Get("http://app.test/sleep?d=1s")
		if err != nil {
			t.Log(err)
		}
		if err == nil {
			slowStatus = resp.StatusCode
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	waitLoad(t, p, 2) // the idle connection and the slow one each hold a machine
	drained := make(chan error, 1)
	go func() { drained <- p.Drain() }()

	// The idle connection is closed promptly, long before the slow request ends.
	start := time.Now()
	if _, err := io.ReadAll(idle); err != nil || time.Since(start) > 900*time.Millisecond {
		t.Errorf("idle keep-alive connection not closed at once (%v, %v)", time.Since(start), err)
	}
	if resp, err := http.Get(admin + "/ready"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Errorf("/ready while draining: %d", resp.StatusCode)
		}
	}
	if _, err := net.DialTimeout("tcp", p.Addr(80), time.Second); err == nil {
		t.Error("a new connection was accepted while draining")
	}
	wg.Wait()
	if slowStatus != 200 {
		t.Errorf("the in-flight request got %d", slowStatus)
	}
	if err := <-drained; err != nil {
		t.Errorf("drain: %v", err)
	}
}

// TestDrainClosesWebSockets: a WebSocket tunnel open when the proxy
// drains gets a close frame through to the machine, whose close reaches
// the client; the tunnel ends well before the drain timeout.
func TestDrainClosesWebSockets(t *testing.T) {
	p := proxytest.Start(t, reloadHeader+singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService), proxytest.Options{})
	c, err := net.Dial("tcp", p.Addr(80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := wsUpgrade(t, c)
	c.Write(wsFrame(0x1, []byte("before drain")))
	if op, msg := readWSFrame(t, br); op != 0x1 || string(msg) != "before drain" {
		t.Fatalf("echo: %d %q", op, msg)
	}
	start := time.Now()
	drained := make(chan error, 1)
	go func() { drained <- p.Drain() }()
	// The machine echoes the proxy's close frame back: 1001, going away.
	op, payload := readWSFrame(t, br)
	if op != 0x8 || len(payload) < 2 || payload[0] != 0x03 || payload[1] != 0xe9 {
		t.Fatalf("got op %d payload %x, want a close frame with 1001", op, payload)
	}
	c.Write(wsFrame(0x8, payload)) // the client answers the close
	// and, as a WebSocket client does, closes once the server side has.
	io.Copy(io.Discard, br)
	c.Close()
	if err := <-drained; err != nil {
		t.Error(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("drain took %v", took)
	}
}

// TestWatchConfig: with watch_config, editing the file reloads it.
func TestWatchConfig(t *testing.T) {
	m1 := proxytest.Machine(t, "m1")
	p := proxytest.Start(t, reloadHeader+singleApp(machine("m1", m1), httpService), proxytest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); p.WatchConfig(ctx, filepath.Join(p.Dir, "edgeproxy.toml")) }()
	defer func() { cancel(); <-done }()
	time.Sleep(1100 * time.Millisecond) // let the watcher record the file as it is
	writeConfig(t, p, singleApp(machine("m1", m1), httpService)+tcpApp(m1, "[]", ""))
	deadline := time.Now().Add(10 * time.Second)
	for p.Server.Addr(5000) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the edited config was not reloaded")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
