package httpproxy

import (
	"io"
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
type stallWatch struct {
	period time.Duration
	min    int64
	timer  *time.Timer
	// moved counts body bytes read from and response bytes written to
	// the client; reading and writing count calls waiting on it.
	moved            atomic.Int64
	reading, writing atomic.Int32
	stopped          atomic.Bool
	// last and stalled belong to tick, which timers run one at a time.
	last    int64
	stalled int
	cut     func(code perr.Code)
	// code is set when the watch cut the request.
	code atomic.Pointer[perr.Code]
}

// newStallWatch makes a watch; start it once its cut is set, and stop it
// when the request ends. period 0 watches nothing.
func newStallWatch(period time.Duration, min int64) *stallWatch {
	return &stallWatch{period: period, min: min}
}

func (s *stallWatch) start(cut func(perr.Code)) {
	s.cut = cut
	if s.period > 0 {
		s.timer = time.AfterFunc(s.period, s.tick)
	}
}

func (s *stallWatch) tick() {
	if s.stopped.Load() {
		return
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
	s.cut(code)
}

func (s *stallWatch) stop() {
	s.stopped.Store(true)
	if s.timer != nil {
		s.timer.Stop()
	}
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
