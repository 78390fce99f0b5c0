package permit_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/permit"
)

// connect admits and at once releases a connection, as a client that
// connects and closes in a loop would; it reports whether it was admitted.
func connect(t *testing.T, l *permit.Limiter, ip netip.Addr) bool {
	t.Helper()
	p, err := l.Admit(443, ip)
	if err != nil {
		if s := refusedScope(t, err); s != permit.ScopeIPRate {
			t.Fatalf("refused by %q, want ip_rate", s)
		}
		return false
	}
	p.Release()
	return true
}

func TestRateLimit(t *testing.T) {
	clk := newClock()
	// 2 per second is one token every 500ms; a burst of 3.
	l := permit.New(permit.Limits{IPRate: 2, IPBurst: 3}, clk.Now)
	a, b := v4(1), v4(2)

	steps := []struct {
		advance time.Duration
		ip      netip.Addr
		want    bool
	}{
		{0, a, true}, {0, a, true}, {0, a, true}, // the burst
		{0, a, false},
		{0, b, true}, // another client has its own bucket
		{499 * time.Millisecond, a, false},
		{time.Millisecond, a, true}, // one token refilled after 500ms
		{0, a, false},
		{time.Hour, a, true}, {0, a, true}, {0, a, true}, // a long pause refills the burst, no more
		{0, a, false},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		if got := connect(t, l, s.ip); got != s.want {
			t.Fatalf("step %d (%v later, %v): admitted %v, want %v", i, s.advance, s.ip, got, s.want)
		}
	}
	if got := l.Refusals()[permit.ScopeIPRate]; got != 4 {
		t.Errorf("ip_rate refusals %d, want 4", got)
	}
}

// TestRateLimitSurvivesDisconnect checks that deleting idle entries does
// not hand a fresh bucket to a client that closes each connection at once.
func TestRateLimitSurvivesDisconnect(t *testing.T) {
	clk := newClock()
	l := permit.New(permit.Limits{IPRate: 1, IPBurst: 3}, clk.Now)
	admitted := 0
	for range 100 {
		if connect(t, l, v4(1)) {
			admitted++
		}
	}
	if admitted != 3 {
		t.Errorf("admitted %d of 100 back-to-back connections, want the burst of 3", admitted)
	}
	if got := l.TrackedIPs(); got != 1 {
		t.Errorf("tracked %d addresses while the bucket refills, want 1", got)
	}
	clk.Advance(3 * time.Second)
	l.Sweep()
	if got := l.TrackedIPs(); got != 0 {
		t.Errorf("tracked %d addresses after the bucket refilled, want 0", got)
	}
}

func TestRateLimitSetLimits(t *testing.T) {
	clk := newClock()
	l := permit.New(permit.Limits{IPRate: 1, IPBurst: 1}, clk.Now)
	if !connect(t, l, v4(1)) || connect(t, l, v4(1)) {
		t.Fatal("burst of 1 not enforced")
	}
	l.SetLimits(permit.Limits{})
	for i := range 10 {
		if !connect(t, l, v4(1)) {
			t.Fatalf("connection %d refused with the rate limit off", i)
		}
	}
	if got := l.TrackedIPs(); got != 0 {
		t.Errorf("tracked %d addresses with no rate limit and no connections, want 0", got)
	}
	l.SetLimits(permit.Limits{IPRate: 1, IPBurst: 2})
	if !connect(t, l, v4(1)) || !connect(t, l, v4(1)) || connect(t, l, v4(1)) {
		t.Error("re-enabled rate limit does not start from a full burst of 2")
	}
}

// TestScanLeavesNothingBehind is the bound on the per-IP table: a scan of
// many distinct addresses, each connecting once, must not grow it.
func TestScanLeavesNothingBehind(t *testing.T) {
	const clients = 100_000

	t.Run("no rate limit", func(t *testing.T) {
		l := permit.New(permit.Limits{PerIP: 4}, nil)
		for i := range clients {
			p, err := l.Admit(443, v4(i))
			if err != nil {
				t.Fatal(err)
			}
			p.Release()
		}
		if got := l.TrackedIPs(); got != 0 {
			t.Errorf("tracked %d addresses after %d came and went, want 0", got, clients)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		clk := newClock()
		// A token refills in 100ms and the scan brings a new address every
		// millisecond, so about 100 buckets are refilling at any moment.
		l := permit.New(permit.Limits{PerIP: 4, IPRate: 10, IPBurst: 5}, clk.Now)
		most := 0
		for i := range clients {
			clk.Advance(time.Millisecond)
			p, err := l.Admit(443, v4(i))
			if err != nil {
				t.Fatal(err)
			}
			p.Release()
			if i%1000 == 0 {
				most = max(most, l.TrackedIPs())
			}
		}
		// Admissions and releases clean their own shard as they go, with
		// some lag (about 160 here): a bound near the refilling set, not the scan's size.
		if most > 300 {
			t.Errorf("tracked up to %d addresses during the scan, want at most 300", most)
		}
		clk.Advance(time.Second)
		l.Sweep()
		if got := l.TrackedIPs(); got != 0 {
			t.Errorf("tracked %d addresses after the scan and a sweep, want 0", got)
		}
	})
}
