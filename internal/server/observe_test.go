package server_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// families scrapes /metrics (with a token if given) and parses it with
// the Prometheus text parser.
func families(t *testing.T, p *proxytest.Proxy, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.AdminAddr().String()+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value sums the samples of a family whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	total := 0.0
next:
	for _, m := range f.Metric {
		for k, v := range want {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

func TestMetricsMoveWithTraffic(t *testing.T) {
	cfg := "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n" +
		singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService) + tcpApp(proxytest.Machine(t, "t1"), "[]", "")
	p := proxytest.Start(t, cfg, proxytest.Options{})
	before := families(t, p, "s3cret")

	var clients []*http.Client
	for i := 0; i < 3; i++ {
		cl := p.Client(443, i%2 == 0)
		clients = append(clients, cl)
		get(t, cl, "https://app.test/", nil)
	}
	// Closed connections flush their guard counters (open ones do every
	// 1024 reads); the app's bytes are settled per request.
	defer func() {
		for _, cl := range clients {
			cl.CloseIdleConnections()
		}
	}()
	for _, cl := range clients {
		cl.CloseIdleConnections()
	}
	resp, _ := get(t, p.Client(80, false), "http://app.test/status/503", nil)
	resp.Body.Close()
	c, err := net.Dial("tcp", p.Addr(5000))
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(c)
	c.Close()

	// The last connection settles as it closes: wait for its bytes.
	deadline := time.Now().Add(5 * time.Second)
	var after map[string]*dto.MetricFamily
	for {
		after = families(t, p, "s3cret")
		if (value(after, "edgeproxy_app_bytes_in_total", map[string]string{"app": "tcp"}) >= 4 &&
			value(after, "edgeproxy_guard_reads_total", map[string]string{"layer": "tls"}) > 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, chk := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"edgeproxy_http_requests_total", map[string]string{"app": "app", "status": "2xx"}, 3},
		{"edgeproxy_http_requests_total", map[string]string{"app": "app", "status": "5xx"}, 1},
		{"edgeproxy_http_request_duration_seconds", map[string]string{"app": "app"}, 4},
		{"edgeproxy_tls_handshakes_total", map[string]string{"version": "TLS 1.3", "outcome": "ok"}, 1},
		{"edgeproxy_tls_handshake_duration_seconds", nil, 1},
		{"edgeproxy_upstream_connect_duration_seconds", map[string]string{"app": "tcp"}, 1},
		{"edgeproxy_connections_accepted_total", map[string]string{"port": "443"}, 1},
		{"edgeproxy_app_bytes_in_total", map[string]string{"app": "tcp"}, 4},
		{"edgeproxy_app_bytes_out_total", map[string]string{"app": "app"}, 100},
		{"edgeproxy_guard_reads_total", map[string]string{"layer": "tls"}, 1},
		{"edgeproxy_build_info", nil, 1},
	} {
		got := value(after, chk.name, chk.labels) - max(value(before, chk.name, chk.labels), 0)
		if chk.name == "edgeproxy_build_info" {
			got = value(after, chk.name, chk.labels)
		}
		if got < chk.min {
			t.Errorf("%s%v moved by %v, want at least %v", chk.name, chk.labels, got, chk.min)
		}
	}
	for _, zero := range []string{"edgeproxy_guard_zero_progress_reads_total", "edgeproxy_guard_reads_after_eof_total", "edgeproxy_spin_kills_total"} {
		if v := value(after, zero, nil); v != 0 {
			t.Errorf("%s = %v on healthy traffic", zero, v)
		}
	}
	if value(after, "edgeproxy_machine_load", map[string]string{"app": "app", "machine": "m1"}) < 0 {
		t.Error("no machine load gauge for m1")
	}
}

func TestAdminToken(t *testing.T) {
	cfg := "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n" + singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService)
	p := proxytest.Start(t, cfg, proxytest.Options{})
	base := "http://" + p.AdminAddr().String()
	for path, want := range map[string]int{"/healthz": 200, "/ready": 200, "/metrics": 401, "/debug/pprof/": 401} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s without token: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if v := value(families(t, p, "s3cret"), "edgeproxy_admin_unauthorized_total", nil); v != 2 {
		t.Errorf("unauthorized counter = %v, want 2", v)
	}
}

// TestAccessLog: one JSON line per HTTP request and per TCP connection,
// with ids, app, machine, status, bytes and duration.
func TestAccessLog(t *testing.T) {
	other := `
[[apps]]
name = "other"
hostnames = ["other.test"]
  [apps.http_service]
  internal_port = 8080
`
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService)+tcpApp(proxytest.Machine(t, "t1"), "[]", "")+other, proxytest.Options{})
	resp, _ := get(t, p.Client(80, false), "http://app.test/", nil)
	id := resp.Header.Get("Fly-Request-Id")
	resp2, _ := get(t, p.Client(80, false), "http://nobody.test/", nil)
	resp2.Body.Close()
	c, _ := net.Dial("tcp", p.Addr(5000))
	c.Write([]byte("x"))
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(c)
	c.Close()

	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.Logs.String(), `"type":"tcp"`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var http1, notFound, tcp map[string]any
	for _, line := range strings.Split(p.Logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "access" {
			continue
		}
		switch {
		case rec["request_id"] == id:
			http1 = rec
		case rec["type"] == "http" && rec["host"] == "nobody.test":
			notFound = rec
		case rec["type"] == "tcp":
			tcp = rec
		}
	}
	if http1 == nil || http1["app"] != "app" || http1["machine"] != "m1" || http1["status"] != 200.0 ||
		http1["bytes_out"].(float64) < 100 || http1["duration_ms"] == nil || http1["conn_id"] == nil {
		t.Errorf("http access line: %v", http1)
	}
	if notFound == nil || notFound["status"] != 404.0 || notFound["error_code"] != "PR05" {
		t.Errorf("404 access line: %v", notFound)
	}
	if tcp == nil || tcp["app"] != "tcp" || tcp["machine"] != "m1" || tcp["bytes_in"] != 1.0 || tcp["bytes_out"] != 1.0 {
		t.Errorf("tcp access line: %v", tcp)
	}
}

func adminGet(t *testing.T, p *proxytest.Proxy, token, path string, into any) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.AdminAddr().String()+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestAdminViews(t *testing.T) {
	cfg := "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n" +
		singleApp(machine("m1", proxytest.Machine(t, "m1"))+machine("m2", proxytest.Machine(t, "m2")), limits("connections", 1, 5))
	p := proxytest.Start(t, cfg, proxytest.Options{Seed: 2})

	// An open keep-alive connection pins a machine (connections unit).
	cl := p.Client(80, false)
	defer cl.CloseIdleConnections()
	get(t, cl, "http://app.test/", nil)

	var apps []map[string]any
	adminGet(t, p, "s3cret", "/v1/apps", &apps)
	if len(apps) != 1 || apps[0]["name"] != "app" || apps[0]["machines"] != 2.0 {
		t.Errorf("/v1/apps: %v", apps)
	}
	var machines []struct {
		ID   string
		Load []struct {
			Load int64
			Band string
		}
	}
	adminGet(t, p, "s3cret", "/v1/machines", &machines)
	total, bands := int64(0), map[string]int{}
	for _, m := range machines {
		for _, l := range m.Load {
			total += l.Load
			bands[l.Band]++
		}
	}
	if len(machines) != 2 || total != 1 || bands["over_soft"] != 1 || bands["under_soft"] != 1 {
		t.Errorf("/v1/machines: %+v", machines)
	}
	var conns []map[string]any
	// The meter counts a write once it returned, which can be just after
	// the client read the bytes: wait for it briefly.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		conns = nil
		adminGet(t, p, "s3cret", "/v1/connections?limit=10&sort=busiest", &conns)
		if len(conns) != 1 || conns[0]["bytes_out"].(float64) >= 100 || time.Now().After(deadline) {
			break
		}
	}
	if len(conns) != 1 || conns[0]["app"] != "app" || conns[0]["bytes_out"].(float64) < 100 ||
		!strings.Contains(conns[0]["chain"].(string), "*iox.Guarded(wire) -> *meter.Conn") {
		t.Errorf("/v1/connections: %v", conns)
	}
	var cfgView map[string]any
	adminGet(t, p, "s3cret", "/v1/config", &cfgView)
	adm := cfgView["Admin"].(map[string]any)
	if adm["Token"] != "<redacted>" || cfgView["Proxy"].(map[string]any)["IdleTimeout"] != "1m0s" {
		t.Errorf("/v1/config: admin %v proxy %v", adm, cfgView["Proxy"])
	}
}

// TestMachineMetricsOfTwoServicesOnOnePort: an http_service and a
// [[services]] entry on the same internal port are two series apart;
// they used to collide and turn every scrape into an error.
func TestMachineMetricsOfTwoServicesOnOnePort(t *testing.T) {
	svc := httpService + `
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 5000
`
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), svc), proxytest.Options{})
	families, err := p.Server.Metrics().Registry.Gather()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	services := map[string]bool{}
	for _, f := range families {
		if f.GetName() != "edgeproxy_machine_load" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "service" {
					services[l.GetValue()] = true
				}
			}
		}
	}
	if len(services) != 2 {
		t.Errorf("machine load series by service: %v, want two", services)
	}
}
