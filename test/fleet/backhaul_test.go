//go:build linux

package fleet_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/edgeproxy/edgeproxy/internal/backhaul"
	"github.com/edgeproxy/edgeproxy/internal/demo"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/proctest"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// The backhaul suite: two edges and two workers, real processes on
// loopback, with one NATS server. Each worker connects to its machines
// from an address of its own (upstream_bind), and the machines accept no
// other source: an edge can reach them only through their worker.

// workerSource is the address worker i connects to its machines from.
func workerSource(i int) string { return fmt.Sprintf("127.0.0.%d", 2+i) }

// privateGRPC is a real grpc-go server (the standard health service)
// reachable from src only.
func privateGRPC(t *testing.T, src string) *proxytest.OnlyFrom {
	l := proxytest.ListenOnlyFrom(t, src)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, grpchealth.NewServer())
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return l
}

// fleetIdentity makes the fleet CA and the nodes' certificates with the
// real CLI, and returns the directory holding them.
func fleetIdentity(t *testing.T, nodes ...string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := proctest.RunCommand(t, 30*time.Second, edgeproxy(t), "fleet", "ca", "init", "-dir", dir); err != nil {
		t.Fatalf("fleet ca init: %v\n%s", err, out)
	}
	for _, n := range nodes {
		if out, err := proctest.RunCommand(t, 30*time.Second, edgeproxy(t), "fleet", "cert", "issue", "-ca-dir", dir, "-node", n, "-out", dir); err != nil {
			t.Fatalf("fleet cert issue %s: %v\n%s", n, err, out)
		}
	}
	return dir
}

const nodeHead = `
[proxy]
region = "iad"
bind = "127.0.0.1"
port_map = { 80 = 0, 443 = 0, 5000 = 0 }
%s
[admin]
listen = "127.0.0.1:0"
[log]
access_log = "off"
[fleet]
urls = [%q]
node = %q
role = %q
data_dir = %q
`

// webApp is the app both workers run a machine of; grpcApp runs on w1.
const webApp = `
[[apps]]
name = "web"
hostnames = ["web.test"]
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
  [[apps.machines]]
  id = %q
  address = "127.0.0.1"
  ports = { 8080 = %d }
`

const grpcApp = `
[[apps]]
name = "grpc"
hostnames = ["grpc.test"]
  [apps.http_service]
  internal_port = 50051
    [apps.http_service.http_options]
    h2_backend = true
  [[apps.machines]]
  id = "g1"
  address = "127.0.0.1"
  ports = { 50051 = %d }
`

type node struct {
	name  string
	proc  *proctest.Proc
	ports map[int]string
	admin string
}

func startNode(t *testing.T, name, cfg string, ports ...int) *node {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "edgeproxy "+name, edgeproxy(t), "run", "-config", path)
	got, admin := p.AwaitListening(t, readyTimeout, ports...)
	n := &node{name: name, proc: p, ports: map[int]string{}, admin: admin.String()}
	for port, a := range got {
		n.ports[port] = a.String()
	}
	return n
}

// awaitPort waits for a port a fleet app opens later.
func (n *node) awaitPort(t *testing.T, port int) string {
	t.Helper()
	got, _ := n.proc.AwaitListening(t, readyTimeout, port)
	n.ports[port] = got[port].String()
	return n.ports[port]
}

// sum adds every series of a metric on the node's /metrics.
func (n *node) sum(name string) float64 {
	resp, err := http.Get("http://" + n.admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			var v float64
			fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
			total += v
		}
	}
	return total
}

func (n *node) metric(series string) float64 {
	v, _ := proctest.Metric(n.admin, series)
	return v
}

// get asks the node's port 80 for host+path on a connection of its own.
func (n *node) get(host, path string) (*http.Response, demo.Report, error) {
	req, _ := http.NewRequest("GET", "http://"+n.ports[80]+path, nil)
	req.Host = host
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	var rep demo.Report
	if err != nil {
		return nil, rep, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &rep)
	return resp, rep, nil
}

type backhaulFleet struct {
	nats           *natsServer
	certs          string
	edges, workers []*node
	web            []*proxytest.OnlyFrom // web machine of worker i
	grpc           *proxytest.OnlyFrom
}

func startBackhaulFleet(t *testing.T) *backhaulFleet {
	f := &backhaulFleet{certs: fleetIdentity(t, "w1", "w2", "e1", "e2"), nats: startNATS(t, 0, t.TempDir())}
	f.grpc = privateGRPC(t, workerSource(0))
	for i := range 2 {
		name := fmt.Sprintf("w%d", i+1)
		m := proxytest.PrivateMachine(t, fmt.Sprintf("m%d", i+1), workerSource(i))
		f.web = append(f.web, m)
		cfg := fmt.Sprintf(nodeHead, fmt.Sprintf("upstream_bind = %q", workerSource(i)), f.nats.url(), name, "worker", t.TempDir()) +
			"backhaul_listen = \"127.0.0.1:0\"\n" + proxytest.BackhaulKeys(f.certs, name) + fmt.Sprintf(webApp, fmt.Sprintf("m%d", i+1), m.Port())
		if i == 0 {
			cfg += fmt.Sprintf(grpcApp, f.grpc.Port())
		}
		f.workers = append(f.workers, startNode(t, name, cfg, 80))
	}
	for i := range 2 {
		name := fmt.Sprintf("e%d", i+1)
		cfg := fmt.Sprintf(nodeHead, "", f.nats.url(), name, "edge", t.TempDir()) + proxytest.BackhaulKeys(f.certs, name) + placeholderApp
		e := startNode(t, name, cfg, 80)
		e.awaitPort(t, 443)
		e.awaitPort(t, 5000)
		f.edges = append(f.edges, e)
	}
	// Both machines of web through every edge: the fleet's catalog and
	// both workers' records have arrived.
	for _, e := range f.edges {
		seen := map[string]bool{}
		deadline := time.Now().Add(readyTimeout)
		for len(seen) < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("edge %s reached only %v of web's machines through the workers", e.name, seen)
			}
			if resp, rep, err := e.get("web.test", "/"); err == nil && resp.StatusCode == 200 {
				seen[rep.MachineID] = true
			} else {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return f
}

func TestBackhaulFleet(t *testing.T) {
	f := startBackhaulFleet(t)

	t.Run("machines refuse the edges", func(t *testing.T) {
		for _, m := range f.web {
			c, err := net.Dial("tcp", m.Addr().String())
			if err != nil {
				continue
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, _ := c.Read(make([]byte, 1)); n != 0 {
				t.Fatal("a machine answered a connection that did not come from its worker")
			}
			c.Close()
		}
	})

	t.Run("http1", func(t *testing.T) {
		for _, e := range f.edges {
			for i := range 2 {
				id := fmt.Sprintf("m%d", i+1)
				req, _ := http.NewRequest("GET", "http://"+e.ports[80]+"/x", nil)
				req.Host = "web.test"
				req.Header.Set("Fly-Force-Instance-Id", id)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var rep demo.Report
				json.NewDecoder(resp.Body).Decode(&rep)
				resp.Body.Close()
				if resp.StatusCode != 200 || rep.MachineID != id {
					t.Fatalf("%s → %s: %d from %q", e.name, id, resp.StatusCode, rep.MachineID)
				}
				if ip := rep.Headers["Fly-Client-Ip"]; len(ip) != 1 || ip[0] != "127.0.0.1" {
					t.Errorf("Fly-Client-IP %v: want the client's, set once, by the edge", ip)
				}
				if dbg := resp.Header.Get("Edgeproxy-Route"); !strings.Contains(dbg, "worker=w"+id[1:]) {
					t.Errorf("debug header %q does not name worker w%s", dbg, id[1:])
				}
			}
		}
	})

	t.Run("h2", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "web.test"}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		resp, err := c.Get("https://" + f.edges[0].ports[443] + "/h2")
		if err != nil {
			t.Fatal(err)
		}
		var rep demo.Report
		json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || rep.Path != "/h2" {
			t.Fatalf("h2: %s %d %+v", resp.Proto, resp.StatusCode, rep)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		c, err := net.Dial("tcp", f.edges[1].ports[80])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: web.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v, %v", resp, err)
		}
		// One masked text frame, "hi"; the echo comes back unmasked.
		c.Write([]byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2})
		frame := make([]byte, 4)
		if _, err := io.ReadFull(br, frame); err != nil || string(frame[2:]) != "hi" {
			t.Fatalf("echo: %q, %v", frame, err)
		}
	})

	t.Run("grpc", func(t *testing.T) {
		for _, e := range f.edges {
			cc, err := grpc.NewClient("passthrough:///"+e.ports[80], grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithAuthority("grpc.test"))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			cc.Close()
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("%s: grpc health check through the backhaul: %v, %v", e.name, resp, err)
			}
		}
	})

	t.Run("tcp", func(t *testing.T) {
		for _, e := range f.edges {
			c, err := net.Dial("tcp", e.ports[5000])
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "raw bytes through %s\n", e.name)
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil || line != "raw bytes through "+e.name+"\n" {
				t.Fatalf("tcp echo through %s: %q, %v", e.name, line, err)
			}
		}
	})

	t.Run("fly-replay across workers", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+f.edges[0].ports[80]+"/replay?to=instance%3Dm2", nil)
		req.Host = "web.test"
		req.Header.Set("Fly-Force-Instance-Id", "m1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var rep demo.Report
		body, _ := io.ReadAll(resp.Body)
		json.Unmarshal(body, &rep)
		resp.Body.Close()
		if rep.MachineID != "m2" || resp.Header.Get("Fly-Replay") != "" {
			t.Fatalf("replay from m1 (w1) to m2 (w2): %d answered by %q, fly-replay %q: %s", resp.StatusCode, rep.MachineID, resp.Header.Get("Fly-Replay"), body)
		}
		if src := rep.Headers["Fly-Replay-Src"]; len(src) != 1 || !strings.Contains(src[0], "instance=m1") {
			t.Errorf("fly-replay-src %v: want the first machine named", src)
		}
	})

	t.Run("no fleet certificate", func(t *testing.T) {
		addr := workerBackhaul(t, f.workers[0])
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{backhaul.ProtoStream}})
		if err == nil {
			c.Write(backhaul.AppendHeader(nil, backhaul.Target{App: "web", Machine: "m1", Port: 8080}))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 16))
			c.Close()
		}
		if err == nil {
			t.Fatal("the worker answered a client without a fleet certificate")
		}
		// The worker counts the refusal once its handshake has failed,
		// which may be just after the client saw it.
		deadline := time.Now().Add(5 * time.Second)
		for f.workers[0].metric(`edgeproxy_backhaul_refused_total`) < 1 {
			if time.Now().After(deadline) {
				t.Fatal("edgeproxy_backhaul_refused_total: the refusal was not counted")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("a machine the worker does not run", func(t *testing.T) {
		id := identityOf(t, f.certs, "e1")
		cl := backhaul.NewClient(backhaul.ClientOptions{Identity: func() *backhaul.Identity { return id },
			Address:     func(string) (string, bool) { return workerBackhaul(t, f.workers[1]), true },
			DialTimeout: 5 * time.Second})
		defer cl.Close()
		before := f.web[0].Refused()
		_, err := cl.DialStream(context.Background(), "w2", backhaul.Target{App: "web", Machine: "m1", Port: 8080})
		pe, ok := perr.As(err)
		if !ok || pe.Code != perr.WorkerRefused || !strings.Contains(err.Error(), "no machine m1 of app web on node w2") {
			t.Fatalf("asking w2 for w1's machine: %v, want PB02 saying w2 runs no m1", err)
		}
		if f.web[0].Refused() != before {
			t.Error("w2 tried to connect to w1's machine")
		}
	})

	t.Run("bounded connections", func(t *testing.T) {
		// 64 requests at once from one edge: they share a few HTTP/2
		// connections per worker.
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() { f.edges[0].get("web.test", "/") })
		}
		wg.Wait()
		for _, w := range []string{"w1", "w2"} {
			n := f.edges[0].metric(fmt.Sprintf(`edgeproxy_backhaul_connections{peer=%q,side="edge"}`, w))
			t.Logf("edge e1 → %s: %v backhaul connections after 64 concurrent requests", w, n)
			if n > 4 {
				t.Errorf("%v backhaul connections to %s, want a few shared ones", n, w)
			}
		}
	})

	t.Run("storm through the backhaul", func(t *testing.T) { stormThroughBackhaul(t, f) })

	t.Run("worker killed under load", func(t *testing.T) { workerKilled(t, f) })
}

// stormThroughBackhaul sends the incident's connection shapes to an edge
// whose app's machines are behind the workers, and watches worker w1: its
// CPU once the storm is over, and spin kills on every node.
func stormThroughBackhaul(t *testing.T, f *backhaulFleet) {
	before := f.edges[0].sum("edgeproxy_backhaul_requests_total")
	out, err := proctest.RunCommand(t, 2*time.Minute, edgeproxy(t), "storm", "-target", f.edges[0].ports[443],
		"-sni", "web.test", "-count", "400", "-concurrency", "40", "-duration", "30s", "-hold", "500ms",
		"-idle", "2s", "-pid", fmt.Sprint(f.workers[0].proc.Pid()), "-json", "-q")
	if err != nil {
		t.Fatalf("storm: %v\n%s", err, out)
	}
	var rep struct {
		Completed      int     `json:"completed"`
		IdleCPUPercent float64 `json:"idle_cpu_percent"`
		StormCPU       float64 `json:"storm_cpu_percent"`
	}
	if i := strings.Index(out, "{"); i < 0 || json.Unmarshal([]byte(out[i:]), &rep) != nil {
		t.Fatalf("storm report: %s", out)
	}
	t.Logf("storm of 400 connections through e1: worker w1 at %.1f%% of a core during it, %.1f%% in the idle window after",
		rep.StormCPU, rep.IdleCPUPercent)
	if rep.Completed != 400 {
		t.Errorf("%d of 400 storm connections completed", rep.Completed)
	}
	// A spinning reader holds a core: 100%. An idle worker is near 0.
	if rep.IdleCPUPercent > 50 {
		t.Errorf("worker w1 used %.0f%% of a core after the storm had ended", rep.IdleCPUPercent)
	}
	for _, n := range append(append([]*node{}, f.edges...), f.workers...) {
		if k := n.sum("edgeproxy_spin_kills_total"); k != 0 {
			t.Errorf("%s: %v spin kills in the storm", n.name, k)
		}
	}
	if relayed := f.edges[0].sum("edgeproxy_backhaul_requests_total") - before; relayed < 100 {
		t.Errorf("the storm's requests relayed to the workers: %v, want them through the backhaul", relayed)
	}
}

// workerKilled kills w1 under steady load through both edges: requests
// move to w2's machine, and the suite prints how many failed and how
// long until none did.
func workerKilled(t *testing.T, f *backhaulFleet) {
	var ok, failed atomic.Int64
	var lastFail atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, e := range f.edges {
		for range 4 {
			wg.Go(func() {
				tr := &http.Transport{}
				defer tr.CloseIdleConnections()
				c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequest("GET", "http://"+e.ports[80]+"/", nil)
					req.Host = "web.test"
					resp, err := c.Do(req)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					if err != nil || resp.StatusCode != 200 {
						failed.Add(1)
						lastFail.Store(time.Now().UnixNano())
					} else {
						ok.Add(1)
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
	}
	time.Sleep(time.Second)
	killed := time.Now()
	f.workers[0].proc.Kill()
	// The heartbeat's lifetime plus a margin: by then the edges send
	// nothing to w1.
	time.Sleep(20 * time.Second)
	tries := f.edges[0].metric(`edgeproxy_backhaul_requests_total{peer="w1",result="PB01"}`)
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	recover := time.Duration(0)
	if lf := lastFail.Load(); lf != 0 {
		recover = time.Unix(0, lf).Sub(killed)
	}
	later := f.edges[0].metric(`edgeproxy_backhaul_requests_total{peer="w1",result="PB01"}`)
	t.Logf("worker w1 killed under load: %d requests ok, %d failed; last failure %v after the kill", ok.Load(), failed.Load(), recover.Round(time.Millisecond))
	if later != tries {
		t.Errorf("edge e1 still tries the dead worker %v s after the kill (%v → %v attempts)", 20, tries, later)
	}
	if failed.Load() > ok.Load()/100 {
		t.Errorf("%d of %d requests failed when a worker died; its machines' work should move to the other worker", failed.Load(), ok.Load()+failed.Load())
	}
}

// workerBackhaul is a worker's backhaul address, from its log.
func workerBackhaul(t *testing.T, w *node) string {
	t.Helper()
	return w.proc.AwaitAddr(t, "backhaul listening", readyTimeout).String()
}

func identityOf(t *testing.T, dir, node string) *backhaul.Identity {
	t.Helper()
	cert, key := backhaul.NodeFiles(dir, node)
	id, err := backhaul.LoadIdentity(filepath.Join(dir, backhaul.CACertFile), cert, key, node)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
