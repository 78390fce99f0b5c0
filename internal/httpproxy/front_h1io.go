package httpproxy

import (
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/h1"
)

// h1Writer is the HTTP/1.1 front end's Responder. A response of known
// length is buffered and goes out at its end (a small one in one write
// with its head); one of unknown length is chunked, or delimited by the
// connection's close for an HTTP/1.0 client, and flushed as it comes.
type h1Writer struct {
	f       *H1Front
	minor   uint8
	head    bool // the request was HEAD
	closing bool // the connection closes after this response
	chunked bool
	// untilClose: the body's end is the connection's (HTTP/1.0 client,
	// unknown length).
	untilClose bool
	tunneled   bool
	err        error
	// mu orders a 100 Continue, sent by the body's reader, before the
	// response head; once the head is out no 100 may follow it.
	mu      sync.Mutex
	started bool
}

func (w *h1Writer) Proto() int { return 1 }

func (w *h1Writer) Interim(status int, fields []byte) error {
	if w.minor == 0 {
		return nil // HTTP/1.0 clients do not expect 1xx
	}
	b := w.f.bw
	b.Write(h1.AppendStatusLine(b.AvailableBuffer(), 1, status, nil))
	b.Write(fields)
	b.WriteString("\r\n")
	return w.fail(b.Flush())
}

func (w *h1Writer) Head(status int, fields []byte, length int64, bodyless bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.started = true
	f := w.f
	if f.draining.Load() {
		w.closing = true
	}
	b := f.bw
	b.Write(h1.AppendStatusLine(b.AvailableBuffer(), 1, status, nil))
	b.Write(fields)
	switch {
	case status == 101:
		b.WriteString("Connection: Upgrade\r\n")
	case status == 204 || status == 304 || status < 200:
	case length >= 0:
		b.WriteString("Content-Length: ")
		b.Write(strconv.AppendInt(b.AvailableBuffer(), length, 10))
		b.WriteString("\r\n")
	case bodyless:
	case w.minor == 1:
		w.chunked = true
		b.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		w.untilClose, w.closing = true, true
	}
	if status != 101 {
		switch {
		case w.closing:
			b.WriteString("Connection: close\r\n")
		case w.minor == 0:
			// An HTTP/1.0 client asked to keep the connection.
			b.WriteString("Connection: keep-alive\r\n")
		}
	}
	b.WriteString("\r\n")
	if status == 101 || length < 0 && !bodyless {
		return w.fail(b.Flush())
	}
	return w.err
}

func (w *h1Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.head {
		return len(p), nil
	}
	b := w.f.bw
	if w.chunked {
		b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(len(p)), 16))
		b.WriteString("\r\n")
		n, err := b.Write(p)
		b.WriteString("\r\n")
		return n, w.fail(err)
	}
	n, err := b.Write(p)
	return n, w.fail(err)
}

func (w *h1Writer) Flush() error { return w.fail(w.f.bw.Flush()) }

// End writes the end of the body; what is buffered goes out once the
// core is done (H1Front.serveOne), after the request was logged and
// counted, so that a client holding the whole response finds it in the
// metrics.
func (w *h1Writer) End(trailers []byte) error {
	b := w.f.bw
	if w.chunked && !w.head {
		b.WriteString("0\r\n")
		b.Write(trailers)
		b.WriteString("\r\n")
	}
	return w.err
}

func (w *h1Writer) fail(err error) error {
	if err != nil && w.err == nil {
		w.err = err
	}
	return w.err
}

// Tunnel hands over the client connection; bytes the client sent after
// its request head come first.
func (w *h1Writer) Tunnel() (net.Conn, error) {
	f := w.f
	w.tunneled = true
	if err := f.bw.Flush(); err != nil {
		return nil, err
	}
	return &tunnelSide{Conn: f.conn, r: f.br}, nil
}

// Cut makes a read of the body or a write of the response blocked on the
// client return now.
func (w *h1Writer) Cut(write bool) {
	if write {
		w.f.conn.SetWriteDeadline(aLongTimeAgo)
	} else {
		w.f.conn.SetReadDeadline(aLongTimeAgo)
	}
}

// sendContinue sends 100 Continue unless the response has begun.
func (w *h1Writer) sendContinue() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started || w.f.bw == nil {
		return nil
	}
	w.f.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	return w.f.bw.Flush()
}

// h1Body is a client's request body: Content-Length or chunked, with the
// 100 Continue a client asked for sent at the first read, when a machine
// is ready to take the body.
type h1Body struct {
	f      *H1Front
	src    io.Reader
	left   int64 // -1: chunked
	expect bool
	eof    bool
	err    error
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.expect {
		b.expect = false
		if err := b.f.r.w.sendContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	if b.left >= 0 {
		if b.left == 0 {
			b.eof = true
			return 0, io.EOF
		}
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
	}
	n, err := b.src.Read(p)
	if b.left >= 0 {
		b.left -= int64(n)
		if b.left == 0 {
			b.eof = true
			if err == nil || err == io.EOF {
				return n, io.EOF
			}
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	} else if err == io.EOF {
		b.eof = true
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// maxDiscard is how much of a body nobody read is skipped to keep the
// connection, within discardTime.
const (
	maxDiscard  = 256 << 10
	discardTime = time.Second
)

// finish skips the unread rest of a body; false when the connection
// cannot carry another request.
func (b *h1Body) finish() bool {
	if b.eof {
		return true
	}
	if b.err != nil || b.expect || b.left > maxDiscard {
		// A client waiting for 100 Continue has not sent its body: the
		// connection's next bytes would be that body. Close.
		return false
	}
	b.f.conn.SetReadDeadline(time.Now().Add(discardTime))
	n, _ := io.Copy(io.Discard, io.LimitReader(b, maxDiscard+1))
	b.f.conn.SetReadDeadline(time.Time{})
	return b.eof && n <= maxDiscard
}
