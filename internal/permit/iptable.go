package permit

import (
	"encoding/binary"
	"math"
	"net/netip"
	"sync"
)

// The per-IP table is split into shards so that accepts from different
// clients rarely wait on the same lock. 64 shards keep contention low on
// large machines while the fixed cost stays a few kilobytes.
const (
	ipShardBits = 6
	ipShards    = 1 << ipShardBits
)

// sweepBatch bounds how many idle entries one admission or release
// deletes, so the connection that arrives just after a large scan has
// passed does not pay for cleaning up all of it.
const sweepBatch = 32

// shrinkAt is the size above which an emptied map or idle queue is
// dropped rather than reused: Go maps never give back their buckets, and a
// scan of a million addresses should not pin that memory forever.
const shrinkAt = 1024

// ipKey is a client address as the per-IP limits count it: IPv4 (also
// when it arrives IPv4-mapped) as itself, IPv6 reduced to its /64. The
// two never collide: an IPv4 key has ::ffff: in its low half, a /64 key
// has zeros there. Two words rather than netip.Addr keep hashing cheap and
// drop zones, which say nothing about who the client is.
type ipKey struct{ hi, lo uint64 }

// keyOf reports false for the zero Addr (a listener without IP peers):
// such connections are exempt from per-IP limits rather than all sharing
// one bucket.
func keyOf(a netip.Addr) (ipKey, bool) {
	if !a.IsValid() {
		return ipKey{}, false
	}
	a = a.Unmap()
	b := a.As16()
	k := ipKey{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
	if a.Is6() {
		k.lo = 0
	}
	return k, true
}

// shard spreads keys with two multiply-xorshift rounds: neighbouring
// addresses (a scan walks them in order) must land on unrelated shards.
// One round is not enough: the top bits of x*c for consecutive x advance
// by a near-constant step, so runs of neighbours would share a shard.
func (k ipKey) shard() int {
	x := k.hi*0x9e3779b97f4a7c15 ^ k.lo
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return int(x >> (64 - ipShardBits))
}

// ipEntry is one address's state. It is stored by value so that a scan of
// many addresses costs map slots, not one allocation each.
type ipEntry struct {
	active int64
	// tat is the GCRA arrival time in nanoseconds since the limiter's
	// epoch (see rules); the bucket is full when tat <= now.
	tat int64
}

// idleRef remembers an entry that went idle before its bucket was full.
type idleRef struct {
	key  ipKey
	full int64 // when the bucket will be full again
}

type ipShard struct {
	mu sync.Mutex
	m  map[ipKey]ipEntry
	// peak is the largest len(m) since m was last made.
	peak int
	// idle is a FIFO of entries that had no connection left but still
	// owed tokens when released. Deleting them then would hand a fresh
	// bucket to a client that connects and closes in a loop, defeating the
	// rate limit; keeping them without a queue would let a scan grow the
	// map forever. Entries are queued in release order, so their refill
	// times are nearly sorted: a later one waits at most one tolerance
	// behind an earlier one.
	idle []idleRef
	head int
	// now is the latest clock reading an admission brought to this
	// shard. Releases judge refills by it instead of reading the clock,
	// which costs as much as the rest of a release on some virtual
	// machines; being behind the true time only delays a deletion.
	now int64
	// Padding keeps the next shard's lock off this shard's cache lines.
	_ [64]byte
}

type ipTable struct {
	shards [ipShards]ipShard
}

func (t *ipTable) shard(k ipKey) *ipShard { return &t.shards[k.shard()] }

// admit takes a connection slot and, with a rate limit, a token for k.
// now is read only when r.interval > 0.
func (s *ipShard) admit(k ipKey, now int64, r *rules) (Scope, bool) {
	s.mu.Lock()
	if r.interval > 0 {
		s.now = max(s.now, now)
	}
	s.sweep(s.now, r, sweepBatch)
	e, ok := s.m[k]
	if !ok {
		e.tat = now // a new address starts with a full bucket
	}
	if r.ip > 0 && e.active >= r.ip {
		s.mu.Unlock()
		return ScopeIP, false
	}
	if r.interval > 0 {
		tat := max(e.tat, now) + r.interval
		if tat-now > r.tolerance {
			s.mu.Unlock()
			return ScopeIPRate, false
		}
		e.tat = tat
	}
	e.active++
	if s.m == nil {
		s.m = make(map[ipKey]ipEntry)
	}
	s.m[k] = e
	s.peak = max(s.peak, len(s.m))
	s.mu.Unlock()
	return "", true
}

// release gives back a slot taken by admit, deleting the entry at once if
// nothing remains to remember.
func (s *ipShard) release(k ipKey, r *rules) {
	s.mu.Lock()
	now := s.now
	e := s.m[k]
	e.active--
	switch {
	case e.active > 0:
		s.m[k] = e
	case r.interval == 0 || e.tat <= now:
		s.remove(k)
	default:
		s.m[k] = e
		s.idle = append(s.idle, idleRef{key: k, full: e.tat})
	}
	s.sweep(now, r, sweepBatch)
	s.mu.Unlock()
}

func (s *ipShard) remove(k ipKey) {
	delete(s.m, k)
	if len(s.m) == 0 && s.peak > shrinkAt {
		s.m, s.peak = nil, 0
	}
}

// sweep deletes up to limit queued entries whose buckets have refilled.
// Without a rate limit every idle entry is deletable, which drains what a
// previous configuration queued. The caller holds s.mu.
func (s *ipShard) sweep(now int64, r *rules, limit int) {
	for n := 0; n < limit && s.head < len(s.idle); n++ {
		ref := s.idle[s.head]
		if r.interval > 0 && ref.full > now {
			break
		}
		s.head++
		// The entry may have come back to life, or gone idle again with
		// a later ref queued; only its current state decides.
		if e, ok := s.m[ref.key]; ok && e.active == 0 && (r.interval == 0 || e.tat <= now) {
			s.remove(ref.key)
		}
	}
	switch {
	case s.head == len(s.idle):
		if cap(s.idle) > shrinkAt {
			s.idle = nil
		} else {
			s.idle = s.idle[:0]
		}
		s.head = 0
	case s.head >= shrinkAt && s.head*2 >= len(s.idle):
		n := copy(s.idle, s.idle[s.head:])
		s.idle = s.idle[:n]
		s.head = 0
	}
}

func (s *ipShard) active(k ipKey) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k].active
}

func (t *ipTable) sweepAll(now int64, r *rules) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.now = max(s.now, now)
		s.sweep(s.now, r, math.MaxInt)
		s.mu.Unlock()
	}
}

func (t *ipTable) size() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
