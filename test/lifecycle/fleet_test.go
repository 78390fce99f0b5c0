//go:build linux

package lifecycle_test

import (
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// TestFleetLifecycle: node A runs the app's machines (exec driver) and
// the fleet's embedded NATS server; node B is an edge that knows the app
// from the fleet only. A burst on both starts no more machines than the
// load needs (B asks A, and A starts each machine once), and when the
// load is gone the machines are stopped by A alone, one per interval,
// while B follows.
func TestFleetLifecycle(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	natsAddr := l.Addr().String()
	l.Close()
	a := start(t, app{machines: []string{"m1", "m2", "m3"}, autostop: "stop", minRunning: 1, interval: "1s",
		soft: 10, hard: 50, fleet: fmt.Sprintf("embedded = true\nlisten = %q\nnode = \"node-a\"", natsAddr)})
	b := startEdge(t, natsAddr)
	if !waitFor(15*time.Second, func() bool { return len(b.machines()) == 3 }) {
		t.Fatalf("node B does not see the app's machines: %v", b.machines())
	}
	// The burst: 60 concurrent slow requests, half on each node. Each
	// machine takes 10 before it is over its soft limit: the load needs
	// more than one machine, at most all three.
	var wg sync.WaitGroup
	results := make([]result, 60)
	for i := range results {
		e := a
		if i%2 == 1 {
			e = b
		}
		wg.Go(func() { results[i] = e.get(nil, "/sleep?d=1s") })
	}
	wg.Wait()
	failed := 0
	by := map[string]int{}
	for _, r := range results {
		if r.status != 200 {
			failed++
			t.Logf("failed: %+v", r)
			continue
		}
		by[r.machine]++
	}
	startsA := a.metric(`edgeproxy_machine_starts_total{app="web",result="ok"}`)
	startsB := b.metric(`edgeproxy_machine_starts_total{app="web",result="ok"}`)
	pids := a.machinePIDs()
	t.Logf("burst of 60 on two nodes: %d failed; served by %v; starts on A %v, on B %v; machine processes %d", failed, by, startsA, startsB, len(pids))
	if failed > 0 {
		t.Errorf("%d requests failed", failed)
	}
	if startsB != 0 || startsA < 1 || int(startsA) != len(pids) || len(pids) > 3 {
		t.Errorf("starts: A %v, B %v, processes %d: want B's asked of A, each machine started once", startsA, startsB, len(pids))
	}
	// Idle: A stops them one per interval down to min_machines_running;
	// B sees it.
	if !waitFor(15*time.Second, func() bool { return len(a.started()) == 1 && len(b.started()) == 1 }) {
		t.Fatalf("after idle: A has %v started, B sees %v", a.started(), b.started())
	}
	stopsA := a.metric(`edgeproxy_machine_stops_total{action="stop",app="web",reason="idle",result="ok"}`)
	stopsB := b.metric(`edgeproxy_machine_stops_total{action="stop",app="web",reason="idle",result="ok"}`)
	t.Logf("after idle: %v idle stops decided on A, %v on B; started now: %v", stopsA, stopsB, a.started())
	if stopsA != startsA-1 || stopsB != 0 {
		t.Errorf("idle stops: A %v, B %v; want %v and 0", stopsA, stopsB, startsA-1)
	}
	// B still serves, through the machine left.
	if r := b.get(nil, "/"); r.status != 200 {
		t.Errorf("B after the stops: %+v", r)
	}
}

// startEdge starts a plain edge in the fleet at natsAddr: no app of its
// own but a placeholder that keeps port 80 open for the fleet's.
func startEdge(t *testing.T, natsAddr string) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), ports: map[string]int{}}
	cfg := fmt.Sprintf(`[proxy]
region = "iad"
bind = "127.0.0.1"
port_map = { 80 = 0 }
[admin]
listen = "127.0.0.1:0"
[log]
access_log = "off"
[fleet]
urls = ["nats://%s"]
node = "node-b"
data_dir = %q
`, natsAddr, filepath.Join(e.dir, "fleet")) + proctest.PlaceholderApp
	e.run("edgeproxy node-b", cfg)
	return e
}
