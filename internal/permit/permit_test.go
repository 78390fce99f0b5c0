package permit_test

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/permit"
)

// clock is a manual clock for the rate limit; tests advance it instead of
// sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// v4 is the i-th address of 10.0.0.0/8, so tests can use many clients.
func v4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func refusedScope(t *testing.T, err error) permit.Scope {
	t.Helper()
	var r *permit.Refused
	if !errors.As(err, &r) {
		t.Fatalf("error %v is not a *Refused", err)
	}
	return r.Scope
}

// snapshot is everything a refusal must leave unchanged.
type snapshot struct {
	global, port, ip, app int64
	tracked               int
}

func snap(l *permit.Limiter, port int, ip netip.Addr, app string) snapshot {
	return snapshot{l.Active(), l.ActivePort(port), l.ActiveIP(ip), l.ActiveApp(app), l.TrackedIPs()}
}

func TestRefusedError(t *testing.T) {
	err := error(&permit.Refused{Scope: permit.ScopeIPRate})
	if got, want := err.Error(), "connection refused by ip_rate limit"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestScopes(t *testing.T) {
	const n = 3
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")
	cases := []struct {
		name   string
		limits permit.Limits
		// conn says where the i-th connection comes from; every case
		// varies what its scope does not count, so only that scope fills.
		conn  func(i int) (int, netip.Addr)
		app   bool
		scope permit.Scope
	}{
		{"global", permit.Limits{Global: n, PerPort: 10, PerIP: 10, PerApp: 10}, func(i int) (int, netip.Addr) { return 8000 + i, v4(i) }, false, permit.ScopeGlobal},
		{"port", permit.Limits{Global: 10, PerPort: n, PerIP: 10}, func(i int) (int, netip.Addr) { return 443, v4(i) }, false, permit.ScopePort},
		{"ip", permit.Limits{Global: 10, PerPort: 10, PerIP: n}, func(i int) (int, netip.Addr) { return 8000 + i, v4(1) }, false, permit.ScopeIP},
		{"ip IPv6 /64", permit.Limits{PerIP: n}, func(i int) (int, netip.Addr) {
			return 443, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}).WithZone(fmt.Sprint("eth", i))
		}, false, permit.ScopeIP},
		{"ip IPv4-mapped", permit.Limits{PerIP: n}, func(i int) (int, netip.Addr) {
			if i%2 == 0 {
				return 443, mapped
			}
			return 443, mapped.Unmap()
		}, false, permit.ScopeIP},
		{"ip_rate", permit.Limits{PerIP: 10, IPRate: 1, IPBurst: n}, func(i int) (int, netip.Addr) { return 443, v4(1) }, false, permit.ScopeIPRate},
		{"app", permit.Limits{Global: 10, PerPort: 10, PerIP: 10, PerApp: n}, func(i int) (int, netip.Addr) { return 8000 + i, v4(i) }, true, permit.ScopeApp},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			l := permit.New(tc.limits, clk.Now)
			var held []*permit.Permit
			for i := range n {
				port, ip := tc.conn(i)
				p, err := l.Admit(port, ip)
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				held = append(held, p)
				if tc.app {
					if err := p.AdmitApp("app"); err != nil {
						t.Fatalf("connection %d: AdmitApp: %v", i, err)
					}
				}
			}

			port, ip := tc.conn(n)
			before := snap(l, port, ip, "app")
			p, err := l.Admit(port, ip)
			if tc.app {
				if err != nil {
					t.Fatalf("Admit before the app is known: %v", err)
				}
				err = p.AdmitApp("app")
				p.Release()
			} else if p != nil {
				t.Fatalf("connection %d admitted past the %s limit", n, tc.scope)
			}
			if got := refusedScope(t, err); got != tc.scope {
				t.Fatalf("refused by %q, want %q", got, tc.scope)
			}
			if after := snap(l, port, ip, "app"); after != before {
				t.Errorf("refusal left something held: before %+v after %+v", before, after)
			}
			for s, c := range l.Refusals() {
				want := uint64(0)
				if s == tc.scope {
					want = 1
				}
				if c != want {
					t.Errorf("refusals[%s] = %d, want %d", s, c, want)
				}
			}

			for _, p := range held {
				p.Release()
			}
			clk.Advance(time.Hour) // refill buckets so their entries may go
			l.Sweep()
			if got := snap(l, port, ip, "app"); got != (snapshot{}) {
				t.Errorf("after releasing everything: %+v, want all zero", got)
			}
			p, err = l.Admit(port, ip)
			if err != nil {
				t.Fatalf("Admit after releasing everything: %v", err)
			}
			p.Release()
		})
	}
}

func TestAdmitAppRefusalKeepsOtherPermits(t *testing.T) {
	ip := v4(7)
	l := permit.New(permit.Limits{PerApp: 1}, nil)
	first, _ := l.Admit(80, v4(1))
	if err := first.AdmitApp("a"); err != nil {
		t.Fatal(err)
	}
	p, err := l.Admit(80, ip)
	if err != nil {
		t.Fatal(err)
	}
	if got := refusedScope(t, p.AdmitApp("a")); got != permit.ScopeApp {
		t.Fatalf("refused by %q, want app", got)
	}
	if p.App() != "" {
		t.Errorf("refused permit charged to %q", p.App())
	}
	// The refused connection still holds its accept-time permits until the
	// caller closes it; another app is unaffected.
	if l.Active() != 2 || l.ActivePort(80) != 2 || l.ActiveIP(ip) != 1 || l.ActiveApp("a") != 1 {
		t.Errorf("active %d port %d ip %d app %d; want 2 2 1 1", l.Active(), l.ActivePort(80), l.ActiveIP(ip), l.ActiveApp("a"))
	}
	if err := p.AdmitApp("b"); err != nil {
		t.Errorf("AdmitApp(b) after a refusal for a: %v", err)
	}
	p.Release()
	first.Release()
	if l.Active() != 0 || l.ActivePort(80) != 0 || l.ActiveApp("a") != 0 || l.ActiveApp("b") != 0 || l.TrackedIPs() != 0 {
		t.Errorf("not all released: %d %d %d %d %d", l.Active(), l.ActivePort(80), l.ActiveApp("a"), l.ActiveApp("b"), l.TrackedIPs())
	}
}

func TestAdmitAppTwice(t *testing.T) {
	l := permit.New(permit.Limits{}, nil)
	p, _ := l.Admit(443, v4(1))
	if err := p.AdmitApp("a"); err != nil {
		t.Fatal(err)
	}
	if err := p.AdmitApp("a"); err != nil {
		t.Errorf("second AdmitApp for the same app: %v", err)
	}
	if err := p.AdmitApp("b"); !errors.Is(err, permit.ErrOtherApp) {
		t.Errorf("AdmitApp for another app: %v, want ErrOtherApp", err)
	}
	if l.ActiveApp("a") != 1 || l.ActiveApp("b") != 0 || p.App() != "a" {
		t.Errorf("app a %d, b %d, App %q; want 1, 0, a", l.ActiveApp("a"), l.ActiveApp("b"), p.App())
	}
	p.Release()
	if err := p.AdmitApp("a"); !errors.Is(err, permit.ErrReleased) {
		t.Errorf("AdmitApp after Release: %v, want ErrReleased", err)
	}
	if err := p.AdmitApp("c"); !errors.Is(err, permit.ErrReleased) {
		t.Errorf("AdmitApp for a new app after Release: %v, want ErrReleased", err)
	}
	if l.ActiveApp("a") != 0 || l.ActiveApp("c") != 0 || p.App() != "" {
		t.Errorf("after Release: app a %d, c %d, App %q", l.ActiveApp("a"), l.ActiveApp("c"), p.App())
	}
}

func TestReleaseIsIdempotent(t *testing.T) {
	l := permit.New(permit.Limits{Global: 1}, nil)
	var nilPermit *permit.Permit
	nilPermit.Release() // a refused Admit's permit may be released blindly

	p, _ := l.Admit(443, v4(1))
	other, _ := l.Admit(443, v4(2))
	if other != nil {
		t.Fatal("second connection admitted past Global=1")
	}
	p.Release()
	p.Release()
	if l.Active() != 0 {
		t.Fatalf("active %d after double release", l.Active())
	}
	// A second Release must not free the slot of the next connection.
	q, err := l.Admit(443, v4(3))
	if err != nil {
		t.Fatal(err)
	}
	p.Release()
	if l.Active() != 1 || l.ActivePort(443) != 1 || l.ActiveIP(v4(3)) != 1 {
		t.Errorf("stale Release freed another connection's slots: active %d", l.Active())
	}
	q.Release()
}

func TestSetLimitsKeepsCounts(t *testing.T) {
	l := permit.New(permit.Limits{}, nil)
	var held []*permit.Permit
	for range 3 {
		p, err := l.Admit(443, v4(1))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.AdmitApp("a"); err != nil {
			t.Fatal(err)
		}
		held = append(held, p)
	}

	lower := permit.Limits{Global: 2, PerPort: 2, PerIP: 2, PerApp: 2}
	l.SetLimits(lower)
	if l.Limits() != lower {
		t.Errorf("Limits() = %+v, want %+v", l.Limits(), lower)
	}
	if l.Active() != 3 || l.ActiveIP(v4(1)) != 3 || l.ActiveApp("a") != 3 {
		t.Fatalf("SetLimits changed counts: %d %d %d", l.Active(), l.ActiveIP(v4(1)), l.ActiveApp("a"))
	}
	if _, err := l.Admit(443, v4(2)); refusedScope(t, err) != permit.ScopeGlobal {
		t.Fatalf("admitted over a lowered limit: %v", err)
	}

	// Old permits release against the gauges they were counted in, and
	// the lower limit admits again once the count is under it.
	held[0].Release()
	held[1].Release()
	p, err := l.Admit(443, v4(1))
	if err != nil {
		t.Fatalf("Admit under the lowered limit: %v", err)
	}
	if err := p.AdmitApp("a"); err != nil {
		t.Fatalf("AdmitApp under the lowered limit: %v", err)
	}
	if _, err := l.Admit(443, v4(1)); refusedScope(t, err) != permit.ScopeGlobal {
		t.Fatalf("third connection under Global=2: %v", err)
	}

	l.SetLimits(permit.Limits{})
	p.Release()
	held[2].Release()
	if l.Active() != 0 || l.ActivePort(443) != 0 || l.ActiveApp("a") != 0 || l.TrackedIPs() != 0 {
		t.Errorf("counts after releasing all: %d %d %d %d", l.Active(), l.ActivePort(443), l.ActiveApp("a"), l.TrackedIPs())
	}
}

func TestInvalidAddrIsExemptFromIPLimits(t *testing.T) {
	l := permit.New(permit.Limits{PerIP: 1, IPRate: 1, IPBurst: 1}, nil)
	var held []*permit.Permit
	for range 3 {
		p, err := l.Admit(443, netip.Addr{})
		if err != nil {
			t.Fatalf("connection without an IP peer: %v", err)
		}
		held = append(held, p)
	}
	if l.Active() != 3 || l.TrackedIPs() != 0 {
		t.Errorf("active %d tracked %d; want 3 0", l.Active(), l.TrackedIPs())
	}
	for _, p := range held {
		p.Release()
	}
	if l.Active() != 0 {
		t.Errorf("active %d after release", l.Active())
	}
}

func TestActiveMaps(t *testing.T) {
	l := permit.New(permit.Limits{}, nil)
	a, _ := l.Admit(80, v4(1))
	b, _ := l.Admit(443, v4(2))
	c, _ := l.Admit(443, v4(3))
	_ = b.AdmitApp("x")
	_ = c.AdmitApp("y")
	ports, apps := l.ActivePorts(), l.ActiveApps()
	if ports[80] != 1 || ports[443] != 2 || len(ports) != 2 {
		t.Errorf("ActivePorts = %v", ports)
	}
	if apps["x"] != 1 || apps["y"] != 1 || len(apps) != 2 {
		t.Errorf("ActiveApps = %v", apps)
	}
	if got := len(l.Refusals()); got != len(permit.Scopes()) {
		t.Errorf("Refusals has %d scopes, want %d", got, len(permit.Scopes()))
	}
	a.Release()
	b.Release()
	c.Release()
}
