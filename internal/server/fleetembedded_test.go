package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
	fleetcat "github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// embeddedFleet is three in-process edges sharing one catalog: edge-1
// runs the embedded NATS server on natsAddr, the others connect to it.
type embeddedFleet struct {
	natsAddr string
	dirs     []string
	edges    []*proxytest.Proxy
	local    int
}

func (f *embeddedFleet) config(i int) string {
	store := fmt.Sprintf("embedded = true\nlisten = %q", f.natsAddr)
	if i > 0 {
		store = fmt.Sprintf("urls = [\"nats://%s\"]", f.natsAddr)
	}
	return fleetConfig(store, fmt.Sprintf("edge-%d", i+1), f.dirs[i], f.local)
}

// fleetConfig is an edge in iad in a fleet whose store is set by the
// [fleet] lines in store, serving the file's one app from port local.
func fleetConfig(store, node, dataDir string, local int) string {
	return fmt.Sprintf(`
[proxy]
region = "iad"
[log]
access_log = "off"
[fleet]
%s
node = %q
data_dir = %q
`, store, node, dataDir) + singleApp(machine("local", local), httpService)
}

func (f *embeddedFleet) start(t *testing.T, i int) *proxytest.Proxy {
	p := proxytest.Start(t, f.config(i), proxytest.Options{})
	f.edges[i] = p
	return p
}

// servedBy asks p's port 80 for host on a connection of its own and
// returns the status and the body, or the error code.
func servedBy(p *proxytest.Proxy, host string) (int, string, error) {
	c := p.Client(80, false)
	defer c.CloseIdleConnections()
	return servedVia(c, p, host)
}

// servedVia is servedBy on client c, whose connections it keeps.
func servedVia(c *http.Client, p *proxytest.Proxy, host string) (int, string, error) {
	req, _ := http.NewRequest("GET", "http://"+p.Addr(80)+"/", nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"), nil
	}
	return 200, string(b), nil
}

// TestFleetEmbeddedScenarios runs the fleet suite's scenarios in process,
// with the embedded NATS server of one edge as the fleet's store: apply,
// 200 machine changes, the store down under load with an edge restarted
// meanwhile, and the shared load of two edges on one machine. Figures
// are printed, not asserted; what must hold is asserted.
func TestFleetEmbeddedScenarios(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &embeddedFleet{natsAddr: l.Addr().String(), edges: make([]*proxytest.Proxy, 3),
		local: proxytest.Machine(t, "local")}
	l.Close()
	for i := range 3 {
		f.dirs = append(f.dirs, filepath.Join(t.TempDir(), "data"))
		f.start(t, i)
	}
	st := proxytest.FleetStore(t, "nats://"+f.natsAddr)
	ctx := t.Context()
	web := proxytest.Machine(t, "w1")

	// 1. fleet apply: served by all three.
	cfg := &config.Config{Apps: []config.App{{Name: "web", Hostnames: []string{"web.test"},
		HTTPService: &config.HTTPService{InternalPort: 8080},
		Machines:    []config.Machine{{ID: "w1", Region: "iad", Address: "127.0.0.1", Ports: map[string]int{"8080": web}, State: "started"}}}}}
	start := time.Now()
	plan, err := st.Plan(ctx, cfg.Apps, "test", "iad")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(ctx, plan, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, p := range f.edges {
		until(t, "the applied app served", func() bool {
			code, body, err := servedBy(p, "web.test")
			return err == nil && code == 200 && strings.Contains(body, `"w1"`)
		})
	}
	t.Logf("fleet apply to served by all 3 edges: %v", time.Since(start).Round(time.Millisecond))

	// 2. 200 machine changes, write to routing on every edge.
	var lat []time.Duration
	m := &fleetcat.MachineRecord{App: "web", Region: "iad", Address: "127.0.0.1", Ports: map[string]int{"8080": web}}
	for i := range 200 {
		m.ID = fmt.Sprintf("c%d", i/4)
		var want func(*catalog.Machine) bool
		switch i % 4 {
		case 0:
			m.State, m.Cordoned, m.Version = "started", false, 0
			err = st.PutMachine(ctx, m)
			want = func(x *catalog.Machine) bool { return x != nil && x.Started() && !x.Cordoned }
		case 1:
			m.State = "stopped"
			err = st.PutMachine(ctx, m)
			want = func(x *catalog.Machine) bool { return x != nil && x.State == "stopped" }
		case 2:
			m.State, m.Cordoned = "started", true
			err = st.PutMachine(ctx, m)
			want = func(x *catalog.Machine) bool { return x != nil && x.Cordoned }
		case 3:
			err = st.DeleteMachine(ctx, "iad", "web", m.ID)
			want = func(x *catalog.Machine) bool { return x == nil }
		}
		if err != nil {
			t.Fatal(err)
		}
		written := time.Now()
		for _, p := range f.edges {
			for !want(p.Catalog().App("web").Machine(m.ID)) {
				if time.Since(written) > 5*time.Second {
					t.Fatalf("change %d not applied within 5 s", i)
				}
				time.Sleep(time.Millisecond)
			}
			lat = append(lat, time.Since(written))
		}
	}
	slices.Sort(lat)
	t.Logf("200 machine changes x 3 edges: write to routing p50 %v, p99 %v",
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond))

	// 3. The store down under steady load: the edge running it stops its
	// NATS server for 3 s. No request fails; an edge restarted meanwhile
	// serves from its cache (written at most every 2 s, so wait for it);
	// a change made once the store is back applies everywhere.
	until(t, "catalog cached", func() bool {
		apps, err := fleetcat.ReadCache(filepath.Join(f.dirs[2], "catalog.json"))
		return err == nil && len(apps) == 1 && len(apps[0].Machines) == 1
	})
	var ok, failed atomic.Int64
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, p := range f.edges[:2] {
		wg.Go(func() {
			c := p.Client(80, false)
			defer c.CloseIdleConnections()
			for loadCtx.Err() == nil {
				code, body, err := servedVia(c, p, "web.test")
				if err == nil && code == 200 && strings.Contains(body, `"w1"`) {
					ok.Add(1)
				} else {
					failed.Add(1)
					t.Logf("a request failed: %d %v %s", code, err, body)
				}
			}
		})
	}
	rejoin := f.edges[0].PrepareHandover()
	f.edges[2].Close()
	restarted := f.start(t, 2)
	if code, body, err := servedBy(restarted, "web.test"); err != nil || code != 200 || !strings.Contains(body, `"w1"`) {
		t.Errorf("an edge restarted while the store is down: %d %v %s", code, err, body)
	}
	time.Sleep(3 * time.Second)
	if err := rejoin(); err != nil {
		t.Fatal(err)
	}
	stopLoad()
	wg.Wait()
	t.Logf("store down for 3 s under load: %d requests served, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d requests failed while the store was down", failed.Load())
	}
	back := time.Now()
	m.ID, m.State, m.Cordoned, m.Version = "after", "started", false, 0
	until(t, "a write once the store is back", func() bool { return st.PutMachine(ctx, m) == nil })
	for _, p := range f.edges {
		until(t, "a change after the outage applied", func() bool { return p.Catalog().App("web").Machine("after") != nil })
	}
	t.Logf("a change after the store came back reached all edges %v after its restart", time.Since(back).Round(time.Millisecond))

	// 4. Shared load: two edges send one machine twice its hard_limit.
	const hard = 4
	sm := &slowMachine{}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: sm}
	go srv.Serve(sl)
	defer srv.Close()
	slow := config.App{Name: "slow", Hostnames: []string{"slow.test"}, HTTPService: &config.HTTPService{InternalPort: 8080,
		Concurrency: &config.Concurrency{Type: "requests", SoftLimit: 2, HardLimit: hard}},
		Machines: []config.Machine{{ID: "s1", Region: "iad", Address: "127.0.0.1", State: "started",
			Ports: map[string]int{"8080": sl.Addr().(*net.TCPAddr).Port}}}}
	plan, err = st.Plan(ctx, []config.App{cfg.Apps[0], slow}, "test", "iad")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(ctx, plan, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, p := range f.edges[:2] {
		until(t, "the slow app served", func() bool { code, _, err := servedBy(p, "slow.test"); return err == nil && code == 200 })
	}
	sm.reset()
	loadCtx, stopLoad = context.WithTimeout(ctx, 2*time.Second)
	defer stopLoad()
	var served, queued, other atomic.Int64
	for _, p := range f.edges[:2] {
		for range 2 * hard {
			wg.Go(func() {
				c := p.Client(80, false)
				defer c.CloseIdleConnections()
				for loadCtx.Err() == nil {
					code, body, err := servedVia(c, p, "slow.test")
					switch {
					case err == nil && code == 200:
						served.Add(1)
					case err == nil && code == 503 && body == "PL02":
						queued.Add(1)
					case loadCtx.Err() == nil:
						other.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	peak, mean := sm.stats()
	t.Logf("shared load, hard_limit %d, 2 edges x %d clients for 2 s: %d served, %d timed out queued (PL02), %d failed otherwise; at the machine: peak %d, mean %.1f",
		hard, 2*hard, served.Load(), queued.Load(), other.Load(), peak, mean)
	if other.Load() > 0 {
		t.Errorf("%d requests failed", other.Load())
	}
	// Each edge alone holds hard_limit: twice it at the machine, all the
	// time. Shared, the machine stays near the limit, beyond it only for
	// the staleness bound (one report interval of admissions per edge).
	if mean > 1.5*hard {
		t.Errorf("mean concurrency at the machine %.1f, want about hard_limit %d", mean, hard)
	}
}

// slowMachine answers after 100 ms and records how many requests it held
// at once as each arrived.
type slowMachine struct {
	mu      sync.Mutex
	now     int64
	peak    int64
	samples []int64
}

func (s *slowMachine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.now++
	s.peak = max(s.peak, s.now)
	s.samples = append(s.samples, s.now)
	s.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	s.mu.Lock()
	s.now--
	s.mu.Unlock()
	w.Write([]byte("ok"))
}

func (s *slowMachine) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peak, s.samples = 0, nil
}

func (s *slowMachine) stats() (peak int64, mean float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var total int64
	for _, n := range s.samples {
		total += n
	}
	return s.peak, float64(total) / float64(max(1, len(s.samples)))
}
