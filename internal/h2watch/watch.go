// Package h2watch follows the frames of an HTTP/2 connection from its
// byte stream, below the HTTP/2 server (net/http), for two things that
// server does not do itself:
//
//   - Floods it answers too late or not at all: a rapid reset (HEADERS then
//     RST_STREAM, over and over: each stream reaches the app before it is
//     cancelled), a SETTINGS flood and a PING flood (each frame costs an
//     acknowledgement the client need not read). A connection that exceeds
//     a rate is told GOAWAY with ENHANCE_YOUR_CALM and closed, as nginx,
//     HAProxy and Envoy do.
//   - Frames it answers otherwise than RFC 9113 asks, which are rewritten
//     on their way in (rewrite.go): a SETTINGS frame that names a setting
//     twice (net/http hangs up; the RFC applies them in order), and a
//     header block with a connection-specific field such as "connection"
//     or "te: gzip" (net/http answers 400; the RFC makes it a stream
//     error, which net/http then sends as RST_STREAM PROTOCOL_ERROR).
//
// Most frames, DATA above all, pass as they were read, in the reader's own
// buffer: only a SETTINGS frame that could need rewriting and the frames of
// a header block are held back until whole, one frame at a time, in a
// pooled buffer that goes back to the pool as soon as they are handed on.
// The clock is read once per window of frames counted, never per read,
// and frames that pass cost no allocation.
package h2watch

import (
	"encoding/binary"
	"slices"
	"sync"
	"time"
)

// Frame types and flags (RFC 9113 section 6).
const (
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePing         = 0x6
	frameContinuation = 0x9

	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// headerLen is an HTTP/2 frame header's size.
const headerLen = 9

// Preface is the client connection preface that precedes the frames.
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Kind names a flood, as a metric label.
type Kind string

const (
	Resets   Kind = "rst_stream"
	Settings Kind = "settings"
	Pings    Kind = "ping"
)

// Limits are the most frames of each kind a client may send per second on
// one connection; 0 means no limit.
type Limits struct {
	ResetsPerSecond   int
	SettingsPerSecond int
	PingsPerSecond    int
}

// Defaults of Config, which are net/http's.
const (
	DefaultMaxFrameSize      = 16 << 10
	DefaultHeaderTableSize   = 4096
	DefaultMaxHeaderListSize = 1<<20 + 320
)

// Config is what a Watcher needs to know of the connection and of the
// server it feeds. The sizes must be the server's own: the watcher decodes
// header blocks as the server will, to stay in step with its HPACK table.
type Config struct {
	Limits
	// Preface is how many bytes of the client connection preface are still
	// to come before the first frame: len(Preface) when the stream starts
	// with it, less when some of it has been passed on already.
	Preface int
	// MaxFrameSize is the largest frame payload the server reads
	// (http.HTTP2Config.MaxReadFrameSize, which it announces as
	// SETTINGS_MAX_FRAME_SIZE); 0 means DefaultMaxFrameSize. A larger frame
	// passes as it is, unread: the server refuses it and ends the
	// connection. It bounds what the watcher holds back.
	MaxFrameSize int
	// HeaderTableSize is the size of the server's HPACK decoding table
	// (http.HTTP2Config.MaxDecoderHeaderTableSize); 0 means
	// DefaultHeaderTableSize.
	HeaderTableSize uint32
	// MaxHeaderListSize is the longest header field name or value the
	// server decodes (net/http: the server's MaxHeaderBytes plus 320); 0
	// means DefaultMaxHeaderListSize. It bounds what the HPACK decoder
	// buffers.
	MaxHeaderListSize uint32
}

// window counts frames of one kind in the current second.
type window struct {
	n     int
	start time.Time
}

// over counts a frame and reports whether more than limit arrived within
// one second. The clock is read when a window opens and when its count is
// used up, so about twice per limit frames.
func (w *window) over(limit int, now func() time.Time) bool {
	if limit <= 0 {
		return false
	}
	if w.n == 0 {
		w.start = now()
	}
	if w.n++; w.n <= limit {
		return false
	}
	t := now()
	if t.Sub(w.start) < time.Second {
		return true
	}
	w.n, w.start = 1, t
	return false
}

// Watcher follows one connection's inbound frames. Use New.
//
// The reader hands it every byte read from the client, in order, and hands
// on what it lets through:
//
//	for {
//		if q := w.Queued(); len(q) > 0 {
//			n := copy(p, q)
//			w.Dequeue(n)
//			return n
//		}
//		if space := w.Space(); space != nil {
//			w.Filled(read(space))
//			continue
//		}
//		ready, flood := w.Filter(p[:read(p)])
//		if flood != "" {
//			// GOAWAY, and end the connection
//		}
//		if ready > 0 {
//			return ready
//		}
//	}
//
// Filter passes what it can in place, as a prefix of the bytes it was
// given; what comes after a frame it holds back is queued, in order. A
// frame held back is read through Space, exactly as far as it goes.
type Watcher struct {
	limits   Limits
	now      func() time.Time
	maxFrame uint32

	// preface is how much of the client preface is still to be passed.
	preface int
	// hdr collects a frame header split across reads; hdrN bytes of it.
	hdr  [headerLen]byte
	hdrN int
	// skip is the payload left of the current frame, which passes as is.
	skip uint32

	// out holds the output waiting for the reader, out[q0:hs], then, while
	// holding, the frame being held back, out[hs:], which lacks need bytes.
	// It comes from bufPool and returns there once empty.
	out     []byte
	outp    *[]byte
	q0, hs  int
	holding bool
	need    uint32

	// lastStream is the highest client stream id seen: the last stream
	// a GOAWAY may admit was processed.
	lastStream uint32

	resets, settings, pings window
	abuse                   Kind

	blocks headerBlocks
}

// New returns a Watcher; now is the clock.
func New(c Config, now func() time.Time) *Watcher {
	w := &Watcher{limits: c.Limits, now: now, preface: c.Preface, maxFrame: uint32(c.MaxFrameSize)}
	if c.MaxFrameSize <= 0 {
		w.maxFrame = DefaultMaxFrameSize
	}
	w.blocks.tableSize = c.HeaderTableSize
	if w.blocks.tableSize == 0 {
		w.blocks.tableSize = DefaultHeaderTableSize
	}
	w.blocks.maxString = c.MaxHeaderListSize
	if w.blocks.maxString == 0 {
		w.blocks.maxString = DefaultMaxHeaderListSize
	}
	return w
}

// LastStream is the highest stream id the client opened.
func (w *Watcher) LastStream() uint32 { return w.lastStream }

// Flood is the flood found, or "".
func (w *Watcher) Flood() Kind { return w.abuse }

// Filter takes the bytes just read from the client, p, which must follow
// all the bytes given before (to Filter or through Space). It returns how
// many bytes at the start of p are ready for the server as they are; the
// rest of p is taken in, to be handed on through Queued, rewritten or not,
// once the frame held back is whole. Once a flood is found, Filter reports
// it and takes nothing more.
func (w *Watcher) Filter(p []byte) (ready int, flood Kind) {
	if w.abuse != "" {
		return 0, w.abuse
	}
	// Bytes pass in place as long as nothing is queued or held before
	// them; from the first byte taken in, everything after is queued, so
	// that the order stays.
	inPlace := w.q0 == len(w.out) && !w.holding && w.hdrN == 0
	i := 0
	if w.preface > 0 {
		i = min(w.preface, len(p))
		w.preface -= i
		if !inPlace {
			w.add(p[:i])
		}
	}
	for i < len(p) {
		switch {
		case w.skip > 0:
			k := int(min(w.skip, uint32(len(p)-i)))
			if !inPlace {
				w.add(p[i : i+k])
			}
			w.skip -= uint32(k)
			i += k
			continue
		case w.holding:
			k := int(min(w.need, uint32(len(p)-i)))
			w.add(p[i : i+k])
			w.need -= uint32(k)
			i += k
			if w.need == 0 {
				w.finish()
			}
			continue
		}
		var h []byte
		if w.hdrN == 0 && len(p)-i >= headerLen {
			h = p[i : i+headerLen]
			i += headerLen
		} else {
			// A header split across reads: its first bytes are held
			// until it is whole, and from then on nothing is in place.
			if inPlace {
				ready, inPlace = i, false
			}
			k := copy(w.hdr[w.hdrN:], p[i:])
			w.hdrN += k
			i += k
			if w.hdrN < headerLen {
				break // p is used up
			}
			w.hdrN = 0
			h = w.hdr[:]
		}
		if kind := w.count(h); kind != "" {
			w.abuse = kind
			return 0, kind
		}
		length := uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2])
		if w.mustHold(h, length) {
			if inPlace {
				ready, inPlace = i-headerLen, false
			}
			w.hs = len(w.out)
			w.add(h)
			w.holding, w.need = true, length
			if length == 0 {
				w.finish()
			}
		} else {
			if !inPlace {
				w.add(h)
			}
			w.skip = length
		}
	}
	if inPlace {
		ready = len(p)
	}
	return ready, ""
}

// Space is where the next bytes read from the client go while a frame is
// held back: exactly the bytes it still lacks, so that a read never runs
// past it. It is nil when nothing is held; then they go to Filter.
func (w *Watcher) Space() []byte {
	if !w.holding || w.abuse != "" {
		return nil
	}
	w.out = slices.Grow(w.out, int(w.need))
	return w.out[len(w.out) : len(w.out)+int(w.need)]
}

// Filled takes the n bytes just read into Space.
func (w *Watcher) Filled(n int) {
	if n <= 0 || !w.holding {
		return
	}
	w.out = w.out[:len(w.out)+n]
	w.need -= uint32(n)
	if w.need == 0 {
		w.finish()
	}
}

// Queued is the output waiting for the reader, which takes it (Dequeue)
// before reading more from the client.
func (w *Watcher) Queued() []byte {
	return w.out[w.q0:w.queueEnd()]
}

// Dequeue drops the first n bytes of Queued, handed on.
func (w *Watcher) Dequeue(n int) {
	w.q0 += n
	if w.q0 < w.queueEnd() {
		return
	}
	switch {
	case !w.holding:
		w.release()
	case w.hs > 0:
		// Only the frame held back is left: move it to the front.
		w.out = w.out[:copy(w.out, w.out[w.hs:])]
		w.q0, w.hs = 0, 0
	}
}

func (w *Watcher) queueEnd() int {
	if w.holding {
		return w.hs
	}
	return len(w.out)
}

// count counts the frame whose header h is complete and reports a flood.
func (w *Watcher) count(h []byte) Kind {
	typ, flags := h[3], h[4]
	stream := binary.BigEndian.Uint32(h[5:]) & 0x7fffffff
	if stream > w.lastStream && stream%2 == 1 {
		w.lastStream = stream
	}
	switch {
	case typ == frameRSTStream:
		if w.resets.over(w.limits.ResetsPerSecond, w.now) {
			return Resets
		}
	case typ == frameSettings && flags&flagAck == 0:
		if w.settings.over(w.limits.SettingsPerSecond, w.now) {
			return Settings
		}
	case typ == framePing && flags&flagAck == 0:
		if w.pings.over(w.limits.PingsPerSecond, w.now) {
			return Pings
		}
	}
	return ""
}

// bufPool holds the buffers of held frames and queued output. One takes a
// frame of the default maximum size, a marker and a CONTINUATION header.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, DefaultMaxFrameSize+2*headerLen+64)
	return &b
}}

// maxPooled is the largest buffer put back in the pool; a larger one (a
// reader with a large buffer queued much after a held frame) is dropped.
const maxPooled = 64 << 10

// add appends b to out.
func (w *Watcher) add(b []byte) {
	if w.outp == nil {
		w.outp = bufPool.Get().(*[]byte)
		w.out = (*w.outp)[:0]
	}
	w.out = append(w.out, b...)
}

// release gives out back to the pool.
func (w *Watcher) release() {
	if w.outp != nil && cap(w.out) <= maxPooled {
		*w.outp = w.out[:0]
		bufPool.Put(w.outp)
	}
	w.out, w.outp = nil, nil
	w.q0, w.hs = 0, 0
}

// GoAway is the GOAWAY frame (ENHANCE_YOUR_CALM) that ends a connection
// for a flood, admitting streams up to lastStream.
func GoAway(lastStream uint32) []byte {
	const frameGoAway, enhanceYourCalm = 0x7, 0xb
	f := make([]byte, headerLen+8)
	f[2] = 8
	f[3] = frameGoAway
	binary.BigEndian.PutUint32(f[headerLen:], lastStream&0x7fffffff)
	binary.BigEndian.PutUint32(f[headerLen+4:], enhanceYourCalm)
	return f
}

// frames splits a byte stream into frames, whatever the writes' sizes.
type frames struct {
	// hdr collects a frame header split across writes.
	hdr  [headerLen]byte
	hdrN int
	// skip is the payload left of the current frame.
	skip uint32
}

// next consumes p up to the end of the next frame header and returns
// that header (nil if p ended first) and what is left of p.
func (f *frames) next(p []byte) (hdr, rest []byte) {
	for len(p) > 0 {
		if f.skip > 0 {
			k := min(f.skip, uint32(len(p)))
			f.skip -= k
			p = p[k:]
			continue
		}
		k := copy(f.hdr[f.hdrN:], p)
		f.hdrN += k
		p = p[k:]
		if f.hdrN == headerLen {
			f.hdrN = 0
			f.skip = uint32(f.hdr[0])<<16 | uint32(f.hdr[1])<<8 | uint32(f.hdr[2])
			return f.hdr[:], p
		}
	}
	return nil, p
}

// Boundaries follows the frames a server writes, so that a frame of our
// own (GOAWAY) goes in between two of its frames, never inside one.
type Boundaries struct{ frames }

// Wrote takes bytes the server wrote.
func (b *Boundaries) Wrote(p []byte) {
	for len(p) > 0 {
		_, p = b.next(p)
	}
}

// AtBoundary reports whether the bytes written so far end between frames.
func (b *Boundaries) AtBoundary() bool { return b.hdrN == 0 && b.skip == 0 }
