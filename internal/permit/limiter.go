package permit

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// gauge is a counter of open connections with a try-acquire against a
// limit. It is padded to its own cache line: the global gauge is touched
// by every accept and close on every core, and a neighbour sharing its
// line would make unrelated writes contend with it.
type gauge struct {
	n atomic.Int64
	_ [56]byte
}

// tryAcquire counts one more connection unless that would pass limit
// (0 = unlimited). A compare-and-swap loop rather than add-then-undo: an
// add that overshoots and backs out would, for that instant, make
// concurrent admissions see a full gauge and be refused for nothing.
func (g *gauge) tryAcquire(limit int64) bool {
	if limit <= 0 {
		g.n.Add(1)
		return true
	}
	for {
		n := g.n.Load()
		if n >= limit {
			return false
		}
		if g.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (g *gauge) release() { g.n.Add(-1) }

// appGauge carries its name so that a permit can tell which app it was
// charged to.
type appGauge struct {
	gauge
	name string
}

// Limiter admits connections against Limits. It is safe for concurrent
// use; one Limiter serves the whole proxy and outlives reloads, which call
// SetLimits.
type Limiter struct {
	now   func() time.Time
	epoch time.Time
	rules atomic.Pointer[rules]

	// The padding keeps rules, read by every admission, off the global
	// gauge's cache line, which every admission and release writes.
	_      [64]byte
	global gauge
	// Ports and apps are keyed by values from config and routing, never by
	// client input, so their gauges are created on first use and kept:
	// deleting one while a permit still points at it would split its
	// count in two. sync.Map suits this read-mostly, grow-only use.
	ports sync.Map // int -> *gauge
	apps  sync.Map // string -> *appGauge
	ips   ipTable

	refusals [numScopes]atomic.Uint64
	// errs are the refusal errors, built once so that refusing a flood
	// allocates nothing. Callers must not modify them.
	errs [numScopes]*Refused
	// released marks a permit's app slot after Release (see Permit).
	released appGauge
}

// New returns a Limiter enforcing l. now is the clock for the accept rate
// limit; nil means time.Now. Negative limits are treated as unlimited:
// validating them is the config package's job.
func New(l Limits, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	lim := &Limiter{now: now, epoch: now()}
	lim.rules.Store(compile(l))
	for _, s := range Scopes() {
		lim.errs[scopeIndex(s)] = &Refused{Scope: s}
	}
	return lim
}

// SetLimits replaces the limits, typically on a config reload. Open
// connections keep their permits and stay counted; the new limits decide
// only admissions from now on, so lowering a limit below the current count
// refuses new connections until enough old ones close.
func (l *Limiter) SetLimits(lim Limits) {
	l.rules.Store(compile(lim))
}

// Limits returns the limits in force.
func (l *Limiter) Limits() Limits {
	return l.rules.Load().limits
}

// nowNanos is the clock as nanoseconds since New. Subtracting times keeps
// the monotonic reading of time.Now, so wall-clock steps do not refill or
// drain buckets.
func (l *Limiter) nowNanos() int64 {
	return int64(l.now().Sub(l.epoch))
}

// Admit takes the global, per-port, per-IP and IP-rate permits for a
// connection accepted on port from ip, all or nothing. On success the
// caller owns the returned Permit and must Release it when the connection
// closes. Otherwise the error is a *Refused naming the first scope that
// was full, nothing is held, and the caller should close the connection.
//
// An invalid ip (a listener without IP peers) is exempt from the per-IP
// limits.
func (l *Limiter) Admit(port int, ip netip.Addr) (*Permit, error) {
	r := l.rules.Load()
	if !l.global.tryAcquire(r.global) {
		return nil, l.refuse(ScopeGlobal)
	}
	pg := l.portGauge(port)
	if !pg.tryAcquire(r.port) {
		l.global.release()
		return nil, l.refuse(ScopePort)
	}
	k, hasIP := keyOf(ip)
	if hasIP {
		var now int64
		if r.interval > 0 {
			now = l.nowNanos()
		}
		if scope, ok := l.ips.shard(k).admit(k, now, r); !ok {
			pg.release()
			l.global.release()
			return nil, l.refuse(scope)
		}
	}
	return &Permit{l: l, port: pg, ip: k, hasIP: hasIP}, nil
}

func (l *Limiter) refuse(s Scope) *Refused {
	i := scopeIndex(s)
	l.refusals[i].Add(1)
	return l.errs[i]
}

func (l *Limiter) portGauge(port int) *gauge {
	if g, ok := l.ports.Load(port); ok {
		return g.(*gauge)
	}
	g, _ := l.ports.LoadOrStore(port, new(gauge))
	return g.(*gauge)
}

func (l *Limiter) appGauge(app string) *appGauge {
	if g, ok := l.apps.Load(app); ok {
		return g.(*appGauge)
	}
	g, _ := l.apps.LoadOrStore(app, &appGauge{name: app})
	return g.(*appGauge)
}

// Active is the number of open (admitted, not yet released) connections.
func (l *Limiter) Active() int64 { return l.global.n.Load() }

// ActivePort is the number of open connections on a public port.
func (l *Limiter) ActivePort(port int) int64 {
	if g, ok := l.ports.Load(port); ok {
		return g.(*gauge).n.Load()
	}
	return 0
}

// ActiveApp is the number of open connections charged to app.
func (l *Limiter) ActiveApp(app string) int64 {
	if g, ok := l.apps.Load(app); ok {
		return g.(*appGauge).n.Load()
	}
	return 0
}

// ActiveIP is the number of open connections from ip's group (the address
// itself for IPv4, its /64 for IPv6).
func (l *Limiter) ActiveIP(ip netip.Addr) int64 {
	k, ok := keyOf(ip)
	if !ok {
		return 0
	}
	return l.ips.shard(k).active(k)
}

// ActivePorts returns the open connections of every port seen so far, for
// a per-port gauge.
func (l *Limiter) ActivePorts() map[int]int64 {
	out := make(map[int]int64)
	l.ports.Range(func(k, v any) bool {
		out[k.(int)] = v.(*gauge).n.Load()
		return true
	})
	return out
}

// ActiveApps returns the open connections of every app seen so far, for a
// per-app gauge.
func (l *Limiter) ActiveApps() map[string]int64 {
	out := make(map[string]int64)
	l.apps.Range(func(k, v any) bool {
		out[k.(string)] = v.(*appGauge).n.Load()
		return true
	})
	return out
}

// Refusals returns how many connections each scope has refused since New;
// every scope is present, zero or not.
func (l *Limiter) Refusals() map[Scope]uint64 {
	out := make(map[Scope]uint64, numScopes)
	for _, s := range Scopes() {
		out[s] = l.refusals[scopeIndex(s)].Load()
	}
	return out
}

// TrackedIPs is the number of client address groups the per-IP table
// holds: those with open connections plus those whose rate bucket is still
// refilling. It is the table's memory in entries, worth exporting as a
// gauge.
func (l *Limiter) TrackedIPs() int { return l.ips.size() }

// Sweep deletes every per-IP entry that has no open connection and a full
// bucket. Admissions and releases already do this a few entries at a time
// in their own shard; a server may call Sweep from a slow ticker so that
// memory is returned after a scan even when no later traffic touches the
// shards it filled.
func (l *Limiter) Sweep() {
	r := l.rules.Load()
	var now int64
	if r.interval > 0 {
		now = l.nowNanos()
	}
	l.ips.sweepAll(now, r)
}
