package httpproxy

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// The HTTP/2 front end: net/http's server parses frames and streams, and
// each request is written as an HTTP/1.1 head for the core, which reads
// every front end's requests the same way (and applies the same rules to
// their fields).

// ServeHTTP serves one HTTP/2 request; the server puts the connection's
// *Conn in the request's context (WithConn).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := ConnFrom(r.Context())
	if c == nil {
		http.Error(w, "edgeproxy: request without connection state", http.StatusInternalServerError)
		return
	}
	if err := checkMethod([]byte(r.Method)); err != nil {
		// Before the head is rebuilt: a method that is no token would be
		// read as a malformed head, not the invalid method it is.
		pe, _ := perr.As(err)
		writeH2Error(w, pe)
		return
	}
	s := h2States.Get().(*h2State)
	defer s.done()
	s.buf = appendH1Head(s.buf[:0], r)
	s.w = h2Writer{w: w, proto: r.ProtoMajor}
	x := &s.x
	*x = Exchange{Conn: c, Req: &s.head, W: &s.w, Ctx: r.Context(), Trailer: r.Trailer, stalls: &s.stalls}
	if _, err := h1.ParseRequest(s.buf, x.Req, h1.Limits{MaxHead: len(s.buf) + 1}); err != nil {
		code := perr.MalformedRequest
		var he *h1.Error
		if errors.As(err, &he) {
			code = he.Code
		}
		writeH2Error(w, perr.New(code, err))
		return
	}
	// net/http gives a request that ended with its HEADERS frame a body
	// reader too; its length (0) says there is nothing to stream, and no
	// goroutine is started for it.
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		x.Body = Body{R: r.Body, Length: r.ContentLength}
	}
	h.Serve(x)
	if x.Aborted() {
		// Nobody is listening, or the response was cut short: reset the
		// stream rather than end it as if it were whole.
		panic(http.ErrAbortHandler)
	}
}

// h2State is what one HTTP/2 request needs of its own, kept in a pool:
// the head, the exchange, the responder and the stall watch (with its
// timer) are reused by the requests that follow.
type h2State struct {
	buf    []byte
	head   h1.Head
	x      Exchange
	w      h2Writer
	stalls stallWatch
}

var h2States = sync.Pool{New: func() any { return &h2State{buf: make([]byte, 0, 1024)} }}

// done returns the state to the pool, holding nothing of the request.
func (s *h2State) done() {
	s.stalls.close()
	s.x = Exchange{}
	s.w = h2Writer{}
	if cap(s.buf) > 64<<10 {
		s.buf = nil
	}
	h2States.Put(s)
}

// appendH1Head writes r's head as HTTP/1.1.
func appendH1Head(b []byte, r *http.Request) []byte {
	b = append(b, r.Method...)
	b = append(b, ' ')
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, r.Host...)
	b = append(b, "\r\n"...)
	for name, vals := range r.Header {
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		for _, v := range vals {
			b = h1.AppendFieldString(b, name, v)
		}
	}
	return append(b, "\r\n"...)
}

// h2Writer is the HTTP/2 front end's Responder, over net/http's writer.
type h2Writer struct {
	w     http.ResponseWriter
	proto int
}

func (w *h2Writer) Proto() int { return w.proto }

// forFields calls fn for each "Name: value\r\n" line of fields.
func forFields(fields []byte, fn func(name, value []byte)) {
	for len(fields) > 0 {
		end := bytes.Index(fields, []byte("\r\n"))
		if end < 0 {
			return
		}
		line := fields[:end]
		fields = fields[end+2:]
		if i := bytes.IndexByte(line, ':'); i > 0 {
			fn(line[:i], bytes.TrimLeft(line[i+1:], " \t"))
		}
	}
}

func (w *h2Writer) Interim(status int, fields []byte) error {
	h := w.w.Header()
	var names []string
	forFields(fields, func(name, value []byte) {
		k := http.CanonicalHeaderKey(string(name))
		names = append(names, k)
		h.Add(k, string(value))
	})
	w.w.WriteHeader(status)
	for _, k := range names {
		h.Del(k)
	}
	return nil
}

func (w *h2Writer) Head(status int, fields []byte, length int64, bodyless bool) error {
	h := w.w.Header()
	forFields(fields, func(name, value []byte) {
		k := http.CanonicalHeaderKey(string(name))
		h[k] = append(h[k], string(value))
	})
	if _, ok := h["Content-Type"]; !ok {
		// No guess: the machine's headers go as it sent them, and a
		// guess (text/html from a few bytes) would turn a download into a
		// page. A present but empty entry is how net/http is told.
		h["Content-Type"] = nil
	}
	if length >= 0 && status != 204 && status != 304 {
		h["Content-Length"] = []string{strconv.FormatInt(length, 10)}
	}
	w.w.WriteHeader(status)
	if length < 0 && !bodyless {
		return w.Flush()
	}
	return nil
}

func (w *h2Writer) Write(p []byte) (int, error) { return w.w.Write(p) }

func (w *h2Writer) Flush() error {
	if f, ok := w.w.(interface{ FlushError() error }); ok {
		return f.FlushError()
	}
	if f, ok := w.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

func (w *h2Writer) End(trailers []byte) error {
	if len(trailers) == 0 {
		return nil
	}
	h := w.w.Header()
	forFields(trailers, func(name, value []byte) {
		h.Add(http.TrailerPrefix+http.CanonicalHeaderKey(string(name)), string(value))
	})
	return nil
}

var errNoTunnel = perr.New(perr.MalformedResponse, errors.New("machine switched protocols on an HTTP/2 request"))

func (w *h2Writer) Tunnel() (net.Conn, error) { return nil, errNoTunnel }

func (w *h2Writer) Cut(write bool) {
	rc := http.NewResponseController(w.w)
	if write {
		rc.SetWriteDeadline(time.Now())
	} else {
		rc.SetReadDeadline(time.Now())
	}
}

// writeH2Error answers a request refused before the core saw it.
func writeH2Error(w http.ResponseWriter, pe *perr.Error) {
	w.Header().Set(perr.CodeHeader, string(pe.Code))
	w.Header().Set("Server", "edgeproxy")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(pe.HTTPStatus())
	w.Write([]byte(pe.Line()))
}
