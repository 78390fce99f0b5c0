package httpproxy

import (
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// bodySender writes a request's head and body to a machine connection on
// a goroutine of its own, for the length of one request: the response is
// read meanwhile, since a machine may answer before it has read the whole
// body (a 413, an early error, a stream).
type bodySender struct {
	wg  sync.WaitGroup
	err error
	// exited and finished are set when the writer returns, finished
	// when it wrote the whole body.
	exited, finished atomic.Bool
	// fromBody: the error came from reading the body, not writing it.
	fromBody bool
}

// sourceReader notes which side of the copy failed.
type sourceReader struct {
	r io.Reader
	s *bodySender
}

func (r *sourceReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.s.fromBody = true
	}
	return n, err
}

// chunkBufs lends the buffers bodies are copied through.
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func startBody(conn net.Conn, head []byte, body io.Reader, length int64) *bodySender {
	s := &bodySender{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.err = writeBody(conn, head, &sourceReader{r: body, s: s}, length)
		if s.fromBody {
			// The client's body failed (cut short, refused): the machine
			// would wait for the rest. Closing makes the wait for its
			// answer end; a failed write instead leaves the connection to
			// the reader, since the machine may have answered first.
			conn.Close()
		}
		s.finished.Store(s.err == nil)
		s.exited.Store(true)
	}()
	return s
}

// done reports whether the body was written whole, without waiting.
func (s *bodySender) done() bool { return s.exited.Load() && s.finished.Load() }

// wait waits for the writer and returns its error.
func (s *bodySender) wait() error {
	s.wg.Wait()
	return s.err
}

// chunkRoom is kept in front of each piece of a chunked body for its size
// line.
const chunkRoom = 18

// writeBody writes head, then the body framed by length: as it is when
// known, chunked when not (-1). The head goes out with the first piece of
// the body, so a small request is one write.
func writeBody(w io.Writer, head []byte, body io.Reader, length int64) error {
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	buf := *bp
	out := buf[:0]
	// A stream's head goes at once: its machine may answer before the
	// client sends a byte of body, and the client may wait for that.
	if len(head) > len(buf)/2 || length < 0 {
		if _, err := w.Write(head); err != nil {
			return err
		}
	} else {
		out = append(out, head...)
	}
	var sent int64
	for {
		start := len(out)
		if length < 0 {
			start += chunkRoom
		}
		room := buf[start : len(buf)-2]
		if length >= 0 && int64(len(room)) > length-sent {
			room = room[:length-sent]
		}
		var n int
		var err error
		if len(room) > 0 {
			n, err = body.Read(room)
		} else {
			err = io.EOF
		}
		if n > 0 {
			sent += int64(n)
			if length < 0 {
				out = strconv.AppendInt(out, int64(n), 16)
				out = append(out, '\r', '\n')
				out = out[:len(out)+copy(buf[len(out):], room[:n])]
				out = append(out, '\r', '\n')
			} else {
				out = out[:len(out)+n]
			}
		}
		if err == io.EOF {
			if length >= 0 && sent != length {
				return io.ErrUnexpectedEOF
			}
			if length < 0 {
				if len(out) > 0 {
					if _, err := w.Write(out); err != nil {
						return err
					}
				}
				_, err := w.Write([]byte("0\r\n\r\n"))
				return err
			}
			if len(out) > 0 {
				_, err := w.Write(out)
				return err
			}
			return nil
		}
		if err != nil {
			return err
		}
		// Write once the buffer is half full, or at once for a stream of
		// unknown length, whose pieces the machine may be waiting for.
		if len(out) >= len(buf)/2 || length < 0 && len(out) > 0 || length >= 0 && sent == length {
			if _, err := w.Write(out); err != nil {
				return err
			}
			out = buf[:0]
		}
	}
}
