package h1

import (
	"encoding/binary"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// ParseRequest parses the request head at the start of buf into h. It
// returns the head's length (the body starts at buf[n:]), ErrNeedMore, or
// an *Error. h is valid only when err is nil.
//
// A refusal is reported as soon as the bytes in buf show it, complete head
// or not: a client sending garbage slowly is not waited for.
func ParseRequest(buf []byte, h *Head, lim Limits) (int, error) {
	h.reset(buf)
	p := parser{h: h, buf: buf, code: perr.MalformedRequest}
	if m := lim.maxHead(); len(buf) > m {
		p.buf, p.more = buf[:m], true
	}
	i, err := p.requestLine()
	if err != nil {
		return 0, err
	}
	n, err := p.fields(i)
	if err != nil {
		return 0, err
	}
	if err := p.endRequest(); err != nil {
		return 0, err
	}
	h.Buf = buf[:n:n]
	return n, nil
}

// SkipEmptyLine returns 2 if buf starts with CRLF, else 0. RFC 9112 section
// 2.2 has a server skip an empty line before a request line, for old
// clients that sent one after a POST body; net/http skips it after a POST
// only, and so does the caller: the rule depends on the previous request,
// which a head parser does not see.
func SkipEmptyLine(buf []byte) int {
	if len(buf) >= 2 && buf[0] == '\r' && buf[1] == '\n' {
		return 2
	}
	return 0
}

// requestLine reads METHOD SP target SP HTTP/1.x CRLF and returns the index
// after it.
func (p *parser) requestLine() (int, error) {
	// The line has a limit of its own within the head's: cut to it, so
	// that running out of bytes at the cut reads as the right refusal.
	b, lineCut := p.buf, false
	if len(b) > MaxRequestLine {
		b, lineCut = b[:MaxRequestLine], true
	}
	short := func() error {
		if lineCut {
			return refuse(perr.RequestLineTooLong, 414, "request line longer than %d bytes", MaxRequestLine)
		}
		return p.short()
	}
	h := p.h

	i := 0
	for i < len(b) && class[b[i]]&cToken != 0 {
		if i++; i > MaxMethod {
			return 0, p.fail("method longer than %d bytes", MaxMethod)
		}
	}
	if i >= len(b) {
		return 0, short()
	}
	switch c := b[i]; {
	case i == 0 && (c == '\r' || c == '\n'):
		return 0, p.fail("empty line before the request line")
	case c != ' ' || i == 0:
		return 0, refuse(perr.InvalidMethod, statusOf(perr.InvalidMethod), "method is not a token (byte %#02x)", c)
	}
	h.Method = Span{0, uint32(i)}

	i++
	start := i
	i = scanTarget(b, i)
	if i >= len(b) {
		return 0, short()
	}
	if b[i] != ' ' || i == start {
		return 0, p.fail("request target has byte %#02x", b[i])
	}
	h.Target = Span{uint32(start), uint32(i - start)}

	i++
	const pattern = "HTTP/?.?\r\n"
	for k := range len(pattern) {
		if i+k >= len(b) {
			return 0, short()
		}
		switch c, want := b[i+k], pattern[k]; {
		case want == '?':
			if c < '0' || c > '9' {
				return 0, p.fail("request line does not end in HTTP/1.x CRLF")
			}
		case want == '\n' && c != '\n':
			return 0, p.fail("bare CR after the request line")
		case c != want:
			return 0, p.fail("request line does not end in HTTP/1.x CRLF")
		}
	}
	if b[i+5] != '1' {
		return 0, refuse(p.code, 505, "HTTP version not supported")
	}
	// A higher minor version is read as the highest one implemented
	// (RFC 9110 section 2.5): HTTP/1.2 to 1.9 are served as 1.1.
	h.Minor = min(b[i+7]-'0', 1)
	return i + len(pattern), nil
}

// scanTarget returns the index of the first byte at or after i that is not
// visible ASCII, eight bytes at a time: long targets are common.
func scanTarget(b []byte, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		// A byte at or below SP, 0x7f, or with the high bit set.
		le := (x - ones*0x21) &^ x
		del := x ^ ones*0x7f
		eq := (del - ones) &^ del
		if (le|eq|x)&highs != 0 {
			break
		}
	}
	for i < len(b) && class[b[i]]&cVisible != 0 {
		i++
	}
	return i
}

// endRequest checks what only the whole head shows.
func (p *parser) endRequest() error {
	h := p.h
	switch {
	case h.Chunked && h.ContentLength >= 0:
		return p.fail("both Content-Length and Transfer-Encoding")
	case h.Chunked && h.Minor == 0:
		// An HTTP/1.0 app would read the chunks as the next request.
		return p.fail("Transfer-Encoding in an HTTP/1.0 request")
	case !h.HasHost && h.Minor == 1:
		return p.fail("no Host in an HTTP/1.1 request")
	}
	h.Close = p.connClose || h.Minor == 0 && !p.connKeep
	h.Upgrade = p.upgradeField && p.connUpgrade
	return nil
}

// BodyKind is how a message's body is framed.
type BodyKind uint8

const (
	// BodyNone: no body.
	BodyNone BodyKind = iota
	// BodyLength: ContentLength bytes.
	BodyLength
	// BodyChunked: the chunked coding (see ChunkedReader).
	BodyChunked
	// BodyUntilClose: a response read until the connection closes.
	BodyUntilClose
)

func (k BodyKind) String() string {
	switch k {
	case BodyNone:
		return "none"
	case BodyLength:
		return "length"
	case BodyChunked:
		return "chunked"
	case BodyUntilClose:
		return "until-close"
	}
	return "BodyKind(?)"
}

// RequestBody is how a parsed request's body is framed (RFC 9112 section
// 6.3): a request never runs until close.
func RequestBody(h *Head) BodyKind {
	switch {
	case h.Chunked:
		return BodyChunked
	case h.ContentLength > 0:
		return BodyLength
	}
	return BodyNone
}
