package permit_test

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/edgeproxy/edgeproxy/internal/permit"
)

// client is an address the model test connects from, with the group the
// per-IP limits should count it in, written out by hand so the model does
// not reuse the package's own grouping.
type client struct {
	addr  netip.Addr
	group string // "" for an address exempt from per-IP limits
}

func modelClients() []client {
	return []client{
		{netip.MustParseAddr("192.0.2.1"), "v4-1"},
		{netip.MustParseAddr("::ffff:192.0.2.1"), "v4-1"},
		{netip.MustParseAddr("192.0.2.2"), "v4-2"},
		{netip.MustParseAddr("2001:db8::1"), "v6-a"},
		{netip.MustParseAddr("2001:db8::ffff:1"), "v6-a"},
		{netip.MustParseAddr("2001:db8:0:1::1"), "v6-b"},
		{netip.Addr{}, ""},
	}
}

// model is the reference the Limiter is checked against: plain counts,
// and the rate limit as whole tokens (the test clock moves in whole token
// intervals, so the real limiter must agree exactly).
type model struct {
	limits   permit.Limits
	global   int64
	ports    map[int]int64
	ips      map[string]int64
	apps     map[string]int64
	debt     map[string]int64 // tokens owed per group, repaid one per tick
	refusals map[permit.Scope]uint64
}

// held is one connection the test has admitted.
type held struct {
	p        *permit.Permit
	port     int
	group    string
	app      string
	released bool
}

func (m *model) admit(port int, group string) permit.Scope {
	l := m.limits
	switch {
	case l.Global > 0 && m.global >= int64(l.Global):
		return permit.ScopeGlobal
	case l.PerPort > 0 && m.ports[port] >= int64(l.PerPort):
		return permit.ScopePort
	case group != "" && l.PerIP > 0 && m.ips[group] >= int64(l.PerIP):
		return permit.ScopeIP
	case group != "" && l.IPRate > 0 && m.debt[group] >= int64(max(l.IPBurst, 1)):
		return permit.ScopeIPRate
	}
	m.global++
	m.ports[port]++
	if group != "" {
		m.ips[group]++
		if l.IPRate > 0 {
			m.debt[group]++
		}
	}
	return ""
}

func (m *model) release(h *held) {
	if h.released {
		return
	}
	h.released = true
	m.global--
	m.ports[h.port]--
	if h.group != "" {
		m.ips[h.group]--
	}
	if h.app != "" {
		m.apps[h.app]--
	}
}

func (m *model) tick(n int64) {
	for g, d := range m.debt {
		m.debt[g] = max(d-n, 0)
	}
}

// TestModel runs random sequences of admissions, app admissions, single,
// repeated and concurrent releases, clock ticks and limit changes, and
// checks after every step that the Limiter's counts equal the model's,
// which never go negative or past a limit; at the end, with everything
// released, every count is zero and the per-IP table is empty.
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		const tick = time.Millisecond
		countLimit := rapid.IntRange(0, 3)
		limits := func(rt *rapid.T, rate float64, burst int) permit.Limits {
			return permit.Limits{
				Global:  countLimit.Draw(rt, "global"),
				PerPort: countLimit.Draw(rt, "port"),
				PerIP:   countLimit.Draw(rt, "ip"),
				PerApp:  countLimit.Draw(rt, "app"),
				IPRate:  rate,
				IPBurst: burst,
			}
		}
		// The rate stays fixed for a run (on at one token per tick, or
		// off) so that whether a swept entry's bucket was forgotten never
		// matters; SetLimits changes the count limits.
		var rate float64
		if rapid.Bool().Draw(rt, "rate on") {
			rate = float64(time.Second / tick)
		}
		burst := rapid.IntRange(0, 3).Draw(rt, "burst")

		clk := newClock()
		m := &model{
			limits: limits(rt, rate, burst),
			ports:  map[int]int64{}, ips: map[string]int64{}, apps: map[string]int64{},
			debt: map[string]int64{}, refusals: map[permit.Scope]uint64{},
		}
		l := permit.New(m.limits, clk.Now)
		clients := modelClients()
		ports := []int{80, 443}
		apps := []string{"a", "b"}
		var conns []*held

		pick := func(rt *rapid.T) *held {
			if len(conns) == 0 {
				rt.Skip("no connection yet")
			}
			return conns[rapid.IntRange(0, len(conns)-1).Draw(rt, "conn")]
		}
		// appResult checks an AdmitApp outcome and applies it to the model.
		// slack is how many app slots a concurrent call may hold for an
		// instant, and released says Release may have run first.
		appResult := func(rt *rapid.T, h *held, app string, err error, slack int64, released bool) {
			var r *permit.Refused
			switch {
			case err == nil:
				if h.app == "" {
					h.app = app
					m.apps[app]++
				} else if h.app != app {
					rt.Fatalf("AdmitApp(%s) on a permit charged to %s succeeded", app, h.app)
				}
			case errors.As(err, &r):
				if r.Scope != permit.ScopeApp || m.limits.PerApp == 0 || m.apps[app]+slack < int64(m.limits.PerApp) {
					rt.Fatalf("AdmitApp(%s) refused by %s with %d of %d open", app, r.Scope, m.apps[app], m.limits.PerApp)
				}
				m.refusals[permit.ScopeApp]++
			case errors.Is(err, permit.ErrOtherApp):
				if h.app == "" || h.app == app {
					rt.Fatalf("AdmitApp(%s): ErrOtherApp on a permit charged to %q", app, h.app)
				}
			case errors.Is(err, permit.ErrReleased):
				if !h.released && !released {
					rt.Fatalf("AdmitApp(%s): ErrReleased on an open permit", app)
				}
			default:
				rt.Fatalf("AdmitApp(%s): unexpected error %v", app, err)
			}
		}

		rt.Repeat(map[string]func(*rapid.T){
			"admit": func(rt *rapid.T) {
				port := rapid.SampledFrom(ports).Draw(rt, "port")
				c := rapid.SampledFrom(clients).Draw(rt, "client")
				want := m.admit(port, c.group)
				p, err := l.Admit(port, c.addr)
				if want != "" {
					m.refusals[want]++
					var r *permit.Refused
					if p != nil || !errors.As(err, &r) || r.Scope != want {
						rt.Fatalf("Admit(%d, %v): %v, want refused by %s", port, c.addr, err, want)
					}
					return
				}
				if err != nil {
					rt.Fatalf("Admit(%d, %v): %v, want admitted", port, c.addr, err)
				}
				conns = append(conns, &held{p: p, port: port, group: c.group})
				within(rt, "global", m.global, m.limits.Global)
				within(rt, "port", m.ports[port], m.limits.PerPort)
				if c.group != "" {
					within(rt, "ip", m.ips[c.group], m.limits.PerIP)
				}
			},
			"admit app": func(rt *rapid.T) {
				h := pick(rt)
				app := rapid.SampledFrom(apps).Draw(rt, "app")
				err := h.p.AdmitApp(app)
				var want error
				switch {
				case h.released:
					want = permit.ErrReleased
				case h.app == app:
				case h.app != "":
					want = permit.ErrOtherApp
				case m.limits.PerApp > 0 && m.apps[app] >= int64(m.limits.PerApp):
					want = &permit.Refused{Scope: permit.ScopeApp}
				}
				if (err == nil) != (want == nil) || (err != nil && err.Error() != want.Error()) {
					rt.Fatalf("AdmitApp(%s): %v, want %v", app, err, want)
				}
				charged := h.app == ""
				appResult(rt, h, app, err, 0, false)
				if err == nil && charged {
					within(rt, "app", m.apps[app], m.limits.PerApp)
				}
			},
			"release": func(rt *rapid.T) {
				h := pick(rt)
				h.p.Release()
				m.release(h)
			},
			"concurrent releases": func(rt *rapid.T) {
				h := pick(rt)
				n := rapid.IntRange(2, 4).Draw(rt, "goroutines")
				var wg sync.WaitGroup
				for range n {
					wg.Go(h.p.Release)
				}
				wg.Wait()
				m.release(h)
			},
			"admit app racing release": func(rt *rapid.T) {
				h := pick(rt)
				app := rapid.SampledFrom(apps).Draw(rt, "app")
				var err error
				var wg sync.WaitGroup
				wg.Go(func() { err = h.p.AdmitApp(app) })
				wg.Go(h.p.Release)
				wg.Wait()
				appResult(rt, h, app, err, 0, true)
				m.release(h)
			},
			"concurrent admit app": func(rt *rapid.T) {
				h := pick(rt)
				app := rapid.SampledFrom(apps).Draw(rt, "app")
				var errs [2]error
				var wg sync.WaitGroup
				for i := range errs {
					wg.Go(func() { errs[i] = h.p.AdmitApp(app) })
				}
				wg.Wait()
				for _, err := range errs {
					appResult(rt, h, app, err, 1, false)
				}
			},
			"tick": func(rt *rapid.T) {
				n := rapid.IntRange(1, 3).Draw(rt, "ticks")
				clk.Advance(time.Duration(n) * tick)
				m.tick(int64(n))
			},
			"set limits": func(rt *rapid.T) {
				m.limits = limits(rt, rate, burst)
				l.SetLimits(m.limits)
			},
			"": func(rt *rapid.T) { checkModel(rt, l, m, clients, ports, apps) },
		})

		for _, h := range conns {
			h.p.Release()
			m.release(h)
		}
		checkModel(rt, l, m, clients, ports, apps)
		clk.Advance(time.Second)
		l.Sweep()
		if l.Active() != 0 || l.TrackedIPs() != 0 {
			rt.Fatalf("after releasing everything: active %d, tracked %d", l.Active(), l.TrackedIPs())
		}
	})
}

// within checks a model count against the limit in force when it grew.
func within(rt *rapid.T, what string, n int64, limit int) {
	if limit > 0 && n > int64(limit) {
		rt.Fatalf("%s: %d open connections past the limit of %d", what, n, limit)
	}
}

func checkModel(rt *rapid.T, l *permit.Limiter, m *model, clients []client, ports []int, apps []string) {
	check := func(what string, got, want int64) {
		if got != want {
			rt.Fatalf("%s: limiter counts %d, model %d", what, got, want)
		}
		if got < 0 {
			rt.Fatalf("%s: negative count %d", what, got)
		}
	}
	check("global", l.Active(), m.global)
	for _, p := range ports {
		check("port", l.ActivePort(p), m.ports[p])
	}
	for _, a := range apps {
		check("app "+a, l.ActiveApp(a), m.apps[a])
	}
	needed := map[string]bool{}
	for _, c := range clients {
		if c.group == "" {
			continue
		}
		check("ip "+c.addr.String(), l.ActiveIP(c.addr), m.ips[c.group])
		if m.ips[c.group] > 0 || m.debt[c.group] > 0 {
			needed[c.group] = true
		}
	}
	// Idle entries with a full bucket may linger until their shard is next
	// touched, but an entry still needed must never be gone.
	if got := l.TrackedIPs(); got < len(needed) || got > 4 {
		rt.Fatalf("tracked %d address groups, model needs %d of 4", got, len(needed))
	}
	for s, n := range l.Refusals() {
		if n != m.refusals[s] {
			rt.Fatalf("refusals[%s]: limiter %d, model %d", s, n, m.refusals[s])
		}
	}
}
