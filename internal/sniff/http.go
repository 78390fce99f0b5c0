package sniff

import (
	"bytes"

	"github.com/edgeproxy/edgeproxy/internal/h1"
)

// MaxRequestLine bounds an HTTP/1.x request line, CRLF included. A longer
// line is NoMatch rather than NeedMore so that detection ends within a known
// number of bytes; 8 KiB is nginx's large_client_header_buffers default,
// beyond which it answers 414 anyway.
const MaxRequestLine = 8 << 10

// maxMethod bounds the method token. The longest registered method
// (UPDATEREDIRECTREF) has 17 bytes; a long run of token bytes is far more
// likely another text protocol than an extension method.
const maxMethod = 24

// h2Preface is the HTTP/2 client connection preface (RFC 9113 section 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// RequestLine is what HTTP1 read from a matching request line. The strings
// are copies, so they stay valid when the caller's buffer is reused.
type RequestLine struct {
	Method string // a token, as sent (methods are case-sensitive)
	Target string // the request-target, as sent: origin, absolute, authority or "*" form
	Proto  string // "HTTP/1.0", "HTTP/1.1", or another HTTP/1.x minor
}

// HTTP1 reports whether b starts with an HTTP/1.x request line:
//
//	method SP request-target SP "HTTP/1." DIGIT CRLF
//
// It is deliberately stricter than a server's parser, because a false Match
// sends another protocol to the HTTP stack: the method is a token (RFC 9110
// section 5.6.2) of at most 24 bytes, the target is visible ASCII, single
// spaces separate the parts, and the line ends with CRLF (a bare LF is
// NoMatch) within MaxRequestLine bytes. Leading empty lines are not skipped.
//
// It returns NoMatch at the first byte that rules the line out, NeedMore while
// b is a valid prefix, and Match with the parts once the CRLF is seen.
func HTTP1(b []byte) (Result, RequestLine) {
	i := 0
	for i < len(b) && i <= maxMethod && h1.IsTchar(b[i]) {
		i++
	}
	method := i
	switch {
	case method > maxMethod:
		return NoMatch, RequestLine{}
	case i == len(b):
		return NeedMore, RequestLine{}
	case method == 0 || b[i] != ' ':
		return NoMatch, RequestLine{}
	}
	i++

	// The target must end early enough to leave room for " HTTP/1.x\r\n"
	// (11 bytes), which keeps the whole line within MaxRequestLine.
	const targetLimit = MaxRequestLine - 11
	targetStart := i
	for i < len(b) && b[i] > ' ' && b[i] < 0x7f {
		if i == targetLimit {
			return NoMatch, RequestLine{}
		}
		i++
	}
	targetEnd := i
	switch {
	case i == len(b):
		return NeedMore, RequestLine{}
	case targetEnd == targetStart || b[i] != ' ':
		return NoMatch, RequestLine{}
	}
	i++

	// "HTTP/1.x\r\n": a fixed pattern with one digit wildcard at index 7.
	const version = "HTTP/1.?\r\n"
	protoStart := i
	for k := 0; k < len(version); k, i = k+1, i+1 {
		if i == len(b) {
			return NeedMore, RequestLine{}
		}
		if version[k] == '?' {
			if b[i] < '0' || b[i] > '9' {
				return NoMatch, RequestLine{}
			}
		} else if b[i] != version[k] {
			return NoMatch, RequestLine{}
		}
	}
	return Match, RequestLine{
		Method: string(b[:method]),
		Target: string(b[targetStart:targetEnd]),
		Proto:  string(b[protoStart : i-2]),
	}
}

// H2Preface reports whether b starts with the HTTP/2 client connection
// preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": NeedMore for a proper prefix of
// it, Match when it is complete, NoMatch at the first differing byte.
func H2Preface(b []byte) Result {
	return prefixOf(b, h2Preface)
}

// HTTP1Attempt tells, of bytes that neither HTTP1 nor H2Preface matches,
// whether they are an HTTP/1 request all the same, a malformed one (Match),
// or not HTTP at all (NoMatch). It reads the first line that is not empty,
// up to its LF: Match when that line is text and names an HTTP/1 version
// (" HTTP/1."), NoMatch when it names none or at the first byte that is
// not text (a control byte other than HTAB and CR: TLS, binary protocols),
// NeedMore while the line is text and not yet ended.
//
// The difference is whom an answer helps: an HTTP/1 client can read an
// HTTP/1 400, anything else reads it as garbage. A connection that opens
// with a broken HTTP/2 preface, in particular, is to be closed (RFC 9113
// section 3.4).
func HTTP1Attempt(b []byte) Result {
	i := 0
	for i < len(b) {
		// Empty lines before a request line (RFC 9112 section 2.2).
		if b[i] == '\n' {
			i++
		} else if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			i += 2
		} else {
			break
		}
	}
	start := i
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\n':
			if bytes.Contains(b[start:i], []byte(" HTTP/1.")) {
				return Match
			}
			return NoMatch
		case c < ' ' && c != '\t' && c != '\r', c == 0x7f:
			return NoMatch
		}
	}
	return NeedMore
}
