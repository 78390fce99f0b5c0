// Package rtt keeps this edge's round-trip times to regions, the measure
// of closeness the balancer orders regions by (nearest first).
//
// Estimates start from configuration (proxy.region_rtt) and are refined by
// Observe with each upstream connect time, smoothed as TCP smooths its
// SRTT; regions pinned in configuration (proxy.region_rtt_fixed) never
// move. Distance is read once per candidate per balancing decision, so it
// is a lock-free map read with no allocation: the map of regions is
// immutable and replaced whole (under a lock) only when a region is first
// learned, and each region's estimate is an atomic integer.
package rtt

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// MaxRTT caps samples and distances. A connect that took longer was
	// bounded by a dial timeout, not by distance; capping keeps one bad
	// sample from taking dozens of others to wash out, and keeps every
	// known region ranked before Unknown.
	MaxRTT = 10 * time.Second
	// Unknown is the distance of a region with no estimate: larger than
	// any measured one, so every known region ranks first.
	Unknown = int(MaxRTT/time.Microsecond) + 1
	// MaxLearned bounds the regions the table learns through Observe and
	// Carry (configured ones are not counted). Real platforms have a few
	// dozen regions; the bound only stops a bug elsewhere (a region name
	// built from input) from growing the table without limit.
	MaxLearned = 256
	// weightShift makes each sample count 1/8, as TCP's SRTT (RFC 6298).
	weightShift = 3
)

// Entry is one region's estimate, for admin views, metrics and the debug
// header.
type Entry struct {
	Region string
	RTT    time.Duration
	// Fixed is set for configured overrides and for this edge's own
	// region: Observe never changes them.
	Fixed bool
	// Measured is set once Observe has folded in a sample (or Carry kept
	// one): the value is no longer only the configured starting guess.
	Measured bool
}

type entry struct {
	ns       atomic.Int64
	measured atomic.Bool
	fixed    bool
}

// Table holds the estimates of one edge. The zero value is not usable;
// call New.
type Table struct {
	self    string
	regions atomic.Pointer[map[string]*entry]
	// mu serialises adding regions (copy, add, publish); readers never
	// take it.
	mu      sync.Mutex
	learned int // regions added by Observe or Carry; under mu
}

// New makes a table for an edge in region self. start holds starting
// estimates (refined by Observe); fixed holds overrides that Observe never
// changes (fixed wins over start for the same region). Entries for self
// are ignored: self is always 0. Starting estimates of zero or less are
// ignored; fixed values below zero count as zero.
func New(self string, start, fixed map[string]time.Duration) *Table {
	t := &Table{self: self}
	m := make(map[string]*entry, len(start)+len(fixed))
	for r, d := range start {
		if r == self || d <= 0 {
			continue
		}
		e := &entry{}
		e.ns.Store(int64(min(d, MaxRTT)))
		m[r] = e
	}
	for r, d := range fixed {
		if r == self {
			continue
		}
		e := &entry{fixed: true}
		e.ns.Store(int64(min(max(d, 0), MaxRTT)))
		m[r] = e
	}
	t.regions.Store(&m)
	return t
}

// Observe folds one measured round trip (a TCP connect time to a machine
// in region) into the region's estimate: an EWMA with weight 1/8; the
// first sample of a region with no estimate is taken as is. Samples for
// self, for fixed regions, and of zero or less are ignored; samples above
// MaxRTT count as MaxRTT. Safe for concurrent use; meant to be called once
// per upstream connect, not per read.
func (t *Table) Observe(region string, d time.Duration) {
	if region == t.self || d <= 0 {
		return
	}
	d = min(d, MaxRTT)
	e := (*t.regions.Load())[region]
	if e == nil {
		e = t.learn(region, d)
		if e == nil {
			return // new and taken as is, or over MaxLearned
		}
	}
	if e.fixed {
		return
	}
	for {
		old := e.ns.Load()
		next := old + (int64(d)-old)>>weightShift
		if e.ns.CompareAndSwap(old, next) {
			break
		}
	}
	e.measured.Store(true)
}

// learn adds region with first sample d and returns nil, or returns the
// entry another goroutine added meanwhile so the caller folds d into it.
// It returns nil without adding when the table has learned MaxLearned
// regions already.
func (t *Table) learn(region string, d time.Duration) *entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := *t.regions.Load()
	if e := cur[region]; e != nil {
		return e
	}
	if t.learned >= MaxLearned {
		return nil
	}
	e := &entry{}
	e.ns.Store(int64(d))
	e.measured.Store(true)
	t.publish(cur, region, e)
	return nil
}

// publish replaces the region map with a copy of cur plus one entry.
// Callers hold mu.
func (t *Table) publish(cur map[string]*entry, region string, e *entry) {
	next := make(map[string]*entry, len(cur)+1)
	for r, v := range cur {
		next[r] = v
	}
	next[region] = e
	t.regions.Store(&next)
	t.learned++
}

// Distance orders regions for the balancer: 0 for self; otherwise the
// estimate in microseconds, at least 1 (so no other region ties with
// self); Unknown for a region with no estimate.
func (t *Table) Distance(region string) int {
	if region == t.self {
		return 0
	}
	e := (*t.regions.Load())[region]
	if e == nil {
		return Unknown
	}
	return max(int(time.Duration(e.ns.Load())/time.Microsecond), 1)
}

// RTT returns the estimate and whether there is one (self: 0, true).
func (t *Table) RTT(region string) (time.Duration, bool) {
	if region == t.self {
		return 0, true
	}
	e := (*t.regions.Load())[region]
	if e == nil {
		return 0, false
	}
	return time.Duration(e.ns.Load()), true
}

// Regions returns every region with an estimate, nearest first (by name
// among equals). This edge's own region, when it has a name, comes first
// with RTT 0 and Fixed set.
func (t *Table) Regions() []Entry {
	m := *t.regions.Load()
	out := make([]Entry, 0, len(m)+1)
	if t.self != "" {
		out = append(out, Entry{Region: t.self, Fixed: true})
	}
	others := len(out)
	for r, e := range m {
		out = append(out, Entry{Region: r, RTT: time.Duration(e.ns.Load()), Fixed: e.fixed, Measured: e.measured.Load()})
	}
	// Self stays first even when a fixed 0 ties with it.
	slices.SortFunc(out[others:], func(a, b Entry) int {
		return cmp.Or(cmp.Compare(a.RTT, b.RTT), cmp.Compare(a.Region, b.Region))
	})
	return out
}

// Carry keeps the measured estimates of prev for regions that are not
// fixed in t (nor t's own region), so a config reload does not forget what
// was measured: a measured value replaces t's starting estimate. prev may
// be nil. Carried regions new to t count toward MaxLearned.
func (t *Table) Carry(prev *Table) {
	if prev == nil || prev == t {
		return
	}
	for r, pe := range *prev.regions.Load() {
		if !pe.measured.Load() || r == t.self {
			continue
		}
		ns := pe.ns.Load()
		if e := (*t.regions.Load())[r]; e != nil {
			if !e.fixed {
				e.ns.Store(ns)
				e.measured.Store(true)
			}
			continue
		}
		t.mu.Lock()
		cur := *t.regions.Load()
		if cur[r] == nil && t.learned < MaxLearned {
			e := &entry{}
			e.ns.Store(ns)
			e.measured.Store(true)
			t.publish(cur, r, e)
		}
		t.mu.Unlock()
	}
}
