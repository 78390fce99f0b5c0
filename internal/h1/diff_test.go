package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"

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
