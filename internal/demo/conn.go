package demo

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// demoConn is an accepted connection whose first bytes may already sit in br after sniffing.
// Reads go through br so those bytes are replayed to whoever serves the connection next.
type demoConn struct {
	net.Conn
	br   *bufio.Reader
	info connInfo

	closeOnce sync.Once
	closeErr  error
	// closed is closed by the first Close, whoever calls it: net/http, a hijacking handler,
	// the echo loop or shutdown.
	closed chan struct{}
}

// connInfo is what the machine learned about a connection before serving it. It is written
// before the connection is handed to net/http and only read afterwards.
type connInfo struct {
	id    uint64
	proxy *ProxyReport
}

func newDemoConn(c net.Conn, id uint64) *demoConn {
	return &demoConn{
		Conn:   c,
		br:     bufio.NewReader(c),
		info:   connInfo{id: id},
		closed: make(chan struct{}),
	}
}

func (c *demoConn) Read(p []byte) (int, error) { return c.br.Read(p) }

func (c *demoConn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.Conn.Close()
		close(c.closed)
	})
	return c.closeErr
}

// CloseWrite passes a half-close through the wrapper: net/http uses it to avoid resetting
// connections it closes after a response, and the echo relays the client's FIN with it.
func (c *demoConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ProxyReport is the PROXY protocol header a connection started with, as the JSON report shows
// it. Addresses are empty for headers that carry none (v1 UNKNOWN, v2 LOCAL).
type ProxyReport struct {
	Version     int    `json:"version"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
}

func newProxyReport(h *proxyproto.Header) *ProxyReport {
	return &ProxyReport{
		Version:     int(h.Version),
		Source:      addrString(h.SourceAddr),
		Destination: addrString(h.DestinationAddr),
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// proxySignatures and httpPrefixes are read-only tables for peekMatch. The v1 signature includes
// its space so that "PROXYish" bytes are echoed rather than rejected as a bad header.
var (
	proxySignatures = []string{"PROXY ", "\r\n\r\n\x00\r\nQUIT\n"}
	// "PRI " also covers the HTTP/2 client preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
	httpPrefixes = []string{
		"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ", "PRI ",
	}
)

type sniffResult struct {
	proxy *ProxyReport // nil without a PROXY header
	http  bool         // false means raw TCP echo
}

// sniff reads the optional PROXY header and classifies what follows, waiting for no more bytes
// than it needs to decide. The caller bounds it with a read deadline. Running out of bytes or
// time before a decision means raw TCP, because an echo client may legitimately send a short
// prefix of "POST " and wait; only a PROXY header that fails to parse is an error.
func sniff(br *bufio.Reader) (sniffResult, error) {
	var res sniffResult
	isProxy, err := peekMatch(br, proxySignatures)
	if err != nil {
		return res, nil
	}
	if isProxy {
		h, err := proxyproto.Read(br)
		if err != nil {
			return res, err
		}
		res.proxy = newProxyReport(h)
	}
	res.http, _ = peekMatch(br, httpPrefixes)
	return res, nil
}

// peekMatch reports whether the buffered stream starts with one of prefixes, reading one more
// chunk at a time only while the bytes seen so far are still a prefix of some candidate. A read
// error before a decision is returned with false; the bytes read stay buffered in br.
func peekMatch(br *bufio.Reader, prefixes []string) (bool, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		undecided := false
		for _, p := range prefixes {
			if len(b) >= len(p) {
				if string(b[:len(p)]) == p {
					return true, nil
				}
				continue
			}
			if string(b) == p[:len(b)] {
				undecided = true
			}
		}
		if !undecided {
			return false, nil
		}
		// Peek fills with as few reads as it can, so this returns as soon as the peer sends
		// anything more; bufio turns endless empty reads into io.ErrNoProgress.
		if _, err := br.Peek(len(b) + 1); err != nil {
			return false, err
		}
	}
}

// echoTCP copies everything the client sends back to it. When the client half-closes, the echo
// finishes writing and half-closes too, so the client reads every byte and then EOF; only then
// is the connection closed (by the caller), with nothing unread left to provoke a reset.
func echoTCP(c *demoConn, idle time.Duration) error {
	buf := make([]byte, 32<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		n, err := c.Read(buf)
		if n > 0 {
			_ = c.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := c.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return c.CloseWrite()
		}
		if err != nil {
			return err
		}
	}
}
