// Package peek owns the replayable prefix of a connection: the bytes read to
// decide what a connection speaks (internal/sniff) and that the next layer,
// be it PROXY header parsing, TLS or HTTP, must still read from the start.
//
// A Conn buffers only while Peek runs and only as much as the peer sent, up
// to a cap, and Peek is bounded by a deadline, so a client that sends nothing
// or trickles a byte at a time holds a goroutine and a small buffer until the
// deadline and no longer. Once the prefix has been read back, Read goes
// straight to the wrapped conn and the buffer is released.
//
// Like every wrapper on the data path, Conn must never become a reader that
// returns (0, nil) for a non-empty buffer, the shape of the busy loop that
// edgeproxy is built to survive: a wrapped conn that does so is retried a
// bounded number of times and then reported as io.ErrNoProgress.
package peek

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/sniff"
)

// ErrTooLarge is returned by Peek when maxBytes are buffered and decide still
// wants more. The bytes stay buffered and are replayed by Read.
var ErrTooLarge = errors.New("peek: prefix exceeds the byte cap")

// ErrNoDeadline is returned by Peek for a zero deadline: on the data path
// nothing waits on a peer without one.
var ErrNoDeadline = errors.New("peek: Peek needs a deadline")

// maxEmptyReads matches bufio.Reader and iox: after this many consecutive
// (0, nil) reads the wrapped conn is broken, not slow.
const maxEmptyReads = 100

// initialBuffer is the first allocation for a peeked prefix: enough for a
// typical request line or ClientHello (about 1.5 KiB with a post-quantum key
// share) in one read, without reserving maxBytes for every idle client.
const initialBuffer = 2 << 10

// Conn wraps a net.Conn so that its first bytes can be examined and then read
// again by the next layer. Peek and Read must not be called concurrently
// with each other, as with any reader; Write, Close and the deadline setters
// pass through to the wrapped conn and are as safe as its own.
type Conn struct {
	net.Conn
	max int
	buf []byte // bytes read from Conn and not yet returned by Read
	off int    // buf[off:] is still to be replayed
	// err is a terminal error the wrapped conn returned while Peek was
	// reading. It is reported by Read once the prefix has been replayed,
	// and the wrapped conn is not read again.
	err error
}

// New wraps c. Peek buffers at most maxBytes, which must be positive.
func New(c net.Conn, maxBytes int) *Conn {
	if maxBytes <= 0 {
		panic(fmt.Sprintf("peek: maxBytes %d must be positive", maxBytes))
	}
	return &Conn{Conn: c, max: maxBytes}
}

// Peek reads until decide(buffered) returns a result other than
// sniff.NeedMore, and returns the buffered bytes with a nil error. It stops
// early with the bytes buffered so far and an error when:
//
//   - maxBytes are buffered and decide still says NeedMore: ErrTooLarge;
//   - deadline passes: the wrapped conn's timeout error (a net.Error whose
//     Timeout() is true);
//   - the peer ends the stream: the wrapped conn's error, such as io.EOF or,
//     from a TLS conn, io.ErrUnexpectedEOF.
//
// Peek owns the read deadline while it runs: it sets deadline before reading
// and clears it before returning, so the caller arms its own read deadline
// afterwards. Already buffered bytes are offered to decide first, so a second
// Peek over a decided prefix does no I/O.
//
// decide may be called with an empty slice and must not retain its argument.
// The returned slice is valid until the next Read or Peek and must not be
// modified. In every case the buffered bytes are
// replayed by Read, so after a timeout the caller may still treat the
// connection as opaque and pass everything through.
func (c *Conn) Peek(deadline time.Time, decide func([]byte) sniff.Result) ([]byte, error) {
	if c.off > 0 {
		// Part of the prefix was already read: keep the rest at the front so
		// the cap counts only what is still buffered.
		c.buf = c.buf[:copy(c.buf, c.buf[c.off:])]
		c.off = 0
	}
	if decide(c.buf) != sniff.NeedMore {
		return c.buf, nil
	}
	if c.err != nil {
		return c.buf, c.err
	}
	if deadline.IsZero() {
		return c.buf, ErrNoDeadline
	}
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		return c.buf, err
	}
	err := c.fill(decide)
	if cerr := c.Conn.SetReadDeadline(time.Time{}); err == nil && cerr != nil {
		err = cerr
	}
	if len(c.buf) == 0 {
		// A silent client keeps no buffer past its deadline.
		c.buf = nil
	}
	return c.buf, err
}

// fill reads into the buffer until decide is satisfied or reading must stop.
func (c *Conn) fill(decide func([]byte) sniff.Result) error {
	empty := 0
	for {
		if len(c.buf) >= c.max {
			return ErrTooLarge
		}
		c.grow()
		n, err := c.Conn.Read(c.buf[len(c.buf):cap(c.buf)])
		if n < 0 || n > cap(c.buf)-len(c.buf) {
			c.err = fmt.Errorf("peek: %T.Read returned count %d", c.Conn, n)
			return c.err
		}
		c.buf = c.buf[:len(c.buf)+n]
		decided := n > 0 && decide(c.buf) != sniff.NeedMore
		switch {
		case err != nil:
			if !iox.IsTimeout(err) {
				c.err = err
			}
			if decided {
				// The bytes that came with the error settled the question;
				// the error waits behind them for Read.
				return nil
			}
			return err
		case decided:
			return nil
		case n > 0:
			empty = 0
		default:
			if empty++; empty >= maxEmptyReads {
				return io.ErrNoProgress
			}
		}
	}
}

// grow makes room for the next read, doubling up to the cap, so a buffer
// tracks what the peer really sent rather than what it might send.
func (c *Conn) grow() {
	if len(c.buf) < cap(c.buf) {
		return
	}
	n := min(c.max, max(initialBuffer, 2*cap(c.buf)))
	buf := make([]byte, len(c.buf), n)
	copy(buf, c.buf)
	c.buf = buf
}

// Read replays the buffered prefix, then reads the wrapped conn directly.
// It returns 0, nil only for an empty p; a wrapped conn that keeps returning
// (0, nil) is reported as io.ErrNoProgress rather than passed on.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.off < len(c.buf) {
		n := copy(p, c.buf[c.off:])
		c.off += n
		if c.off == len(c.buf) {
			c.buf, c.off = nil, 0
		}
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	for range maxEmptyReads {
		n, err := c.Conn.Read(p)
		if n != 0 || err != nil {
			return n, err
		}
	}
	return 0, io.ErrNoProgress
}

// Spliceable reports whether reads may bypass the peek buffer: it is
// empty and no error is waiting (iox.Transparent).
func (c *Conn) Spliceable() bool { return c.off >= len(c.buf) && c.err == nil }

// SpliceRead and SpliceWrite account nothing: peek only buffers.
func (c *Conn) SpliceRead(int, error) error { return nil }
func (c *Conn) SpliceWrite(int)             {}

// Unwrap returns the wrapped conn, so that the layer chain of a connection
// can be printed when it misbehaves.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// CloseWrite half-closes the wrapped conn when it supports that (TCP, Unix
// sockets, TLS) and reports errors.ErrUnsupported otherwise.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("peek: %T cannot half-close: %w", c.Conn, errors.ErrUnsupported)
}
