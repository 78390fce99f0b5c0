package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func limits(unit string, soft, hard int) string {
	return fmt.Sprintf(`
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
    [apps.services.concurrency]
    type = %q
    soft_limit = %d
    hard_limit = %d
`, unit, soft, hard)
}

// TestBalancingSpread: idle machines tie, and the (seeded) random draw
// spreads sequential requests over both.
func TestBalancingSpread(t *testing.T) {
	cfg := singleApp(machine("m1", proxytest.Machine(t, "m1"))+machine("m2", proxytest.Machine(t, "m2")), limits("requests", 20, 0))
	p := proxytest.Start(t, cfg, proxytest.Options{Seed: 7})
	counts := map[string]int{}
	c := p.Client(80, false)
	for i := 0; i < 100; i++ {
		_, rep := get(t, c, "http://app.test/", nil)
		counts[rep.MachineID]++
	}
	if counts["m1"] < 25 || counts["m2"] < 25 {
		t.Errorf("requests not spread: %v", counts)
	}
}

// TestLeastLoadedWins: while a slow request holds m1, every new request
// goes to the idle m2.
func TestLeastLoadedWins(t *testing.T) {
	cfg := singleApp(machine("m1", proxytest.Machine(t, "m1"))+machine("m2", proxytest.Machine(t, "m2")), limits("requests", 20, 0))
	p := proxytest.Start(t, cfg, proxytest.Options{Seed: 3})
	c := p.Client(80, false)
	slow := make(chan string, 1)
	go func() {
		_, rep := get(t, c, "http://app.test/sleep?d=1s", nil)
		slow <- rep.MachineID
	}()
	waitLoad(t, p, 1)
	busy := ""
	for i := 0; i < 10; i++ {
		_, rep := get(t, c, "http://app.test/", nil)
		if busy == "" {
			busy = map[string]string{"m1": "m2", "m2": "m1"}[rep.MachineID]
		}
		if rep.MachineID == busy {
			t.Errorf("request %d went to the busy machine %s", i, busy)
		}
	}
	if got := <-slow; got != busy {
		t.Errorf("slow request ran on %s, requests avoided %s", got, busy)
	}
}

// waitLoad waits until the app's machines together carry n units.
func waitLoad(t *testing.T, p *proxytest.Proxy, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var total int64
		for _, l := range p.Loads("app") {
			total += l
		}
		if total == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("load never reached %d (now %d)", n, total)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHardLimitQueuesThen503: with one machine at hard limit 1, a second
// request waits for the first to finish; a third that cannot get a slot
// within queue_timeout gets 503 PL02.
func TestHardLimitQueuesThen503(t *testing.T) {
	cfg := "[proxy]\nqueue_timeout = \"300ms\"\n" + singleApp(machine("m1", proxytest.Machine(t, "m1")), limits("requests", 1, 1))
	p := proxytest.Start(t, cfg, proxytest.Options{})
	c := p.Client(80, false)

	// A request that outlasts the queue timeout: the next one gets 503.
	done := make(chan int, 1)
	go func() {
		resp, _ := get(t, c, "http://app.test/sleep?d=2s", nil)
		done <- resp.StatusCode
	}()
	waitLoad(t, p, 1)
	resp, _ := get(t, c, "http://app.test/", nil)
	if resp.StatusCode != 503 || resp.Header.Get("Edgeproxy-Error-Code") != "PL02" {
		t.Errorf("at hard limit: %d %q", resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"))
	}
	if s := <-done; s != 200 {
		t.Errorf("the slow request got %d", s)
	}

	// A request shorter than the queue timeout: the next one waits and is served.
	go func() {
		resp, _ := get(t, c, "http://app.test/sleep?d=100ms", nil)
		done <- resp.StatusCode
	}()
	waitLoad(t, p, 1)
	resp, rep := get(t, c, "http://app.test/", nil)
	if resp.StatusCode != 200 || rep.MachineID != "m1" {
		t.Errorf("queued request: %d", resp.StatusCode)
	}
	<-done
	waitLoad(t, p, 0)
}

// TestConnectionsUnitPinsClientConnection: with type = "connections" a
// client connection counts once and stays on its machine.
func TestConnectionsUnitPinsClientConnection(t *testing.T) {
	cfg := singleApp(machine("m1", proxytest.Machine(t, "m1"))+machine("m2", proxytest.Machine(t, "m2")), limits("connections", 20, 0))
	p := proxytest.Start(t, cfg, proxytest.Options{Seed: 11})
	c := p.Client(80, false)
	first := ""
	for i := 0; i < 10; i++ {
		_, rep := get(t, c, "http://app.test/", nil)
		if first == "" {
			first = rep.MachineID
		}
		if rep.MachineID != first {
			t.Fatalf("request %d moved from %s to %s on one client connection", i, first, rep.MachineID)
		}
	}
	waitLoad(t, p, 1) // the open keep-alive connection holds its machine
	c.CloseIdleConnections()
	waitLoad(t, p, 0)
}

// TestConnectFailureRetried: one machine refuses connections; every request
// still succeeds on the other, and the dead one's units are returned.
func TestConnectFailureRetried(t *testing.T) {
	cfg := singleApp(machine("dead", proxytest.DeadPort(t))+machine("live", proxytest.Machine(t, "live")), limits("requests", 20, 0))
	p := proxytest.Start(t, cfg, proxytest.Options{Seed: 5})
	c := p.Client(80, false)
	for i := 0; i < 20; i++ {
		body := strings.NewReader("request body survives a retry")
		resp, err := c.Post("http://app.test/", "text/plain", body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"machine_id":"live"`) || !strings.Contains(string(b), `"body_bytes":29`) {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	waitLoad(t, p, 0)
}

func TestConnectFailureOnlyMachine(t *testing.T) {
	cfg := singleApp(machine("dead", proxytest.DeadPort(t)), limits("requests", 20, 0))
	p := proxytest.Start(t, cfg, proxytest.Options{})
	resp, _ := get(t, p.Client(80, false), "http://app.test/", nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 502 || resp.Header.Get("Edgeproxy-Error-Code") != "PC01" || !strings.Contains(string(body), "instance refused connection") {
		t.Errorf("dead machine: %d %q %q", resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"), body)
	}
	// Raw TCP to a dead machine: the client connection is closed, not hung.
	cfg2 := tcpApp(proxytest.DeadPort(t), "[]", "")
	p2 := proxytest.Start(t, cfg2, proxytest.Options{})
	conn, err := net.Dial("tcp", p2.Addr(5000))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Errorf("read %d bytes from a connection to a dead machine", n)
	}
	waitLog(t, p2, `"code":"PC01"`)
}

// TestHardLimitExactUnderConcurrency: many concurrent slow requests never
// put more than hard_limit on a machine.
func TestHardLimitExactUnderConcurrency(t *testing.T) {
	cfg := "[proxy]\nqueue_timeout = \"5s\"\n" + singleApp(machine("m1", proxytest.Machine(t, "m1"))+machine("m2", proxytest.Machine(t, "m2")), limits("requests", 1, 2))
	p := proxytest.Start(t, cfg, proxytest.Options{})
	c := p.Client(80, false)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	maxSeen := make(chan int64, 1)
	go func() {
		var peak int64
		for {
			select {
			case <-stop:
				maxSeen <- peak
				return
			default:
			}
			for _, l := range p.Loads("app") {
				peak = max(peak, l)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var failed sync.Map
	for i := 0; i < 12; i++ {
		wg.Go(func() {
			resp, err := c.Get("http://app.test/sleep?d=50ms")
			if err != nil {
				failed.Store(i, err.Error())
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failed.Store(i, resp.Status)
			}
		})
	}
	wg.Wait()
	close(stop)
	if peak := <-maxSeen; peak > 2 {
		t.Errorf("a machine carried %d requests, hard_limit is 2", peak)
	}
	failed.Range(func(k, v any) bool { t.Errorf("request %v: %v", k, v); return true })
}

// TestErrorHintsReachTheLog: a failed request's log line names the app,
// the machine tried and what to check (the code's hint), while the client
// gets the code and a one-line message without them; a failed TCP connect
// likewise.
func TestErrorHintsReachTheLog(t *testing.T) {
	cfg := singleApp(machine("dead-1", proxytest.DeadPort(t)), limits("requests", 20, 0))
	p := proxytest.Start(t, cfg, proxytest.Options{})
	resp, _ := get(t, p.Client(80, false), "http://app.test/", nil)
	body, _ := io.ReadAll(resp.Body)
	hint := perr.HintOf(perr.InstanceRefused)
	if hint == "" || resp.Header.Get("Edgeproxy-Error-Code") != "PC01" {
		t.Fatalf("PC01 hint %q, response code %q", hint, resp.Header.Get("Edgeproxy-Error-Code"))
	}
	if strings.Contains(string(body), hint) || strings.Contains(string(body), "dead-1") {
		t.Errorf("the public response carries the hint or the machine: %q", body)
	}
	hintJSON, _ := json.Marshal(hint)
	line := waitLogLine(t, p, `"msg":"request failed"`)
	for _, want := range []string{`"app":"app"`, `"machine":"dead-1"`, `"code":"PC01"`, `"hint":` + string(hintJSON)} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %s: %s", want, line)
		}
	}

	p2 := proxytest.Start(t, tcpApp(proxytest.DeadPort(t), "[]", ""), proxytest.Options{})
	conn, err := net.Dial("tcp", p2.Addr(5000))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Read(make([]byte, 1))
	line = waitLogLine(t, p2, `"msg":"tcp connect failed"`)
	for _, want := range []string{`"app":"tcp"`, `"internal_port":9000`, `"hint":` + string(hintJSON)} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %s: %s", want, line)
		}
	}
}

// waitLogLine waits for a log line containing s and returns it.
func waitLogLine(t *testing.T, p *proxytest.Proxy, s string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, line := range strings.Split(p.Logs.String(), "\n") {
			if strings.Contains(line, s) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %s in:\n%s", s, p.Logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
