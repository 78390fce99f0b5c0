// Package iox owns the loops that move bytes of a proxied raw TCP connection:
// the one copy loop every byte goes through (Copy), the bidirectional copy
// with half-close (Duplex), and the buffers they borrow (BufferPool). It is
// also the home of the per-connection progress guard, spin detector and
// lingering close.
//
// The rule behind every loop in this package: it makes progress or it ends.
// The standard library's io.Copy, io.CopyBuffer and the ReadFrom/WriteTo fast
// paths spin at full CPU on a reader that returns (0, nil), which is the shape
// of the incident edgeproxy is built to survive, so nothing here calls them.
// Where both ends of a duplex are TCP sockets under layers that need not see
// the bytes, Duplex splices instead (splice.go): its own loop, which parks in
// the runtime's poller and reports every move to the layers, so the guard
// and the meter keep counting.
package iox

import (
	"errors"
	"io"
	"sync"
)

// maxEmptyReads matches bufio.Reader's guard: after this many consecutive
// (0, nil) reads the reader is broken, not slow.
const maxEmptyReads = 100

// DefaultBufferSize is the buffer size of a BufferPool made with size <= 0.
// 32 KiB is io.Copy's choice and fills a TLS record twice over.
const DefaultBufferSize = 32 << 10

var (
	// errInvalidRead and errInvalidWrite report io contract violations by a
	// wrapper; trusting such counts would index outside the buffer.
	errInvalidRead  = errors.New("iox: reader returned an invalid count")
	errInvalidWrite = errors.New("iox: writer returned an invalid count")
	errEmptyBuffer  = errors.New("iox: Copy needs a non-empty buffer")
)

// Copy copies from src to dst through buf until src reports EOF (a nil
// error is returned) or either side fails. Unlike io.Copy it never uses
// ReaderFrom/WriterTo, so every byte goes through the guards below:
//
//   - maxEmptyReads consecutive (0, nil) reads end the copy with
//     io.ErrNoProgress;
//   - src is never read again once it returned an error, EOF included;
//   - a write that accepts fewer bytes than given, without an error, ends the
//     copy with io.ErrShortWrite.
//
// The returned count is the number of bytes written to dst.
func Copy(dst io.Writer, src io.Reader, buf []byte) (written int64, err error) {
	if len(buf) == 0 {
		return 0, errEmptyBuffer
	}
	empty := 0
	for {
		nr, rerr := src.Read(buf)
		if nr < 0 || nr > len(buf) {
			return written, errInvalidRead
		}
		if nr > 0 {
			empty = 0
			nw, werr := dst.Write(buf[:nr])
			if nw < 0 || nw > nr {
				nw = 0
				if werr == nil {
					werr = errInvalidWrite
				}
			}
			written += int64(nw)
			if werr != nil {
				return written, werr
			}
			if nw != nr {
				return written, io.ErrShortWrite
			}
		}
		if rerr != nil {
			// errors.Is rather than ==: the wrappers stacked on a proxied
			// connection (meter, peek, TLS) may annotate EOF.
			if errors.Is(rerr, io.EOF) {
				return written, nil
			}
			return written, rerr
		}
		if nr == 0 {
			empty++
			if empty >= maxEmptyReads {
				return written, io.ErrNoProgress
			}
		}
	}
}

// BufferPool hands out fixed-size buffers for copy loops. It stores *[]byte
// rather than []byte so Put does not allocate a slice header each time.
// It is safe for concurrent use; make one per process (or per listener) and
// pass it in, rather than sharing a package-level pool.
type BufferPool struct {
	size int
	pool sync.Pool
}

// NewBufferPool returns a pool of size-byte buffers; size <= 0 means
// DefaultBufferSize.
func NewBufferPool(size int) *BufferPool {
	if size <= 0 {
		size = DefaultBufferSize
	}
	p := &BufferPool{size: size}
	p.pool.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return p
}

// Size is the length of every buffer Get returns.
func (p *BufferPool) Size() int { return p.size }

// Get returns a buffer of exactly Size bytes. Its contents are arbitrary.
func (p *BufferPool) Get() *[]byte {
	return p.pool.Get().(*[]byte)
}

// Put returns b to the pool. Buffers of another capacity are dropped rather
// than kept, so a mistaken Put cannot make later Gets return short buffers.
func (p *BufferPool) Put(b *[]byte) {
	if b == nil || cap(*b) != p.size {
		return
	}
	*b = (*b)[:p.size]
	p.pool.Put(b)
}
