package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// checkLeaks verifies, after every other cleanup of t, that no goroutine
// started during t is left.
func checkLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// scripted is a machine on loopback whose every connection runs handle.
// It counts connections and reports each one the client closed.
type scripted struct {
	addr    string
	accepts atomic.Int32
	// gone receives a connection's number when the client closed it.
	gone chan int
}

func serveScripted(t *testing.T, handle func(n int, c net.Conn, br *bufio.Reader)) *scripted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{addr: ln.Addr().String(), gone: make(chan int, 64)}
	done := make(chan struct{})
	var conns sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		<-done
		conns.Wait()
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(s.accepts.Add(1))
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				handle(n, c, br)
				// Whatever the handler left: wait for the client to close.
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.Copy(io.Discard, br); err == nil {
					s.gone <- n
				}
			}()
		}
	}()
	return s
}

// answer reads requests and writes resp to each, count times.
func answer(count int, resp string) func(int, net.Conn, *bufio.Reader) {
	return func(_ int, c net.Conn, br *bufio.Reader) {
		for i := 0; i < count; i++ {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	}
}

// oneRequest reads one request on each connection and lets reply answer
// it; n numbers the connection.
func oneRequest(reply func(n int, c net.Conn)) func(int, net.Conn, *bufio.Reader) {
	return func(n int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err == nil {
			reply(n, c)
		}
	}
}

func newTestH1(maxIdle int, idle, header time.Duration) *h1Client {
	var d net.Dialer
	return &h1Client{
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
		maxIdle: maxIdle, idleTimeout: idle, headerTimeout: header,
	}
}

func get(t *testing.T, c *h1Client, ctx context.Context, method, addr string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), err
}

func waitGone(t *testing.T, s *scripted, want int) {
	t.Helper()
	select {
	case n := <-s.gone:
		if n != want {
			t.Fatalf("connection %d closed, want %d", n, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("connection %d was not closed", want)
	}
}

func TestH1ClientReusesConnection(t *testing.T) {
	checkLeaks(t)
	resps := []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 7\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", // to a HEAD: no body follows
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}
	s := serveScripted(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for _, r := range resps {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, r)
		}
	})
	c := newTestH1(4, time.Minute, time.Minute)
	defer c.Close()
	ctx := context.Background()
	wants := []struct {
		method, body string
		status       int
	}{{"GET", "hello", 200}, {"GET", "", 204}, {"GET", "", 304}, {"GET", "abc", 200}, {"HEAD", "", 200}, {"DELETE", "ok", 200}}
	for i, w := range wants {
		resp, body, err := get(t, c, ctx, w.method, s.addr)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if resp.StatusCode != w.status || body != w.body {
			t.Fatalf("request %d: %d %q, want %d %q", i, resp.StatusCode, body, w.status, w.body)
		}
		if i == 3 && resp.Trailer.Get("X-Sum") != "7" {
			t.Fatalf("trailer = %v", resp.Trailer)
		}
	}
	if n := s.accepts.Load(); n != 1 {
		t.Fatalf("%d connections for %d requests, want 1", n, len(wants))
	}
}

func TestH1ClientRetriesStaleConnection(t *testing.T) {
	checkLeaks(t)
	// Each connection answers one request and then closes, as an app whose
	// keep-alive timeout ran out while the connection sat in the pool.
	s := serveScripted(t, func(n int, c net.Conn, br *bufio.Reader) {
		answer(1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")(n, c, br)
		c.Close()
	})
	c := newTestH1(4, time.Minute, time.Minute)
	defer c.Close()
	for i := 0; i < 3; i++ {
		if i > 0 {
			// Let the machine's close reach the pooled connection.
			time.Sleep(20 * time.Millisecond)
		}
		_, body, err := get(t, c, context.Background(), "GET", s.addr)
		if err != nil || body != "ok" {
			t.Fatalf("request %d: %q, %v", i, body, err)
		}
	}
	if n := s.accepts.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

func TestH1ClientNewConnectionFailureIsNotRetried(t *testing.T) {
	checkLeaks(t)
	s := serveScripted(t, func(_ int, c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		c.Close()
	})
	c := newTestH1(4, time.Minute, time.Minute)
	defer c.Close()
	_, _, err := get(t, c, context.Background(), "GET", s.addr)
	if err == nil || errors.Is(err, errReusedBeforeAny) {
		t.Fatalf("err = %v, want the connection's failure", err)
	}
	if n := s.accepts.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestH1ClientHeaderTimeout(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	defer close(release)
	s := serveScripted(t, func(_ int, c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		<-release
	})
	c := newTestH1(4, time.Minute, 100*time.Millisecond)
	defer c.Close()
	_, _, err := get(t, c, context.Background(), "GET", s.addr)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if p, ok := perr.As(classify(err, nil, nil)); !ok || p.Code != perr.ResponseTimeout || p.Retryable {
		t.Fatalf("classified as %v", p)
	}
}

func TestH1ClientCancel(t *testing.T) {
	checkLeaks(t)
	s := serveScripted(t, func(n int, c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		if n == 2 {
			// The second connection sends half a body, then stalls.
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf!")
		}
	})
	c := newTestH1(4, time.Minute, time.Minute)
	defer c.Close()

	// Cancelled while waiting for the header.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, _, err := get(t, c, ctx, "GET", s.addr); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	waitGone(t, s, 1)

	// Cancelled while reading the body.
	ctx, cancel = context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.addr+"/", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	body, err := io.ReadAll(resp.Body)
	if err == nil || string(body) != "half!" {
		t.Fatalf("body %q, err %v; want the half body and an error", body, err)
	}
	resp.Body.Close()
	waitGone(t, s, 2)
}

func TestH1ClientDoesNotPoolClosingConnections(t *testing.T) {
	checkLeaks(t)
	s := serveScripted(t, oneRequest(func(n int, c net.Conn) {
		switch n {
		case 1:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
		case 2:
			// HTTP/1.0 without a length: the body ends with the connection.
			io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nuntil the end")
			c.(*net.TCPConn).CloseWrite()
		case 3:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nstart")
		}
	}))
	c := newTestH1(4, time.Minute, time.Minute)
	defer c.Close()
	if _, body, err := get(t, c, context.Background(), "GET", s.addr); err != nil || body != "ok" {
		t.Fatalf("%q %v", body, err)
	}
	waitGone(t, s, 1)
	if _, body, err := get(t, c, context.Background(), "GET", s.addr); err != nil || body != "until the end" {
		t.Fatalf("%q %v", body, err)
	}
	waitGone(t, s, 2)
	// A body closed before its end takes its connection with it.
	req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	io.ReadFull(resp.Body, buf)
	resp.Body.Close()
	waitGone(t, s, 3)
	if n := s.accepts.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

func TestH1ClientInformationalResponses(t *testing.T) {
	checkLeaks(t)
	s := serveScripted(t, oneRequest(func(n int, c net.Conn) {
		switch n {
		case 1:
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		case 2:
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
		case 3:
			io.WriteString(c, strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", max1xx+1)+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	}))
	c := newTestH1(4, time.Minute, time.Minute)
	defer c.Close()
	var hints []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, h.Get("Link"))
			return nil
		},
	})
	if _, body, err := get(t, c, ctx, "GET", s.addr); err != nil || body != "ok" {
		t.Fatalf("%q %v", body, err)
	}
	if len(hints) != 1 || hints[0] != "</a.css>; rel=preload" {
		t.Fatalf("hints = %q", hints)
	}
	c.CloseIdleConnections()
	if _, _, err := get(t, c, context.Background(), "GET", s.addr); !errors.Is(err, errUnexpectedUpgr) {
		t.Fatalf("err = %v, want %v", err, errUnexpectedUpgr)
	}
	if _, _, err := get(t, c, context.Background(), "GET", s.addr); !errors.Is(err, errTooMany1xx) {
		t.Fatalf("err = %v, want %v", err, errTooMany1xx)
	}
}

func TestH1ClientMalformedResponse(t *testing.T) {
	checkLeaks(t)
	s := serveScripted(t, oneRequest(func(n int, c net.Conn) {
		switch n {
		case 1:
			io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n\r\n")
		case 2:
			// Cut off between two header lines: the connection failed,
			// which the caller's retry rules decide on. (Cut inside a line,
			// what arrived is not HTTP, and that is PU02.)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n")
			c.(*net.TCPConn).CloseWrite()
		}
	}))
	c := newTestH1(4, time.Minute, time.Minute)
	defer c.Close()
	_, _, err := get(t, c, context.Background(), "GET", s.addr)
	if pe, ok := perr.As(classify(err, nil, nil)); !ok || pe.Code != perr.MalformedResponse || pe.Retryable {
		t.Fatalf("not HTTP: %v classified as %v, want PU02 and not retryable", err, pe)
	}
	_, _, err = get(t, c, context.Background(), "GET", s.addr)
	req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
	if pe, ok := perr.As(classify(err, req, nil)); !ok || pe.Code != perr.InstanceClosed {
		t.Fatalf("cut short: %v classified as %v, want PC03", err, pe)
	}
}

func TestH1ClientHeaderLimit(t *testing.T) {
	checkLeaks(t)
	s := serveScripted(t, oneRequest(func(n int, c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		for i := 0; i < maxResponseHeader/len(line)+2; i++ {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	}))
	c := newTestH1(4, time.Minute, time.Minute)
	defer c.Close()
	_, _, err := get(t, c, context.Background(), "GET", s.addr)
	if !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("err = %v, want %v", err, errHeaderTooLarge)
	}
	if pe, ok := perr.As(classify(err, nil, nil)); !ok || pe.Code != perr.MalformedResponse || pe.Retryable {
		t.Fatalf("classified as %v, want PU02 and not retryable", pe)
	}
}

func TestH1ClientIdleLimits(t *testing.T) {
	checkLeaks(t)
	s := serveScripted(t, answer(10, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	c := newTestH1(1, 100*time.Millisecond, time.Minute)
	defer c.Close()
	// Two responses open at once need two connections; only one is kept.
	var resps []*http.Response
	for i := 0; i < 2; i++ {
		req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	for _, r := range resps {
		io.ReadAll(r.Body)
		r.Body.Close()
	}
	waitGone(t, s, 2)
	// The kept one is closed once idle for the timeout.
	waitGone(t, s, 1)
	c.mu.Lock()
	left := len(c.idle)
	c.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d addresses still pooled", left)
	}
}

func TestFastPath(t *testing.T) {
	for _, tc := range []struct {
		method string
		body   string
		header string
		want   bool
	}{
		{"GET", "", "", true},
		{"HEAD", "", "", true},
		{"DELETE", "", "", true},
		{"OPTIONS", "", "", true},
		{"POST", "", "", false},
		{"GET", "x", "", false},
		{"GET", "", "Upgrade", false},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		req, _ := http.NewRequest(tc.method, "http://a/", body)
		if tc.header != "" {
			req.Header.Set(tc.header, "websocket")
		}
		if got := fastPath(req); got != tc.want {
			t.Errorf("%s body=%q %s: fastPath = %v", tc.method, tc.body, tc.header, got)
		}
	}
}

// TestH1ClientRetiresConnectionsWithLeftovers: bytes past the end of a
// response, in the same read or arriving while the connection is idle,
// answer no request; the connection that carries them is closed, never
// handed to the next request.
func TestH1ClientRetiresConnectionsWithLeftovers(t *testing.T) {
	cases := []struct {
		name, method string
		reply        func(c net.Conn)
	}{
		{"body after HEAD", "HEAD", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
		}},
		{"body after 204", "GET", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}},
		{"over-long body", "GET", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n")
		}},
		{"408 while idle", "GET", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			time.Sleep(30 * time.Millisecond)
			io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			s := serveScripted(t, func(n int, c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				if n == 1 {
					tc.reply(c)
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
			})
			c := newTestH1(4, time.Minute, time.Minute)
			defer c.Close()
			if _, _, err := get(t, c, context.Background(), tc.method, s.addr); err != nil {
				t.Fatal(err)
			}
			time.Sleep(60 * time.Millisecond)
			resp, body, err := get(t, c, context.Background(), "GET", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || body != "second" {
				t.Fatalf("second request got %d %q, want the answer to itself", resp.StatusCode, body)
			}
			if n := s.accepts.Load(); n != 2 {
				t.Fatalf("%d connections, want 2: the first must be retired", n)
			}
		})
	}
}
