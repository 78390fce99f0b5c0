package h1

import (
	"bytes"
	"encoding/binary"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// Byte classes, built once at init and only read after.
const (
	cToken   uint8 = 1 << iota // tchar (RFC 9110 section 5.6.2)
	cValue                     // field-vchar, SP or HTAB: may stand in a value
	cVisible                   // 0x21-0x7e: may stand in a request target
)

var class = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		if IsTchar(byte(c)) {
			t[c] |= cToken
		}
		if c == ' ' || c == '\t' || c > ' ' && c != 0x7f {
			t[c] |= cValue
		}
		if c > ' ' && c < 0x7f {
			t[c] |= cVisible
		}
	}
	return t
}()

// IsTchar reports whether c may appear in a token (RFC 9110 section
// 5.6.2): a method or a field name.
func IsTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// equalFold compares ASCII case-insensitively. bytes.EqualFold would not
// do: it folds Unicode too, and "chun\u212Aed" (KELVIN SIGN) must not read
// as "chunked" here while other parsers read it as garbage.
// EqualFold reports whether b equals s, ASCII case-insensitively (field
// names and tokens are ASCII; no Unicode folding, such as the Kelvin
// sign's, may make "chunked" of another word).
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

// cutByte splits b around the first c.
func cutByte(b []byte, c byte) (before, after []byte, found bool) {
	if i := bytes.IndexByte(b, c); i >= 0 {
		return b[:i], b[i+1:], true
	}
	return b, nil, false
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

func trimOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isOWS(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// maxLengthDigits keeps a Content-Length within 60 bits.
const maxLengthDigits = 18

// parseLength reads a Content-Length of plain digits, or -1.
func parseLength(v []byte) int64 {
	if len(v) == 0 || len(v) > maxLengthDigits {
		return -1
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// parser holds one parse's state. It lives on the caller's stack.
type parser struct {
	h    *Head
	buf  []byte // the caller's buffer cut to the head limit
	more bool   // the caller's buffer goes on past buf
	resp bool   // response rules
	code perr.Code

	// Facts gathered from the fields.
	upgradeField bool
	connClose    bool
	connKeep     bool
	connUpgrade  bool
	te           bool // a Transfer-Encoding field was seen
	teFinal      bool // responses: the last coding seen is chunked
}

// fail refuses the head with the parser's code and its usual status.
func (p *parser) fail(format string, args ...any) *Error {
	return refuse(p.code, statusOf(p.code), format, args...)
}

// short is the outcome of running out of bytes at the head limit or at the
// end of the caller's buffer.
func (p *parser) short() error {
	if !p.more {
		return ErrNeedMore
	}
	if p.resp {
		return p.fail("response head larger than %d bytes", len(p.buf))
	}
	return refuse(perr.RequestHeadersTooLarge, 431, "request head larger than %d bytes", len(p.buf))
}

// fields reads field lines from buf[i:] through the empty line that ends
// the head and returns the index after it.
func (p *parser) fields(i int) (int, error) {
	b := p.buf
	for {
		if i >= len(b) {
			return 0, p.short()
		}
		switch b[i] {
		case '\r':
			if i+1 >= len(b) {
				return 0, p.short()
			}
			if b[i+1] != '\n' {
				return 0, p.fail("bare CR in the head")
			}
			return i + 2, nil
		case '\n':
			if p.resp {
				return i + 1, nil
			}
		}
		f, next, err := p.fieldLine(i)
		if err != nil {
			return 0, err
		}
		p.h.Fields = append(p.h.Fields, f)
		if err := p.field(p.h.Bytes(f.Name), p.h.Bytes(f.Value), f.Value); err != nil {
			return 0, err
		}
		i = next
	}
}

// fieldLine reads the field line at buf[i:] and returns it and the index
// after it. A trailer line is checked by the same code.
func (p *parser) fieldLine(i int) (Field, int, error) {
	b := p.buf
	switch c := b[i]; {
	case isOWS(c):
		// obs-fold: another parser would join it to the previous value,
		// so refusing it is the only reading all agree on.
		return Field{}, 0, p.fail("obsolete line folding in the head")
	case class[c]&cToken == 0:
		return Field{}, 0, p.fail("field name has byte %#02x", c)
	}
	name := i
	for i < len(b) && class[b[i]]&cToken != 0 {
		i++
	}
	if i >= len(b) {
		return Field{}, 0, p.short()
	}
	if b[i] != ':' {
		// Includes "Name :", which RFC 9112 section 5.1 has a server
		// refuse: some parsers drop the space and some keep it.
		return Field{}, 0, p.fail("field name has byte %#02x", b[i])
	}
	nameEnd := i
	i++
	for i < len(b) && isOWS(b[i]) {
		i++
	}
	val := i
	i = scanValue(b, i)
	if i >= len(b) {
		return Field{}, 0, p.short()
	}
	end := i
	switch b[i] {
	case '\r':
		if i+1 >= len(b) {
			return Field{}, 0, p.short()
		}
		if b[i+1] != '\n' {
			return Field{}, 0, p.fail("bare CR in the head")
		}
		i += 2
	case '\n':
		if !p.resp {
			return Field{}, 0, p.fail("bare LF in the head")
		}
		i++
	default:
		return Field{}, 0, p.fail("control byte %#02x in a field value", b[i])
	}
	for end > val && isOWS(b[end-1]) {
		end--
	}
	return Field{
		Name:  Span{uint32(name), uint32(nameEnd - name)},
		Value: Span{uint32(val), uint32(end - val)},
	}, i, nil
}

// scanValue returns the index of the first byte at or after i that may not
// stand in a field value. Eight bytes at a time: a value is most of a head.
func scanValue(b []byte, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		// A byte below 0x20 (HTAB among them) or equal to 0x7f: let the
		// byte loop below sort these eight out.
		lt := (x - ones*0x20) &^ x
		del := x ^ ones*0x7f
		eq := (del - ones) &^ del
		if (lt|eq)&highs != 0 {
			break
		}
	}
	for i < len(b) && class[b[i]]&cValue != 0 {
		i++
	}
	return i
}

// field applies what one field line says about framing and the connection.
// Names are told apart by length first: most fields are none of these.
func (p *parser) field(name, v []byte, vs Span) error {
	h := p.h
	switch len(name) {
	case 4:
		if !p.resp && EqualFold(name, "host") {
			if h.HasHost {
				return p.fail("Host sent twice")
			}
			if !ValidHost(v) {
				return p.fail("Host is not a host name or address")
			}
			h.Host, h.HasHost = vs, true
		}
	case 6:
		if !p.resp && EqualFold(name, "expect") && len(v) > 0 {
			if !EqualFold(v, "100-continue") {
				return refuse(perr.ExpectationFailed, 417, "Expect other than 100-continue")
			}
			h.Expect100 = true
		}
	case 7:
		if EqualFold(name, "upgrade") {
			p.upgradeField = p.upgradeField || len(v) > 0
		} else if !p.resp && EqualFold(name, "trailer") {
			if ListHas(v, "content-length") || ListHas(v, "transfer-encoding") || ListHas(v, "trailer") {
				return p.fail("Trailer names a framing field")
			}
		}
	case 10:
		if EqualFold(name, "connection") {
			p.connClose = p.connClose || ListHas(v, "close")
			p.connKeep = p.connKeep || ListHas(v, "keep-alive")
			p.connUpgrade = p.connUpgrade || ListHas(v, "upgrade")
		}
	case 14:
		if EqualFold(name, "content-length") {
			return p.contentLength(v)
		}
	case 17:
		if EqualFold(name, "transfer-encoding") {
			return p.transferEncoding(v)
		}
	}
	return nil
}

func (p *parser) contentLength(v []byte) error {
	h := p.h
	if !p.resp {
		// One plain number per field.
		n := parseLength(v)
		switch {
		case len(v) == 0:
			return p.fail("empty Content-Length")
		case n < 0:
			return p.fail("Content-Length is not a number of at most %d digits", maxLengthDigits)
		case h.ContentLength >= 0 && h.ContentLength != n:
			return p.fail("conflicting Content-Length values")
		}
		h.ContentLength = n
		return nil
	}
	// A response may repeat the same length in a list (RFC 9110 section
	// 8.6); an element that differs, is empty or is not a number is
	// refused.
	for {
		elem, rest, more := cutByte(v, ',')
		n := parseLength(trimOWS(elem))
		switch {
		case n < 0:
			return p.fail("Content-Length is not a number of at most %d digits", maxLengthDigits)
		case h.ContentLength >= 0 && h.ContentLength != n:
			return p.fail("conflicting Content-Length values")
		}
		h.ContentLength = n
		if !more {
			return nil
		}
		v = rest
	}
}

func (p *parser) transferEncoding(v []byte) error {
	if !p.resp {
		// Chunked is the only coding a client may send us,
		// in one field; anything else some app would frame differently.
		if p.te {
			return p.fail("Transfer-Encoding sent twice")
		}
		if !EqualFold(v, "chunked") {
			return p.fail("Transfer-Encoding other than chunked")
		}
		p.te, p.h.Chunked = true, true
		return nil
	}
	// A response may carry other codings under chunked: they stay in the
	// data. chunked must come last and once (RFC 9112 section 6.1); the
	// final coding is checked at the end of the head, across all fields.
	p.te = true
	for len(v) > 0 {
		var elem []byte
		elem, v, _ = cutByte(v, ',')
		if i := bytes.IndexByte(elem, ';'); i >= 0 {
			elem = elem[:i]
		}
		elem = trimOWS(elem)
		if len(elem) == 0 {
			continue // empty list elements are ignored (RFC 9110 section 5.6.1)
		}
		for _, c := range elem {
			if class[c]&cToken == 0 {
				return p.fail("Transfer-Encoding coding is not a token")
			}
		}
		if p.teFinal {
			return p.fail("Transfer-Encoding has a coding after chunked")
		}
		p.teFinal = EqualFold(elem, "chunked")
	}
	return nil
}

// hostByte marks the bytes a Host value may hold: a reg-name, an IP
// literal in brackets, a port, and the percent-encoding and sub-delims of
// RFC 3986's authority (with '@' for userinfo, which net/http lets through
// too). A '/', a space or a '?' would make the app read another name or
// path than the proxy routed.
var hostByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~:[]!$&'()*+,;=%@" {
		t[c] = true
	}
	return t
}()

// ValidHost reports whether v may be a Host value (or the authority of an
// absolute-form target).
func ValidHost(v []byte) bool {
	for _, c := range v {
		if !hostByte[c] {
			return false
		}
	}
	return true
}
