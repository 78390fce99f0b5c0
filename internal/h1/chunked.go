package h1

import (
	"bufio"
	"io"
	"strconv"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// Chunk framing limits.
const (
	// maxChunkLine bounds a chunk-size line with its extensions, CR
	// included: an attacker's extensions are bytes read for no data.
	maxChunkLine = 4 << 10
	// maxChunkDigits keeps a chunk size within 60 bits.
	maxChunkDigits = 15
)

// ChunkedReader decodes a chunked body strictly: a size
// of 1 to 15 hex digits (no sign, no "0x", nothing before it), optionally
// SP/HTAB and extensions after ';' without control bytes but HTAB, the line
// within 4 KiB; CRLF after each size line and each chunk's data; then
// trailer fields by the head's field rules, within the trailer limit, and
// the final CRLF.
//
// It never consumes a byte of r past the body's final CRLF, so the next
// message on a keep-alive connection stays in r. Framing errors are *Error
// with the code given (perr.MalformedRequest for a client's body,
// perr.MalformedResponse for a machine's); a connection that ends inside
// the body is io.ErrUnexpectedEOF; r's other errors are returned as they
// are. Errors are sticky.
//
// The zero value is not ready: use NewChunkedReader or Reset. A
// ChunkedReader may be reused with Reset, which keeps its trailer buffer.
type ChunkedReader struct {
	r          *bufio.Reader
	code       perr.Code
	maxTrailer int
	state      chunkState
	left       int64  // data bytes left in the current chunk
	trailers   []byte // the trailer section as read, final CRLF included
	err        error
}

type chunkState uint8

const (
	chSize     chunkState = iota // at a chunk-size line
	chData                       // in chunk data
	chDataEnd                    // at the CRLF after chunk data
	chTrailers                   // in the trailer section
	chDone                       // past the final CRLF
)

// NewChunkedReader returns a ChunkedReader of r. maxTrailer bounds the
// trailer section in bytes, its final CRLF included; 0 means
// DefaultMaxHead.
func NewChunkedReader(r *bufio.Reader, code perr.Code, maxTrailer int) *ChunkedReader {
	c := new(ChunkedReader)
	c.Reset(r, code, maxTrailer)
	return c
}

// Reset makes c read a new body from r.
func (c *ChunkedReader) Reset(r *bufio.Reader, code perr.Code, maxTrailer int) {
	if maxTrailer <= 0 {
		maxTrailer = DefaultMaxHead
	}
	*c = ChunkedReader{r: r, code: code, maxTrailer: maxTrailer, trailers: c.trailers[:0]}
}

// Trailers returns the trailer field lines read after the last chunk, each
// "Name: value\r\n", or nil if there were none. It is valid after Read
// returned io.EOF, until the next Reset.
func (c *ChunkedReader) Trailers() []byte {
	if c.state != chDone || len(c.trailers) <= 2 {
		return nil
	}
	return c.trailers[:len(c.trailers)-2]
}

// Read reads data bytes of the body; io.EOF after the trailer section.
func (c *ChunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for c.state != chData {
		var err error
		switch c.state {
		case chSize:
			err = c.sizeLine()
		case chDataEnd:
			err = c.dataEnd()
		case chTrailers:
			err = c.trailerSection()
		case chDone:
			return 0, io.EOF
		}
		if err != nil {
			c.err = err
			return 0, err
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	// bufio.Reader.Read returns at most len(p) bytes and reads the
	// connection straight into p when its buffer is empty: never past the
	// chunk.
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left == 0 {
		c.state = chDataEnd
	}
	if err != nil && c.left > 0 {
		c.err = unexpected(err)
		return n, c.err
	}
	return n, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (c *ChunkedReader) fail(format string, args ...any) *Error {
	return refuse(c.code, statusOf(c.code), format, args...)
}

// sizeLine reads a chunk-size line byte by byte, as a state machine
// does: the line is short, and reading it whole first would need a buffer
// the size of the limit.
func (c *ChunkedReader) sizeLine() error {
	var (
		size   int64
		digits int
		line   int
		ext    bool // past the size: in BWS or extensions
		semi   bool // an extension's ';' was seen
	)
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			return unexpected(err)
		}
		if line++; line > maxChunkLine {
			return c.fail("chunk-size line longer than %d bytes", maxChunkLine)
		}
		switch {
		case b == '\r':
			if digits == 0 {
				return c.fail("chunk size is not hexadecimal")
			}
			if b, err = c.r.ReadByte(); err != nil {
				return unexpected(err)
			}
			if b != '\n' {
				return c.fail("bare CR after a chunk size")
			}
			if size == 0 {
				c.state = chTrailers
			} else {
				c.state, c.left = chData, size
			}
			return nil
		case !ext && hexValue(b) >= 0:
			if digits++; digits > maxChunkDigits {
				return c.fail("chunk size longer than %d hex digits", maxChunkDigits)
			}
			size = size<<4 | int64(hexValue(b))
		case !ext && digits > 0 && (b == ';' || isOWS(b)):
			ext, semi = true, b == ';'
		case !ext:
			return c.fail("chunk size is not hexadecimal")
		case !semi && b == ';':
			semi = true
		case !semi && !isOWS(b):
			return c.fail("garbage after a chunk size")
		case b == '\t' || b >= ' ' && b != 0x7f:
		default:
			return c.fail("control byte %#02x in a chunk extension", b)
		}
	}
}

// dataEnd reads the CRLF after a chunk's data.
func (c *ChunkedReader) dataEnd() error {
	b, err := c.r.ReadByte()
	if err != nil {
		return unexpected(err)
	}
	if b != '\r' {
		return c.fail("chunk data longer than its size")
	}
	if b, err = c.r.ReadByte(); err != nil {
		return unexpected(err)
	}
	if b != '\n' {
		return c.fail("bare CR after chunk data")
	}
	c.state = chSize
	return nil
}

// trailerSection reads trailer field lines through the empty line,
// checking each by the head's field rules (fields, with request
// strictness: CRLF only).
func (c *ChunkedReader) trailerSection() error {
	c.trailers = c.trailers[:0]
	for {
		start := len(c.trailers)
		for {
			// ReadSlice stops at the LF: nothing past the line is
			// consumed. A line longer than r's buffer comes in pieces.
			piece, err := c.r.ReadSlice('\n')
			if len(c.trailers)+len(piece) > c.maxTrailer {
				return c.fail("trailer section larger than %d bytes", c.maxTrailer)
			}
			c.trailers = append(c.trailers, piece...)
			if err == nil {
				break
			}
			if err != bufio.ErrBufferFull {
				return unexpected(err)
			}
		}
		line := c.trailers[start:]
		if len(line) == 2 && line[0] == '\r' {
			c.state = chDone
			return nil
		}
		if err := c.checkTrailer(line); err != nil {
			return err
		}
	}
}

// checkTrailer checks one trailer line, LF included, with the code that
// checks a head's field lines, with request strictness (CRLF only). The
// fields' meanings are not applied: a trailer frames nothing, and what the
// caller merges into a head is the caller's to decide (RFC 9110 section
// 6.5.1).
func (c *ChunkedReader) checkTrailer(line []byte) error {
	p := parser{buf: line, code: c.code}
	_, n, err := p.fieldLine(0)
	if err == nil && n != len(line) || err == ErrNeedMore {
		// ReadSlice ends the line at its LF: this cannot happen.
		return c.fail("malformed trailer line")
	}
	if e, ok := err.(*Error); ok {
		e.Reason = "trailer: " + e.Reason
		return e
	}
	return err
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

// AppendChunk appends p as one chunk: its size in hex, CRLF, p, CRLF. An
// empty p appends nothing, since a chunk of size 0 would end the body.
func AppendChunk(dst, p []byte) []byte {
	if len(p) == 0 {
		return dst
	}
	dst = strconv.AppendUint(dst, uint64(len(p)), 16)
	dst = append(dst, '\r', '\n')
	dst = append(dst, p...)
	return append(dst, '\r', '\n')
}

// AppendLastChunk appends the last chunk, then trailers (field lines, each
// ending in CRLF, or nil), then the final CRLF.
func AppendLastChunk(dst, trailers []byte) []byte {
	dst = append(dst, '0', '\r', '\n')
	dst = append(dst, trailers...)
	return append(dst, '\r', '\n')
}
