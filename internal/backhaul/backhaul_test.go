package backhaul

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/meter"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// fleetDir makes a fleet CA and certificates for nodes in a temp dir.
func fleetDir(t *testing.T, nodes ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := InitCA(dir, "test fleet", 24*time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := IssueNode(dir, dir, n, time.Hour, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func identity(t *testing.T, dir, node string) *Identity {
	t.Helper()
	cert, key := NodeFiles(dir, node)
	id, err := LoadIdentity(filepath.Join(dir, CACertFile), cert, key, node)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// echo is a machine: it echoes what it reads.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

type testWorker struct {
	w        *Worker
	connects atomic.Int64
	lastPeer atomic.Value
}

// startWorker runs worker w1 whose only machine is app/m1 on port 8080,
// an echo server.
func startWorker(t *testing.T, id *Identity) *testWorker {
	t.Helper()
	machine := echo(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tw := &testWorker{}
	tw.w = NewWorker(ln, WorkerOptions{
		Identity:         func() *Identity { return id },
		Guard:            testGuard(),
		HandshakeTimeout: 2 * time.Second,
		IdleTimeout:      time.Minute,
		Connect: func(ctx context.Context, peer string, tg Target) (net.Conn, func(), error) {
			tw.lastPeer.Store(peer)
			if tg.App != "app" || tg.Machine != "m1" || tg.Port != 8080 {
				return nil, nil, perr.New(perr.WorkerRefused, fmt.Errorf("no machine %s of app %s here", tg.Machine, tg.App))
			}
			tw.connects.Add(1)
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", machine)
			return c, func() {}, err
		},
		Pipe: func(a, b net.Conn) {
			iox.Duplex(a, b, iox.DuplexOptions{IdleTimeout: 5 * time.Second})
		},
		HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "relayed %s %s for %s", r.Method, r.URL.Path, r.Header.Get("X-Peer"))
		}),
		ConnContext: func(ctx context.Context, peer string) context.Context { return ctx },
		Log:         slog.New(slog.DiscardHandler),
		Metrics:     NewMetrics(telemetry.NewMetrics(&iox.Stats{}, &meter.Apps{})),
	})
	go tw.w.Serve()
	t.Cleanup(func() { tw.w.Close() })
	return tw
}

func client(t *testing.T, id *Identity, workerAddr string) *Client {
	c := NewClient(ClientOptions{
		Identity:    func() *Identity { return id },
		Address:     func(node string) (string, bool) { return workerAddr, node == "w1" },
		DialTimeout: 2 * time.Second, IdleTimeout: time.Minute,
		Guard:   testGuard(),
		Metrics: NewMetrics(telemetry.NewMetrics(&iox.Stats{}, &meter.Apps{})),
	})
	t.Cleanup(c.Close)
	return c
}

var client1 = netip.MustParseAddrPort("203.0.113.7:40000")

func TestStreamReachesOwnMachine(t *testing.T) {
	dir := fleetDir(t, "w1", "e1")
	tw := startWorker(t, identity(t, dir, "w1"))
	c := client(t, identity(t, dir, "e1"), tw.w.Addr().String())
	s, err := c.DialStream(context.Background(), "w1", Target{App: "app", Machine: "m1", Port: 8080, Client: client1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Write([]byte("hello through the backhaul"))
	s.(interface{ CloseWrite() error }).CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "hello through the backhaul" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if p := tw.lastPeer.Load(); p != "e1" {
		t.Errorf("worker saw peer %v, want e1 (from its certificate)", p)
	}
	// A later stream resumes the TLS session: no full handshake each.
	s2, err := c.DialStream(context.Background(), "w1", Target{App: "app", Machine: "m1", Port: 8080, Client: client1})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if !s2.(*conn).tls.ConnectionState().DidResume {
		t.Error("the second stream to a worker did not resume the TLS session")
	}
}

func TestStreamToAnotherMachineIsRefused(t *testing.T) {
	dir := fleetDir(t, "w1", "e1")
	tw := startWorker(t, identity(t, dir, "w1"))
	c := client(t, identity(t, dir, "e1"), tw.w.Addr().String())
	_, err := c.DialStream(context.Background(), "w1", Target{App: "app", Machine: "m2", Port: 8080, Client: client1})
	pe, ok := perr.As(err)
	if !ok || pe.Code != perr.WorkerRefused || !pe.Retryable || !strings.Contains(err.Error(), "worker w1") {
		t.Fatalf("got %v, want a retryable PB02 from worker w1", err)
	}
	if n := tw.connects.Load(); n != 0 {
		t.Errorf("the worker connected %d times for a machine it does not run", n)
	}
}

func TestBackhaulRefusesNonMembers(t *testing.T) {
	dir := fleetDir(t, "w1")
	tw := startWorker(t, identity(t, dir, "w1"))
	other := fleetDir(t, "e1") // another fleet's CA
	for name, cfg := range map[string]*tls.Config{
		"no certificate":     {InsecureSkipVerify: true, NextProtos: []string{ProtoStream}},
		"another fleet's CA": identity(t, other, "e1").ClientConfig("w1", ProtoStream),
	} {
		t.Run(name, func(t *testing.T) {
			cfg = cfg.Clone()
			cfg.InsecureSkipVerify, cfg.VerifyConnection = true, nil
			c, err := tls.Dial("tcp", tw.w.Addr().String(), cfg)
			if err == nil {
				// TLS 1.3: the client's handshake ends before the server
				// checks its certificate; the refusal comes on first read.
				c.Write(AppendHeader(nil, Target{App: "app", Machine: "m1", Port: 8080, Client: client1}))
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Read(make([]byte, 16))
				c.Close()
			}
			if err == nil {
				t.Fatal("a client without a fleet certificate got an answer")
			}
			if n := tw.connects.Load(); n != 0 {
				t.Errorf("the worker connected %d times for a non-member", n)
			}
		})
	}
}

func TestEdgeChecksTheWorkerIsTheNodeItWants(t *testing.T) {
	dir := fleetDir(t, "w1", "w2", "e1")
	tw := startWorker(t, identity(t, dir, "w2")) // w2 answers at w1's address
	c := client(t, identity(t, dir, "e1"), tw.w.Addr().String())
	_, err := c.DialStream(context.Background(), "w1", Target{App: "app", Machine: "m1", Port: 8080, Client: client1})
	if pe, ok := perr.As(err); !ok || pe.Code != perr.WorkerUnreachable {
		t.Fatalf("got %v, want PB01: the certificate names another node", err)
	}
}

func TestRelayedRequests(t *testing.T) {
	dir := fleetDir(t, "w1", "e1")
	tw := startWorker(t, identity(t, dir, "w1"))
	c := client(t, identity(t, dir, "e1"), tw.w.Addr().String())
	for i := range 20 {
		req, _ := http.NewRequest("GET", "http://x/path", nil)
		req.Header.Set("X-Peer", fmt.Sprint(i))
		resp, err := c.RoundTrip("w1", req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("relayed GET /path for %d", i); string(b) != want {
			t.Fatalf("got %q, want %q", b, want)
		}
	}
	// Twenty requests, one connection: they share it.
	if n := c.opts.Metrics.connsWith("w1"); n != 1 {
		t.Errorf("%d backhaul connections for 20 sequential requests, want 1", n)
	}
	req, _ := http.NewRequest("GET", "http://x/", nil)
	if _, err := c.RoundTrip("w9", req); !isCode(err, perr.WorkerUnreachable) {
		t.Errorf("unknown worker: got %v, want PB01", err)
	}
}

func isCode(err error, code perr.Code) bool {
	var pe *perr.Error
	return errors.As(err, &pe) && pe.Code == code
}

func testGuard() Guard { return Guard{Limits: iox.DefaultGuardLimits(), Stats: &iox.Stats{}} }
