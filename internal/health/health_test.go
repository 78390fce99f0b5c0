package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/meter"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// build makes a snapshot of one app "web" with one service on internal
// port 8080, reached on machinePort, with the given check tables. state
// is machine m1's state.
func build(t *testing.T, machinePort int, state, checks string, prev *catalog.Snapshot) *catalog.Snapshot {
	t.Helper()
	body := fmt.Sprintf(`
[proxy]
region = "ams"
[[apps]]
name = "web"
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 10080
%s
  [[apps.machines]]
  id = "m1"
  region = "ams"
  address = "127.0.0.1"
  state = %q
  ports = { "8080" = %d }
`, checks, state, machinePort)
	path := filepath.Join(t.TempDir(), "edgeproxy.toml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := catalog.Build(cfg, prev)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// tcpCheck and httpCheck render check tables; extra adds keys.
func tcpCheck(extra string) string {
	return `
    [[apps.services.tcp_checks]]
    interval = "10ms"
    timeout = "10ms"
    grace_period = "0s"
    unhealthy_after = 1
` + extra
}

func httpCheck(extra string) string {
	return `
    [[apps.services.http_checks]]
    interval = "20ms"
    timeout = "20ms"
    grace_period = "0s"
    unhealthy_after = 1
` + extra
}

func machine(snap *catalog.Snapshot) (*catalog.Service, *catalog.Machine) {
	app := snap.App("web")
	return app.Services[0], app.Machines[0]
}

func newMetrics() *telemetry.Metrics { return telemetry.NewMetrics(&iox.Stats{}, &meter.Apps{}) }

// value reads a counter or gauge. (client_golang's testutil needs a module
// go.mod does not list.)
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatal(err)
	}
	if pb.Counter != nil {
		return pb.Counter.GetValue()
	}
	return pb.Gauge.GetValue()
}

// series counts the series c exports.
func series(t *testing.T, c prometheus.Collector) int {
	t.Helper()
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// listen starts a TCP server on addr that accepts and closes at once.
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port
}

// syncBuffer is a log sink the probers write to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTCPCheck(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	port := portOf(t, ln.Addr().String())
	snap := build(t, port, "started", tcpCheck(""), nil)
	svc, m := machine(snap)
	h := svc.Health(m)
	metrics := newMetrics()
	var logs syncBuffer
	c := New(Options{Metrics: metrics, Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	defer c.Close()
	c.Reconcile(snap)

	passes := metrics.HealthChecks.WithLabelValues("web", "tcp", "pass")
	gauge := metrics.MachineHealthy.WithLabelValues("web", "m1", "8080")
	waitFor(t, "a passing probe", func() bool { return value(t, passes) >= 1 })
	if !h.Healthy() || value(t, gauge) != 1 {
		t.Fatalf("healthy %v, gauge %v after a pass", h.Healthy(), value(t, gauge))
	}

	ln.Close()
	want := "tcp check: connect: connection refused"
	waitFor(t, "unhealthy after the listener closed", func() bool { return !h.Healthy() && h.Reason() == want })
	waitFor(t, "gauge 0", func() bool { return value(t, gauge) == 0 })
	if n := value(t, metrics.HealthChecks.WithLabelValues("web", "tcp", "fail")); n < 1 {
		t.Errorf("fail counter = %v", n)
	}
	for _, s := range []string{`"level":"WARN"`, `"msg":"machine health changed"`, `"app":"web"`, `"machine":"m1"`,
		`"region":"ams"`, `"internal_port":8080`, `"check":"tcp"`, `"healthy":false`, `"reason":"` + want + `"`} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log lacks %s:\n%s", s, logs.String())
		}
	}

	// Listen again on the same port; another process may have taken it
	// meanwhile, which this test cannot prevent.
	ln2, err := net.Listen("tcp", ln.Addr().String())
	if err != nil {
		t.Skipf("cannot listen again on %s: %v", ln.Addr(), err)
	}
	defer ln2.Close()
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	waitFor(t, "healthy again", func() bool { return h.Healthy() && value(t, gauge) == 1 })
	if !strings.Contains(logs.String(), `"healthy":true`) {
		t.Errorf("no log line for the recovery:\n%s", logs.String())
	}
}

// checkServer is a check endpoint whose status the test sets.
type checkServer struct {
	status atomic.Int32
	moved  atomic.Int32 // requests that followed a redirect
	mu     sync.Mutex
	last   *http.Request
}

func (s *checkServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/moved" {
		s.moved.Add(1)
		return
	}
	s.mu.Lock()
	s.last = r.Clone(context.Background())
	s.mu.Unlock()
	if s.status.Load() == http.StatusMovedPermanently {
		w.Header().Set("Location", "/moved")
	}
	w.WriteHeader(int(s.status.Load()))
	w.Write([]byte("status page"))
}

func (s *checkServer) lastRequest() *http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func TestHTTPCheck(t *testing.T) {
	cs := &checkServer{}
	cs.status.Store(200)
	srv := httptest.NewServer(cs)
	defer srv.Close()
	snap := build(t, portOf(t, srv.Listener.Addr().String()), "started", httpCheck(`
    method = "POST"
    path = "/healthz?deep=1"
    headers = { Host = "app.example", X-Check = "yes" }
`), nil)
	svc, m := machine(snap)
	h := svc.Health(m)
	metrics := newMetrics()
	c := New(Options{Metrics: metrics})
	defer c.Close()
	c.Reconcile(snap)

	waitFor(t, "a check request", func() bool { return cs.lastRequest() != nil })
	r := cs.lastRequest()
	if r.Method != "POST" || r.Host != "app.example" || r.URL.RequestURI() != "/healthz?deep=1" ||
		r.Header.Get("X-Check") != "yes" || r.UserAgent() != "edgeproxy-health-check" {
		t.Errorf("request: %s %s host %q headers %v", r.Method, r.URL.RequestURI(), r.Host, r.Header)
	}
	if !h.Healthy() {
		t.Fatalf("unhealthy on 200: %s", h.Reason())
	}

	prefix := "http check POST /healthz?deep=1: "
	cs.status.Store(500)
	waitFor(t, "unhealthy on 500", func() bool { return h.Reason() == prefix+"status 500" })
	cs.status.Store(204)
	waitFor(t, "healthy on 204", h.Healthy)
	cs.status.Store(301)
	waitFor(t, "unhealthy on 301", func() bool { return h.Reason() == prefix+"status 301 (redirects are not followed)" })
	if n := cs.moved.Load(); n != 0 {
		t.Errorf("redirect followed %d times", n)
	}
	if n := value(t, metrics.HealthChecks.WithLabelValues("web", "http", "pass")); n < 1 {
		t.Errorf("http pass counter = %v", n)
	}
}

func TestHTTPSCheck(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	// The failing case's handshake errors are expected.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	port := portOf(t, srv.Listener.Addr().String())
	for _, tc := range []struct {
		skip   bool
		reason string // a part of it; "" for healthy
	}{{true, ""}, {false, "certificate"}} {
		snap := build(t, port, "started", httpCheck(fmt.Sprintf(`
    protocol = "https"
    tls_skip_verify = %v
    path = "/"
`, tc.skip)), nil)
		svc, m := machine(snap)
		h := svc.Health(m)
		metrics := newMetrics()
		c := New(Options{Metrics: metrics})
		c.Reconcile(snap)
		if tc.reason == "" {
			passes := metrics.HealthChecks.WithLabelValues("web", "http", "pass")
			waitFor(t, "an https pass", func() bool { return value(t, passes) >= 1 })
			if !h.Healthy() {
				t.Errorf("skip_verify: unhealthy: %s", h.Reason())
			}
		} else {
			waitFor(t, "unhealthy on an unverifiable certificate", func() bool {
				return strings.HasPrefix(h.Reason(), "http check GET /: ") && strings.Contains(h.Reason(), tc.reason)
			})
		}
		c.Close()
	}
}

// scripted is a dialer that fails or connects as script says, attempt by
// attempt (passing once the script ends), and records the machine's
// health as each attempt begins, which is the verdict of the attempts
// before it.
type scripted struct {
	script []bool
	h      *catalog.Health
	mu     sync.Mutex
	seen   []string // "ok" or the reason, at each attempt
}

func (s *scripted) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.seen)
	st := "ok"
	if !s.h.Healthy() {
		st = s.h.Reason()
	}
	s.seen = append(s.seen, st)
	if n < len(s.script) && !s.script[n] {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func (s *scripted) attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

func TestConsecutiveCounts(t *testing.T) {
	const F, P = false, true
	const down = "tcp check: connect: connection refused"
	for _, tc := range []struct {
		name   string
		checks string
		script []bool
		// want is the health seen at each attempt from the second: after
		// the attempts before it.
		want []string
	}{
		{"unhealthy_after=2", "unhealthy_after = 2\n", []bool{F, P, F, P, F, F, P, P},
			[]string{"ok", "ok", "ok", "ok", "ok", down, "ok", "ok"}},
		{"healthy_after=2", "unhealthy_after = 1\nhealthy_after = 2\n", []bool{F, P, F, P, P, P},
			[]string{down, down, down, down, "ok", "ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checks := strings.Replace(tcpCheck(""), "unhealthy_after = 1\n", tc.checks, 1)
			snap := build(t, 8080, "started", checks, nil)
			svc, m := machine(snap)
			s := &scripted{script: tc.script, h: svc.Health(m)}
			c := New(Options{Dial: s.dial})
			c.Reconcile(snap)
			waitFor(t, "every scripted attempt", func() bool { return s.attempts() > len(tc.want) })
			c.Close()
			s.mu.Lock()
			defer s.mu.Unlock()
			for i, w := range tc.want {
				if got := s.seen[i+1]; got != w {
					t.Errorf("after attempt %d (%v): %q, want %q", i+1, tc.script[:i+1], got, w)
				}
			}
		})
	}
}

func TestGracePeriodIgnoresFailures(t *testing.T) {
	snap := build(t, 8080, "started", strings.Replace(tcpCheck(""), `"0s"`, `"1h"`, 1), nil)
	svc, m := machine(snap)
	s := &scripted{script: make([]bool, 1000), h: svc.Health(m)} // every attempt fails
	metrics := newMetrics()
	c := New(Options{Dial: s.dial, Metrics: metrics})
	defer c.Close()
	c.Reconcile(snap)
	waitFor(t, "five attempts", func() bool { return s.attempts() >= 5 })
	if !svc.Health(m).Healthy() {
		t.Errorf("unhealthy within the grace period: %s", svc.Health(m).Reason())
	}
	// Ignored failures are still probes.
	if n := value(t, metrics.HealthChecks.WithLabelValues("web", "tcp", "fail")); n < 4 {
		t.Errorf("fail counter = %v, want every probe", n)
	}
}

// A pass in the grace period counts, and waiters hear of the recovery.
func TestRecoveryWakesWaiters(t *testing.T) {
	snap := build(t, 8080, "started", strings.Replace(tcpCheck(""), `"0s"`, `"1h"`, 1), nil)
	svc, m := machine(snap)
	svc.Health(m).Set(0, "left over from before")
	w := svc.Waiters()
	ch := w.Chan()
	defer w.Done()
	s := &scripted{h: svc.Health(m)}
	c := New(Options{Dial: s.dial})
	defer c.Close()
	c.Reconcile(snap)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("waiters not woken")
	}
	if !svc.Health(m).Healthy() {
		t.Errorf("woken but unhealthy: %s", svc.Health(m).Reason())
	}
}

// probers copies c's probers.
func probers(c *Checker) map[key]*prober {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[key]*prober{}
	for k, p := range c.probers {
		out[k] = p
	}
	return out
}

func stopped(p *prober) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func TestReconcile(t *testing.T) {
	cs := &checkServer{}
	cs.status.Store(500)
	srv := httptest.NewServer(cs)
	defer srv.Close()
	port := portOf(t, srv.Listener.Addr().String())
	both := tcpCheck("") + httpCheck(`    path = "/bad"`+"\n")

	snap := build(t, port, "started", both, nil)
	svc, m := machine(snap)
	h := svc.Health(m)
	metrics := newMetrics()
	c := New(Options{Metrics: metrics})
	defer c.Close()
	c.Reconcile(snap)
	waitFor(t, "the http check to fail", func() bool { return h.Reason() == "http check GET /bad: status 500" })
	before := probers(c)
	if len(before) != 2 {
		t.Fatalf("%d probers, want 2", len(before))
	}

	t.Run("unchanged checks keep their probers", func(t *testing.T) {
		snap = build(t, port, "started", both, snap)
		c.Reconcile(snap)
		after := probers(c)
		for k, p := range before {
			if after[k] != p || stopped(p) {
				t.Errorf("prober %v restarted", k)
			}
		}
		if len(after) != 2 {
			t.Errorf("%d probers, want 2", len(after))
		}
		if svc.Health(m) != h {
			t.Fatal("catalog did not carry health over; the rest of this test assumes it")
		}
	})

	t.Run("a removed check no longer holds the machine down", func(t *testing.T) {
		snap = build(t, port, "started", tcpCheck(""), snap)
		c.Reconcile(snap)
		if !h.Healthy() {
			t.Errorf("still unhealthy: %s", h.Reason())
		}
		after := probers(c)
		if len(after) != 1 {
			t.Fatalf("%d probers, want 1", len(after))
		}
		for k, p := range before {
			if k.index == 0 && (after[k] != p || stopped(p)) {
				t.Error("the tcp prober restarted")
			}
			if k.index == 1 && !stopped(p) {
				t.Error("the http prober still runs")
			}
		}
	})

	t.Run("a changed check restarts its prober", func(t *testing.T) {
		old := probers(c)
		snap = build(t, port, "started", strings.Replace(tcpCheck(""), `interval = "10ms"`, `interval = "11ms"`, 1), snap)
		c.Reconcile(snap)
		now := probers(c)
		if len(now) != 1 {
			t.Fatalf("%d probers, want 1", len(now))
		}
		for k, p := range old {
			if !stopped(p) || now[k] != nil {
				t.Error("the old prober still runs")
			}
		}
	})

	t.Run("no checks resets health and the gauge", func(t *testing.T) {
		snap = build(t, port, "started", httpCheck(`    path = "/bad"`+"\n"), snap)
		c.Reconcile(snap)
		waitFor(t, "unhealthy", func() bool { return !h.Healthy() })
		if n := series(t, metrics.MachineHealthy); n != 1 {
			t.Errorf("%d healthy gauges, want 1", n)
		}
		snap = build(t, port, "started", "", snap)
		c.Reconcile(snap)
		if !h.Healthy() || len(probers(c)) != 0 {
			t.Errorf("healthy %v (%s), %d probers", h.Healthy(), h.Reason(), len(probers(c)))
		}
		if n := series(t, metrics.MachineHealthy); n != 0 {
			t.Errorf("%d healthy gauges, want 0", n)
		}
	})

	t.Run("a stopped machine is not checked", func(t *testing.T) {
		snap = build(t, port, "started", httpCheck(`    path = "/bad"`+"\n"), snap)
		c.Reconcile(snap)
		waitFor(t, "unhealthy", func() bool { return !h.Healthy() })
		snap = build(t, port, "stopped", httpCheck(`    path = "/bad"`+"\n"), snap)
		c.Reconcile(snap)
		if !h.Healthy() || len(probers(c)) != 0 {
			t.Errorf("healthy %v (%s), %d probers", h.Healthy(), h.Reason(), len(probers(c)))
		}
	})
}

func TestCloseStopsEverything(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	cs := &checkServer{}
	cs.status.Store(200)
	srv := httptest.NewServer(cs)
	defer srv.Close()
	snap := build(t, portOf(t, srv.Listener.Addr().String()), "started", tcpCheck("")+httpCheck(""), nil)
	// A dialer slower than the timeout leaves probes in flight at Close.
	var n atomic.Int32
	slow := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if n.Add(1)%2 == 0 {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	c := New(Options{Dial: slow})
	c.Reconcile(snap)
	waitFor(t, "a check request", func() bool { return cs.lastRequest() != nil })
	c.Close()
	c.Close()
	c.Reconcile(snap)
	if n := len(probers(c)); n != 0 {
		t.Errorf("%d probers after Close", n)
	}
	srv.Close()
	if err := goleak.Find(ignore); err != nil {
		t.Error(err)
	}
}

func TestDialErrorWording(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "connect: connection refused"},
		{errors.New("no route"), "connect: no route"},
	} {
		if got := (dialError{tc.err}).Error(); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.err, got, tc.want)
		}
	}
}
