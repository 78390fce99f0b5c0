package httpproxy

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// A request body that arrives a byte every few seconds, or a response the
// client does not take (an HTTP/2 stream whose flow-control window it never
// opens, a socket it never reads), would otherwise hold a machine
// connection and its goroutines for as long as the client connection
// lives. stallWatch cuts such a request: every period it looks at the
// bytes moved, and when a read from or a write to the client has been
// waiting at two looks in a row with fewer than min bytes moved between
// them, it ends the request and releases the machine connection.
//
// Waiting on the machine never counts: only reads and writes blocked on
// the client do. The data path pays two per-request atomic adds per read
// or write and reads no clock; the timer fires once per period.
//
// A front end that serves one request after another on a connection keeps
// one watch, and its timer, for all of them.
type stallWatch struct {
	period time.Duration
	min    int64
	timer  *time.Timer
	// moved counts body bytes read from and response bytes written to
	// the client; reading and writing count calls waiting on it.
	moved            atomic.Int64
	reading, writing atomic.Int32
	stopped          atomic.Bool
	// x is the request watched; gen counts requests, so that a tick
	// of an earlier request's timer cannot cut a later one.
	x   atomic.Pointer[Exchange]
	gen atomic.Uint64
	// last, stalled and tickGen belong to tick, which the timer runs one
	// at a time.
	last    int64
	stalled int
	tickGen uint64
	// code is set when the watch cut the request.
	code atomic.Pointer[perr.Code]
	// attempt is the machine connection the request uses, which a cut
	// cancels.
	attempt atomic.Pointer[upConn]
	// mu makes a tick and the start or end of a request exclusive: a
	// request's state is reused once it ends, and no cut may reach it
	// after that.
	mu sync.Mutex
}

// start watches x. period 0 watches nothing.
func (s *stallWatch) start(x *Exchange, period time.Duration, min int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.period, s.min = period, min
	s.moved.Store(0)
	s.reading.Store(0)
	s.writing.Store(0)
	s.code.Store(nil)
	s.x.Store(x)
	s.gen.Add(1)
	s.stopped.Store(false)
	if period <= 0 {
		return
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(period, s.tick)
		return
	}
	s.timer.Reset(period)
}

func (s *stallWatch) tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped.Load() {
		return
	}
	if g := s.gen.Load(); g != s.tickGen {
		s.tickGen, s.last, s.stalled = g, 0, 0
	}
	moved := s.moved.Load()
	waiting := s.reading.Load() > 0 || s.writing.Load() > 0
	if waiting && moved-s.last < s.min {
		s.stalled++
	} else {
		s.stalled = 0
	}
	s.last = moved
	if s.stalled < 2 {
		s.timer.Reset(s.period)
		return
	}
	code := perr.RequestBodyTooSlow
	if s.writing.Load() > 0 {
		code = perr.ClientNotReading
	}
	if x := s.x.Load(); x != nil && !s.stopped.Load() {
		x.cut(code)
	}
}

func (s *stallWatch) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped.Store(true)
	if s.timer != nil {
		s.timer.Stop()
	}
}

// close ends the watch for good (its connection or pooled state is done):
// a tick running now has finished when close returns.
func (s *stallWatch) close() {
	s.stop()
	s.x.Store(nil)
}

// stallReader is a request body under watch.
type stallReader struct {
	r io.Reader
	w *stallWatch
}

func (r *stallReader) Read(p []byte) (int, error) {
	r.w.reading.Add(1)
	n, err := r.r.Read(p)
	r.w.reading.Add(-1)
	r.w.moved.Add(int64(n))
	return n, err
}
