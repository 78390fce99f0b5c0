// Package h2watch follows the frames of an HTTP/2 connection from its
// byte stream, below the HTTP/2 server, to catch floods the server itself
// answers too late or not at all: a rapid reset (HEADERS then RST_STREAM,
// over and over: each stream reaches the app before it is cancelled), a
// SETTINGS flood and a PING flood (each frame costs an acknowledgement the
// client need not read). A connection that exceeds a rate is told GOAWAY
// with ENHANCE_YOUR_CALM and closed, as nginx, HAProxy and Envoy do.
//
// It reads only the 9-byte frame headers and skips payloads, so it costs
// a few instructions per frame and no allocation; it reads the clock once
// per window of frames counted, never per read.
package h2watch

import (
	"encoding/binary"
	"time"
)

// Frame types counted (RFC 9113 section 6).
const (
	frameRSTStream = 0x3
	frameSettings  = 0x4
	framePing      = 0x6
	flagAck        = 0x1
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

// frames splits a byte stream into frames, whatever the reads' sizes.
type frames struct {
	// hdr collects a frame header split across reads.
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

// Watcher follows one connection's inbound frames. Use New.
type Watcher struct {
	limits Limits
	now    func() time.Time
	// preface is how much of the client preface is still to be skipped.
	preface int
	frames
	// lastStream is the highest client stream id seen: the last stream
	// a GOAWAY may admit was processed.
	lastStream uint32

	resets, settings, pings window
	abuse                   Kind
}

// New returns a Watcher; withPreface is true when the stream still starts
// with the client preface. now is the clock.
func New(l Limits, withPreface bool, now func() time.Time) *Watcher {
	w := &Watcher{limits: l, now: now}
	if withPreface {
		w.preface = len(Preface)
	}
	return w
}

// LastStream is the highest stream id the client opened.
func (w *Watcher) LastStream() uint32 { return w.lastStream }

// Feed takes the next bytes from the client and reports the flood they
// complete, or "" (and keeps reporting it once found).
func (w *Watcher) Feed(p []byte) Kind {
	if w.abuse != "" {
		return w.abuse
	}
	if w.preface > 0 {
		k := min(w.preface, len(p))
		w.preface -= k
		p = p[k:]
	}
	for len(p) > 0 {
		var hdr []byte
		if hdr, p = w.next(p); hdr == nil {
			return ""
		}
		if kind := w.frame(hdr); kind != "" {
			w.abuse = kind
			return kind
		}
	}
	return ""
}

// frame counts the frame whose header is complete.
func (w *Watcher) frame(h []byte) Kind {
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
