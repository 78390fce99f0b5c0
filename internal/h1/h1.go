// Package h1 owns the proxy's own HTTP/1.1 wire format: parsing a request
// head from a client and a response head from a machine, in place, deciding
// how each message's body is framed, decoding chunked bodies, and writing
// the few framing pieces the proxy emits itself (status lines, fields,
// chunks).
//
// It is pure: no goroutines, no I/O beyond the *bufio.Reader a
// ChunkedReader is handed, no global that changes after init. A Head holds
// Spans into the caller's buffer rather than strings, and its Fields slice
// is reused from one parse to the next, so parsing allocates nothing in
// steady state; only refusals allocate (their *Error).
//
// Requests are parsed strictly, by the rules of RFC 9112 and what nginx and HAProxy refuse, applied to
// every request a client sends (RFC 9112, and what nginx and HAProxy
// refuse). A proxy that is laxer than the app behind it is how requests get
// smuggled: whatever one side reads as two messages the other must not
// read as one. The request rules:
//
//   - request line: METHOD SP target SP "HTTP/1." DIGIT CRLF; the method a
//     token of at most MaxMethod bytes, the target non-empty visible
//     ASCII, the line within MaxRequestLine bytes (else 414);
//     HTTP/1.2 to 1.9 are read as HTTP/1.1 (RFC 9110 section 2.5), another
//     major version is answered 505;
//   - every line ends with CRLF: a bare LF or a bare CR is refused, and so
//     is an empty line before the request line (the caller may skip the one
//     RFC 9112 section 2.2 tolerates after a POST: see SkipEmptyLine);
//   - field names are tokens followed at once by ':'; values hold no control
//     byte but HTAB (obs-text is allowed); obs-fold is refused;
//   - the head is at most Limits.MaxHead bytes (else 431);
//   - Content-Length is 1 to 18 plain digits; several fields must agree; a
//     list ("5, 5") is refused; together with Transfer-Encoding it is
//     refused;
//   - Transfer-Encoding must be exactly "chunked" (any case), in one field,
//     and never in an HTTP/1.0 request;
//   - an HTTP/1.1 request carries exactly one Host; a second Host is refused
//     in any version;
//   - Expect, when not empty, must be 100-continue (else 417);
//   - a Trailer field may not name Content-Length, Transfer-Encoding or
//     Trailer.
//
// Responses come from the proxy's own machines and are parsed leniently
// where RFC 9112 lets a recipient be, strictly where framing is decided:
//
//   - a bare LF ends a line as well as CRLF (RFC 9112 section 2.2 lets a
//     recipient accept it, small servers send it, and only the proxy reads
//     the bytes, so no second parser can frame them differently); a bare CR
//     is still refused;
//   - the reason phrase may be missing ("HTTP/1.1 200\r\n"); HTTP/1.2 to
//     1.9 is read as HTTP/1.1 (RFC 9110 section 2.5);
//   - obs-text is allowed in values, control bytes but HTAB are not; obs-fold
//     and a space before ':' are refused rather than repaired in place (RFC
//     9112 section 5.2 lets a proxy answer 502);
//   - Content-Length may be a list of equal values ("5, 5", RFC 9110 section
//     8.6); differing values, non-digits, Content-Length with
//     Transfer-Encoding, a Transfer-Encoding whose final coding is not
//     chunked or that applies chunked twice, and Transfer-Encoding in an
//     HTTP/1.0 response are refused.
//
// Chunked bodies are read strictly in both directions (ChunkedReader), by
// 1 to 15 hex digits, extensions without control bytes,
// CRLF everywhere (a machine's bare LF is tolerated in its head, not in its
// chunk framing, where a misread length is a desynchronised connection).
// Trailer fields are checked by the field rules above but not interpreted:
// which of them reach a head is the caller's decision.
//
// Parsing is not incremental: each call reads buf from its start, so a
// caller that reads a head in small pieces should read into a large buffer
// and call again only after new bytes arrived.
package h1

import (
	"errors"
	"fmt"
	"math"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// DefaultMaxHead is the head limit when Limits.MaxHead is 0.
const DefaultMaxHead = 1 << 20

// Request line limits.
const (
	// MaxMethod is the longest method token accepted; the longest
	// registered method (UPDATEREDIRECTREF) has 17 bytes.
	MaxMethod = 24
	// MaxRequestLine bounds the request line, CRLF included (nginx's
	// large_client_header_buffers default).
	MaxRequestLine = 8 << 10
)

// Span is a byte range of a Head's buffer. uint32 halves a Field's size
// against ints; a head is far below 4 GiB.
type Span struct{ Off, Len uint32 }

// Field is one header field line, in the order received. Value has its
// leading and trailing SP/HTAB trimmed.
type Field struct{ Name, Value Span }

// Head is a parsed request or response head. It does not own Buf: it
// aliases the caller's buffer, and is valid only while that buffer is
// unchanged and only after a parse returned no error.
type Head struct {
	// Buf is the head as received: first line through the empty line.
	Buf []byte

	// Method and Target: the request line (requests only).
	Method, Target Span
	// Minor is the minor version: HTTP/1.Minor, 0 or 1.
	Minor uint8

	// Status and Reason: the status line (responses only).
	Status int
	Reason Span

	// Fields is reused across parses: reset to Fields[:0].
	Fields []Field

	// ContentLength is -1 when there is no Content-Length.
	ContentLength int64
	// Chunked: Transfer-Encoding ends in chunked.
	Chunked bool
	// Close: the sender asks to close the connection after this message
	// ("Connection: close", or HTTP/1.0 without "keep-alive"). For a
	// response it is also set when the body runs until the connection
	// closes, since such a connection cannot carry another response.
	Close bool
	// Upgrade: for a request, an Upgrade field and "upgrade" among the
	// Connection tokens (RFC 9110 section 7.8 wants both); for a response,
	// an Upgrade field.
	Upgrade bool
	// Expect100: the request has "Expect: 100-continue".
	Expect100 bool
	// Host is the request's Host field value; HasHost whether it had one.
	// With an absolute-form target the target's authority wins (RFC 9112
	// section 3.2.2); that is the caller's to apply.
	Host    Span
	HasHost bool
}

// reset prepares h for a parse of buf, keeping Fields' storage.
func (h *Head) reset(buf []byte) {
	fields := h.Fields[:0]
	*h = Head{Buf: buf, Fields: fields, ContentLength: -1}
}

// Bytes returns the bytes of s, aliasing h.Buf.
func (h *Head) Bytes(s Span) []byte { return h.Buf[s.Off : s.Off+s.Len : s.Off+s.Len] }

// String returns a copy of the bytes of s.
func (h *Head) String(s Span) string { return string(h.Bytes(s)) }

// NameIs reports whether f's name is name, ASCII case-insensitively.
func (h *Head) NameIs(f Field, name string) bool {
	return EqualFold(h.Bytes(f.Name), name)
}

// Get returns the value of the first field named name.
func (h *Head) Get(name string) ([]byte, bool) {
	for _, f := range h.Fields {
		if h.NameIs(f, name) {
			return h.Bytes(f.Value), true
		}
	}
	return nil, false
}

// Has reports whether a field named name is present.
func (h *Head) Has(name string) bool {
	_, ok := h.Get(name)
	return ok
}

// Values calls fn with every value of name, in order. fn must not keep v
// beyond the life of Buf.
func (h *Head) Values(name string, fn func(v []byte)) {
	for _, f := range h.Fields {
		if h.NameIs(f, name) {
			fn(h.Bytes(f.Value))
		}
	}
}

// ConnectionHas reports whether any Connection field lists token.
func (h *Head) ConnectionHas(token string) bool {
	for _, f := range h.Fields {
		if h.NameIs(f, "connection") && ListHas(h.Bytes(f.Value), token) {
			return true
		}
	}
	return false
}

// ListHas reports whether the comma-separated list v has an element equal
// to token, ASCII case-insensitively; elements are trimmed of OWS.
func ListHas(v []byte, token string) bool {
	found := false
	ForList(v, func(elem []byte) { found = found || EqualFold(elem, token) })
	return found
}

// ForList calls fn with each non-empty element of the comma-separated list
// v, trimmed of OWS.
func ForList(v []byte, fn func(elem []byte)) {
	for len(v) > 0 {
		var elem []byte
		elem, v, _ = cutByte(v, ',')
		if elem = trimOWS(elem); len(elem) > 0 {
			fn(elem)
		}
	}
}

// Limits bound a parse.
type Limits struct {
	// MaxHead bounds the whole head in bytes; 0 means DefaultMaxHead.
	MaxHead int
}

func (l Limits) maxHead() int {
	if l.MaxHead <= 0 {
		return DefaultMaxHead
	}
	// Spans are 32-bit.
	return min(l.MaxHead, math.MaxUint32)
}

// ErrNeedMore reports that buf holds no complete head yet and no limit is
// reached: read more and call again with the longer buffer.
var ErrNeedMore = errors.New("h1: incomplete head")

// Error is a refused message. Its Reason never echoes the sender's bytes
// beyond a single offending byte in hex, so it is safe to log and to show.
type Error struct {
	Code perr.Code
	// Status is the HTTP status to answer the client with.
	Status int
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("h1: %s %d: %s", e.Code, e.Status, e.Reason)
}

// statusOf is the status a code answers with: perr's registry is the one
// place that decides it.
func statusOf(code perr.Code) int {
	switch code {
	case perr.MalformedRequest:
		return 400
	case perr.MalformedResponse:
		return 502
	}
	return perr.New(code, nil).HTTPStatus()
}

// refuse builds an *Error; a byte argument becomes hex, never raw.
func refuse(code perr.Code, status int, format string, args ...any) *Error {
	reason := format
	if len(args) > 0 {
		reason = fmt.Sprintf(format, args...)
	}
	return &Error{Code: code, Status: status, Reason: reason}
}
