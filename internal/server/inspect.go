package server

import (
	"errors"
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
// PING floods) with GOAWAY ENHANCE_YOUR_CALM.

// errRefused ends net/http's reading of a connection whose next request
// was refused. It is a read error (*net.OpError, Op "read") because
// net/http then closes the connection without writing a response of its
// own, even when it holds part of the refused head; the refusal itself is
// answered by Close, after any response in progress, with the proxy's
// own error format.
var errRefused error = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("request refused by the proxy")}

// startInspection chooses what watches the client's bytes: HTTP/2 frames
// when TLS negotiated h2, requests otherwise (a plain-text connection that
// starts with the HTTP/2 preface switches to frames).
func (h *httpConn) startInspection(alpnH2 bool) {
	p := h.c.rt.Config.Proxy
	h.h2limits = h2watch.Limits{
		ResetsPerSecond:   p.H2MaxResetsPerSecond,
		SettingsPerSecond: p.H2MaxSettingsPerSecond,
		PingsPerSecond:    p.H2MaxPingsPerSecond,
	}
	if alpnH2 {
		h.h2 = h2watch.New(h.h2limits, true, time.Now)
		h.h2Writes.Store(true)
		return
	}
	h.scan = h1scan.New(p.MaxHeaderBytes)
}

// inspect passes the n bytes just read through the inspectors and
// returns what net/http may have of them.
func (h *httpConn) inspect(p []byte, n int, err error) (int, error) {
	if h.scan != nil {
		ok, serr := h.scan.Feed(p[:n])
		switch {
		case serr != nil:
			h.refuse(serr)
			// Every later read fails the same way (bufio.Reader hands an
			// error on only once). What came before the refused request
			// is the end of earlier ones and is passed first.
			h.held = errRefused
			if ok == 0 {
				return 0, h.deliverRefusal(p)
			}
			return ok, nil
		case h.scan.Mode() == h1scan.ModeH2:
			h.scan = nil
			h.h2 = h2watch.New(h.h2limits, false, time.Now)
			h.h2Writes.Store(true)
			if h.h2.Feed(p[ok:n]) != "" {
				return 0, h.flood()
			}
		case h.scan.Mode() == h1scan.ModeOpaque:
			h.scan = nil
		}
		return n, err
	}
	if h.h2 != nil && h.h2.Feed(p[:n]) != "" {
		return 0, h.flood()
	}
	return n, err
}

// deliverRefusal returns errRefused to a read. Once net/http's request
// reader has it (not the one-byte background read it makes while a
// handler runs, whose response must still go out), net/http writes only
// its own answer to the refused request: it may hold the start of that
// request's head, taken from earlier reads, and would answer a 400 of its
// own. That is dropped; Close answers in the proxy's format.
func (h *httpConn) deliverRefusal(p []byte) error {
	if len(p) > 1 {
		h.mute.Store(true)
	}
	return errRefused
}

// refuse records a refused request. One refused in its head is answered
// when the connection closes; one refused in its body cannot be (its
// head is being answered), and its handler sees the body fail.
func (h *httpConn) refuse(e *h1scan.Error) {
	code := perr.MalformedRequest
	switch e.Status {
	case 414:
		code = perr.RequestLineTooLong
	case 431:
		code = perr.RequestHeadersTooLarge
	}
	c := h.c
	c.mu.Lock()
	c.code = code
	c.mu.Unlock()
	c.fail("refused_request", "request refused", "code", string(code), "reason", e.Reason)
	if !e.InBody {
		h.answer.Store(&code)
	}
}

// flood ends an HTTP/2 connection that flooded: GOAWAY, then net/http's
// reading ends.
func (h *httpConn) flood() error {
	kind := h.h2.Feed(nil)
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
