//go:build linux

package fleet_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowMachine answers every request after 100 ms and records how many it
// holds at once.
type slowMachine struct {
	now, peak atomic.Int64
	mu        sync.Mutex
	samples   []int64 // concurrency seen by each request on arrival
}

func (s *slowMachine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.now.Add(1)
	defer s.now.Add(-1)
	for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
	}
	s.mu.Lock()
	s.samples = append(s.samples, n)
	s.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	w.Write([]byte("ok"))
}

// TestFleetSharedLoad: two edges send one machine twice what its
// hard_limit allows. Each edge alone would hold hard_limit requests on it,
// twice the limit together; with loads shared, the machine stays within
// the limit but for the staleness bound (fleet.LoadInterval).
func TestFleetSharedLoad(t *testing.T) {
	const hard = 10
	dir := t.TempDir()
	ns := startNATS(t, 0, filepath.Join(dir, "nats"))
	e1 := startEdge(t, "edge-1", ns.url(), dir)
	e2 := startEdge(t, "edge-2", ns.url(), dir)
	sm := &slowMachine{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: sm}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	apply(t, dir, ns.url(), fmt.Sprintf(`
[[apps]]
name = "slow"
hostnames = ["slow.test"]
  [[apps.services]]
  internal_port = 8080
    [apps.services.concurrency]
    type = "requests"
    soft_limit = 5
    hard_limit = %d
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
  [[apps.machines]]
  id = "s1"
  address = "127.0.0.1"
  ports = { 8080 = %d }
`, hard, ln.Addr().(*net.TCPAddr).Port))
	for _, e := range []*edge{e1, e2} {
		for code, _, _ := e.get("slow.test"); code != 200; code, _, _ = e.get("slow.test") {
			time.Sleep(20 * time.Millisecond)
		}
	}
	sm.peak.Store(0)
	sm.mu.Lock()
	sm.samples = nil
	sm.mu.Unlock()
	// 2 x hard clients per edge, for 5 s.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var ok, queued, failed atomic.Int64
	for _, e := range []*edge{e1, e2} {
		for range 2 * hard {
			wg.Go(func() {
				for ctx.Err() == nil {
					code, body, err := e.get("slow.test")
					switch {
					case err == nil && code == 200:
						ok.Add(1)
					case err == nil && code == 503 && strings.HasPrefix(body, "PL02"):
						// Twice the capacity asked for: some wait out
						// queue_timeout, as they should.
						queued.Add(1)
					case ctx.Err() == nil:
						failed.Add(1)
						t.Logf("a request failed: %d %v %.200s", code, err, body)
					}
				}
			})
		}
	}
	wg.Wait()
	sm.mu.Lock()
	var over, total int64
	for _, n := range sm.samples {
		total += n
		if n > hard {
			over++
		}
	}
	samples := len(sm.samples)
	sm.mu.Unlock()
	t.Logf("shared load, hard_limit %d, 2 edges x %d clients for 5 s: %d requests served, %d timed out in the queue (PL02), %d failed otherwise; at the machine: peak %d at once, mean %.1f, %d of %d arrivals above the limit",
		hard, 2*hard, ok.Load(), queued.Load(), failed.Load(), sm.peak.Load(), float64(total)/float64(max(1, samples)), over, samples)
	// Without sharing each edge holds hard_limit: 2x the limit, all the
	// time. The bound: one report interval of admissions per edge.
	if mean := float64(total) / float64(max(1, samples)); mean > hard*1.3 {
		t.Errorf("mean concurrency at the machine %.1f, want about hard_limit %d", mean, hard)
	}
	if failed.Load() > 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
}
