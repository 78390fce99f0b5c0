package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proxytest"
	"github.com/edgeproxy/edgeproxy/internal/replay"
)

// A fleet is a set of test machines in fake regions: each machine has its
// own loopback address (127.0.0.2 and up), and the proxy's upstream dials
// to an address are delayed by that machine's injected round-trip time, so
// the proxy measures regions as if they were far away.
//
// A fleet machine answers every request with a JSON fleetReport, unless
// the request's query tells it, by its id, to do something else:
//
//	replay.ID=V     answer with fly-replay: V (and a body the client must not see)
//	json.ID=V       answer with the JSON form of a replay, body V
//	bad.ID=V        answer with an invalid fly-replay: V
//	sleep.ID=D      wait D before answering
//	drop.ID=1       read the request, then close the connection without a response
//	chain=N         (any machine) replay elsewhere in iad until N replays are done
//
// A machine never replays a request that carries fly-replay-failed: that
// request is the fallback.
type fleet struct {
	t        *testing.T
	machines map[string]*fleetMachine
	byIP     map[string]*fleetMachine
	next     int
	// base is added to every machine's address: parallel tests must not
	// share addresses (each fleet uses its own 127.0.N.x block).
	block int
}

type fleetMachine struct {
	id, region string
	ip         string
	port       int
	rtt        time.Duration
	healthy    atomic.Bool
	hits       atomic.Int64
	active     atomic.Int64
	checks     atomic.Int64
	// delay is added to every answer: a slow (CPU-bound) machine.
	delay atomic.Int64
	// quit ends sleeps when the test ends; handlers counts the requests
	// being answered, which the cleanup waits for.
	quit     chan struct{}
	handlers sync.WaitGroup
	mu       sync.Mutex
	closed   bool // no handler may start: the cleanup waits on handlers
}

// sleep waits d, or less if the test is ending.
func (m *fleetMachine) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-m.quit:
	}
}

// fleetReport is what a fleet machine answers.
type fleetReport struct {
	ID, Region, Method      string
	ReplaySrc, ReplayFailed string
	PreferredGone           string
	BodyLen                 int
	BodySum                 string
}

var fleetBlocks atomic.Int32

func newFleet(t *testing.T) *fleet {
	return &fleet{t: t, machines: map[string]*fleetMachine{}, byIP: map[string]*fleetMachine{},
		block: int(fleetBlocks.Add(1))}
}

// add starts a machine in region with the given injected round-trip time.
func (f *fleet) add(id, region string, rtt time.Duration) *fleetMachine {
	f.t.Helper()
	f.next++
	m := &fleetMachine{id: id, region: region, rtt: rtt, ip: fmt.Sprintf("127.0.%d.%d", f.block, f.next+1), quit: make(chan struct{})}
	m.healthy.Store(true)
	ln, err := net.Listen("tcp", m.ip+":0")
	if err != nil {
		f.t.Fatal(err)
	}
	m.port = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	f.t.Cleanup(func() {
		close(m.quit)
		srv.Close()
		<-done
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		m.handlers.Wait()
	})
	f.machines[id] = m
	f.byIP[m.ip] = m
	return m
}

// dial is the proxy's upstream dialer: it waits the destination machine's
// round-trip time before connecting.
func (f *fleet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	if m := f.byIP[host]; m != nil && m.rtt > 0 {
		t := time.NewTimer(m.rtt)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// app renders an [[apps]] entry on port 80 (http) with debug_routing on.
// keys go into [[apps.services]] (balance = ...), tables after its port
// ([apps.services.concurrency], [[apps.services.http_checks]], ...).
func (f *fleet) app(name, host, keys, tables string, ids ...string) string {
	return fmt.Sprintf(`
[[apps]]
name = %q
hostnames = [%q]
  [[apps.services]]
  internal_port = 8080
  %s
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
    [apps.services.ports.http_options]
    debug_routing = true
%s
%s`, name, host, keys, tables, f.machinesTOML(ids...))
}

// healthCheck is the http check most fleet tests use: quick, one failure
// takes a machine out, its timeout above every injected round trip.
// The timeout is generous so that a busy test machine (-race, other
// packages running) does not fail checks by itself and take a machine
// out of routing with unhealthy_after = 1.
const healthCheck = `
  [[apps.services.http_checks]]
  interval = "100ms"
  timeout = "100ms"
  grace_period = "0s"
  unhealthy_after = 1
  path = "/health"`

// machinesTOML lists ids as [[apps.machines]] of the current app.
func (f *fleet) machinesTOML(ids ...string) string {
	var b strings.Builder
	for _, id := range ids {
		m := f.machines[id]
		fmt.Fprintf(&b, "\n  [[apps.machines]]\n  id = %q\n  region = %q\n  address = %q\n  ports = { 8080 = %d }\n",
			m.id, m.region, m.ip, m.port)
	}
	return b.String()
}

func (m *fleetMachine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.handlers.Add(1)
	m.mu.Unlock()
	defer m.handlers.Done()
	if r.URL.Path == "/health" {
		m.checks.Add(1)
		if !m.healthy.Load() {
			http.Error(w, "sick", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	m.hits.Add(1)
	m.active.Add(1)
	defer m.active.Add(-1)
	q := r.URL.Query()
	body, _ := io.ReadAll(r.Body)
	if d := time.Duration(m.delay.Load()); d > 0 {
		m.sleep(d)
	}
	if v := q.Get("sleep." + m.id); v != "" {
		d, _ := time.ParseDuration(v)
		m.sleep(d)
	}
	if q.Get("drop."+m.id) != "" {
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
		return
	}
	if v := q.Get("chain"); v != "" {
		// chain=N: replay elsewhere in iad until N replays are done,
		// counting in the state that rides in fly-replay-src.
		n, _ := strconv.Atoi(v)
		done := 0
		if src, err := replay.ParseSrc(r.Header.Get("Fly-Replay-Src")); err == nil {
			done, _ = strconv.Atoi(src.State)
		}
		if done < n {
			w.Header().Set("Fly-Replay", fmt.Sprintf("elsewhere=true;region=iad;state=%d", done+1))
			return
		}
	}
	if r.Header.Get("Fly-Replay-Failed") == "" {
		if v := q.Get("replay." + m.id); v != "" {
			w.Header().Set("Fly-Replay", v)
			io.WriteString(w, "replaying: the client must never see this")
			return
		}
		if v := q.Get("bad." + m.id); v != "" {
			w.Header().Set("Fly-Replay", v)
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "invalid instruction from "+m.id)
			return
		}
		if v := q.Get("json." + m.id); v != "" {
			w.Header().Set("Content-Type", "application/vnd.fly.replay+json")
			io.WriteString(w, v)
			return
		}
	}
	sum := sha256.Sum256(body)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(fleetReport{ID: m.id, Region: m.region, Method: r.Method,
		ReplaySrc: r.Header.Get("Fly-Replay-Src"), ReplayFailed: r.Header.Get("Fly-Replay-Failed"),
		PreferredGone: r.Header.Get("Fly-Preferred-Instance-Unavailable"),
		BodyLen:       len(body), BodySum: hex.EncodeToString(sum[:])})
}

// fleetResult is one request's outcome through the proxy.
type fleetResult struct {
	Status int
	Code   string // Edgeproxy-Error-Code
	Header http.Header
	Body   string
	Report fleetReport
}

// do sends one request to the proxy's port 80 for app.test.
func do(t *testing.T, c *http.Client, method, target string, body io.Reader, hdr map[string]string) fleetResult {
	t.Helper()
	req, err := http.NewRequest(method, "http://app.test"+target, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, target, err)
	}
	res := fleetResult{Status: resp.StatusCode, Code: resp.Header.Get("Edgeproxy-Error-Code"), Header: resp.Header, Body: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &res.Report); err != nil {
			t.Fatalf("bad report %q: %v", b, err)
		}
	}
	return res
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hitsOf counts which machine answered n requests.
func hitsOf(t *testing.T, c *http.Client, n int, target string, hdr map[string]string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for range n {
		r := do(t, c, "GET", target, nil, hdr)
		if r.Status != http.StatusOK {
			out[fmt.Sprintf("status %d %s", r.Status, r.Code)]++
			continue
		}
		out[r.Report.ID]++
	}
	return out
}

// concurrently runs n workers until stop is closed, collecting statuses.
type loadResult struct {
	mu     sync.Mutex
	counts map[string]int
}

func (l *loadResult) add(k string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[string]int{}
	}
	l.counts[k]++
}

func (l *loadResult) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, v := range l.counts {
		out[k] = v
	}
	return out
}

// load sends GETs from workers until stop closes; each outcome is counted
// by machine id, or by status and code for failures.
func load(t *testing.T, p *proxytest.Proxy, workers int, target string, stop <-chan struct{}) (*loadResult, *sync.WaitGroup) {
	res := &loadResult{}
	var wg sync.WaitGroup
	for range workers {
		c := p.Client(80, false)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://app.test"+target, nil)
				resp, err := c.Do(req)
				if err != nil {
					res.add("error: " + err.Error())
					continue
				}
				var rep fleetReport
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &rep) != nil {
					res.add(fmt.Sprintf("status %d %s", resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code")))
					continue
				}
				res.add(rep.ID)
			}
		})
	}
	return res, &wg
}
