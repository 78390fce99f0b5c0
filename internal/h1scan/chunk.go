package h1scan

// chunkLine reads chunk-size lines and the CRLF after chunk data.
func (s *Scanner) chunkLine(c byte) *Error {
	if s.state == sChunkSize || s.state == sChunkExt {
		if s.lineLen++; s.lineLen > maxChunkLine {
			return bad("chunk-size line too long")
		}
	}
	switch s.state {
	case sChunkSize:
		switch {
		case hexValue(c) >= 0:
			if s.digits++; s.digits > maxChunkDigits {
				return bad("chunk size too large")
			}
			s.remaining = s.remaining<<4 | int64(hexValue(c))
		case s.digits == 0:
			return bad("chunk size is not hexadecimal")
		case c == ';' || c == ' ' || c == '\t':
			s.state, s.extSemi = sChunkExt, c == ';'
		case c == '\r':
			s.state = sChunkSizeLF
		default:
			return bad("chunk size is not hexadecimal")
		}
	case sChunkExt:
		switch {
		case c == '\r':
			s.state = sChunkSizeLF
		case !s.extSemi && c == ';':
			s.extSemi = true
		case !s.extSemi && c != ' ' && c != '\t':
			return bad("garbage after a chunk size")
		case c == '\t' || c >= ' ' && c != 0x7f:
		default:
			return bad("control byte %#02x in a chunk extension", c)
		}
	case sChunkSizeLF:
		if c != '\n' {
			return bad("bare CR after a chunk size")
		}
		if s.remaining == 0 {
			// The last chunk: trailer fields, then the empty line.
			s.trailers, s.state, s.headLen = true, sFieldStart, 0
			return nil
		}
		s.state = sChunkData
	case sChunkDataCR:
		if c != '\r' {
			return bad("chunk data longer than its size")
		}
		s.state = sChunkDataLF
	case sChunkDataLF:
		if c != '\n' {
			return bad("bare CR after chunk data")
		}
		s.state, s.digits, s.lineLen, s.remaining = sChunkSize, 0, 0, 0
	}
	return nil
}

func hexValue(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
