package h1scan

// step advances the head and chunk-line state machine by one byte.
func (s *Scanner) step(c byte) *Error {
	switch s.state {
	case sStart, sStartLF, sMethod, sTarget, sVersion, sPreface:
		return s.requestLine(c)
	case sFieldStart, sName, sValue, sValueLF, sHeadLF:
		var err *Error
		if s.headLen++; s.headLen > s.maxHead {
			err = &Error{Status: 431, Reason: "request header too large"}
		} else {
			err = s.fieldLine(c)
		}
		if err != nil && s.trailers {
			err.InBody = true
		}
		return err
	default:
		if err := s.chunkLine(c); err != nil {
			err.InBody = true
			return err
		}
	}
	return nil
}

// requestLine reads the request line, and the HTTP/2 preface on a
// connection's first bytes.
func (s *Scanner) requestLine(c byte) *Error {
	switch s.state {
	case sStart:
		if s.first && c == h2Preface[0] {
			s.state, s.prefaceIdx = sPreface, 0
			return s.requestLine(c)
		}
		if c == '\r' {
			if s.emptyLines++; s.emptyLines > 1 || s.first || !s.afterPost {
				return bad("empty line before the request line")
			}
			s.state = sStartLF
			return nil
		}
		s.first = false
		s.headLen, s.lineLen = 0, 0
		s.state = sMethod
		return s.requestLine(c)
	case sStartLF:
		if c != '\n' {
			return bad("bare CR before the request line")
		}
		s.state = sStart
		return nil
	case sPreface:
		return s.preface(c)
	}
	if s.headLen++; s.headLen > s.maxHead {
		return &Error{Status: 431, Reason: "request header too large"}
	}
	if s.lineLen++; s.lineLen > MaxRequestLine {
		return &Error{Status: 414, Reason: "request line too long"}
	}
	switch s.state {
	case sMethod:
		switch {
		case IsTchar(c):
			if s.lineLen > MaxMethod {
				return bad("method longer than %d bytes", MaxMethod)
			}
			s.post = s.lineLen <= 4 && c == "POST"[s.lineLen-1] && (s.lineLen == 1 || s.post)
		case c == ' ' && s.lineLen > 1:
			s.post = s.post && s.lineLen == 5
			s.state, s.targetLen = sTarget, 0
		default:
			return bad("method is not a token (byte %#02x)", c)
		}
	case sTarget:
		switch {
		case c > ' ' && c < 0x7f:
			s.targetLen++
		case c == ' ' && s.targetLen > 0:
			s.state, s.verIdx = sVersion, 0
		default:
			return bad("request target has byte %#02x", c)
		}
	case sVersion:
		const version = "HTTP/1.?\r\n"
		want := version[s.verIdx]
		switch {
		case want == '?':
			// A digit, never the placeholder itself.
			if c < '0' || c > '9' {
				return bad("request line does not end in HTTP/1.x CRLF")
			}
			s.version = c
		case want == '\n' && c != '\n':
			return bad("bare CR after the request line")
		case want != c:
			return bad("request line does not end in HTTP/1.x CRLF")
		}
		if s.verIdx++; s.verIdx == len(version) {
			s.state = sFieldStart
		}
	}
	return nil
}

// preface matches the HTTP/2 connection preface; a connection that only
// starts like it ("P...") is a request whose bytes are replayed through
// the request-line machine.
func (s *Scanner) preface(c byte) *Error {
	if c == h2Preface[s.prefaceIdx] {
		if s.prefaceIdx++; s.prefaceIdx == len(h2Preface) {
			s.state, s.mode = sDone, ModeH2
		}
		return nil
	}
	s.first = false
	s.state = sStart
	for _, b := range []byte(h2Preface[:s.prefaceIdx]) {
		if err := s.step(b); err != nil {
			return err
		}
	}
	return s.step(c)
}
