package h1scan

// Fields whose values decide the framing.
const (
	fieldOther byte = iota
	fieldContentLength
	fieldTransferEncoding
	fieldUpgrade
	// Host is no framing field, but net/http refuses a request with two
	// or (in HTTP/1.1) none with a 400 of its own: refused here, it gets
	// the proxy's code instead.
	fieldHost
	// Expect: net/http answers any value but 100-continue with a 417 of
	// its own; refused here, it gets the proxy's code.
	fieldExpect
	// Trailer: net/http refuses one that names a framing field with a
	// 400 of its own; refused here, it gets the proxy's code.
	fieldTrailer
)

// fieldLine reads header (and trailer) field lines and the head's end.
func (s *Scanner) fieldLine(c byte) *Error {
	switch s.state {
	case sFieldStart:
		switch {
		case c == '\r':
			s.state = sHeadLF
		case c == ' ' || c == '\t':
			return bad("obsolete line folding in the header")
		case IsTchar(c):
			s.state, s.nameLen = sName, 0
			s.addName(c)
		default:
			return bad("header field name has byte %#02x", c)
		}
	case sName:
		switch {
		case IsTchar(c):
			s.addName(c)
		case c == ':':
			s.startValue()
		default:
			return bad("header field name has byte %#02x", c)
		}
	case sValue:
		switch {
		case c == '\r':
			s.state = sValueLF
		case c == ' ' || c == '\t':
			if s.valLen > 0 {
				s.valTrail++
			}
		case c == '\n':
			return bad("bare LF in the header")
		case c < ' ' || c == 0x7f:
			return bad("control byte %#02x in a header value", c)
		default:
			if err := s.valueByte(c); err != nil {
				return err
			}
		}
	case sValueLF:
		if c != '\n' {
			return bad("bare CR in the header")
		}
		if err := s.endField(); err != nil {
			return err
		}
		s.state = sFieldStart
	case sHeadLF:
		if c != '\n' {
			return bad("bare CR in the header")
		}
		return s.endHead()
	}
	return nil
}

// addName keeps the start of a field name, lowered, to recognise the
// framing fields; longer names are none of them.
func (s *Scanner) addName(c byte) {
	if s.nameLen < len(s.name) {
		s.name[s.nameLen] = lower(c)
	}
	s.nameLen++
}

func (s *Scanner) startValue() {
	s.state = sValue
	s.valLen, s.valTrail, s.clDigits, s.clCur = 0, 0, 0, 0
	s.expectOther = false
	s.field = fieldOther
	if s.trailers || s.nameLen > len(s.name) {
		return
	}
	switch string(s.name[:s.nameLen]) {
	case "content-length":
		s.field = fieldContentLength
	case "transfer-encoding":
		s.field = fieldTransferEncoding
	case "upgrade":
		s.field = fieldUpgrade
	case "host":
		s.field = fieldHost
	case "expect":
		s.field = fieldExpect
	case "trailer":
		s.field = fieldTrailer
		s.tokLen, s.tokBad = 0, false
	}
}

// valueByte takes a visible byte of a value; spaces seen since the last
// one are inside the value.
func (s *Scanner) valueByte(c byte) *Error {
	inner := s.valTrail
	s.valTrail = 0
	switch s.field {
	case fieldContentLength:
		if c < '0' || c > '9' || inner > 0 {
			return bad("Content-Length is not a number")
		}
		if s.clDigits++; s.clDigits > maxLengthDigits {
			return bad("Content-Length too large")
		}
		s.clCur = s.clCur*10 + int64(c-'0')
	case fieldTransferEncoding:
		if s.valLen+inner+1 > len(s.te) {
			return bad("Transfer-Encoding other than chunked")
		}
		for ; inner > 0; inner-- {
			s.te[s.valLen] = ' '
			s.valLen++
		}
		s.te[s.valLen] = lower(c)
	case fieldExpect:
		if inner > 0 || s.valLen >= len(continue100) || lower(c) != continue100[s.valLen] {
			s.expectOther = true
		}
	case fieldTrailer:
		if c == ',' {
			s.tokBad = s.tokBad || s.forbiddenTrailer()
			s.tokLen = 0
			break
		}
		if inner > 0 && s.tokLen > 0 {
			s.tokLen = len(s.tok) + 1 // spaces inside: no field name
		}
		if s.tokLen < len(s.tok) {
			s.tok[s.tokLen] = lower(c)
		}
		s.tokLen++
	}
	s.valLen += 1 + inner
	return nil
}

// endField applies a complete field line.
func (s *Scanner) endField() *Error {
	switch s.field {
	case fieldContentLength:
		if s.clDigits == 0 {
			return bad("empty Content-Length")
		}
		if s.length >= 0 && s.length != s.clCur {
			return bad("conflicting Content-Length values")
		}
		s.length = s.clCur
	case fieldTransferEncoding:
		if s.chunked {
			return bad("Transfer-Encoding sent twice")
		}
		if string(s.te[:s.valLen]) != "chunked" {
			return bad("Transfer-Encoding other than chunked")
		}
		s.chunked = true
	case fieldUpgrade:
		if s.valLen > 0 {
			s.upgrade = true
		}
	case fieldHost:
		if s.host {
			return bad("Host sent twice")
		}
		s.host = true
	case fieldExpect:
		if s.expectOther || (s.valLen > 0 && s.valLen != len(continue100)) {
			return &Error{Status: 417, Reason: "Expect other than 100-continue"}
		}
	case fieldTrailer:
		if s.tokBad || s.forbiddenTrailer() {
			return bad("Trailer names a framing field")
		}
	}
	return nil
}

// forbiddenTrailer reports whether the Trailer token just read names a
// field a trailer may not carry.
func (s *Scanner) forbiddenTrailer() bool {
	if s.tokLen > len(s.tok) {
		return false
	}
	switch string(s.tok[:s.tokLen]) {
	case "content-length", "transfer-encoding", "trailer":
		return true
	}
	return false
}

// continue100 is the one expectation HTTP defines, lowered.
const continue100 = "100-continue"

// endHead decides how the request's body is framed.
func (s *Scanner) endHead() *Error {
	if s.trailers {
		s.endRequest()
		return nil
	}
	switch {
	case s.chunked && s.length >= 0:
		return bad("both Content-Length and Transfer-Encoding")
	case s.chunked && s.version == '0':
		return bad("Transfer-Encoding in an HTTP/1.0 request")
	case !s.host && s.version != '0':
		return bad("no Host in an HTTP/1.1 request")
	case s.chunked:
		s.state, s.digits, s.lineLen = sChunkSize, 0, 0
	case s.length > 0:
		s.state, s.remaining = sBody, s.length
	default:
		s.endRequest()
	}
	return nil
}

// endRequest is reached at the end of a request's body.
func (s *Scanner) endRequest() {
	s.requests++
	upgrade := s.upgrade
	s.reset()
	if upgrade {
		s.state = sUpgrade
	}
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// IsTchar reports whether c may appear in an RFC 9110 token.
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
