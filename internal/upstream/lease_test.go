package upstream_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/balance"
	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

func picker(intn func(int) int, queue time.Duration) *upstream.Picker {
	return &upstream.Picker{Region: region, Intn: intn, QueueTimeout: queue}
}

func TestAcquireLeastLoaded(t *testing.T) {
	svc := service(t, 0, mach{id: "a"}, mach{id: "b"}, mach{id: "c"})
	preload(t, svc, "a", 2)
	preload(t, svc, "c", 1)
	l, err := picker(firstTie, time.Second).Acquire(context.Background(), svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if l.Machine.ID != "b" || l.Ties != 1 || l.Candidates != 3 || l.Band != balance.UnderSoft {
		t.Errorf("lease %s ties %d candidates %d band %v; want b 1 3 under_soft", l.Machine.ID, l.Ties, l.Candidates, l.Band)
	}
	if l.Service() != svc {
		t.Error("lease counts against another service")
	}
	if got := loadOf(t, svc, "b"); got != 1 {
		t.Errorf("b load %d after acquire, want 1", got)
	}
	// Acquire spreads load: each next lease goes to a least-loaded machine.
	p := picker(firstTie, time.Second)
	var leases []*upstream.Lease
	// Loads are a2 b1 c1 now: five more leases make them 3 each.
	for range 5 {
		l, err := p.Acquire(context.Background(), svc, nil)
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	for _, id := range []string{"a", "b", "c"} {
		if got := loadOf(t, svc, id); got != 3 {
			t.Errorf("%s load %d, want 3 after balancing", id, got)
		}
	}
	for _, l := range leases {
		l.Release()
	}
}

func TestAcquireAddrUsesPortsMapping(t *testing.T) {
	svc := service(t, 0, mach{id: "a", port: 18080})
	l, err := picker(firstTie, time.Second).Acquire(context.Background(), svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if got := l.Addr.String(); got != "127.0.0.1:18080" {
		t.Errorf("Addr = %s, want the mapped port", got)
	}
}

func TestAcquireTies(t *testing.T) {
	svc := service(t, 0, mach{id: "a"}, mach{id: "b"}, mach{id: "c"})
	for _, tt := range []struct {
		name string
		intn func(int) int
		want string
	}{{"first", firstTie, "a"}, {"last", lastTie, "c"}} {
		l, err := picker(tt.intn, time.Second).Acquire(context.Background(), svc, nil)
		if err != nil {
			t.Fatal(err)
		}
		if l.Machine.ID != tt.want || l.Ties != 3 {
			t.Errorf("%s: got %s with %d ties, want %s with 3", tt.name, l.Machine.ID, l.Ties, tt.want)
		}
		l.Release()
	}
}

func TestAcquireRegions(t *testing.T) {
	svc := service(t, 0,
		mach{id: "far", region: "syd"}, mach{id: "mid", region: "iad"}, mach{id: "near"})
	preload(t, svc, "near", 50) // over soft, still nearest
	p := picker(firstTie, time.Second)
	l, err := p.Acquire(context.Background(), svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	if l.Machine.ID != "near" || l.Band != balance.OverSoft {
		t.Errorf("got %s in %v, want near over_soft", l.Machine.ID, l.Band)
	}
	// Without a Distance function every other region is equally far, so
	// the tie break decides; with one, the nearer region wins.
	exclude := []*catalog.Machine{machine(t, svc, "near")}
	p.Distance = func(r string) int { return map[string]int{"iad": 2, "syd": 5}[r] }
	l, err = p.Acquire(context.Background(), svc, &upstream.Want{Exclude: exclude})
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	if l.Machine.ID != "mid" {
		t.Errorf("got %s, want mid (iad nearer than syd)", l.Machine.ID)
	}
}

func TestAcquireExclude(t *testing.T) {
	svc := service(t, 0, mach{id: "a"}, mach{id: "b"})
	p := picker(firstTie, time.Second)
	l, err := p.Acquire(context.Background(), svc, &upstream.Want{Exclude: []*catalog.Machine{machine(t, svc, "a")}})
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	if l.Machine.ID != "b" {
		t.Errorf("got %s, want b: a is excluded", l.Machine.ID)
	}
	_, err = p.Acquire(context.Background(), svc, &upstream.Want{Exclude: svc.App.Machines})
	wantCode(t, err, perr.NoCandidate)
}

func TestAcquireNoStartedMachine(t *testing.T) {
	for _, tt := range []struct {
		name string
		ms   []mach
	}{
		{"none", nil},
		{"stopped", []mach{{id: "a", state: "stopped"}, {id: "b", state: "suspended"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			svc := service(t, 1, tt.ms...)
			// Even a long queue timeout must not be waited: nothing will
			// ever free up.
			_, err := picker(firstTie, time.Hour).Acquire(context.Background(), svc, nil)
			pe := wantCode(t, err, perr.NoHealthyInstances)
			if pe.Retryable {
				t.Error("PR01 must not be retryable")
			}
		})
	}
}

func TestAcquireStoppedAtHardIsNotFull(t *testing.T) {
	// A stopped machine's leftover load must not make the picker queue.
	svc := service(t, 1, mach{id: "a", state: "stopped"})
	preload(t, svc, "a", 1)
	_, err := picker(firstTie, time.Hour).Acquire(context.Background(), svc, nil)
	wantCode(t, err, perr.NoHealthyInstances)
}

type acquired struct {
	l   *upstream.Lease
	err error
}

func acquireAsync(p *upstream.Picker, ctx context.Context, svc *catalog.Service) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		l, err := p.Acquire(ctx, svc, nil)
		ch <- acquired{l, err}
	}()
	return ch
}

// The queue tests run in a synctest bubble: time is virtual, so the wait
// is exact and no test sleeps. The catalog is built inside the bubble so
// the wake channels belong to it.
func TestAcquireQueueSucceedsOnRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := service(t, 1, mach{id: "a"}, mach{id: "b"})
		p := picker(firstTie, 100*time.Millisecond)
		la, err := p.Acquire(context.Background(), svc, nil)
		if err != nil {
			t.Fatal(err)
		}
		lb, err := p.Acquire(context.Background(), svc, nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ch := acquireAsync(p, context.Background(), svc)
		time.Sleep(60 * time.Millisecond) // virtual: within QueueTimeout
		synctest.Wait()
		select {
		case r := <-ch:
			t.Fatalf("Acquire returned %v, %v while every machine is at hard", r.l, r.err)
		default:
		}
		lb.Release()
		r := <-ch
		if r.err != nil {
			t.Fatalf("queued Acquire failed after a release: %v", r.err)
		}
		if r.l.Machine.ID != "b" {
			t.Errorf("got %s, want b (the released one)", r.l.Machine.ID)
		}
		if waited := time.Since(start); waited != 60*time.Millisecond {
			t.Errorf("waited %v of virtual time, want 60ms: woken by the release, not the timer", waited)
		}
		r.l.Release()
		la.Release()
		if loadOf(t, svc, "a") != 0 || loadOf(t, svc, "b") != 0 {
			t.Error("loads not back to zero")
		}
	})
}

func TestAcquireQueueTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := service(t, 1, mach{id: "a"}, mach{id: "b"})
		preload(t, svc, "a", 1)
		preload(t, svc, "b", 1)
		p := picker(firstTie, 150*time.Millisecond)
		start := time.Now()
		_, err := p.Acquire(context.Background(), svc, nil)
		pe := wantCode(t, err, perr.QueueTimeout)
		if pe.Retryable {
			t.Error("PL02 must not be retryable")
		}
		if waited := time.Since(start); waited != p.QueueTimeout {
			t.Errorf("waited %v of virtual time, want exactly QueueTimeout %v", waited, p.QueueTimeout)
		}
		if loadOf(t, svc, "a") != 1 || loadOf(t, svc, "b") != 1 {
			t.Error("a timed-out Acquire changed the loads")
		}
	})
}

func TestAcquireQueueClientGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := service(t, 1, mach{id: "a"})
		preload(t, svc, "a", 1)
		ctx, cancel := context.WithCancel(context.Background())
		ch := acquireAsync(picker(firstTie, time.Hour), ctx, svc)
		synctest.Wait()
		cancel()
		r := <-ch
		wantCode(t, r.err, perr.ClientClosed)
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("cause %v, want context.Canceled", r.err)
		}
	})
}

// The same two outcomes on the real clock, with timeouts short enough for
// a test and nothing asserted about how long anything took.
func TestAcquireQueueRealClock(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		svc := service(t, 1, mach{id: "a"})
		preload(t, svc, "a", 1)
		_, err := picker(firstTie, 50*time.Millisecond).Acquire(context.Background(), svc, nil)
		wantCode(t, err, perr.QueueTimeout)
	})
	t.Run("release", func(t *testing.T) {
		svc := service(t, 1, mach{id: "a"})
		p := picker(firstTie, 5*time.Second)
		held, err := p.Acquire(context.Background(), svc, nil)
		if err != nil {
			t.Fatal(err)
		}
		ch := acquireAsync(p, context.Background(), svc)
		time.Sleep(20 * time.Millisecond) // usually lets it queue; correct either way
		held.Release()
		r := <-ch
		if r.err != nil {
			t.Fatalf("Acquire after release: %v", r.err)
		}
		r.l.Release()
	})
}

// TestAcquireHardLimitUnderContention races many queued acquirers for few
// slots: nobody may see a machine beyond hard, and with a generous queue
// timeout nobody may miss a wake and time out.
func TestAcquireHardLimitUnderContention(t *testing.T) {
	const hard = 2
	svc := service(t, hard, mach{id: "a"}, mach{id: "b"}, mach{id: "c"})
	p := &upstream.Picker{Region: region, QueueTimeout: 30 * time.Second, Intn: func(n int) int { return 0 }}
	var over, failed atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 30 {
				l, err := p.Acquire(context.Background(), svc, nil)
				if err != nil {
					failed.Add(1)
					continue
				}
				if svc.Load(l.Machine).Value() > hard {
					over.Add(1)
				}
				l.Release()
			}
		})
	}
	wg.Wait()
	if over.Load() != 0 || failed.Load() != 0 {
		t.Errorf("%d leases saw load beyond hard, %d acquires failed", over.Load(), failed.Load())
	}
	for _, id := range []string{"a", "b", "c"} {
		if got := loadOf(t, svc, id); got != 0 {
			t.Errorf("%s load %d after all releases", id, got)
		}
	}
}

func TestLeaseReleaseTwice(t *testing.T) {
	svc := service(t, 1, mach{id: "a"})
	p := picker(firstTie, time.Second)
	other, err := p.Acquire(context.Background(), svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	other.Release()
	l, err := p.Acquire(context.Background(), svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	l.Release()
	other.Release() // a stale second release must not give back l's unit
	if got := loadOf(t, svc, "a"); got != 0 {
		t.Errorf("load %d after double releases, want 0", got)
	}
	var nilLease *upstream.Lease
	nilLease.Release() // paths that failed before acquiring release too
}
