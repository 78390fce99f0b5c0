// Package h1scan follows the requests a client sends on an HTTP/1.x
// connection, byte by byte as they arrive, and refuses the first one that
// is not strictly framed. It sits below the HTTP server: the server's own
// parser is lenient (it accepts bare LF, folds Content-Length and
// Transfer-Encoding together, reads any method length), and a lenient
// parser at an edge is how requests get smuggled past it to an app that
// reads the same bytes differently. Every request on a connection gets the
// same checks, not only the first.
//
// The rules, from RFC 9112 and what nginx and HAProxy refuse:
//
//   - request line: METHOD SP target SP "HTTP/1." DIGIT CRLF, a token
//     method of at most MaxMethod bytes, a target of visible ASCII, the
//     whole line within MaxRequestLine bytes;
//   - every line ends with CRLF: a bare LF or a bare CR is refused;
//   - header names are tokens followed at once by ':'; values hold no
//     control characters but HTAB; obs-fold (a line starting with SP or
//     HTAB) is refused;
//   - Content-Length is plain digits; several must agree; together with
//     Transfer-Encoding it is refused;
//   - Transfer-Encoding must be exactly "chunked" (the only coding
//     implemented), once, and never on HTTP/1.0;
//   - chunk sizes are 1 to 15 hex digits, optionally followed by
//     extensions, then CRLF; chunk data is followed by CRLF.
//
// One empty line (CRLF) before a request line is let through after a POST
// request, where the HTTP server behind the Scanner (net/http) skips it,
// as RFC 9112 section 2.2 asks of servers for the old clients that sent
// one after a POST body; elsewhere it is refused, since that server would
// refuse it too, with an answer of its own. A connection that starts with the HTTP/2
// preface switches the Scanner to ModeH2; a request with an Upgrade header
// makes it wait for the outcome (see Switched).
//
// The Scanner keeps no more than a few dozen bytes of state: it never
// buffers a head, so its memory does not grow with the header limit.
package h1scan

import "fmt"

// Limits bound what one request may be.
const (
	// MaxMethod is the longest method token accepted; the longest
	// registered method (UPDATEREDIRECTREF) has 17 bytes.
	MaxMethod = 24
	// MaxRequestLine bounds the request line, CRLF included (nginx's
	// large_client_header_buffers default).
	MaxRequestLine = 8 << 10
	// maxChunkLine bounds a chunk-size line with its extensions.
	maxChunkLine = 4 << 10
	// maxChunkDigits keeps a chunk size within 60 bits.
	maxChunkDigits = 15
	// maxLengthDigits keeps a Content-Length within 60 bits.
	maxLengthDigits = 18
)

// Mode is what the connection carries.
type Mode uint8

const (
	// ModeHTTP1: requests, checked.
	ModeHTTP1 Mode = iota
	// ModeH2: the connection began with the HTTP/2 preface; the bytes
	// from the preface on are HTTP/2 frames, not checked here.
	ModeH2
	// ModeOpaque: the connection switched protocols (101); nothing
	// more is checked.
	ModeOpaque
)

// Error is a request refused. Status is the HTTP status to answer with.
type Error struct {
	Status int
	Reason string
	// InBody is true when the error is in a request body (chunked
	// framing): the server has its head and may be answering it, so no
	// error response can be written, only the connection closed.
	InBody bool
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Reason) }

func bad(format string, args ...any) *Error {
	return &Error{Status: 400, Reason: fmt.Sprintf(format, args...)}
}

type state uint8

const (
	sStart       state = iota // before a request line
	sStartLF                  // an empty line's CR seen
	sMethod                   // in the method
	sTarget                   // in the target
	sVersion                  // matching " HTTP/1.x\r\n" after the target
	sFieldStart               // at the start of a field line (or the end of the head)
	sName                     // in a field name
	sValue                    // in a field value
	sValueLF                  // a field line's CR seen
	sHeadLF                   // the head's final CR seen
	sBody                     // in a Content-Length body
	sChunkSize                // in a chunk size
	sChunkExt                 // in chunk extensions
	sChunkSizeLF              // a chunk-size line's CR seen
	sChunkData                // in chunk data
	sChunkDataCR              // expecting the CR after chunk data
	sChunkDataLF              // expecting the LF after chunk data
	sPreface                  // matching the HTTP/2 preface
	sUpgrade                  // a request asked to upgrade; waiting for the outcome
	sDone                     // ModeH2 or ModeOpaque, or refused
)

// h2Preface is the HTTP/2 client connection preface.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Scanner follows one connection's requests. The zero value is not ready:
// use New.
type Scanner struct {
	maxHead int
	state   state
	mode    Mode
	err     *Error
	// requests counts the requests read to their end.
	requests int
	// first is true until the first request line begins.
	first bool
	// emptyLines counts empty lines before the current request line.
	emptyLines int
	// post: the current request's method is POST; afterPost: the last
	// request's was.
	post, afterPost bool

	// The head being read.
	headLen   int  // bytes of the head so far
	lineLen   int  // bytes of the current line so far
	version   byte // the minor version digit
	targetLen int  // bytes of the target
	verIdx    int  // index into " HTTP/1.x\r\n"
	name      [20]byte
	nameLen   int  // bytes of the current field name (may exceed len(name))
	field     byte // which field this is: see fieldOf
	valLen    int  // bytes of the current field's value, trimmed of leading OWS
	valTrail  int  // trailing SP/HTAB bytes of the value so far
	te        [8]byte
	clDigits  int   // digits of the current Content-Length value
	clCur     int64 // the current Content-Length value
	length    int64 // the agreed Content-Length, or -1
	chunked   bool
	host      bool // a Host field was seen
	// expectOther: the Expect value so far is not 100-continue.
	expectOther bool
	// tok is the Trailer token being read (lowered), tokBad whether an
	// earlier one named a framing field.
	tok      [20]byte
	tokLen   int
	tokBad   bool
	upgrade  bool
	trailers bool // the head being read is a chunked body's trailer section

	// The body being skipped.
	remaining int64
	digits    int
	extSemi   bool // a chunk extension's ';' was seen
	// prefaceIdx is how much of the HTTP/2 preface has matched.
	prefaceIdx int
}

// New returns a Scanner for a connection whose heads may be maxHeadBytes
// long (request line included; the server's own limit).
func New(maxHeadBytes int) *Scanner {
	s := &Scanner{maxHead: maxHeadBytes, first: true}
	s.reset()
	return s
}

// Mode reports what the connection carries now.
func (s *Scanner) Mode() Mode { return s.mode }

// Requests counts the requests read to their end.
func (s *Scanner) Requests() int { return s.requests }

// Err is the error that refused a request, or nil.
func (s *Scanner) Err() *Error { return s.err }

// AtRequestStart reports whether the bytes fed so far end exactly between
// two requests.
func (s *Scanner) AtRequestStart() bool { return s.state == sStart && s.emptyLines == 0 }

// Switched tells the Scanner how an upgrade request ended: true if the
// connection switched protocols (nothing more to check), false if it was
// answered normally (requests follow).
func (s *Scanner) Switched(ok bool) {
	if s.state != sUpgrade {
		return
	}
	if ok {
		s.state, s.mode = sDone, ModeOpaque
		return
	}
	s.state = sStart
}

// reset prepares for the next head.
func (s *Scanner) reset() {
	s.state = sStart
	s.emptyLines = 0
	s.afterPost, s.post = s.post, false
	s.headLen, s.lineLen = 0, 0
	s.length = -1
	s.chunked, s.upgrade, s.trailers, s.host = false, false, false, false
}

// Feed scans the next bytes of the connection. It returns how many of
// them belong to requests that passed (or to a protocol it no longer
// checks) and, when a request is refused, its error: p[n:] starts inside
// the refused request and must not reach the server. After an error every
// call returns 0 and the same error.
func (s *Scanner) Feed(p []byte) (int, *Error) {
	if s.err != nil {
		return 0, s.err
	}
	// start is where, in p, the request being read began (-1: in an
	// earlier call).
	start := -1
	i := 0
	for i < len(p) {
		switch s.state {
		case sDone:
			return len(p), nil
		case sUpgrade:
			// The outcome is not known yet (a 101 or not): the bytes are
			// early for a tunnel and a request line for HTTP. Check them
			// as requests: a client that talks before the 101 is refused.
			s.state = sStart
		case sBody:
			take := min(int64(len(p)-i), s.remaining)
			i += int(take)
			s.remaining -= take
			if s.remaining == 0 {
				s.endRequest()
			}
			continue
		case sChunkData:
			take := min(int64(len(p)-i), s.remaining)
			i += int(take)
			s.remaining -= take
			if s.remaining == 0 {
				s.state = sChunkDataCR
			}
			continue
		case sValue, sTarget, sName:
			// Runs of ordinary bytes, the bulk of a head, skip the
			// per-byte state machine.
			if k := s.run(p[i:]); k > 0 {
				i += k
				continue
			}
		}
		if s.state == sStart || s.state == sStartLF {
			start = i
		}
		if err := s.step(p[i]); err != nil {
			s.err = err
			s.state = sDone
			return s.passed(i, start, err), err
		}
		i++
	}
	return len(p), nil
}

// passed is how many bytes of the current call may reach the server when
// the byte at i is refused: those before the refused head (a head begun in
// an earlier call was passed in part, which is harmless: the server acts
// on a head only once it is complete), or those before the bad byte of a
// body, whose head the server already has.
func (s *Scanner) passed(i, start int, err *Error) int {
	if err.InBody {
		return i
	}
	return max(0, start)
}

// plain marks the bytes a run may skip: in a target, visible ASCII; in a
// value, those and SP, HTAB and obs-text.
var plainTarget, plainValue, plainName = func() (t, v, n [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c > ' ' && c < 0x7f
		v[c] = t[c] || c == ' ' || c == '\t' || c >= 0x80
		n[c] = IsTchar(byte(c))
	}
	return t, v, n
}()

// run skips the ordinary bytes at the start of p in a target, a field
// name, or a value that decides no framing, and returns how many; 0 leaves the next
// byte to step. Limits are checked as step would, by leaving the byte
// that crosses one to it.
func (s *Scanner) run(p []byte) int {
	if s.state == sValue && s.field != fieldOther {
		return 0
	}
	room := s.maxHead - s.headLen
	if s.state == sName {
		k := 0
		for k < len(p) && k < room && plainName[p[k]] {
			s.addName(p[k])
			k++
		}
		s.headLen += k
		return k
	}
	table := &plainValue
	if s.state == sTarget {
		table = &plainTarget
		room = min(room, MaxRequestLine-s.lineLen)
	}
	k := 0
	for k < len(p) && k < room && table[p[k]] {
		k++
	}
	s.headLen += k
	if s.state == sTarget {
		s.lineLen += k
		s.targetLen += k
	} else if k > 0 {
		// Trailing whitespace is not tracked for fields that decide no
		// framing; only the value's being non-empty matters.
		s.valLen += k
	}
	return k
}
