package permit_test

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeproxy/edgeproxy/internal/permit"
)

// TestStress hammers one Limiter from many goroutines with admissions,
// app admissions, plain, double and concurrent releases, releases racing
// AdmitApp and limit swaps, while a monitor checks that no count ever
// passes the loosest limit in use or goes negative. Run it with -race.
func TestStress(t *testing.T) {
	defer goleak.VerifyNone(t)
	loose := permit.Limits{Global: 48, PerPort: 30, PerIP: 6, PerApp: 16, IPRate: 2000, IPBurst: 40}
	tight := permit.Limits{Global: 24, PerPort: 12, PerIP: 3, PerApp: 8, IPRate: 500, IPBurst: 10}
	l := permit.New(loose, nil)

	ports := []int{80, 443, 5432}
	apps := []string{"a", "b", "c", "d"}
	var clients []netip.Addr
	for i := range 12 {
		clients = append(clients, v4(i))
	}
	clients = append(clients,
		netip.MustParseAddr("::ffff:10.0.0.1"), // same as v4(1)
		netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("2001:db8::2"), // same /64
		netip.Addr{},                       // exempt from per-IP limits
	)

	workers, rounds := 16, 20000
	if testing.Short() {
		rounds = 2000
	}

	var failed atomic.Bool
	over := func(what string, n int64, limit int) {
		if n < 0 || n > int64(limit) {
			failed.Store(true)
			t.Errorf("%s: %d open, loosest limit %d", what, n, limit)
		}
	}
	stop := make(chan struct{})
	var monitor sync.WaitGroup
	monitor.Go(func() {
		for !failed.Load() {
			select {
			case <-stop:
				return
			default:
			}
			over("global", l.Active(), loose.Global)
			for _, p := range ports {
				over("port", l.ActivePort(p), loose.PerPort)
			}
			for _, a := range apps {
				over("app "+a, l.ActiveApp(a), loose.PerApp)
			}
			for _, c := range clients[:len(clients)-1] {
				over("ip "+c.String(), l.ActiveIP(c), loose.PerIP)
			}
		}
	})

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			var hold []*permit.Permit
			take := func() *permit.Permit {
				i := rng.IntN(len(hold))
				p := hold[i]
				hold[i] = hold[len(hold)-1]
				hold = hold[:len(hold)-1]
				return p
			}
			for range rounds {
				switch op := rng.IntN(20); {
				case op < 9 && len(hold) < 8:
					p, err := l.Admit(ports[rng.IntN(len(ports))], clients[rng.IntN(len(clients))])
					if err != nil {
						continue
					}
					if rng.IntN(2) == 0 {
						_ = p.AdmitApp(apps[rng.IntN(len(apps))])
					}
					hold = append(hold, p)
				case op < 13 && len(hold) > 0:
					take().Release()
				case op < 15 && len(hold) > 0:
					p := take()
					p.Release()
					p.Release()
				case op < 17 && len(hold) > 0:
					p := take()
					var rel sync.WaitGroup
					rel.Go(p.Release)
					rel.Go(p.Release)
					rel.Wait()
				case op < 19 && len(hold) > 0:
					p := take()
					var race sync.WaitGroup
					race.Go(func() { _ = p.AdmitApp(apps[rng.IntN(len(apps))]) })
					race.Go(p.Release)
					race.Wait()
				case op == 19 && w == 0:
					if rng.IntN(2) == 0 {
						l.SetLimits(tight)
					} else {
						l.SetLimits(loose)
					}
				}
			}
			for _, p := range hold {
				p.Release()
			}
		})
	}
	wg.Wait()
	close(stop)
	monitor.Wait()

	if l.Active() != 0 || l.ActiveIP(clients[1]) != 0 {
		t.Errorf("active %d after all released", l.Active())
	}
	for p, n := range l.ActivePorts() {
		if n != 0 {
			t.Errorf("port %d: %d open after all released", p, n)
		}
	}
	for a, n := range l.ActiveApps() {
		if n != 0 {
			t.Errorf("app %s: %d open after all released", a, n)
		}
	}
	refused := l.Refusals()
	// Which limit is hit first depends on scheduling (on a busy machine the
	// accept rate can refuse everything before a count fills); any
	// refusal shows the stress reached a limit.
	total := 0
	for _, n := range refused {
		total += int(n)
	}
	if total == 0 {
		t.Errorf("no refusals at all (%v): the stress never reached a limit", refused)
	}
	// Without a rate limit nothing is left to remember about idle clients.
	l.SetLimits(permit.Limits{})
	l.Sweep()
	if n := l.TrackedIPs(); n != 0 {
		t.Errorf("tracked %d addresses after all released and swept", n)
	}
}

// TestSweepWithRealClock checks the refill arithmetic against time.Now's
// monotonic clock: an entry is kept while its bucket refills and goes once
// it is full.
func TestSweepWithRealClock(t *testing.T) {
	l := permit.New(permit.Limits{IPRate: 1000, IPBurst: 5}, nil)
	for range 5 {
		p, err := l.Admit(443, v4(1))
		if err != nil {
			t.Fatal(err)
		}
		p.Release()
	}
	if l.TrackedIPs() != 1 {
		t.Fatalf("tracked %d, want 1 while refilling", l.TrackedIPs())
	}
	// Five tokens at 1000/s refill in 5ms; poll rather than assume a speed.
	deadline := time.Now().Add(10 * time.Second)
	for l.Sweep(); l.TrackedIPs() != 0; l.Sweep() {
		if time.Now().After(deadline) {
			t.Fatal("entry still tracked 10s after its bucket refilled")
		}
		time.Sleep(time.Millisecond)
	}
}
