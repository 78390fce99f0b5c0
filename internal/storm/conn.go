package storm

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// conn is one storm connection: the TCP socket, and TLS over it unless the
// storm is plain. Junk goes to raw directly, below TLS, which is the point of
// the cn-junk shapes: the bytes sit behind close_notify on the server's
// socket, where a TLS stack must ignore them.
type conn struct {
	raw      *net.TCPConn
	tc       *tls.Conn // nil when plain
	rw       net.Conn  // tc, or raw when plain
	in       *countingReader
	br       *bufio.Reader
	deadline time.Time
	finSent  bool
}

// countingReader tells "no response at all" from "part of a response":
// http.ReadResponse reports both as io.ErrUnexpectedEOF.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// dial connects to the first address that accepts and completes the TLS
// handshake. Every socket operation is bounded by deadline; ctx only aborts
// the dial and handshake early when the storm is cancelled.
func dial(ctx context.Context, addrs []string, tlsConf *tls.Config, deadline time.Time) (*conn, error) {
	d := net.Dialer{Deadline: deadline}
	var (
		nc  net.Conn
		err error
	)
	for _, a := range addrs {
		nc, err = d.DialContext(ctx, "tcp", a)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	raw, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("storm: dial gave a %T, not a TCP connection", nc)
	}
	if err := raw.SetDeadline(deadline); err != nil {
		raw.Close()
		return nil, err
	}
	c := &conn{raw: raw, rw: raw, deadline: deadline}
	if tlsConf != nil {
		c.tc = tls.Client(raw, tlsConf)
		if err := c.tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, handshakeError{err}
		}
		c.rw = c.tc
	}
	c.in = &countingReader{r: c.rw}
	c.br = bufio.NewReaderSize(c.in, 4096)
	return c, nil
}

// handshakeError marks failures of the TLS handshake, so an EOF there reads
// as a server that hung up rather than a TLS problem and a TLS problem is
// never mistaken for anything else.
type handshakeError struct{ error }

func (e handshakeError) Unwrap() error { return e.error }

func (c *conn) write(b []byte) error {
	_, err := c.rw.Write(b)
	return err
}

// closeNotify sends TLS close_notify, or a FIN on a plain connection, where
// the FIN is the only way to say "no more requests".
func (c *conn) closeNotify() error {
	if c.tc == nil {
		return c.fin()
	}
	if err := c.tc.CloseWrite(); err != nil {
		return err
	}
	// crypto/tls sets the socket's write deadline to now after sending
	// close_notify, so that later writes through TLS fail; that would also
	// fail the junk written below TLS, so restore the connection's own.
	return c.raw.SetWriteDeadline(c.deadline)
}

// writeJunk puts bytes on the socket after close_notify. On a plain
// connection it is a no-op: after a FIN TCP carries nothing more, and junk
// before the FIN would be parsed as a second request, a different shape.
func (c *conn) writeJunk(junk []byte) error {
	if c.tc == nil {
		return nil
	}
	_, err := c.raw.Write(junk)
	return err
}

// fin half-closes TCP; over TLS it follows closeNotify.
func (c *conn) fin() error {
	if c.finSent {
		return nil
	}
	c.finSent = true
	return c.raw.CloseWrite()
}

// reset closes with SO_LINGER 0, which makes the kernel send RST.
func (c *conn) reset() error {
	if err := c.raw.SetLinger(0); err != nil {
		c.raw.Close()
		return err
	}
	return c.raw.Close()
}

// close ends the connection; over TLS it sends close_notify first unless
// already sent, within the connection's deadline.
func (c *conn) close() { c.rw.Close() }

// holdUntil shortens the read deadline to t if t comes first.
func (c *conn) holdUntil(t time.Time) {
	if t.Before(c.deadline) {
		c.raw.SetReadDeadline(t)
	}
}

// response is what reading one response produced.
type response struct {
	status   int  // 0 until a status line was parsed
	got      bool // any byte of the response arrived
	complete bool // the status line, headers and whole body arrived
	err      error
}

// readResponse reads one HTTP/1.1 response and its body to the end of its
// framing (Content-Length, chunked, or close).
func (c *conn) readResponse() response {
	before, buffered := c.in.n, c.br.Buffered()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return response{got: c.in.n > before || buffered > 0, err: err}
	}
	r := response{status: resp.StatusCode, got: true}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		r.err = err
		return r
	}
	r.complete = true
	return r
}

// drain reads and discards until the server closes the TCP connection,
// resets it, or the read deadline passes, and returns the error that ended
// it. The server's close_notify is not the end: a server that sends it and
// keeps the socket (as net/http does for its 500ms reset-avoidance wait,
// or forever if it never looks again) is still holding a connection, and
// the hold and FIN shapes are about exactly that.
func (c *conn) drain() error {
	buf := make([]byte, 1024)
	for {
		_, err := c.br.Read(buf)
		if err == nil {
			continue
		}
		if c.tc == nil || !errors.Is(err, io.EOF) {
			return err
		}
		break
	}
	for {
		if _, err := c.raw.Read(buf); err != nil {
			return err
		}
	}
}

// outcome maps a response to an outcome: whole is ok, part is truncated,
// nothing is whatever ended it, with onEOF for a clean close.
func (r response) outcome(onEOF Outcome) Outcome {
	switch {
	case r.complete:
		return OK
	case r.got:
		return ResponseTruncated
	}
	return errOutcome(r.err, onEOF)
}

// errOutcome classifies an error from a dial, handshake, read or write.
// The order matters: a reset during the handshake is a reset, not a TLS
// error, and an EOF during it is a server that hung up.
func errOutcome(err error, onEOF Outcome) Outcome {
	var (
		alert  tls.AlertError
		header tls.RecordHeaderError
		verify *tls.CertificateVerificationError
		ne     net.Error
		hs     handshakeError
	)
	switch {
	case err == nil:
		return OK
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.ENOTCONN):
		// ENOTCONN is shutdown(2) on a socket the peer already reset.
		return Reset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return Timeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if errors.As(err, &hs) {
			return ClosedEarly
		}
		return onEOF
	case errors.As(err, &alert), errors.As(err, &header), errors.As(err, &verify),
		errors.As(err, &hs), strings.Contains(err.Error(), "tls: "):
		return TLSError
	}
	return Other
}

// requests holds the bytes every connection of a storm sends; built once.
type requests struct {
	full    []byte // a complete small POST
	partial []byte // headers announcing BodySize, and half the body
	junk    []byte
}

// requestBody is small on purpose: the partner's load test that caused the
// incident sent small bodies and ended early.
const requestBody = "edgeproxy storm: a small body\n"

func buildRequests(cfg Config) requests {
	host := cfg.SNI
	if ip := net.ParseIP(host); ip != nil && strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	head := func(n int) string {
		return "POST " + cfg.Path + " HTTP/1.1\r\n" +
			"Host: " + host + "\r\n" +
			"User-Agent: edgeproxy-storm\r\n" +
			"Content-Type: text/plain\r\n" +
			"Content-Length: " + strconv.Itoa(n) + "\r\n\r\n"
	}
	full := head(len(requestBody)) + requestBody
	partial := head(cfg.BodySize) + strings.Repeat("x", cfg.BodySize/2)
	return requests{full: []byte(full), partial: []byte(partial), junk: junkRecord()}
}

// junkRecord looks like a TLS 1.2/1.3 application_data record, as the bytes
// queued behind close_notify in the incident were; a stack that kept
// reading after close_notify would try to decrypt it and fail loudly.
func junkRecord() []byte {
	payload := []byte(strings.Repeat("junk after close_notify; RFC 8446 6.1: ignore me. ", 2))
	rec := []byte{0x17, 0x03, 0x03, byte(len(payload) >> 8), byte(len(payload))}
	return append(rec, payload...)
}
