package server

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/h2watch"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// The HTTP/2 client's bytes are inspected on their way to net/http, below
// its parser, by h2watch, which ends floods that net/http's server answers
// too late or never (rapid reset, SETTINGS and PING floods) with GOAWAY
// ENHANCE_YOUR_CALM and which rewrites the few frames net/http would
// answer otherwise than RFC 9113 asks (see internal/h2watch). HTTP/1.1
// requests are parsed, strictly, by the proxy's own front end.

// errRefused ends net/http's reading of a connection that flooded. It is
// a read error (*net.OpError, Op "read") because net/http then closes the
// connection without writing a response of its own.
var errRefused error = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection refused by the proxy")}

// startH2Inspection starts the frame watcher. Every HTTP/2 connection,
// TLS or h2c, begins with the client preface, which the watcher passes
// before it follows frames.
func (h *httpConn) startH2Inspection() {
	p := h.c.rt.Config.Proxy
	h.h2in = &h2Inspect{}
	h.h2in.h2conf = h2watch.Config{
		Limits: h2watch.Limits{
			ResetsPerSecond:   p.H2MaxResetsPerSecond,
			SettingsPerSecond: p.H2MaxSettingsPerSecond,
			PingsPerSecond:    p.H2MaxPingsPerSecond,
		},
		Preface: len(h2watch.Preface),
		// The limits of newHTTPServer's HTTP/2 server.
		MaxFrameSize:    h2MaxFrameSize,
		HeaderTableSize: h2HeaderTableSize,
	}
	if p.MaxHeaderBytes > 0 {
		// net/http's header list limit: MaxHeaderBytes plus the overhead
		// of 10 fields at 32 bytes each.
		h.h2in.h2conf.MaxHeaderListSize = uint32(p.MaxHeaderBytes) + 10*32
	}
	h.h2in.h2 = h2watch.New(h.h2in.h2conf, time.Now)
}

// readH2 hands net/http the client's HTTP/2 bytes as the watcher lets
// them through. Frames that pass are read into p and handed on in place;
// a frame the watcher holds back is read into its own buffer, exactly the
// bytes it lacks, and handed on from its queue once whole (rewritten or
// not). A read returns bytes or an error, never (0, nil): while all that
// came is held back, it reads on.
func (h *httpConn) readH2(p []byte) (int, error) {
	if h.h2in.held != nil {
		return 0, h.h2in.held
	}
	if len(p) == 0 {
		return 0, nil
	}
	for empty := 0; ; {
		if q := h.h2in.h2.Queued(); len(q) > 0 {
			n := copy(p, q)
			h.h2in.h2.Dequeue(n)
			return n, nil
		}
		if err := h.h2in.h2err; err != nil {
			// After what was read with it, as io.Reader has it.
			h.h2in.h2err = nil
			return 0, err
		}
		var n, ready int
		var err error
		if space := h.h2in.h2.Space(); space != nil {
			n, err = h.Conn.Read(space)
			h.h2in.h2.Filled(n)
		} else {
			n, err = h.Conn.Read(p)
			var kind h2watch.Kind
			if ready, kind = h.h2in.h2.Filter(p[:n]); kind != "" {
				return 0, h.flood()
			}
		}
		h.h2in.h2err = err
		if ready > 0 {
			return ready, nil
		}
		if n == 0 && err == nil {
			// A layer below that makes no progress (the guard below ends
			// it first); as bufio.Reader does.
			if empty++; empty >= 100 {
				return 0, io.ErrNoProgress
			}
		}
	}
}

// flood ends an HTTP/2 connection that flooded: GOAWAY, then net/http's
// reading ends.
func (h *httpConn) flood() error {
	kind := h.h2in.h2.Flood()
	c := h.c
	c.s.metrics.H2Floods.WithLabelValues(string(kind)).Inc()
	c.mu.Lock()
	c.code = perr.HTTP2Flood
	c.mu.Unlock()
	c.fail("h2_flood", "HTTP/2 flood", "kind", string(kind), "code", string(perr.HTTP2Flood))
	h.goAway(h.h2in.h2.LastStream())
	h.h2in.held = errRefused
	return errRefused
}

// Write passes net/http's bytes on; on HTTP/2 it follows the frame
// boundaries, so that a GOAWAY of our own goes between two frames.
func (h *httpConn) Write(p []byte) (int, error) {
	if h.h2in == nil {
		return h.Conn.Write(p)
	}
	h.h2in.wmu.Lock()
	defer h.h2in.wmu.Unlock()
	if h.h2in.calmed {
		// The connection is ending: what the server still writes would
		// follow our GOAWAY.
		return len(p), nil
	}
	n, err := h.Conn.Write(p)
	h.h2in.out.Wrote(p[:n])
	if h.h2in.calmLast != 0 && h.h2in.out.AtBoundary() {
		h.writeGoAway()
	}
	return n, err
}

// goAway sends GOAWAY (ENHANCE_YOUR_CALM) now if the server is between
// frames, else as soon as its frame in progress ends.
func (h *httpConn) goAway(last uint32) {
	h.h2in.wmu.Lock()
	defer h.h2in.wmu.Unlock()
	h.h2in.calmLast = last | 1<<31 // nonzero even for stream 0
	if h.h2in.out.AtBoundary() {
		h.writeGoAway()
	}
}

func (h *httpConn) writeGoAway() {
	h.h2in.calmed = true
	h.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	h.Conn.Write(h2watch.GoAway(h.h2in.calmLast &^ (1 << 31)))
}
