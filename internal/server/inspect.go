package server

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/h1scan"
	"github.com/edgeproxy/edgeproxy/internal/h2watch"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// The client's bytes are inspected on their way to net/http, below its
// parsers: HTTP/1.x requests by h1scan, which refuses any request not
// strictly framed, every request of a connection alike (net/http's own
// parser is lenient, and its strictness would apply only where we sniff
// the first request); HTTP/2 frames by h2watch, which ends floods that
// net/http's server answers too late or never (rapid reset, SETTINGS and
// PING floods) with GOAWAY ENHANCE_YOUR_CALM and which rewrites the few
// frames net/http would answer otherwise than RFC 9113 asks (see
// internal/h2watch).

// errRefused ends net/http's reading of a connection whose next request
// was refused. It is a read error (*net.OpError, Op "read") because
// net/http then closes the connection without writing a response of its
// own, even when it holds part of the refused head; the refusal itself is
// answered by Close, after any response in progress, with the proxy's
// own error format.
var errRefused error = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("request refused by the proxy")}

// errRefusedBody ends the reading of a request whose body h1scan refused
// (a malformed chunk): the handler reading the body sees it, and answers
// the client with its code rather than leaving it a bare close.
var errRefusedBody error = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("request body refused by the proxy")}

// startInspection chooses what watches the client's bytes: HTTP/2 frames
// when TLS negotiated h2, requests otherwise (a plain-text connection that
// starts with the HTTP/2 preface switches to frames).
func (h *httpConn) startInspection(alpnH2 bool) {
	p := h.c.rt.Config.Proxy
	h.h2conf = h2watch.Config{
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
		h.h2conf.MaxHeaderListSize = uint32(p.MaxHeaderBytes) + 10*32
	}
	if alpnH2 {
		h.h2 = h2watch.New(h.h2conf, time.Now)
		h.h2Writes.Store(true)
		return
	}
	h.scan = h1scan.New(p.MaxHeaderBytes)
}

// inspect passes the n bytes just read through the inspectors and
// returns what net/http may have of them.
func (h *httpConn) inspect(p []byte, n int, err error) (int, error) {
	scanned := h.scanned
	h.scanned = min(scanned+n, len(h2watch.Preface))
	ok, serr := h.scan.Feed(p[:n])
	switch {
	case serr != nil:
		h.refuse(serr)
		// Every later read fails the same way (bufio.Reader hands an
		// error on only once). What came before the refused request
		// is the end of earlier ones and is passed first.
		h.held = errRefused
		if serr.InBody {
			h.held = errRefusedBody
		}
		if ok == 0 {
			return 0, h.deliverRefusal(p)
		}
		return ok, nil
	case h.scan.Mode() == h1scan.ModeH2:
		// The preface, which began the connection, ended in p: the
		// watcher passes what is left of it and follows the frames after.
		h.scan = nil
		conf := h.h2conf
		conf.Preface = len(h2watch.Preface) - scanned
		h.h2 = h2watch.New(conf, time.Now)
		h.h2Writes.Store(true)
		ready, kind := h.h2.Filter(p[:n])
		if kind != "" {
			return 0, h.flood()
		}
		h.h2err = err
		if ready > 0 {
			return ready, nil
		}
		return h.readH2(p)
	case h.scan.Mode() == h1scan.ModeOpaque:
		h.scan = nil
	}
	return n, err
}

// readH2 hands net/http the client's HTTP/2 bytes as the watcher lets
// them through. Frames that pass are read into p and handed on in place;
// a frame the watcher holds back is read into its own buffer, exactly the
// bytes it lacks, and handed on from its queue once whole (rewritten or
// not). A read returns bytes or an error, never (0, nil): while all that
// came is held back, it reads on.
func (h *httpConn) readH2(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for empty := 0; ; {
		if q := h.h2.Queued(); len(q) > 0 {
			n := copy(p, q)
			h.h2.Dequeue(n)
			return n, nil
		}
		if err := h.h2err; err != nil {
			// After what was read with it, as io.Reader has it.
			h.h2err = nil
			return 0, err
		}
		var n, ready int
		var err error
		if space := h.h2.Space(); space != nil {
			n, err = h.Conn.Read(space)
			h.h2.Filled(n)
		} else {
			n, err = h.Conn.Read(p)
			var kind h2watch.Kind
			if ready, kind = h.h2.Filter(p[:n]); kind != "" {
				return 0, h.flood()
			}
		}
		h.h2err = err
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

// deliverRefusal returns errRefused to a read. Once net/http's request
// reader has it (not the one-byte background read it makes while a
// handler runs, whose response must still go out), net/http writes only
// its own answer to the refused request: it may hold the start of that
// request's head, taken from earlier reads, and would answer a 400 of its
// own. That is dropped; Close answers in the proxy's format.
func (h *httpConn) deliverRefusal(p []byte) error {
	if h.held == errRefusedBody {
		// Refused inside a body: its handler runs and answers.
		return errRefusedBody
	}
	if len(p) > 1 {
		h.mute.Store(true)
	}
	return errRefused
}

// refuse records a refused request. One refused in its head is answered
// when the connection closes; one refused in its body is answered by its
// handler, which sees the body fail with the code (its head and the body
// so far may have reached the machine, whose connection is then dropped).
func (h *httpConn) refuse(e *h1scan.Error) {
	code := perr.MalformedRequest
	switch e.Status {
	case 414:
		code = perr.RequestLineTooLong
	case 431:
		code = perr.RequestHeadersTooLarge
	case 417:
		code = perr.ExpectationFailed
	}
	c := h.c
	c.mu.Lock()
	c.code = code
	c.mu.Unlock()
	c.fail("refused_request", "request refused", "code", string(code), "reason", e.Reason)
	if e.InBody {
		h.bodyRefused.Store(&code)
	} else {
		h.answer.Store(&code)
	}
}

// flood ends an HTTP/2 connection that flooded: GOAWAY, then net/http's
// reading ends.
func (h *httpConn) flood() error {
	kind := h.h2.Flood()
	c := h.c
	c.s.metrics.H2Floods.WithLabelValues(string(kind)).Inc()
	c.mu.Lock()
	c.code = perr.HTTP2Flood
	c.mu.Unlock()
	c.fail("h2_flood", "HTTP/2 flood", "kind", string(kind), "code", string(perr.HTTP2Flood))
	h.goAway(h.h2.LastStream())
	h.held = errRefused
	return errRefused
}

// Write passes net/http's bytes on; on HTTP/2 it follows the frame
// boundaries, so that a GOAWAY of our own goes between two frames.
func (h *httpConn) Write(p []byte) (int, error) {
	if !h.h2Writes.Load() {
		if h.mute.Load() {
			return len(p), nil
		}
		return h.Conn.Write(p)
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.calmed {
		// The connection is ending: what the server still writes would
		// follow our GOAWAY.
		return len(p), nil
	}
	n, err := h.Conn.Write(p)
	h.out.Wrote(p[:n])
	if h.calmLast != 0 && h.out.AtBoundary() {
		h.writeGoAway()
	}
	return n, err
}

// goAway sends GOAWAY (ENHANCE_YOUR_CALM) now if the server is between
// frames, else as soon as its frame in progress ends.
func (h *httpConn) goAway(last uint32) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.calmLast = last | 1<<31 // nonzero even for stream 0
	if h.out.AtBoundary() {
		h.writeGoAway()
	}
}

func (h *httpConn) writeGoAway() {
	h.calmed = true
	h.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	h.Conn.Write(h2watch.GoAway(h.calmLast &^ (1 << 31)))
}

// answerRefused writes the error response for a request refused in its
// head. net/http has finished with the connection, so no response of its
// own is in progress.
func (h *httpConn) answerRefused() {
	code := h.answer.Load()
	if code == nil {
		return
	}
	if b := perr.RawResponse(*code); b != nil {
		h.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		h.Conn.Write(b)
	}
}
