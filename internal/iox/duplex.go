package iox

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrIdleTimeout ends a Duplex in which no byte moved in either direction for
// DuplexOptions.IdleTimeout.
var ErrIdleTimeout = errors.New("iox: duplex idle timeout")

// idleChecks is how many times per IdleTimeout the watcher looks at the
// activity flags. An idle duplex therefore ends between IdleTimeout and
// 1.25 * IdleTimeout after its last byte, which is precise enough for a
// timeout measured in seconds and costs no clock read on the data path.
const idleChecks = 4

// DuplexOptions tunes Duplex. The zero value is valid: buffers are allocated
// per call and the copy never times out.
type DuplexOptions struct {
	// Pool supplies the two copy buffers; nil allocates them per call.
	Pool *BufferPool
	// IdleTimeout, if positive, ends the duplex with ErrIdleTimeout once no
	// byte has been read or written in either direction for that long. A
	// peer that stops reading stalls our writes, which counts as idle: it
	// must not hold a connection forever.
	IdleTimeout time.Duration
	// HalfClosedTimeout, if positive, ends the duplex with
	// ErrHalfClosedTimeout this long after the first direction finished
	// cleanly, if the other has not finished by then: a peer that
	// half-closes must not let the other side hold the connection forever
	// (HAProxy's client-fin / server-fin timeouts).
	HalfClosedTimeout time.Duration
	// NoSplice copies every byte through user space even where both ends
	// could be spliced. Which is cheaper depends on the traffic: the
	// server splices only when proxy.splice asks for it.
	NoSplice bool
}

// ErrHalfClosedTimeout ends a Duplex whose second direction outlived
// DuplexOptions.HalfClosedTimeout after the first one finished.
var ErrHalfClosedTimeout = errors.New("iox: duplex half-closed timeout")

// halfCloser is the optional half-close of *net.TCPConn, *net.UnixConn and
// *tls.Conn. Wrappers around those (metering, permits) should expose it, or
// a finished direction cannot tell the peer and the connection lingers until
// the idle timeout.
type halfCloser interface {
	CloseWrite() error
}

// Duplex copies a->b and b->a until both directions end, and returns the
// bytes copied each way and the first error that is not EOF.
//
// A direction whose reader reports EOF half-closes its writer (CloseWrite, if
// the writer has it) and the other direction keeps running: a client that
// sends its request and shuts down its write side still gets the whole
// response. A direction that fails closes both connections so the other
// direction ends too, and so does the idle timeout.
//
// On a clean end both connections are left open, half-closed, because the
// caller decides how to close them (a lingering close, for instance).
func Duplex(a, b net.Conn, opts DuplexOptions) (aToB, bToA int64, err error) {
	d := &duplex{a: a, b: b, pool: opts.Pool, halfClosed: opts.HalfClosedTimeout, noSplice: opts.NoSplice}

	// Activity flags exist only with an idle timeout, so a duplex without
	// one pays nothing for it.
	var movedAB, movedBA *atomic.Bool
	var stopIdle, idleDone chan struct{}
	if opts.IdleTimeout > 0 {
		movedAB, movedBA = new(atomic.Bool), new(atomic.Bool)
		stopIdle, idleDone = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(idleDone)
			d.watchIdle(opts.IdleTimeout, movedAB, movedBA, stopIdle)
		}()
	}

	back := make(chan int64, 1)
	go func() { back <- d.pipe(a, b, movedBA) }()
	aToB = d.pipe(b, a, movedAB)
	bToA = <-back

	if stopIdle != nil {
		close(stopIdle)
		<-idleDone
	}
	d.mu.Lock()
	if d.halfTimer != nil {
		d.halfTimer.Stop()
	}
	d.mu.Unlock()
	return aToB, bToA, d.firstErr()
}

// duplex is the state the two directions and the idle watcher share.
type duplex struct {
	a, b net.Conn
	pool *BufferPool

	halfClosed time.Duration
	noSplice   bool

	mu        sync.Mutex
	err       error
	finished  int // directions that ended cleanly
	halfTimer *time.Timer

	closeOnce sync.Once
}

// pipe runs one direction and reports how many bytes reached dst.
func (d *duplex) pipe(dst, src net.Conn, moved *atomic.Bool) int64 {
	n, err, spliced := int64(0), error(nil), false
	if !d.noSplice {
		n, err, spliced = trySplice(dst, src, moved)
	}
	if !spliced {
		n, err = d.copy(dst, src, moved)
	}
	if err == nil {
		if hc, ok := dst.(halfCloser); ok {
			err = hc.CloseWrite()
		}
	}
	if err != nil {
		d.fail(err)
	} else {
		d.finish()
	}
	return n
}

// copy moves src to dst through a pooled buffer, every byte read and
// written through the layers.
func (d *duplex) copy(dst, src net.Conn, moved *atomic.Bool) (int64, error) {
	buf := d.getBuffer()
	defer d.putBuffer(buf)
	var r io.Reader = src
	var w io.Writer = dst
	if moved != nil {
		r = markReader{r: src, moved: moved}
		w = markWriter{w: dst, moved: moved}
	}
	return Copy(w, r, *buf)
}

// finish notes a direction that ended cleanly; the first one starts the
// half-closed timer for the other.
func (d *duplex) finish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.finished++
	if d.finished == 1 && d.halfClosed > 0 {
		d.halfTimer = time.AfterFunc(d.halfClosed, func() { d.fail(ErrHalfClosedTimeout) })
	}
}

// fail records err if it is the first, then closes both connections. The
// record comes first: the other direction is about to fail with
// net.ErrClosed, and that must not be reported as the cause.
func (d *duplex) fail(err error) {
	d.mu.Lock()
	if d.err == nil {
		d.err = err
	}
	d.mu.Unlock()
	d.closeOnce.Do(func() {
		d.a.Close()
		d.b.Close()
	})
}

func (d *duplex) firstErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

func (d *duplex) getBuffer() *[]byte {
	if d.pool != nil {
		return d.pool.Get()
	}
	b := make([]byte, DefaultBufferSize)
	return &b
}

func (d *duplex) putBuffer(b *[]byte) {
	if d.pool != nil {
		d.pool.Put(b)
	}
}

// watchIdle ends the duplex after idleChecks consecutive ticks in which
// neither direction set its flag. The data path only sets a flag (and only
// when it is clear), so a busy connection costs one uncontended atomic load
// per read or write and no clock reads.
func (d *duplex) watchIdle(timeout time.Duration, ab, ba *atomic.Bool, stop <-chan struct{}) {
	t := time.NewTicker(max(timeout/idleChecks, time.Nanosecond))
	defer t.Stop()
	quiet := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			// Swap both: clearing only the first flag that was set would
			// leave the other to count as activity in the next period.
			movedAB, movedBA := ab.Swap(false), ba.Swap(false)
			if movedAB || movedBA {
				quiet = 0
				continue
			}
			quiet++
			if quiet >= idleChecks {
				d.fail(ErrIdleTimeout)
				return
			}
		}
	}
}

// markReader and markWriter raise a direction's activity flag when bytes
// move. Both sides are marked so that a direction whose reads are quiet but
// whose writes are still draining to a slow peer is not taken for idle.
type markReader struct {
	r     io.Reader
	moved *atomic.Bool
}

func (m markReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if n > 0 && !m.moved.Load() {
		m.moved.Store(true)
	}
	return n, err
}

type markWriter struct {
	w     io.Writer
	moved *atomic.Bool
}

func (m markWriter) Write(p []byte) (int, error) {
	n, err := m.w.Write(p)
	if n > 0 && !m.moved.Load() {
		m.moved.Store(true)
	}
	return n, err
}
