package h2watch

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// watchedConn reads a client connection through a Watcher, as
// internal/server's read path does.
type watchedConn struct {
	net.Conn
	w   *Watcher
	err error
}

func (c *watchedConn) Read(p []byte) (int, error) {
	for {
		if q := c.w.Queued(); len(q) > 0 {
			n := copy(p, q)
			c.w.Dequeue(n)
			return n, nil
		}
		if c.err != nil {
			return 0, c.err
		}
		var n, ready int
		if s := c.w.Space(); s != nil {
			n, c.err = c.Conn.Read(s)
			c.w.Filled(n)
		} else {
			n, c.err = c.Conn.Read(p)
			ready, _ = c.w.Filter(p[:n])
		}
		if ready > 0 {
			return ready, nil
		}
	}
}

type watchedListener struct{ net.Listener }

func (l watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &watchedConn{Conn: c, w: New(Config{Preface: len(Preface)}, time.Now)}, nil
}

// TestNetHTTPAnswers checks the rewrites against net/http's HTTP/2 server
// (h2c with prior knowledge): it answers them as RFC 9113 asks, and the
// connection goes on.
func TestNetHTTPAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		HTTP2:   &http.HTTP2Config{MaxReadFrameSize: DefaultMaxFrameSize},
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(watchedListener{ln})
	}()
	defer func() {
		srv.Close()
		<-done
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, Preface)
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	// A setting named twice (h2spec http2/6.5.3/1): net/http alone would
	// hang up with PROTOCOL_ERROR.
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 16})
	await := func(what string, match func(http2.Frame) bool) {
		t.Helper()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				t.Fatalf("waiting for %s: GOAWAY %v", what, g.ErrCode)
			}
			if match(f) {
				return
			}
		}
	}
	await("SETTINGS ACK", func(f http2.Frame) bool {
		s, ok := f.(*http2.SettingsFrame)
		return ok && s.IsAck()
	})
	fr.WriteSettingsAck()

	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	request := func(id uint32, pairs ...string) {
		buf.Reset()
		fields := append([]string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "example.com"}, pairs...)
		for i := 0; i < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	for i, pairs := range [][]string{
		{"connection", "keep-alive"}, // h2spec http2/8.1.2.2/1
		{"te", "trailers, deflate"},  // h2spec http2/8.1.2.2/2
		{"upgrade", "h2c"},
	} {
		id := uint32(2*i + 1)
		request(id, pairs...)
		await("RST_STREAM PROTOCOL_ERROR", func(f http2.Frame) bool {
			if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == id {
				t.Fatalf("%v: answered %s instead of a reset", pairs, h.PseudoValue("status"))
			}
			r, ok := f.(*http2.RSTStreamFrame)
			return ok && r.StreamID == id && r.ErrCode == http2.ErrCodeProtocol
		})
	}
	// The connection goes on: a request with the same fields indexed in
	// the table is answered.
	request(7, "te", "trailers")
	await("a response", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		if ok && h.PseudoValue("status") != "200" {
			t.Fatalf("status %s", h.PseudoValue("status"))
		}
		return ok && h.StreamID == 7
	})
	// The server reads no frame larger than it said (h2spec http2/4.2/3).
	if err := fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 9, make([]byte, DefaultMaxFrameSize+1)); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			t.Fatal("closed without GOAWAY")
		} else if err != nil {
			t.Fatal(err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeFrameSize {
				t.Fatalf("GOAWAY %v, want FRAME_SIZE_ERROR", g.ErrCode)
			}
			return
		}
	}
}
