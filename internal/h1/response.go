package h1

import (
	"net/http"
	"strconv"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// ParseResponse parses a machine's response head at the start of buf into
// h. method is the request's method: a response to HEAD (or a 2xx to
// CONNECT) has no body, which decides h.Close for a response without a
// length. It returns the head's length, ErrNeedMore, or an *Error whose
// Code is perr.MalformedResponse. h is valid only when err is nil.
//
// An interim response (1xx but 101) is one head: the caller parses the
// final response after it with another call.
func ParseResponse(buf []byte, h *Head, method []byte, lim Limits) (int, error) {
	h.reset(buf)
	p := parser{h: h, buf: buf, resp: true, code: perr.MalformedResponse}
	if m := lim.maxHead(); len(buf) > m {
		p.buf, p.more = buf[:m], true
	}
	i, err := p.statusLine()
	if err != nil {
		return 0, err
	}
	n, err := p.fields(i)
	if err != nil {
		return 0, err
	}
	if err := p.endResponse(method); err != nil {
		return 0, err
	}
	h.Buf = buf[:n:n]
	return n, nil
}

// statusLine reads HTTP/1.x SP status [SP reason] (CR)LF and returns the
// index after it.
func (p *parser) statusLine() (int, error) {
	b, h := p.buf, p.h
	const pattern = "HTTP/?.? ???"
	for k := range len(pattern) {
		if k >= len(b) {
			return 0, p.short()
		}
		switch c, want := b[k], pattern[k]; {
		case want == '?':
			if c < '0' || c > '9' {
				return 0, p.fail("status line is not HTTP/1.x and a 3-digit status")
			}
		case c != want:
			return 0, p.fail("status line is not HTTP/1.x and a 3-digit status")
		}
	}
	if b[5] != '1' {
		return 0, p.fail("response version is not HTTP/1.x")
	}
	// HTTP/1.2 and later minors are read as the highest this side speaks
	// (RFC 9110 section 2.5).
	h.Minor = min(b[7]-'0', 1)
	h.Status = int(b[9]-'0')*100 + int(b[10]-'0')*10 + int(b[11]-'0')
	if h.Status < 100 || h.Status > 599 {
		return 0, p.fail("status code out of range")
	}
	i := len(pattern)
	if i >= len(b) {
		return 0, p.short()
	}
	switch b[i] {
	case '\r', '\n':
		// No reason phrase, and not even its SP: RFC 9112 section 4 has a
		// client accept that.
		h.Reason = Span{uint32(i), 0}
	case ' ':
		i++
		start := i
		i = scanValue(b, i)
		h.Reason = Span{uint32(start), uint32(i - start)}
	default:
		return 0, p.fail("status code is not followed by SP")
	}
	if i >= len(b) {
		return 0, p.short()
	}
	switch b[i] {
	case '\n':
		return i + 1, nil
	case '\r':
		if i+1 >= len(b) {
			return 0, p.short()
		}
		if b[i+1] != '\n' {
			return 0, p.fail("bare CR in the status line")
		}
		return i + 2, nil
	}
	return 0, p.fail("control byte %#02x in the reason phrase", b[i])
}

// endResponse checks what only the whole head shows.
func (p *parser) endResponse(method []byte) error {
	h := p.h
	if p.te {
		switch {
		case h.ContentLength >= 0:
			return p.fail("both Content-Length and Transfer-Encoding")
		case h.Minor == 0:
			// RFC 9112 section 6.1: the framing of an HTTP/1.0 message
			// with Transfer-Encoding is faulty.
			return p.fail("Transfer-Encoding in an HTTP/1.0 response")
		case !p.teFinal:
			// Read until close, says RFC 9112 section 6.3; but a response
			// that names codings and not chunked last is broken, and its
			// end would be a guess.
			return p.fail("Transfer-Encoding whose final coding is not chunked")
		}
		h.Chunked = true
	}
	h.Upgrade = p.upgradeField
	h.Close = p.connClose || h.Minor == 0 && !p.connKeep || ResponseBody(h, method) == BodyUntilClose
	return nil
}

// ResponseBody is how a parsed response's body is framed, by RFC 9112
// section 6.3: a response to HEAD, a 1xx, 204 or 304 has none whatever its
// fields say, and so has a 2xx to CONNECT (the connection becomes a
// tunnel); then chunked, then Content-Length; else the body runs until the
// connection closes.
func ResponseBody(h *Head, method []byte) BodyKind {
	switch {
	case string(method) == http.MethodHead, h.Status < 200, h.Status == 204, h.Status == 304:
		return BodyNone
	case string(method) == http.MethodConnect && h.Status < 300:
		return BodyNone
	case h.Chunked:
		return BodyChunked
	case h.ContentLength > 0:
		return BodyLength
	case h.ContentLength == 0:
		return BodyNone
	}
	return BodyUntilClose
}

// AppendStatusLine appends "HTTP/1.minor status reason\r\n". An empty
// reason is replaced by the standard phrase for status, if it has one.
// Control bytes in reason become SP, so a reason copied from elsewhere
// cannot end the line early.
func AppendStatusLine(dst []byte, minor uint8, status int, reason []byte) []byte {
	dst = append(dst, "HTTP/1."...)
	dst = append(dst, '0'+min(minor, 1), ' ')
	if status >= 0 && status < 1000 {
		dst = append(dst, byte('0'+status/100), byte('0'+status/10%10), byte('0'+status%10))
	} else {
		dst = strconv.AppendInt(dst, int64(status), 10)
	}
	dst = append(dst, ' ')
	if len(reason) == 0 {
		dst = append(dst, http.StatusText(status)...)
	} else {
		dst = appendSafe(dst, reason)
	}
	return append(dst, '\r', '\n')
}

// AppendField appends "name: value\r\n". name must be a token (the caller's
// constant, or a name a parse accepted); control bytes but HTAB in value
// become SP, so no value can split the head.
func AppendField(dst []byte, name, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ':', ' ')
	dst = appendSafe(dst, value)
	return append(dst, '\r', '\n')
}

// AppendFieldString is AppendField for strings.
func AppendFieldString(dst []byte, name, value string) []byte {
	dst = append(dst, name...)
	dst = append(dst, ':', ' ')
	dst = appendSafe(dst, value)
	return append(dst, '\r', '\n')
}

// appendSafe appends v with control bytes but HTAB turned to SP.
func appendSafe[T string | []byte](dst []byte, v T) []byte {
	start := len(dst)
	dst = append(dst, v...)
	for i := start; i < len(dst); i++ {
		if c := dst[i]; c < ' ' && c != '\t' || c == 0x7f {
			dst[i] = ' '
		}
	}
	return dst
}
