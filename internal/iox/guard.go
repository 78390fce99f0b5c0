package iox

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The progress guard wraps each layer of a proxied connection and watches
// the calls made on it, because a reader that returns (0, nil), or a
// caller that reads again after a terminal error, turns every copy loop
// above it into a busy loop (docs/incident.md). It counts in plain fields owned
// by the goroutine making the call, so a read costs a few increments and
// compares, never a shared atomic or a clock read; the counts reach the
// shared per-layer Stats every flushEvery reads and when the layer sees a
// terminal result.

// GuardLimits are the spin detector's thresholds.
type GuardLimits struct {
	// ZeroProgressReads kills after this many consecutive (0, nil) reads.
	ZeroProgressReads int
	// ReadsAfterEOF kills after this many reads following a terminal error.
	ReadsAfterEOF int
	// MaxCallsPerSecond kills a connection that makes calls at more than
	// this rate without moving a byte, sustained for a second.
	MaxCallsPerSecond int
}

// DefaultGuardLimits returns docs/incident.md's thresholds.
func DefaultGuardLimits() GuardLimits {
	return GuardLimits{ZeroProgressReads: 100, ReadsAfterEOF: 100, MaxCallsPerSecond: 100_000}
}

// KillReason says why the spin detector ended a connection.
type KillReason string

const (
	KillZeroProgress KillReason = "zero_progress"
	KillAfterEOF     KillReason = "reads_after_eof"
	KillZeroWrites   KillReason = "zero_byte_writes"
	KillCallRate     KillReason = "call_rate"
)

// ErrSpinKilled is what every call on a killed connection returns.
var ErrSpinKilled = errors.New("iox: connection killed by the spin detector")

// flushEvery bounds how stale the shared read counters may be.
const flushEvery = 1024

// rateWindow is how often (in calls without progress) the call-rate check
// reads the clock.
const rateWindow = 1024

// LayerStats are the shared counters of one layer, summed over all
// connections.
type LayerStats struct {
	Reads, ZeroProgressReads, ReadsAfterEOF, ZeroWrites atomic.Int64
	Kills                                               sync.Map // KillReason -> *atomic.Int64
}

func (s *LayerStats) kill(r KillReason) {
	v, _ := s.Kills.LoadOrStore(r, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// KillCount returns how many connections this layer's guard killed for r.
func (s *LayerStats) KillCount(r KillReason) int64 {
	if v, ok := s.Kills.Load(r); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// Stats holds LayerStats by layer name; layers are created on first use
// and live for the process (their number is fixed by the code).
type Stats struct{ layers sync.Map }

// Layer returns the counters of a layer.
func (s *Stats) Layer(name string) *LayerStats {
	if v, ok := s.layers.Load(name); ok {
		return v.(*LayerStats)
	}
	v, _ := s.layers.LoadOrStore(name, new(LayerStats))
	return v.(*LayerStats)
}

// Each calls f for every layer seen so far.
func (s *Stats) Each(f func(name string, ls *LayerStats)) {
	s.layers.Range(func(k, v any) bool {
		f(k.(string), v.(*LayerStats))
		return true
	})
}

// Kill describes a connection the spin detector ended; it is logged once.
type Kill struct {
	Layer  string
	Reason KillReason
	Chain  string
	Counts Counts
}

// Counts are one layer's calls on one connection.
type Counts struct {
	Reads             int64 `json:"reads"`
	ZeroProgressReads int64 `json:"zero_progress_reads"`
	ReadsAfterEOF     int64 `json:"reads_after_eof"`
	ZeroWrites        int64 `json:"zero_byte_writes"`
}

func (c Counts) String() string {
	return fmt.Sprintf("reads=%d zero_progress=%d after_eof=%d zero_writes=%d", c.Reads, c.ZeroProgressReads, c.ReadsAfterEOF, c.ZeroWrites)
}

// Guard is the spin detector of one connection, shared by its layers.
type Guard struct {
	limits GuardLimits
	stats  *Stats
	// raw is the socket, closed on a kill so every layer and goroutine
	// blocked on the connection ends at once.
	raw    net.Conn
	onKill func(Kill)
	killed atomic.Bool
	once   sync.Once
	// top is the outermost layer wrapped so far; a kill logs the chain
	// from there down.
	top atomic.Pointer[Guarded]

	mu     sync.Mutex
	layers []*Guarded
}

// LayerCounts are one layer's counts as last flushed, for the admin API.
type LayerCounts struct {
	Layer  string `json:"layer"`
	Counts Counts `json:"counts"`
}

// Snapshot returns each guarded layer's counts as of its last flush
// (every 1024 reads and at the end of its stream), innermost first. It is
// safe to call from any goroutine.
func (g *Guard) Snapshot() []LayerCounts {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]LayerCounts, len(g.layers))
	for i, l := range g.layers {
		out[i] = LayerCounts{Layer: l.name, Counts: Counts{Reads: l.pubReads.Load(), ZeroProgressReads: l.pubZero.Load(),
			ReadsAfterEOF: l.pubAfter.Load(), ZeroWrites: l.zeroWrites.Load()}}
	}
	return out
}

// Chain names the layers from the outermost guarded one down.
func (g *Guard) Chain() string {
	if t := g.top.Load(); t != nil {
		return Chain(t)
	}
	return Chain(g.raw)
}

// NewGuard makes the guard of a connection whose socket is raw. onKill is
// called once, from the goroutine that detected the spin.
func NewGuard(raw net.Conn, limits GuardLimits, stats *Stats, onKill func(Kill)) *Guard {
	return &Guard{limits: limits, stats: stats, raw: raw, onKill: onKill}
}

// Killed reports whether the detector ended the connection.
func (g *Guard) Killed() bool { return g.killed.Load() }

// Wrap puts a guard layer named name around c.
func (g *Guard) Wrap(name string, c net.Conn) *Guarded {
	l := &Guarded{Conn: c, g: g, name: name, stats: g.stats.Layer(name)}
	g.top.Store(l)
	g.mu.Lock()
	g.layers = append(g.layers, l)
	g.mu.Unlock()
	return l
}

func (g *Guard) kill(l *Guarded, reason KillReason, counts Counts) {
	g.once.Do(func() {
		g.killed.Store(true)
		l.stats.kill(reason)
		g.raw.Close()
		if g.onKill != nil {
			var top net.Conn = l
			if t := g.top.Load(); t != nil {
				top = t
			}
			g.onKill(Kill{Layer: l.name, Reason: reason, Chain: Chain(top), Counts: counts})
		}
	})
}

// Guarded is one guarded layer. Read fields belong to the reading
// goroutine: every reader of a proxied connection (a copy loop, net/http's
// connection reader) reads from one goroutine at a time with
// synchronisation between hand-offs, so they need no atomics.
type Guarded struct {
	net.Conn
	g     *Guard
	name  string
	stats *LayerStats

	// reader-owned
	reads, zeroReads, afterEOF int64
	flushed                    Counts
	consecZero                 int
	rerr                       error
	noProgress                 int
	windowStart                time.Time

	// published copies of the read counts, for Snapshot
	pubReads, pubZero, pubAfter atomic.Int64

	// Writes may come from several goroutines (net.Conn allows concurrent
	// writers, and an upgraded connection changes hands), so the write
	// side uses atomics, touched only when a write moves nothing.
	zeroWrites, consecZeroWrites atomic.Int64
}

// Unwrap returns the guarded layer, for Chain.
func (l *Guarded) Unwrap() net.Conn { return l.Conn }

// CloseWrite passes a half-close down, so wrapping does not hide it.
func (l *Guarded) CloseWrite() error {
	if hc, ok := l.Conn.(halfCloser); ok {
		return hc.CloseWrite()
	}
	return nil
}

func (l *Guarded) Read(p []byte) (int, error) {
	if l.g.killed.Load() {
		return 0, ErrSpinKilled
	}
	if l.rerr != nil {
		// A terminal error is sticky: the layer below is not called again,
		// and a caller that keeps asking is counted and, past the limit,
		// stopped.
		l.afterEOF++
		if l.afterEOF >= int64(l.g.limits.ReadsAfterEOF) {
			l.flush()
			l.g.kill(l, KillAfterEOF, l.counts())
		}
		return 0, l.rerr
	}
	n, err := l.Conn.Read(p)
	l.reads++
	if n > 0 {
		l.consecZero, l.noProgress = 0, 0
	} else {
		if err == nil && len(p) > 0 {
			l.zeroReads++
			l.consecZero++
			if l.consecZero >= l.g.limits.ZeroProgressReads {
				l.flush()
				l.g.kill(l, KillZeroProgress, l.counts())
				return 0, ErrSpinKilled
			}
		}
		if l.callRateExceeded() {
			l.flush()
			l.g.kill(l, KillCallRate, l.counts())
			return 0, ErrSpinKilled
		}
	}
	if err != nil && terminal(err) {
		l.rerr = err
		l.flush()
	} else if l.reads-l.flushed.Reads >= flushEvery {
		l.flush()
	}
	return n, err
}

// callRateExceeded counts a call that moved nothing and, once every
// rateWindow such calls, checks the clock: a connection that sustained
// more than MaxCallsPerSecond for a second is spinning even if each call
// looked legitimate (a timeout retried at once, for instance).
func (l *Guarded) callRateExceeded() bool {
	l.noProgress++
	if l.noProgress == 1 {
		l.windowStart = time.Now()
		return false
	}
	if l.noProgress%rateWindow != 0 {
		return false
	}
	elapsed := time.Since(l.windowStart)
	if elapsed < time.Second {
		return false
	}
	rate := float64(l.noProgress) / elapsed.Seconds()
	l.noProgress = 0
	return rate > float64(l.g.limits.MaxCallsPerSecond)
}

func (l *Guarded) Write(p []byte) (int, error) {
	if l.g.killed.Load() {
		return 0, ErrSpinKilled
	}
	n, err := l.Conn.Write(p)
	if n == 0 && err == nil && len(p) > 0 {
		// Rare by construction, so counted straight into the shared stats.
		total := l.zeroWrites.Add(1)
		l.stats.ZeroWrites.Add(1)
		if l.consecZeroWrites.Add(1) >= int64(l.g.limits.ZeroProgressReads) {
			l.g.kill(l, KillZeroWrites, Counts{ZeroWrites: total})
			return 0, ErrSpinKilled
		}
	} else if n > 0 && l.consecZeroWrites.Load() != 0 {
		l.consecZeroWrites.Store(0)
	}
	return n, err
}

func (l *Guarded) counts() Counts {
	return Counts{Reads: l.reads, ZeroProgressReads: l.zeroReads, ReadsAfterEOF: l.afterEOF, ZeroWrites: l.zeroWrites.Load()}
}

// flush adds what was counted since the last flush to the shared stats.
func (l *Guarded) flush() {
	c := Counts{Reads: l.reads, ZeroProgressReads: l.zeroReads, ReadsAfterEOF: l.afterEOF}
	if d := c.Reads - l.flushed.Reads; d > 0 {
		l.stats.Reads.Add(d)
	}
	if d := c.ZeroProgressReads - l.flushed.ZeroProgressReads; d > 0 {
		l.stats.ZeroProgressReads.Add(d)
	}
	if d := c.ReadsAfterEOF - l.flushed.ReadsAfterEOF; d > 0 {
		l.stats.ReadsAfterEOF.Add(d)
	}
	l.flushed = c
	l.pubReads.Store(c.Reads)
	l.pubZero.Store(c.ZeroProgressReads)
	l.pubAfter.Store(c.ReadsAfterEOF)
}

// IsTimeout reports whether err is a deadline's (net.Error Timeout): a
// read or write that may be tried again once the deadline moves.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// terminal reports whether a read error ends the stream for good. Timeouts
// are not terminal: callers move deadlines and read again.
func terminal(err error) bool {
	return !errors.Is(err, os.ErrDeadlineExceeded) && !IsTimeout(err)
}

// Chain names the layers of a connection from the outside in, the way a
// profile names the looping type: "*iox.Guarded(wire) -> *tls.Conn -> ...".
func Chain(c net.Conn) string {
	var parts []string
	for i := 0; c != nil && i < 32; i++ {
		if g, ok := c.(*Guarded); ok {
			// A guard names the layer it watches: which of a connection's
			// several guards saw what is the point of the chain.
			parts = append(parts, "*iox.Guarded("+g.name+")")
		} else {
			parts = append(parts, fmt.Sprintf("%T", c))
		}
		switch u := c.(type) {
		case interface{ Unwrap() net.Conn }:
			c = u.Unwrap()
		case interface{ NetConn() net.Conn }:
			c = u.NetConn()
		default:
			c = nil
		}
	}
	return strings.Join(parts, " -> ")
}

var _ io.Reader = (*Guarded)(nil)
