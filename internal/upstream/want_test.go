package upstream_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// acquireID takes a lease as want says, releases it and returns its machine.
func acquireID(t *testing.T, p *upstream.Picker, svc *catalog.Service, want *upstream.Want) string {
	t.Helper()
	l, err := p.Acquire(context.Background(), svc, want)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	return l.Machine.ID
}

func fleet(t *testing.T) (*upstream.Picker, *catalog.Service) {
	svc := service(t, 2, mach{id: "home"}, mach{id: "ord1", region: "ord"}, mach{id: "syd1", region: "syd"})
	p := picker(firstTie, 50*time.Millisecond)
	p.Distance = func(r string) int { return map[string]int{"ord": 20000, "syd": 250000}[r] }
	return p, svc
}

func TestWantRegions(t *testing.T) {
	p, svc := fleet(t)
	if got := acquireID(t, p, svc, nil); got != "home" {
		t.Errorf("no preference: got %s, want home (this edge's region)", got)
	}
	if got := acquireID(t, p, svc, &upstream.Want{Regions: []string{"syd", "ord"}}); got != "syd1" {
		t.Errorf("prefer syd,ord: got %s, want syd1", got)
	}
	// A preferred region that is full falls back to the next in the list,
	// then to the nearest of the rest.
	preload(t, svc, "syd1", 2)
	if got := acquireID(t, p, svc, &upstream.Want{Regions: []string{"syd", "ord"}}); got != "ord1" {
		t.Errorf("prefer syd (full),ord: got %s, want ord1", got)
	}
	if got := acquireID(t, p, svc, &upstream.Want{Regions: []string{"syd"}}); got != "home" {
		t.Errorf("prefer syd (full): got %s, want home (nearest other)", got)
	}
	// Forced: no other region; full means waiting, then PL02.
	_, err := p.Acquire(context.Background(), svc, &upstream.Want{Regions: []string{"syd"}, ForceRegion: true})
	wantCode(t, err, perr.QueueTimeout)
	_, err = p.Acquire(context.Background(), svc, &upstream.Want{Regions: []string{"fra"}, ForceRegion: true})
	pe := wantCode(t, err, perr.NoHealthyInstances)
	if !strings.Contains(pe.Error(), "fra") {
		t.Errorf("error %q does not name the region", pe.Error())
	}
}

func TestWantInstance(t *testing.T) {
	p, svc := fleet(t)
	if got := acquireID(t, p, svc, &upstream.Want{Instance: "syd1"}); got != "syd1" {
		t.Errorf("prefer syd1: got %s", got)
	}
	svc.Health(machine(t, svc, "syd1")).Set(0, "tcp check: refused")
	if got := acquireID(t, p, svc, &upstream.Want{Instance: "syd1"}); got != "home" {
		t.Errorf("prefer unhealthy syd1: got %s, want the balancer's choice home", got)
	}
	// Forced to an unhealthy machine: wait for it, PR01 when it stays down.
	start := time.Now()
	_, err := p.Acquire(context.Background(), svc, &upstream.Want{Instance: "syd1", ForceInstance: true})
	pe := wantCode(t, err, perr.NoHealthyInstances)
	if time.Since(start) < 40*time.Millisecond || !strings.Contains(pe.Error(), "refused") {
		t.Errorf("after %v: %v; want a wait of the queue timeout and the check's reason", time.Since(start), pe)
	}
	// ... and it is taken as soon as it turns healthy while waited for.
	p.QueueTimeout = 5 * time.Second
	done := make(chan string, 1)
	go func() {
		l, err := p.Acquire(context.Background(), svc, &upstream.Want{Instance: "syd1", ForceInstance: true})
		if err != nil {
			done <- err.Error()
			return
		}
		l.Release()
		done <- l.Machine.ID
	}()
	time.Sleep(20 * time.Millisecond)
	if svc.Health(machine(t, svc, "syd1")).Set(0, "") {
		svc.Waiters().Wake()
	}
	select {
	case got := <-done:
		if got != "syd1" {
			t.Errorf("forced syd1 after recovery: got %s", got)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("waiter not woken when the forced machine became healthy")
	}
	_, err = p.Acquire(context.Background(), svc, &upstream.Want{Instance: "nope", ForceInstance: true})
	wantCode(t, err, perr.NoHealthyInstances)
}

func TestUnhealthyMachinesLeaveRouting(t *testing.T) {
	p, svc := fleet(t)
	svc.Health(machine(t, svc, "home")).Set(0, "http check GET /health: status 500")
	if got := acquireID(t, p, svc, nil); got != "ord1" {
		t.Errorf("home unhealthy: got %s, want ord1 (next nearest)", got)
	}
	for _, id := range []string{"ord1", "syd1"} {
		svc.Health(machine(t, svc, id)).Set(1, "tcp check: refused")
	}
	_, err := p.Acquire(context.Background(), svc, nil)
	pe := wantCode(t, err, perr.NoHealthyInstances)
	if !strings.Contains(pe.Error(), "health checks") || !strings.Contains(pe.Error(), "status 500") {
		t.Errorf("PR01 should say the machines fail their checks and why: %v", pe)
	}
}

func TestExplain(t *testing.T) {
	p, svc := fleet(t)
	svc.Health(machine(t, svc, "syd1")).Set(0, "down")
	l, err := p.Acquire(context.Background(), svc, &upstream.Want{Explain: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	got := l.Explain.String()
	for _, want := range []string{"machine=home", "policy=least-loaded", "nearest region", "ord1 ord d=20000 load=0 under_soft", "syd1 syd unhealthy"} {
		if !strings.Contains(got, want) {
			t.Errorf("explanation %q lacks %q", got, want)
		}
	}
	if l2, _ := p.Acquire(context.Background(), svc, nil); l2.Explain != nil {
		t.Error("explanation built without being asked for")
	} else {
		l2.Release()
	}
}
