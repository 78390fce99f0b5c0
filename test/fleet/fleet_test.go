//go:build linux

package fleet_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// outage is how long NATS stays down under load.
const outage = 30 * time.Second

// TestFleet runs one NATS server and three edges and walks through what
// the fleet promises, printing the figures.
func TestFleet(t *testing.T) {
	dir := t.TempDir()
	ns := startNATS(t, 0, filepath.Join(dir, "nats"))
	var edges []*edge
	for i := 1; i <= 3; i++ {
		edges = append(edges, startEdge(t, fmt.Sprintf("edge-%d", i), ns.url(), dir))
	}
	web := proxytest.Machine(t, "w1")
	st := store(t, ns.url())
	ctx := t.Context()

	// 1. fleet apply, served by all three within a second.
	start := time.Now()
	apply(t, dir, ns.url(), fmt.Sprintf(`
[[apps]]
name = "web"
hostnames = ["web.test"]
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
  [[apps.machines]]
  id = "w1"
  address = "127.0.0.1"
  ports = { 8080 = %d }
`, web))
	for _, e := range edges {
		for {
			code, body, _ := e.get("web.test")
			if code == 200 && strings.Contains(body, `"w1"`) {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s does not serve the applied app: %d %s", e.name, code, body)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	served := time.Since(start)
	t.Logf("fleet apply (CLI start) to served by all 3 edges: %v", served)

	// 2. 200 machine changes: write to routing on every edge.
	var lat []time.Duration
	m := &fleet.MachineRecord{App: "web", Region: "iad", Address: "127.0.0.1", Ports: map[string]int{"8080": web}}
	for i := range 200 {
		m.ID = fmt.Sprintf("c%d", i/4)
		var want func(found bool, state string, cordoned bool) bool
		var err error
		switch i % 4 {
		case 0: // add
			m.State, m.Cordoned, m.Version = "started", false, 0
			err = st.PutMachine(ctx, m)
			want = func(f bool, s string, c bool) bool { return f && s == "started" && !c }
		case 1: // stop
			m.State = "stopped"
			err = st.PutMachine(ctx, m)
			want = func(f bool, s string, c bool) bool { return f && s == "stopped" }
		case 2: // cordon
			m.State, m.Cordoned = "started", true
			err = st.PutMachine(ctx, m)
			want = func(f bool, s string, c bool) bool { return f && c }
		case 3: // remove
			err = st.DeleteMachine(ctx, "iad", "web", m.ID)
			want = func(f bool, s string, c bool) bool { return !f }
		}
		if err != nil {
			t.Fatal(err)
		}
		written := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, e := range edges {
			wg.Go(func() {
				for !want(e.machine("web", m.ID)) {
					if time.Since(written) > 10*time.Second {
						break
					}
					time.Sleep(2 * time.Millisecond)
				}
				mu.Lock()
				lat = append(lat, time.Since(written))
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("200 machine changes (add, stop, cordon, remove) x 3 edges: write to routing p50 %v, p99 %v, max %v",
		p50.Round(time.Millisecond), p99.Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))

	// 3. NATS down for the outage under steady load: no request fails;
	// an edge restarted meanwhile serves from its cache; changes made
	// once NATS is back apply.
	var ok, failed atomic.Int64
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	// current is the edges the load goes to; a request holds the read
	// lock, so that once the write lock is taken none is in flight to an
	// edge being taken out.
	var mu sync.RWMutex
	current := edges
	setEdges := func(es []*edge) {
		mu.Lock()
		current = es
		mu.Unlock()
	}
	load.Go(func() {
		for i := 0; loadCtx.Err() == nil; i++ {
			mu.RLock()
			e := current[i%len(current)]
			code, body, err := e.get("web.test")
			mu.RUnlock()
			if err == nil && code == 200 && strings.Contains(body, `"w1"`) {
				ok.Add(1)
			} else {
				failed.Add(1)
				t.Logf("request to %s failed: %d %v %.100s", e.name, code, err, body)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	if err := ns.proc.Stop(10 * time.Second); err != nil {
		t.Fatalf("stopping NATS: %v", err)
	}
	downAt := time.Now()
	time.Sleep(2 * time.Second)
	// Restart edge 3 while NATS is down: the load skips it meanwhile.
	e3 := edges[2]
	setEdges(edges[:2:2])
	if err := e3.proc.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	restarted := runEdge(t, e3.name, e3.config)
	if code, body, err := restarted.get("web.test"); err != nil || code != 200 || !strings.Contains(body, `"w1"`) {
		t.Fatalf("an edge restarted during the outage does not serve from its cache: %d %v %.200s", code, err, body)
	}
	edges[2] = restarted
	setEdges(edges)
	if age := edges[0].metric("edgeproxy_fleet_catalog_age_seconds"); age < 1 {
		t.Errorf("catalog age during the outage = %v, want it growing", age)
	}
	time.Sleep(time.Until(downAt.Add(outage)))
	ns = startNATS(t, ns.port, ns.store)
	t.Logf("NATS down for %v under load: %d requests served, %d failed", time.Since(downAt).Round(time.Second), ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d requests failed while NATS was down", failed.Load())
	}
	// A change made after NATS is back reaches every edge.
	back := time.Now()
	m.ID, m.State, m.Cordoned, m.Version = "after", "started", false, 0
	for st.PutMachine(ctx, m) != nil {
		if time.Since(back) > 20*time.Second {
			t.Fatal("cannot write to NATS after its restart")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, e := range edges {
		for found, _, _ := e.machine("web", "after"); !found; found, _, _ = e.machine("web", "after") {
			if time.Since(back) > 30*time.Second {
				t.Fatalf("%s did not apply a change made after NATS came back", e.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("a change after NATS came back reached all edges %v after its restart", time.Since(back).Round(time.Millisecond))
	stopLoad()
	load.Wait()

	// 5. Garbage in every bucket: refused per record, counted, serving
	// goes on with the previous values.
	nc, err := nats.Connect(ns.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for bucket, key := range map[string]string{fleet.BucketApps: "web", fleet.BucketSummary: "web",
		fleet.MachineBucket("iad"): "web.w1", fleet.BucketNodes: "edge-1"} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatalf("%s: %v", bucket, err)
		}
		if _, err := kv.Put(ctx, key, []byte("\x00garbage{")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	for _, e := range edges {
		if code, body, err := e.get("web.test"); err != nil || code != 200 || !strings.Contains(body, `"w1"`) {
			t.Errorf("%s after garbage: %d %v %.200s", e.name, code, err, body)
		}
		for _, b := range []string{"ep-apps", "ep-summary", "ep-machines", "ep-nodes"} {
			if n := e.metric(`edgeproxy_fleet_updates_total{bucket="` + b + `",result="refused"}`); n < 1 {
				t.Errorf("%s: garbage in %s not counted as refused", e.name, b)
			}
		}
	}
}
