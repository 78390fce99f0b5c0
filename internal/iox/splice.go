package iox

import (
	"net"
	"sync/atomic"
)

// Transparent is a layer of a proxied connection that passes bytes through
// unchanged and can be told about bytes moved beneath it without seeing
// them. When every layer between a copy loop and the sockets on both ends
// is Transparent and Spliceable, Duplex moves the bytes with splice(2),
// socket to pipe to socket, without copying them into user space, and
// reports each move to the layers as if they had read or written it: the
// progress guard still counts every read and the meter every byte.
type Transparent interface {
	net.Conn
	Unwrap() net.Conn
	// Spliceable reports whether the layer may be bypassed now: it holds
	// no buffered bytes of its own (a peek buffer, a replayed prefix) and
	// has no terminal error to report.
	Spliceable() bool
	// SpliceRead accounts one read of n bytes made beneath the layer,
	// with the error a Read would have returned (io.EOF at the end of the
	// stream). A non-nil return stops the copy: the layer's guard killed
	// the connection.
	SpliceRead(n int, err error) error
	// SpliceWrite accounts n bytes written beneath the layer.
	SpliceWrite(n int)
}

// Spliceable and friends make the guard a Transparent layer: a splice
// read is counted exactly like a Read that returned the same result.
func (l *Guarded) Spliceable() bool { return !l.g.killed.Load() && l.rerr == nil }

func (l *Guarded) SpliceRead(n int, err error) error {
	if l.g.killed.Load() {
		return ErrSpinKilled
	}
	l.reads++
	if n > 0 {
		l.consecZero, l.noProgress = 0, 0
	}
	if err != nil && terminal(err) {
		l.rerr = err
		l.flush()
	} else if l.reads-l.flushed.Reads >= flushEvery {
		l.flush()
	}
	return nil
}

func (l *Guarded) SpliceWrite(n int) {
	if n > 0 && l.consecZeroWrites.Load() != 0 {
		l.consecZeroWrites.Store(0)
	}
}

// spliceChain finds the TCP socket beneath c and the Transparent layers
// above it, outermost first. ok is false when some layer is not
// Transparent, or the bottom is not TCP, or, for the side read from
// (reading), some layer is not Spliceable now. Spliceable looks at read
// state, which belongs to the goroutine reading: the writing side's other
// direction may be reading it at this moment.
func spliceChain(c net.Conn, reading bool) (sock *net.TCPConn, layers []Transparent, ok bool) {
	for range 16 {
		switch x := c.(type) {
		case *net.TCPConn:
			return x, layers, true
		case Transparent:
			if reading && !x.Spliceable() {
				return nil, nil, false
			}
			layers = append(layers, x)
			c = x.Unwrap()
		default:
			return nil, nil, false
		}
	}
	return nil, nil, false
}

// spliceAccount tells the layers of both ends what a splice step did.
type spliceAccount struct {
	src, dst []Transparent
	moved    *atomic.Bool
}

func (a *spliceAccount) read(n int, err error) error {
	// Innermost first, as a Read returns up the stack.
	for i := len(a.src) - 1; i >= 0; i-- {
		if kerr := a.src[i].SpliceRead(n, err); kerr != nil {
			return kerr
		}
	}
	if n > 0 && a.moved != nil && !a.moved.Load() {
		a.moved.Store(true)
	}
	return nil
}

func (a *spliceAccount) wrote(n int) {
	for i := len(a.dst) - 1; i >= 0; i-- {
		a.dst[i].SpliceWrite(n)
	}
	if n > 0 && a.moved != nil && !a.moved.Load() {
		a.moved.Store(true)
	}
}
