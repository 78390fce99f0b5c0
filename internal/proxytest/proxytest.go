// Package proxytest is the integration-test harness: it starts real demo
// machines and a real edgeproxy server in-process on loopback ports chosen
// by the kernel, from a config written as TOML in the test, and stops them
// all when the test ends.
package proxytest

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demo"
	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/server"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// Machine starts a demo machine on 127.0.0.1:0 and returns its port.
func Machine(t testing.TB, id string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ln, done, err := demo.Listen(ctx, "127.0.0.1:0", id, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// DeadPort returns a loopback port nothing listens on (it was bound and
// released), for connect-failure tests.
func DeadPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// Proxy is a running edgeproxy under test.
type Proxy struct {
	*server.Server
	Config *config.Config
	Dir    string
	Logs   *LogBuffer
}

// Options tune Start.
type Options struct {
	// Seed makes balancing ties deterministic; 0 uses a fixed default.
	Seed uint64
	// Files are written next to the config before loading (name -> body).
	Files map[string]string
	// WrapWire is passed to server.Options.TestWrapWire.
	WrapWire func(net.Conn) net.Conn
	// Tracing replaces the config's tracing (an in-memory recorder).
	Tracing *telemetry.Tracing
	// Dial is passed to server.Options.TestDial: it opens every upstream
	// connection, so tests can inject per-region round-trip times.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Ports are public ports to serve on free local ports besides the
	// file's apps' (a fleet's apps arrive later).
	Ports []int
}

// Start writes cfg to a temp dir, loads and validates it exactly as
// `edgeproxy run` does, sends every public port to a free local port, and
// starts the server. The server is closed when the test ends.
func Start(t testing.TB, cfg string, o Options) *Proxy {
	t.Helper()
	dir := t.TempDir()
	for name, body := range o.Files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "edgeproxy.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	c.Proxy.Bind = "127.0.0.1"
	if c.Admin.Listen == "127.0.0.1:9901" {
		c.Admin.Listen = "127.0.0.1:0" // tests run side by side
	}
	if c.Tripwire.Enabled == nil {
		// The CPU profiler is one per process: many in-process servers
		// under a busy test run must not fight over it.
		off := false
		c.Tripwire.Enabled = &off
	}
	c.Proxy.PortMap = map[string]int{}
	for _, port := range o.Ports {
		c.Proxy.PortMap[strconv.Itoa(port)] = 0
	}
	for i := range c.Apps {
		for _, s := range c.Apps[i].AllServices() {
			for _, p := range s.Ports {
				lo, hi := p.Range()
				for port := lo; port <= hi; port++ {
					c.Proxy.PortMap[strconv.Itoa(port)] = 0
				}
			}
		}
	}
	seed := o.Seed
	if seed == 0 {
		seed = 1
	}
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed))
	intn := func(n int) int {
		mu.Lock()
		defer mu.Unlock()
		return rng.IntN(n)
	}
	logs := &LogBuffer{}
	srv, err := server.New(c, server.Options{Log: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Intn: intn, TestWrapWire: o.WrapWire, AccessLog: logs, Tracing: o.Tracing, TestDial: o.Dial})
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return &Proxy{Server: srv, Config: c, Dir: dir, Logs: logs}
}

// Addr is the local address of a public port.
func (p *Proxy) Addr(public int) string {
	a := p.Server.Addr(public)
	if a == nil {
		panic(fmt.Sprintf("proxytest: port %d is not served", public))
	}
	return a.String()
}

// URL is scheme://addr-of-public-port.
func (p *Proxy) URL(scheme string, public int) string {
	return scheme + "://" + p.Addr(public)
}

// Client returns an HTTP client that sends every request to the proxy's
// public port whatever the URL's host, so tests can use real hostnames;
// TLS certificates are not verified (tests use self-signed ones) and h2
// is offered when http2 is true.
func (p *Proxy) Client(public int, http2 bool) *http.Client {
	addr := p.Addr(public)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: http2,
		DisableKeepAlives: false,
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	if http2 {
		tr.Protocols.SetHTTP2(true)
	}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c
}

// LogBuffer collects the server's log lines for assertions.
type LogBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// FleetStore is a client of the fleet's buckets on the NATS server at url,
// for a test's own writes. It reconnects on its own (tests stop and start
// the server), and is closed when the test ends.
func FleetStore(t testing.TB, url string) *fleet.Store {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s, err := fleet.NewStore(nc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
