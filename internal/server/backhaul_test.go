package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/backhaul"
	"github.com/edgeproxy/edgeproxy/internal/demo"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// workerSource is the address a worker connects to its machines from;
// the machines accept no other, so an edge reaches them only through
// the worker.
const workerSource = "127.0.0.2"

// fromWorkerSource dials machines from workerSource.
func fromWorkerSource(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(workerSource)}}
	return d.DialContext(ctx, network, addr)
}

const backhaulApp = `
[[apps]]
name = "app"
hostnames = ["app.test"]
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.http_options]
    debug_routing = true
    [apps.http_service.tls_options]
    default_self_signed = true
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 5000
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 6000
    handlers = ["proxy_proto"]
    proxy_proto_options = { version = "v2" }
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
  ports = { 8080 = %d }
`

// backhaulPair is worker w1 (running the embedded NATS server and app
// "app" with machine m1, which only it can reach) and edge e1, with
// certificates from a fleet CA in certs.
type backhaulPair struct {
	certs        string
	worker, edge *proxytest.Proxy
}

func startBackhaulPair(t *testing.T, edgeOpts proxytest.Options) *backhaulPair {
	t.Helper()
	return startBackhaulPairWith(t, edgeOpts, proxytest.PrivateMachine(t, "m1", workerSource).Port())
}

// startBackhaulPairWith is startBackhaulPair with m1 on port.
func startBackhaulPairWith(t *testing.T, edgeOpts proxytest.Options, port int) *backhaulPair {
	t.Helper()
	return startBackhaulPairApp(t, edgeOpts, fmt.Sprintf(backhaulApp, port))
}

// startBackhaulPairApp is startBackhaulPair with the worker's apps given.
func startBackhaulPairApp(t *testing.T, edgeOpts proxytest.Options, apps string) *backhaulPair {
	t.Helper()
	b := &backhaulPair{certs: proxytest.FleetCerts(t, "w1", "e1")}
	nats := freeAddr(t)
	b.worker = proxytest.Start(t, fmt.Sprintf(`
[proxy]
region = "ord"
[log]
access_log = "off"
[fleet]
embedded = true
listen = %q
node = "w1"
role = "worker"
data_dir = %q
backhaul_listen = "127.0.0.1:0"
`, nats, t.TempDir())+proxytest.BackhaulKeys(b.certs, "w1")+apps, proxytest.Options{Dial: fromWorkerSource})
	edgeOpts.Ports = []int{80, 443, 5000, 6000}
	b.edge = proxytest.Start(t, fmt.Sprintf(`
[proxy]
region = "iad"
[log]
access_log = "off"
[fleet]
urls = ["nats://%s"]
node = "e1"
role = "edge"
data_dir = %q
`, nats, t.TempDir())+proxytest.BackhaulKeys(b.certs, "e1"), edgeOpts)
	return b
}

// TestBackhaulEdgeReachesWorkersMachine: an edge serves an app whose only
// machine its worker runs and alone can reach, over HTTP/1.1 and raw TCP
// through the backhaul; the worker refuses an edge's request for a
// machine it does not run.
func TestBackhaulEdgeReachesWorkersMachine(t *testing.T) {
	b := startBackhaulPair(t, proxytest.Options{})
	edge := b.edge
	port := b.worker.Config.Apps[0].Machines[0].Ports["8080"]

	// The machine refuses the edge's own connections.
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, _ := c.Read(make([]byte, 1)); n != 0 {
			t.Fatal("the machine answered a connection that did not come from its worker")
		}
		c.Close()
	}

	// HTTP/1.1 through the edge, relayed to the worker.
	var rep demo.Report
	var resp *http.Response
	waitFor(t, "the edge to serve app.test through w1", 10*time.Second, func() bool {
		if edge.Server.Addr(80) == nil {
			return false // the fleet's catalog has not arrived
		}
		req, _ := http.NewRequest("GET", "http://"+edge.Addr(80)+"/hello", nil)
		req.Host = "app.test"
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer r.Body.Close()
		if r.StatusCode != 200 {
			return false
		}
		resp = r
		return json.NewDecoder(r.Body).Decode(&rep) == nil
	})
	if rep.MachineID != "m1" || rep.Path != "/hello" {
		t.Errorf("machine %q path %q, want m1 /hello", rep.MachineID, rep.Path)
	}
	if got := rep.Headers["Fly-Client-Ip"]; len(got) != 1 || got[0] != "127.0.0.1" {
		t.Errorf("Fly-Client-IP %v: want the client's, set once by the edge", got)
	}
	if _, ok := rep.Headers[httpHeaderTarget]; ok {
		t.Errorf("the machine saw the backhaul's target field")
	}
	if dbg := resp.Header.Get("Edgeproxy-Route"); !strings.Contains(dbg, "worker=w1") {
		t.Errorf("debug header %q does not name the worker", dbg)
	}

	// The edge learned how far the worker's region is from the connect of its
	// backhaul connection, before any stream.
	families, _ := edge.Server.Metrics().Registry.Gather()
	ord := false
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if f.GetName() == "edgeproxy_region_rtt_seconds" && len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == "ord" {
				ord = m.GetGauge().GetValue() > 0
			}
		}
	}
	if !ord {
		t.Error("no round-trip time to the worker's region (ord) measured from backhaul connects")
	}

	// HTTP/2 from the client, relayed the same way.
	h2 := edge.Client(443, true)
	defer h2.CloseIdleConnections()
	r2, err := h2.Get("https://app.test/over-h2")
	if err != nil {
		t.Fatal(err)
	}
	var rep2 demo.Report
	json.NewDecoder(r2.Body).Decode(&rep2)
	r2.Body.Close()
	if r2.ProtoMajor != 2 || r2.StatusCode != 200 || rep2.MachineID != "m1" || rep2.Path != "/over-h2" {
		t.Errorf("h2: %s %d machine %q path %q", r2.Proto, r2.StatusCode, rep2.MachineID, rep2.Path)
	}

	// A WebSocket: the upgrade takes a raw stream to the worker.
	ws, err := net.Dial("tcp", edge.Addr(80))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	wbr := wsUpgrade(t, ws)
	ws.Write(wsFrame(0x1, []byte("hello worker")))
	if op, payload := readWSFrame(t, wbr); op != 0x1 || string(payload) != "hello worker" {
		t.Fatalf("websocket echo: op %d %q", op, payload)
	}

	// A proxy_proto service: the edge writes the PROXY header, naming the
	// client, into the stream; the machine reads it behind its worker.
	pp, err := net.Dial("tcp", edge.Addr(6000))
	if err != nil {
		t.Fatal(err)
	}
	defer pp.Close()
	pp.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(pp, "GET /pp HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
	ppResp, err := http.ReadResponse(bufio.NewReader(pp), nil)
	if err != nil {
		t.Fatal(err)
	}
	var ppRep demo.Report
	json.NewDecoder(ppResp.Body).Decode(&ppRep)
	if ppRep.Proxy == nil || ppRep.Proxy.Version != 2 || ppRep.Proxy.Source != pp.LocalAddr().String() {
		t.Errorf("proxy_proto through the backhaul: the machine saw PROXY %+v, want v2 from %s", ppRep.Proxy, pp.LocalAddr())
	}

	// Raw TCP through the edge: a stream to the worker, then the echo.
	c, err := net.Dial("tcp", edge.Addr(5000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "ECHO through the backhaul\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, "through the backhaul") {
		t.Fatalf("tcp echo: %q, %v", line, err)
	}
}

const httpHeaderTarget = "Edgeproxy-Target"

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestBackhaulCertificatesRotateOnReload: new fleet certificates (a whole
// new CA) written over the old files take effect at a reload, on each
// node: a stream from an edge that reloaded to a worker that has not is
// refused; once both have, streams flow again.
func TestBackhaulCertificatesRotateOnReload(t *testing.T) {
	b := startBackhaulPair(t, proxytest.Options{})
	certs, worker, edge := b.certs, b.worker, b.edge
	echo := func() error {
		c, err := net.Dial("tcp", edge.Addr(5000))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "rotate\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "rotate\n" {
			return fmt.Errorf("echo %q: %v", line, err)
		}
		return nil
	}
	waitFor(t, "a stream through w1", 10*time.Second, func() bool { return edge.Server.Addr(5000) != nil && echo() == nil })

	// A new fleet CA, written over the files both nodes read.
	next := proxytest.FleetCerts(t, "w1", "e1")
	rotate := func(node string) {
		for _, name := range []string{backhaul.CACertFile, node + ".pem", node + "-key.pem"} {
			b, err := os.ReadFile(filepath.Join(next, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(certs, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	rotate("e1")
	if err := edge.Server.Reload(filepath.Join(edge.Dir, "edgeproxy.toml")); err != nil {
		t.Fatal(err)
	}
	if err := echo(); err == nil {
		t.Fatal("a stream signed by the new CA reached a worker that still trusts the old one")
	}
	rotate("w1")
	if err := worker.Server.Reload(filepath.Join(worker.Dir, "edgeproxy.toml")); err != nil {
		t.Fatal(err)
	}
	if err := echo(); err != nil {
		t.Fatalf("after both reloaded the new certificates: %v", err)
	}
}

// spinAfter wraps a connection whose reads, once spin is set, return
// nothing and no error: the incident's shape, here under the backhaul.
type spinAfter struct {
	net.Conn
	spin *atomic.Bool
}

func (c *spinAfter) Read(p []byte) (int, error) {
	if c.spin.Load() {
		return 0, nil
	}
	return c.Conn.Read(p)
}

// TestBackhaulSpinIsKilledAndNamed: a backhaul connection whose socket
// starts returning empty reads is killed by the progress guard, and the
// log names the peer and the backhaul's layers.
func TestBackhaulSpinIsKilledAndNamed(t *testing.T) {
	var spin atomic.Bool
	spinning := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &spinAfter{Conn: c, spin: &spin}, nil
	}
	edge := startBackhaulPair(t, proxytest.Options{Dial: spinning}).edge
	get := func() (int, error) {
		req, _ := http.NewRequest("GET", "http://"+edge.Addr(80)+"/", nil)
		req.Host = "app.test"
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	waitFor(t, "a request through w1", 10*time.Second, func() bool {
		if edge.Server.Addr(80) == nil {
			return false
		}
		code, err := get()
		return err == nil && code == 200
	})
	spin.Store(true)
	get() // its backhaul connection spins under it
	waitFor(t, "the spin kill's log line", 10*time.Second, func() bool {
		return strings.Contains(edge.Logs.String(), "spin detector killed a backhaul connection")
	})
	for _, line := range strings.Split(edge.Logs.String(), "\n") {
		if !strings.Contains(line, "spin detector killed a backhaul connection") {
			continue
		}
		var rec map[string]any
		json.Unmarshal([]byte(line), &rec)
		chain, _ := rec["chain"].(string)
		if rec["peer"] != "w1" || rec["layer"] != "backhaul-tcp" || !strings.Contains(chain, "*iox.Guarded(backhaul-tls) -> *tls.Conn -> *iox.Guarded(backhaul-tcp)") {
			t.Errorf("spin kill logged as %v; want peer w1, layer backhaul-tcp and the chain", rec)
		}
	}
}

// TestBackhaulMachineCannotForgeWorkerErrors: a machine whose response
// carries the field a worker reports its failures in gets its response to
// the client as it is; the edge neither answers an error nor sends the
// request to another machine.
func TestBackhaulMachineCannotForgeWorkerErrors(t *testing.T) {
	l := proxytest.ListenOnlyFrom(t, workerSource)
	var hits atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Edgeproxy-Relay-Error", "PC01 1 forged by the machine")
		io.WriteString(w, "the machine's own answer")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	edge := startBackhaulPairWith(t, proxytest.Options{}, l.Port()).edge
	var body string
	var code int
	waitFor(t, "an answer through w1", 10*time.Second, func() bool {
		if edge.Server.Addr(80) == nil {
			return false
		}
		req, _ := http.NewRequest("POST", "http://"+edge.Addr(80)+"/", strings.NewReader("once"))
		req.Host = "app.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body, code = string(b), resp.StatusCode
		// PR01: the fleet's copy of the app has not arrived yet.
		return resp.Header.Get("Edgeproxy-Error-Code") != "PR01"
	})
	if code != 200 || body != "the machine's own answer" {
		t.Errorf("got %d %q, want the machine's 200 and body", code, body)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("the machine saw the request %d times, want once", n)
	}
}
