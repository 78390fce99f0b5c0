package compress

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Levels a proxy can afford on every response: each is a few times
// cheaper in CPU than the coding's maximum and gives most of its size.
// zstd runs at its fastest level: on 64 KiB of markup it is 1.5 to 2.4
// times as fast as gzip level 5 for 7-9% more bytes, in two thirds of the
// memory.
const (
	GzipLevel     = 5
	BrotliQuality = 4
	// BrotliWindow and ZstdWindow bound each encoder's memory: 256 KiB
	// windows instead of the multi-megabyte defaults, which matter only
	// for large files. An encoder then holds about 0.5 MiB (brotli),
	// 0.7 MiB (zstd) or 1 MiB (gzip) for as long as its response lasts:
	// a server-sent-events stream holds one for its whole life, which is
	// why Pools bounds how many are in use.
	BrotliWindow = 18
	ZstdWindow   = 1 << 18
)

// encoder is what the three libraries' writers have in common.
type encoder interface {
	io.Writer
	Flush() error
	Close() error
	Reset(io.Writer)
}

// zstdEncoder adapts zstd's Reset, which returns nothing here.
type zstdEncoder struct{ *zstd.Encoder }

func (z zstdEncoder) Reset(w io.Writer) { z.Encoder.Reset(w) }

// Pools keeps encoders for reuse: setting up a compressor allocates its
// window and tables, which costs more than compressing a small response.
// It also counts the encoders in use, so that the memory compression
// takes has a bound (Get's limit). The zero value is ready to use.
type Pools struct {
	pools [numEncodings]sync.Pool
	inUse atomic.Int64
}

// InUse is how many Writers are out now.
func (p *Pools) InUse() int64 { return p.inUse.Load() }

func newEncoder(e Encoding, w io.Writer) encoder {
	switch e {
	case Gzip:
		// The level is a valid constant; the error cannot happen.
		g, _ := gzip.NewWriterLevel(w, GzipLevel)
		return g
	case Brotli:
		return brotli.NewWriterOptions(w, brotli.WriterOptions{Quality: BrotliQuality, LGWin: BrotliWindow})
	case Zstd:
		// One goroutine per encoder: the proxy compresses many responses
		// at once, each on its request's goroutine. The options are
		// constants; the error cannot happen.
		z, _ := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(ZstdWindow),
			zstd.WithLowerEncoderMem(true))
		return zstdEncoder{z}
	}
	return nil
}

// Writer compresses into a destination and counts what went in and out.
type Writer struct {
	enc  encoder
	e    Encoding
	dst  counter
	in   int64
	pool *Pools
}

// counter counts the compressed bytes on their way to the destination.
type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Get returns a Writer for e writing to dst; Release gives it back. e
// must not be None. With limit > 0, Get returns nil when limit Writers
// are out already: the response then goes uncompressed rather than
// growing the proxy's memory without bound.
func (p *Pools) Get(e Encoding, dst io.Writer, limit int64) *Writer {
	if n := p.inUse.Add(1); limit > 0 && n > limit {
		p.inUse.Add(-1)
		return nil
	}
	if w, ok := p.pools[e].Get().(*Writer); ok {
		w.dst = counter{w: dst}
		w.enc.Reset(&w.dst)
		return w
	}
	w := &Writer{e: e, pool: p}
	w.dst = counter{w: dst}
	w.enc = newEncoder(e, &w.dst)
	return w
}

// Encoding is the coding this Writer produces.
func (w *Writer) Encoding() Encoding { return w.e }

// Write compresses p. The encoder may hold it until it has a block's
// worth; Flush sends what it holds.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.enc.Write(p)
	w.in += int64(n)
	return n, err
}

// Flush sends everything written so far as complete compressed data the
// client can decode now: what a stream's reader waits for.
func (w *Writer) Flush() error { return w.enc.Flush() }

// Close ends the compressed stream (its trailer, checksum).
func (w *Writer) Close() error { return w.enc.Close() }

// In and Out are the bytes written to the Writer and sent on.
func (w *Writer) In() int64  { return w.in }
func (w *Writer) Out() int64 { return w.dst.n }

// Release returns the Writer to its pool, with or without Close: a
// stream cut short is abandoned, never ended, so its client cannot take
// it for whole. The Writer forgets its destination.
func (w *Writer) Release() {
	w.dst = counter{w: io.Discard}
	w.enc.Reset(&w.dst)
	w.in = 0
	w.pool.inUse.Add(-1)
	w.pool.pools[w.e].Put(w)
}
