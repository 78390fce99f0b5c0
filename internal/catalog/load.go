package catalog

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Load is a machine's live concurrency for one service, and its smoothed
// response time. It changes once per connection or request, never per
// read.
type Load struct {
	n atomic.Int64
	// remote is what the fleet's other nodes last reported of the same
	// machine and service (see internal/fleet's load sharing): balancing
	// and the hard limit count it, this node's share is n.
	remote atomic.Int64
	// latency is the smoothed response time in nanoseconds, 0 until the
	// first measurement.
	latency atomic.Int64
	// relayed is the work this node, as the machine's worker, carries for
	// edges over the backhaul. It is counted exactly here and never
	// published: the edges that sent it publish it as their own share.
	relayed atomic.Int64
}

// Latency is the machine's smoothed response time for the service (0:
// not measured yet).
func (l *Load) Latency() time.Duration { return time.Duration(l.latency.Load()) }

// ObserveLatency folds one response time into the average, weight 1/8 as
// TCP's SRTT: recent enough to follow a machine that slows down, smooth
// enough that one slow request does not swing the choice. Concurrent
// updates may lose one another; an average tolerates that and it saves a
// compare-and-swap loop per request.
func (l *Load) ObserveLatency(d time.Duration) {
	if d <= 0 {
		d = 1
	}
	old := l.latency.Load()
	if old == 0 {
		l.latency.Store(int64(d))
		return
	}
	l.latency.Store(old + (int64(d)-old)/8)
}

// Value is the current load, across the fleet.
func (l *Load) Value() int64 { return l.n.Load() + l.remote.Load() }

// Local is this node's share of the load.
func (l *Load) Local() int64 { return l.n.Load() }

// SetRemote records the other nodes' share and reports whether it fell:
// work queued for capacity must then be woken, as on a local release.
func (l *Load) SetRemote(v int64) (fell bool) { return l.remote.Swap(v) > v }

// TryAcquire takes one unit unless that would reach beyond hard (0: no
// limit). The compare-and-swap keeps this node's share exact when many
// connections race for the last slot; the other nodes' share is as fresh
// as their last report.
func (l *Load) TryAcquire(hard int) bool {
	for {
		cur := l.n.Load()
		if hard > 0 && cur+l.remote.Load() >= int64(hard) {
			return false
		}
		if l.n.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// Release gives a unit back.
func (l *Load) Release() { l.n.Add(-1) }

// TryRelay takes one unit of relayed work unless this node's exact count
// of the machine's work (its own and what it relays) would reach beyond
// hard (0: no limit). The other nodes' shares are left out: they include
// the very work being relayed.
func (l *Load) TryRelay(hard int) bool {
	for {
		cur := l.relayed.Load()
		if hard > 0 && cur+l.n.Load() >= int64(hard) {
			return false
		}
		if l.relayed.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// ReleaseRelay gives a unit of relayed work back.
func (l *Load) ReleaseRelay() { l.relayed.Add(-1) }

// Relayed is the work this node relays to the machine for other edges.
func (l *Load) Relayed() int64 { return l.relayed.Load() }

// Waiters lets work that found every machine full wait for a release
// instead of polling.
type Waiters struct {
	// waiting counts callers between Chan and Done, so releases skip the
	// lock when nobody waits, which is nearly always.
	waiting atomic.Int32
	mu      sync.Mutex
	ch      chan struct{}
}

func newWaiters() *Waiters { return &Waiters{ch: make(chan struct{})} }

// Chan returns a channel closed at the next Wake. Take it before checking
// for capacity so a release in between is not missed, and call Done once
// no longer waiting.
func (w *Waiters) Chan() <-chan struct{} {
	w.waiting.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

// Done ends a wait begun with Chan.
func (w *Waiters) Done() { w.waiting.Add(-1) }

// Wake wakes everyone waiting.
func (w *Waiters) Wake() {
	if w.waiting.Load() == 0 {
		return
	}
	w.mu.Lock()
	close(w.ch)
	w.ch = make(chan struct{})
	w.mu.Unlock()
}

// Wait blocks until the next Wake on ch or until ctx ends.
func Wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
