package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/h1scan"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// FuzzRequestAgreesWithNetHTTP: for a request ParseRequest accepts, read
// with the framing RequestBody and ChunkedReader give it, net/http either
// refuses it or reads the same method, target, Host, framing and body.
// Refusing is safe; reading another message out of the same bytes is how
// requests are smuggled past a proxy to an app built on net/http.
func FuzzRequestAgreesWithNetHTTP(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var h Head
		n, err := ParseRequest(in, &h, Limits{MaxHead: 64 << 10})
		if err != nil {
			return
		}
		body, bodyOK := ourBody(&h, in[n:])

		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			return
		}
		if req.Method != h.String(h.Method) || req.RequestURI != h.String(h.Target) {
			t.Fatalf("net/http reads %q %q, h1 %q %q", req.Method, req.RequestURI, h.Bytes(h.Method), h.Bytes(h.Target))
		}
		// net/http takes an absolute-form target's authority over the Host
		// field, as RFC 9112 section 3.2.2 asks; the Head reports the field
		// and leaves that rule to its caller.
		if req.URL.Host == "" && req.Host != h.String(h.Host) {
			t.Fatalf("net/http reads Host %q, h1 %q", req.Host, h.Bytes(h.Host))
		}
		chunked := len(req.TransferEncoding) == 1 && req.TransferEncoding[0] == "chunked"
		wantLength := max(h.ContentLength, 0)
		if h.Chunked {
			wantLength = -1
		}
		if chunked != h.Chunked || req.ContentLength != wantLength {
			t.Fatalf("net/http frames chunked %v length %d, h1 chunked %v length %d", chunked, req.ContentLength, h.Chunked, h.ContentLength)
		}
		theirs, err := io.ReadAll(req.Body)
		if err != nil || !bodyOK {
			// One refused the body (or it is cut short): no second message
			// is read out of it by both.
			return
		}
		if !bytes.Equal(body, theirs) {
			t.Fatalf("net/http reads body %q, h1 %q", theirs, body)
		}
	})
}

// ourBody reads the body after a request head as the proxy would.
func ourBody(h *Head, rest []byte) ([]byte, bool) {
	switch RequestBody(h) {
	case BodyLength:
		if int64(len(rest)) < h.ContentLength {
			return nil, false
		}
		return rest[:h.ContentLength], true
	case BodyChunked:
		b, err := io.ReadAll(NewChunkedReader(bufio.NewReader(bytes.NewReader(rest)), perr.MalformedRequest, 0))
		return b, err == nil
	}
	return nil, true
}

// FuzzRequestAgreesWithScanner: ParseRequest and h1scan's Scanner accept
// and refuse the same request heads, ending them at the same byte. The
// server runs h1scan over every request that net/http serves and ParseRequest
// for its own engine: one rule set, two implementations.
//
// Where they differ on purpose, and the test allows it:
//   - the HTTP/2 preface: h1scan switches the connection to HTTP/2 on it;
//     ParseRequest reads a request head, and "PRI * HTTP/2.0" is none (505).
//     The server looks for the preface before it parses heads.
//
// And in when they refuse: h1scan refuses at the first bad byte, while
// ParseRequest may wait for a line's end (a Content-Length digit, a version
// digit). So on an incomplete head, a refusal by ParseRequest must be one
// by h1scan too, and a refusal by h1scan one by ParseRequest or a wait.
func FuzzRequestAgreesWithScanner(f *testing.F) {
	for i, s := range requestSeeds {
		f.Add([]byte(s), uint8(i))
	}
	f.Fuzz(func(t *testing.T, in []byte, sel uint8) {
		maxHead := []int{16 << 10, 64, 200, 8200}[sel%4]
		var h Head
		n, err := ParseRequest(in, &h, Limits{MaxHead: maxHead})
		var e *Error
		if errors.As(err, &e) && e.Status == 505 {
			return // the first difference above
		}

		head := in
		if end := bytes.Index(in, []byte("\r\n\r\n")); end >= 0 {
			head = in[:end+4]
		}
		if string(head) == "PRI * HTTP/2.0\r\n\r\n" {
			return // the second
		}
		s := h1scan.New(maxHead)
		_, serr := s.Feed(head)
		complete := len(head) < len(in) || bytes.HasSuffix(in, []byte("\r\n\r\n"))

		switch {
		case err == nil && serr != nil:
			t.Fatalf("h1 accepts a head of %d bytes, h1scan refuses it: %v", n, serr)
		case err == nil && n != len(head):
			t.Fatalf("h1 ends the head at %d, the first CRLF CRLF is at %d", n, len(head))
		case err == nil:
			scannerEndsHead(t, s, &h)
		case err == ErrNeedMore && complete:
			t.Fatalf("h1 needs more after a complete head")
		case err == ErrNeedMore && serr != nil:
			// h1scan refused a byte h1 has not judged yet.
		case serr == nil && (complete || err != ErrNeedMore):
			t.Fatalf("h1 refuses (%v), h1scan accepts %q", err, head)
		}
	})
}

// scannerEndsHead checks that s, fed exactly a head h1 accepted, is at the
// head's end: a request without a body is done, one with a body is not
// until the body h1 frames has gone by.
func scannerEndsHead(t *testing.T, s *h1scan.Scanner, h *Head) {
	t.Helper()
	// After a request that asks to upgrade, h1scan waits for the outcome
	// (Switched) rather than for the next request line.
	upgrade := false
	h.Values("upgrade", func(v []byte) { upgrade = upgrade || len(v) > 0 })
	var body string
	switch RequestBody(h) {
	case BodyNone:
		if s.Requests() != 1 || s.AtRequestStart() == upgrade {
			t.Fatalf("h1 reads a request without a body; h1scan has read %d requests", s.Requests())
		}
		return
	case BodyChunked:
		body = "0\r\n\r\n"
	case BodyLength:
		if h.ContentLength > 1<<16 {
			return
		}
		body = string(bytes.Repeat([]byte("x"), int(h.ContentLength)))
	}
	if s.Requests() != 0 {
		t.Fatalf("h1scan ended a request with a %v body at its head", RequestBody(h))
	}
	if _, err := s.Feed([]byte(body)); err != nil || s.Requests() != 1 || s.AtRequestStart() == upgrade {
		t.Fatalf("after the %v body: %v, %d requests", RequestBody(h), err, s.Requests())
	}
}
