// Package permit owns admission control for accepted connections: the
// global, per-port, per-client-IP and per-app connection permits, and the
// per-IP accept-rate limit.
//
// A connection is admitted in two steps because its app is not known at
// accept time:
//
//	p, err := lim.Admit(port, peerIP)   // right after accept: global, port, ip, ip_rate
//	...                                  // PROXY header, TLS, SNI/Host routing
//	err = p.AdmitApp(app)                // once routing names the app
//	...
//	p.Release()                          // when the connection closes, on every path
//
// Every check is a non-blocking try-acquire: a connection over a limit is
// refused at once with a *Refused error naming the scope, the refusal is
// counted by scope, and the caller closes the connection. Queueing accepted
// sockets behind a full proxy would only turn overload into timeouts.
//
// Counts are kept whether or not a limit is set, so metrics always have
// them and a reload that introduces a limit (SetLimits) starts from the
// true number of open connections rather than from zero.
//
// Per-IP state lives in a sharded map whose entries are deleted as soon as
// an address has no open connection and its token bucket has refilled, so
// a scan from many addresses leaves nothing behind once it has passed.
// IPv4-mapped IPv6 addresses count as the IPv4 address, and IPv6 addresses
// are grouped by their /64: a single subscriber is normally given a whole
// /64, and without grouping one host could rotate through its 2^64
// addresses to escape the per-IP limits and fill the table.
package permit

import "math"

// Limits configures admission. A zero field means unlimited.
type Limits struct {
	// Global caps open connections of the whole proxy.
	Global int
	// PerApp caps open connections per app on this edge (config defaults
	// it to 2048).
	PerApp int
	// PerPort caps open connections per public port.
	PerPort int
	// PerIP caps open connections per client address (IPv6: per /64).
	PerIP int
	// IPRate is the sustained rate of new connections per second allowed
	// from one client address (IPv6: per /64).
	IPRate float64
	// IPBurst is how many new connections an address may open at once
	// before IPRate applies; values below 1 mean 1.
	IPBurst int
}

// Scope names the limit that refused a connection. The values are metric
// label values, so they are fixed, short and lowercase.
type Scope string

// The scopes, in the order Admit checks them: the broadest first, so that
// when the whole proxy is full operators see "global" rather than whichever
// narrower limit happened to be hit on the way.
const (
	ScopeGlobal Scope = "global"
	ScopePort   Scope = "port"
	ScopeIP     Scope = "ip"
	ScopeIPRate Scope = "ip_rate"
	ScopeApp    Scope = "app"
)

// numScopes sizes the per-scope arrays; scopeIndex maps to them.
const numScopes = 5

// Scopes lists every scope, for registering metric series up front.
func Scopes() []Scope {
	return []Scope{ScopeGlobal, ScopePort, ScopeIP, ScopeIPRate, ScopeApp}
}

func scopeIndex(s Scope) int {
	switch s {
	case ScopeGlobal:
		return 0
	case ScopePort:
		return 1
	case ScopeIP:
		return 2
	case ScopeIPRate:
		return 3
	default:
		return 4
	}
}

// Refused is the error for a connection over a limit. The caller should
// close the connection at once; the refusal has already been counted.
type Refused struct {
	Scope Scope
}

func (r *Refused) Error() string {
	return "connection refused by " + string(r.Scope) + " limit"
}

// maxInterval bounds the time one token takes to refill, so that absurdly
// small rates cannot overflow the nanosecond arithmetic; 2^50 ns is about
// 13 days per connection, which is "effectively never" for an accept rate.
const maxInterval = int64(1) << 50

// rules is Limits compiled into the form the hot path reads. It is
// immutable once built and swapped whole by SetLimits.
type rules struct {
	limits                   Limits
	global, port, ip, perApp int64

	// The accept rate is a generic cell rate algorithm (GCRA): one
	// "theoretical arrival time" per address stands in for a token bucket.
	// interval is the time one connection's token takes to refill and
	// tolerance is interval*burst; an address may connect while its
	// arrival time stays within tolerance of now. Its bucket is full
	// exactly when the arrival time is not after now, which is what lets
	// idle entries be deleted without losing rate state. interval 0 turns
	// the rate limit off.
	interval, tolerance int64
}

func compile(l Limits) *rules {
	r := &rules{
		limits: l,
		global: nonNegative(l.Global),
		port:   nonNegative(l.PerPort),
		ip:     nonNegative(l.PerIP),
		perApp: nonNegative(l.PerApp),
	}
	// NaN, negative and infinite rates mean "no rate limit": config
	// validation rejects the first two, and the last is what it says.
	if l.IPRate > 0 && !math.IsInf(l.IPRate, 1) {
		iv := 1e9 / l.IPRate
		switch {
		case iv >= float64(maxInterval):
			r.interval = maxInterval
		case iv < 1:
			r.interval = 1
		default:
			r.interval = int64(iv)
		}
		burst := int64(max(l.IPBurst, 1))
		if burst > maxInterval/r.interval {
			r.tolerance = maxInterval
		} else {
			r.tolerance = burst * r.interval
		}
	}
	return r
}

func nonNegative(n int) int64 {
	return int64(max(n, 0))
}
