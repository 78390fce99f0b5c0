package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

const edge = `
[proxy]
region = "iad"
queue_timeout = "300ms"
connect_attempts = 3
`

// TestNearestRegionByMeasuredRTT: the static table is only where the
// estimate starts. Health checks and traffic connect to every region; the
// measured round trips (injected: ord 40 ms, syd 5 ms) overturn a table
// that had them the other way round, and traffic moves to syd. A region in
// region_rtt_fixed never moves.
func TestNearestRegionByMeasuredRTT(t *testing.T) {
	f := newFleet(t)
	f.add("ord1", "ord", 40*time.Millisecond)
	f.add("syd1", "syd", 5*time.Millisecond)
	checks := `
  [[apps.services.tcp_checks]]
  interval = "60ms"
  timeout = "60ms"
  grace_period = "10s"`
	for _, tc := range []struct {
		name, table, want string
	}{
		{"measured", `region_rtt = { ord = "1ms", syd = "100ms" }`, "syd1"},
		{"fixed", `region_rtt_fixed = { ord = "1ms" }`, "ord1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Requests are balanced one by one (a connections service
			// would keep the client's connection on its first machine).
			tables := "    [apps.services.concurrency]\n    type = \"requests\"" + checks
			p := proxytest.Start(t, edge+tc.table+f.app("app", "app.test", "", tables, "ord1", "syd1"), proxytest.Options{Dial: f.dial})
			c := p.Client(80, false)
			waitFor(t, "traffic to settle on "+tc.want, 5*time.Second, func() bool {
				h := hitsOf(t, c, 5, "/", nil)
				return h[tc.want] == 5
			})
			r := do(t, c, "GET", "/", nil, nil)
			route := r.Header.Get("Edgeproxy-Route")
			if !strings.Contains(route, "machine="+tc.want) || !strings.Contains(route, "nearest region") {
				t.Errorf("debug header %q", route)
			}
			t.Logf("%s: %s", tc.name, route)
		})
	}
}

// TestTrafficStaysInNearestRegion: the nearest region keeps traffic while
// it has a machine under its hard limit, even over its soft limit; when
// every machine there is at its hard limit, or unhealthy, the next nearest
// region takes it.
func TestTrafficStaysInNearestRegion(t *testing.T) {
	f := newFleet(t)
	f.add("iad1", "iad", 0)
	f.add("ord1", "ord", 10*time.Millisecond)
	f.add("syd1", "syd", 30*time.Millisecond)
	tables := `
    [apps.services.concurrency]
    type = "requests"
    soft_limit = 1
    hard_limit = 2` + healthCheck
	p := proxytest.Start(t, edge+`region_rtt = { ord = "10ms", syd = "30ms" }`+f.app("app", "app.test", "", tables, "iad1", "ord1", "syd1"),
		proxytest.Options{Dial: f.dial})
	c := p.Client(80, false)
	if h := hitsOf(t, c, 10, "/", nil); h["iad1"] != 10 {
		t.Fatalf("idle fleet: %v, want all on iad1", h)
	}
	// One slow request: iad1 over soft (1), under hard (2): still iad1.
	slow := make(chan fleetResult, 2)
	go func() { slow <- do(t, p.Client(80, false), "GET", "/?sleep.iad1=600ms", nil, nil) }()
	waitLoadOf(t, f.machines["iad1"], 1)
	if r := do(t, c, "GET", "/", nil, nil); r.Report.ID != "iad1" {
		t.Errorf("iad1 over soft, under hard: went to %s (%s)", r.Report.ID, r.Header.Get("Edgeproxy-Route"))
	}
	// Two slow requests: iad1 at hard: ord1 (next nearest), not syd1.
	go func() { slow <- do(t, p.Client(80, false), "GET", "/?sleep.iad1=600ms", nil, nil) }()
	waitLoadOf(t, f.machines["iad1"], 2)
	if r := do(t, c, "GET", "/", nil, nil); r.Report.ID != "ord1" {
		t.Errorf("iad1 at hard: went to %s (%s)", r.Report.ID, r.Header.Get("Edgeproxy-Route"))
	}
	<-slow
	<-slow
	// iad1 unhealthy: ord1 again, and back once it passes.
	f.machines["iad1"].healthy.Store(false)
	waitFor(t, "iad1 to leave routing", 3*time.Second, func() bool { return hitsOf(t, c, 3, "/", nil)["ord1"] == 3 })
	f.machines["iad1"].healthy.Store(true)
	waitFor(t, "iad1 to return", 3*time.Second, func() bool { return hitsOf(t, c, 3, "/", nil)["iad1"] == 3 })
}

// waitLoadOf waits until m is working on n requests.
func waitLoadOf(t *testing.T, m *fleetMachine, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to hold %d requests", m.id, n), 3*time.Second, func() bool {
		return m.active.Load() >= n
	})
}

// TestP2CLatencyFavoursFastMachine: two machines in one region, one ten
// times slower (a CPU-bound app), four clients in a closed loop. The
// default least-loaded policy sees equal, low in-flight counts and splits
// work by chance; p2c-latency weighs in-flight work by response time and
// sends measurably more to the fast machine.
func TestP2CLatencyFavoursFastMachine(t *testing.T) {
	share := map[string]float64{}
	for _, policy := range []string{"least-loaded", "p2c-latency"} {
		f := newFleet(t)
		f.add("fast", "iad", 0).delay.Store(int64(2 * time.Millisecond))
		f.add("slow", "iad", 0).delay.Store(int64(20 * time.Millisecond))
		p := proxytest.Start(t, edge+f.app("app", "app.test", fmt.Sprintf("balance = %q", policy),
			"    [apps.services.concurrency]\n    type = \"requests\"", "fast", "slow"), proxytest.Options{Seed: 11})
		stop := make(chan struct{})
		res, wg := load(t, p, 4, "/", stop)
		time.Sleep(1500 * time.Millisecond)
		close(stop)
		wg.Wait()
		counts := res.snapshot()
		total := counts["fast"] + counts["slow"]
		if total != sumOf(counts) || total < 50 {
			t.Fatalf("%s: outcomes %v", policy, counts)
		}
		share[policy] = float64(counts["fast"]) / float64(total)
		t.Logf("%s: %v, fast share %.2f", policy, counts, share[policy])
	}
	if share["p2c-latency"] < 0.85 || share["p2c-latency"] < share["least-loaded"]+0.05 {
		t.Errorf("fast machine's share: p2c-latency %.2f, least-loaded %.2f; want p2c ≥ 0.85 and clearly above",
			share["p2c-latency"], share["least-loaded"])
	}
}

func sumOf(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestRoutingHeaders covers fly-prefer-region, fly-force-region,
// fly-prefer-instance-id and fly-force-instance-id.
func TestRoutingHeaders(t *testing.T) {
	f := newFleet(t)
	f.add("iad1", "iad", 0)
	f.add("ord1", "ord", 5*time.Millisecond)
	f.add("syd1", "syd", 20*time.Millisecond)
	checks := healthCheck
	p := proxytest.Start(t, edge+`region_rtt = { ord = "5ms", syd = "20ms" }`+f.app("app", "app.test", "", checks, "iad1", "ord1", "syd1"),
		proxytest.Options{Dial: f.dial})
	c := p.Client(80, false)
	ok := func(hdr map[string]string, want string) fleetResult {
		t.Helper()
		r := do(t, c, "GET", "/", nil, hdr)
		if r.Status != 200 || r.Report.ID != want {
			t.Fatalf("%v: status %d %s machine %q, want %s", hdr, r.Status, r.Code, r.Report.ID, want)
		}
		return r
	}
	fail := func(hdr map[string]string, status int, code string) fleetResult {
		t.Helper()
		r := do(t, c, "GET", "/", nil, hdr)
		if r.Status != status || r.Code != code {
			t.Fatalf("%v: status %d code %q (%s), want %d %s", hdr, r.Status, r.Code, r.Body, status, code)
		}
		return r
	}
	ok(map[string]string{"Fly-Prefer-Region": "syd, ord"}, "syd1")
	ok(map[string]string{"Fly-Prefer-Region": "fra,ord"}, "ord1")
	ok(map[string]string{"Fly-Force-Region": "ord"}, "ord1")
	fail(map[string]string{"Fly-Force-Region": "fra"}, 503, "PR01")
	fail(map[string]string{"Fly-Prefer-Region": "IAD;x"}, 400, "PH01")
	r := ok(map[string]string{"Fly-Prefer-Instance-Id": "syd1"}, "syd1")
	if r.Header.Get("Fly-Preferred-Instance-Unavailable") != "" || r.Report.PreferredGone != "" {
		t.Error("preferred instance served, yet marked unavailable")
	}
	ok(map[string]string{"Fly-Force-Instance-Id": "ord1"}, "ord1")
	fail(map[string]string{"Fly-Force-Instance-Id": "nope"}, 503, "PR01")

	// syd1 fails its check: a preference falls back (and says so to both
	// the machine and the client); a forced region or instance does not.
	f.machines["syd1"].healthy.Store(false)
	waitFor(t, "syd1 to leave routing", 3*time.Second, func() bool {
		return do(t, c, "GET", "/", nil, map[string]string{"Fly-Prefer-Region": "syd"}).Report.ID == "iad1"
	})
	r = ok(map[string]string{"Fly-Prefer-Instance-Id": "syd1"}, "iad1")
	if r.Header.Get("Fly-Preferred-Instance-Unavailable") != "syd1" || r.Report.PreferredGone != "syd1" {
		t.Errorf("fallback from syd1: response header %q, machine saw %q", r.Header.Get("Fly-Preferred-Instance-Unavailable"), r.Report.PreferredGone)
	}
	fail(map[string]string{"Fly-Force-Region": "syd"}, 503, "PR01")
	start := time.Now()
	r = fail(map[string]string{"Fly-Force-Instance-Id": "syd1"}, 503, "PR01")
	if time.Since(start) < 250*time.Millisecond || !strings.Contains(r.Body, "unhealthy") {
		t.Errorf("forced unhealthy instance: answered after %v with %q; want a wait of queue_timeout and the reason", time.Since(start), r.Body)
	}
	// A forced instance that recovers while the request waits gets it.
	done := make(chan fleetResult, 1)
	go func() {
		done <- do(t, p.Client(80, false), "GET", "/", nil, map[string]string{"Fly-Force-Instance-Id": "syd1"})
	}()
	time.Sleep(30 * time.Millisecond)
	f.machines["syd1"].healthy.Store(true)
	if r := <-done; r.Status != 200 && r.Code != "PR01" {
		t.Errorf("forced instance recovering: %d %s", r.Status, r.Code)
	}
	waitFor(t, "syd1 back", 3*time.Second, func() bool {
		return do(t, c, "GET", "/", nil, map[string]string{"Fly-Force-Instance-Id": "syd1"}).Report.ID == "syd1"
	})
}

// TestHealthChecks: a machine failing its http check leaves routing and
// returns when it passes, under load, without a client seeing an error;
// the changes are logged and exported. An app whose only machine fails
// answers PR01 saying why.
func TestHealthChecks(t *testing.T) {
	for _, unit := range []string{"requests", "connections"} {
		t.Run(unit, func(t *testing.T) { healthUnderLoad(t, unit) })
	}
}

// healthUnderLoad runs the health transition under load for one
// concurrency type. With connections, clients' keep-alive connections are
// pinned to a machine: they move off a failing one at their next request,
// and stay where they moved when it recovers.
func healthUnderLoad(t *testing.T, unit string) {
	f := newFleet(t)
	f.add("a", "iad", 0)
	f.add("b", "iad", 0)
	f.add("solo", "iad", 0)
	checks := `
  [[apps.services.http_checks]]
  interval = "100ms"
  timeout = "100ms"
  grace_period = "0s"
  unhealthy_after = 1
  path = "/health"
  headers = { X-Check = "yes" }
    [apps.services.concurrency]
    type = "` + unit + `"`
	cfg := edge + f.app("app", "app.test", "", checks, "a", "b") + f.app("solo", "solo.test", "", checks, "solo")
	p := proxytest.Start(t, cfg, proxytest.Options{})
	stop := make(chan struct{})
	res, wg := load(t, p, 4, "/", stop)
	time.Sleep(200 * time.Millisecond)
	f.machines["a"].healthy.Store(false)
	// The timeout is generous so that a busy test machine does not fail
	// checks by itself; the line waited for is a's own verdict.
	waitFor(t, "health change logged", 3*time.Second, func() bool {
		return strings.Contains(p.Logs.String(), `"msg":"machine health changed","app":"app","machine":"a","region":"iad","internal_port":8080,"check":"http:GET /health","healthy":false,"reason":"http check GET /health: status 500"`)
	})
	before := res.snapshot()["a"]
	time.Sleep(300 * time.Millisecond)
	if after := res.snapshot()["a"]; after > before+4 {
		t.Errorf("a kept getting traffic while unhealthy: %d then %d", before, after)
	}
	f.machines["a"].healthy.Store(true)
	if unit == "requests" {
		waitFor(t, "a back in routing", 3*time.Second, func() bool { return res.snapshot()["a"] > before+20 })
	} else {
		waitFor(t, "a healthy again", 3*time.Second, func() bool {
			return scrape(t, p, `edgeproxy_machine_healthy{app="app",machine="a",port="8080"}`) == 1
		})
	}
	close(stop)
	wg.Wait()
	counts := res.snapshot()
	for k, v := range counts {
		if k != "a" && k != "b" {
			t.Errorf("%d requests failed during health transitions: %s", v, k)
		}
	}
	t.Logf("outcomes under load: %v", counts)
	if v := scrape(t, p, `edgeproxy_machine_healthy{app="app",machine="a",port="8080"}`); v != 1 {
		t.Errorf("edgeproxy_machine_healthy of a = %v, want 1", v)
	}
	if v := scrape(t, p, `edgeproxy_health_checks_total{app="app",check="http",result="fail"}`); v < 1 {
		t.Errorf("failed checks counted %v, want at least 1", v)
	}
	if unit != "requests" {
		return
	}

	f.machines["solo"].healthy.Store(false)
	solo := p.Client(80, false)
	waitFor(t, "solo app to answer PR01", 3*time.Second, func() bool {
		req, _ := http.NewRequest("GET", "http://solo.test/", nil)
		resp, err := solo.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.Header.Get("Edgeproxy-Error-Code") == "PR01"
	})
	req, _ := http.NewRequest("GET", "http://solo.test/", nil)
	resp, err := solo.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 503 || !strings.Contains(body, "PR01") || !strings.Contains(body, "status 500") {
		t.Errorf("one-machine app failing its check: %d %q, want 503 naming PR01 and the failing check", resp.StatusCode, body)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
