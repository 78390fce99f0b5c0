package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

func TestH1PoolReusesConnection(t *testing.T) {
	upCheckLeaks(t)
	resps := []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 7\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", // to a HEAD: no body follows
		"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Reply: last\r\n\r\nok",
	}
	m := upServe(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for _, r := range resps {
			if _, err := upReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, r)
		}
	})
	p, d := upPool(t, 4, time.Minute, time.Minute)
	wants := []struct {
		method, body, trailers string
		status                 int
		length                 int64
		hasBody                bool
	}{
		{"GET", "hello", "", 200, 5, true},
		{"GET", "", "", 204, 0, false},
		{"GET", "", "", 304, 0, false},
		{"GET", "abc", "X-Sum: 7\r\n", 200, -1, true},
		{"HEAD", "", "", 200, 0, false},
		{"GET", "", "", 200, 0, false},
		{"DELETE", "ok", "", 200, 2, true},
	}
	for i, w := range wants {
		r := mustGet(t, p, w.method, m.addr)
		if r.status != w.status || r.body != w.body || r.length != w.length || r.hasBody != w.hasBody || r.trailers != w.trailers {
			t.Fatalf("request %d: %d %q len %d body %v trailers %q, want %d %q len %d body %v trailers %q", i,
				r.status, r.body, r.length, r.hasBody, r.trailers, w.status, w.body, w.length, w.hasBody, w.trailers)
		}
		if !r.keep {
			t.Fatalf("request %d: keep = false", i)
		}
		if i == len(wants)-1 && (r.fields["x-reply"] != "last" || r.fields["content-length"] != "2" || r.nfields != 2) {
			t.Fatalf("request %d: fields %q", i, r.fields)
		}
		if n := upIdleCount(p, m.addr); n != 1 {
			t.Fatalf("request %d: %d idle connections, want 1", i, n)
		}
	}
	upWantConns(t, m, d, 1)
}

// TestH1PoolRetiresConnectionClosedWhileIdle: a pooled connection the machine closed
// while it sat idle is retired before use; the request goes on a new one.
func TestH1PoolRetiresConnectionClosedWhileIdle(t *testing.T) {
	upCheckLeaks(t)
	// Each connection answers one request and then closes, as an app whose
	// keep-alive timeout ran out while the connection sat in the pool.
	m := upServe(t, func(n int, c net.Conn, br *bufio.Reader) {
		upAnswer(1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")(n, c, br)
		c.Close()
	})
	p, d := upPool(t, 4, time.Minute, time.Minute)
	for i := range 3 {
		if i > 0 {
			// The machine's close reached the pooled connection.
			upWaitArrived(t, d.conn(i-1))
		}
		if r := mustGet(t, p, "GET", m.addr); r.status != 200 || r.body != "ok" {
			t.Fatalf("request %d: %d %q", i, r.status, r.body)
		}
	}
	upWantConns(t, m, d, 3)
}

// TestH1PoolRetriesConnectionClosedOnReuse: a reused connection that ends
// before any byte of the response (the machine closed it as the request
// arrived) is retried on a new connection when the request has no body.
func TestH1PoolRetriesConnectionClosedOnReuse(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, func(n int, c net.Conn, br *bufio.Reader) {
		if n == 1 {
			upAnswer(1, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")(n, c, br)
			// The second request arrives as the machine gives up on the
			// connection: read, then closed without an answer.
			upReadRequest(br)
			c.Close()
			return
		}
		upAnswer(1, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")(n, c, br)
	})
	p, d := upPool(t, 4, time.Minute, time.Minute)
	if r := mustGet(t, p, "GET", m.addr); r.body != "first" {
		t.Fatalf("first: %q", r.body)
	}
	if r := mustGet(t, p, "GET", m.addr); r.status != 200 || r.body != "second" {
		t.Fatalf("second: %d %q", r.status, r.body)
	}
	upWantConns(t, m, d, 2)
}

// TestH1PoolDoesNotRetryBodyOnReusedConnection: the same failure for a
// request with a body is the caller's to retry (the body was consumed):
// the pool returns it, marked as a reused connection's.
func TestH1PoolDoesNotRetryBodyOnReusedConnection(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, func(n int, c net.Conn, br *bufio.Reader) {
		upAnswer(1, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")(n, c, br)
		upReadRequest(br)
		c.Close()
	})
	p, d := upPool(t, 4, time.Minute, time.Minute)
	mustGet(t, p, "GET", m.addr)
	head := "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
	x, _ := upExchange(t, context.Background(), head)
	_, err := upDo(p, x, m.addr, head, strings.NewReader("hello"), 5)
	if !errors.Is(err, errReusedClosed) {
		t.Fatalf("err = %v, want %v", err, errReusedClosed)
	}
	upWantConns(t, m, d, 1)
}

func TestH1PoolNewConnectionFailureIsNotRetried(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, func(_ int, c net.Conn, br *bufio.Reader) {
		upReadRequest(br)
		c.Close()
	})
	p, d := upPool(t, 4, time.Minute, time.Minute)
	x, _ := upExchange(t, context.Background(), upHead("GET"))
	_, err := upDo(p, x, m.addr, upHead("GET"), nil, 0)
	if err == nil || errors.Is(err, errReusedClosed) {
		t.Fatalf("err = %v, want the connection's failure", err)
	}
	if pe, ok := perr.As(classify(err, x)); !ok || pe.Code != perr.InstanceClosed {
		t.Fatalf("classified as %v, want %s", pe, perr.InstanceClosed)
	}
	upWantConns(t, m, d, 1)
}

func TestH1PoolHeaderTimeout(t *testing.T) {
	for _, reused := range []bool{false, true} {
		t.Run(fmt.Sprintf("reused=%v", reused), func(t *testing.T) {
			upCheckLeaks(t)
			release := make(chan struct{})
			unblock := sync.OnceFunc(func() { close(release) })
			defer unblock()
			m := upServe(t, func(n int, c net.Conn, br *bufio.Reader) {
				if reused {
					upAnswer(1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")(n, c, br)
				}
				upReadRequest(br)
				<-release
			})
			p, d := upPool(t, 4, time.Minute, 100*time.Millisecond)
			if reused {
				mustGet(t, p, "GET", m.addr)
			}
			x, _ := upExchange(t, context.Background(), upHead("GET"))
			_, err := upDo(p, x, m.addr, upHead("GET"), nil, 0)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || errors.Is(err, errReusedClosed) {
				t.Fatalf("err = %v, want a timeout", err)
			}
			if pe, ok := perr.As(classify(err, x)); !ok || pe.Code != perr.ResponseTimeout || pe.Retryable {
				t.Fatalf("classified as %v", pe)
			}
			// The machine may be working on the request: never sent twice.
			upWantConns(t, m, d, 1)
			unblock()
			m.waitGone(t, 1)
		})
	}
}

func TestH1PoolCancel(t *testing.T) {
	upCheckLeaks(t)
	wrote := make(chan struct{}, 1)
	m := upServe(t, upOneRequest(func(n int, c net.Conn) {
		switch n {
		case 1:
			// Half a head, then nothing.
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-")
		case 2:
			// Half a body, then nothing.
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf!")
		}
		wrote <- struct{}{}
	}))
	p, _ := upPool(t, 4, time.Minute, time.Minute)

	// Cancelled in the middle of the response head.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x, _ := upExchange(t, ctx, upHead("GET"))
	errc := make(chan error, 1)
	go func() {
		_, err := p.roundTrip(x, m.addr, []byte(upHead("GET")), nil, 0)
		errc <- err
	}()
	<-wrote
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(upWait):
		t.Fatal("roundTrip did not return after the cancellation")
	}
	m.waitGone(t, 1)

	// Cancelled while reading the body.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	x, _ = upExchange(t, ctx, upHead("GET"))
	resp, err := p.roundTrip(x, m.addr, []byte(upHead("GET")), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	resp.src.headDone()
	half := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, half); err != nil || string(half) != "half!" {
		t.Fatalf("%q %v", half, err)
	}
	<-wrote
	cancel()
	readc := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(make([]byte, 10))
		readc <- err
	}()
	select {
	case err := <-readc:
		if err == nil {
			t.Fatal("read after the cancellation returned no error")
		}
	case <-time.After(upWait):
		t.Fatal("body read did not return after the cancellation")
	}
	resp.src.release(false)
	if n := upIdleCount(p, m.addr); n != 0 {
		t.Fatalf("%d idle connections, want 0", n)
	}
	m.waitGone(t, 2)
}

func TestH1PoolDoesNotPoolClosingConnections(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, upOneRequest(func(n int, c net.Conn) {
		switch n {
		case 1:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
		case 2:
			// HTTP/1.0 without a length: the body ends with the connection.
			io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nuntil the end")
			c.(*net.TCPConn).CloseWrite()
		case 3:
			// HTTP/1.0 with a length but no keep-alive.
			io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
		case 4:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nstart")
		}
	}))
	p, _ := upPool(t, 4, time.Minute, time.Minute)
	for i, want := range []struct {
		body   string
		length int64
	}{{"ok", 2}, {"until the end", -1}, {"ok", 2}} {
		r := mustGet(t, p, "GET", m.addr)
		if r.body != want.body || r.length != want.length || r.keep {
			t.Fatalf("connection %d: %q length %d keep %v, want %q length %d keep false",
				i+1, r.body, r.length, r.keep, want.body, want.length)
		}
		if n := upIdleCount(p, m.addr); n != 0 {
			t.Errorf("connection %d: %d idle connections after a response that closes its connection, want 0", i+1, n)
			p.closeIdle()
		}
		m.waitGone(t, i+1)
	}
	// A body left before its end takes its connection with it.
	x, _ := upExchange(t, context.Background(), upHead("GET"))
	resp, err := p.roundTrip(x, m.addr, []byte(upHead("GET")), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	resp.src.headDone()
	buf := make([]byte, 3)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	resp.src.release(false)
	if n := upIdleCount(p, m.addr); n != 0 {
		t.Fatalf("%d idle connections after a body left unread, want 0", n)
	}
	m.waitGone(t, 4)
	if n := m.accepts.Load(); n != 4 {
		t.Fatalf("%d connections, want 4", n)
	}
}

func TestH1PoolInformationalResponses(t *testing.T) {
	upCheckLeaks(t)
	ok := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	replies := []string{
		"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x-hop\r\n\r\n" + ok,
		"HTTP/1.1 100 Continue\r\n\r\n" + ok,
		strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", max1xx) + ok,
		strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </b.css>\r\n\r\n", max1xx+1) + ok,
		ok,
	}
	var next atomic.Int32
	m := upServe(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := upReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, replies[next.Add(1)-1]); err != nil {
				return
			}
		}
	})
	p, d := upPool(t, 4, time.Minute, time.Minute)
	get := func() (*upResult, *upResponder, error) {
		x, w := upExchange(t, context.Background(), upHead("GET"))
		r, err := upDo(p, x, m.addr, upHead("GET"), nil, 0)
		return r, w, err
	}

	// 103 goes to the client, without the machine's hop-by-hop fields.
	r, w, err := get()
	if err != nil || r.status != 200 || r.body != "ok" {
		t.Fatalf("103: %v %v", r, err)
	}
	if got := w.interims(); len(got) != 1 || got[0] != "103 Link: </a.css>; rel=preload\r\n" {
		t.Fatalf("103: interim responses %q", got)
	}
	// 100 answers an Expect the proxy answered itself: swallowed.
	r, w, err = get()
	if err != nil || r.status != 200 || r.body != "ok" {
		t.Fatalf("100: %v %v", r, err)
	}
	if got := w.interims(); len(got) != 0 {
		t.Fatalf("100: interim responses %q", got)
	}
	// Up to max1xx are read.
	r, _, err = get()
	if err != nil || r.status != 200 || r.body != "ok" {
		t.Fatalf("%d 100s: %v %v", max1xx, r, err)
	}
	if dials := d.dials(); dials != 1 {
		t.Fatalf("%d dials, want 1", dials)
	}
	// One more is an error, and the connection is dropped.
	_, w, err = get()
	if pe, ok := perr.As(err); !ok || pe.Code != perr.MalformedResponse || !errors.Is(err, errTooMany1xx) {
		t.Fatalf("err = %v, want %s and %v", err, perr.MalformedResponse, errTooMany1xx)
	}
	if got := w.interims(); len(got) != max1xx {
		t.Fatalf("%d interim responses passed on, want %d", len(got), max1xx)
	}
	m.waitGone(t, 1)
	if r, _, err = get(); err != nil || r.body != "ok" {
		t.Fatalf("after: %v %v", r, err)
	}
	if dials := d.dials(); dials != 2 {
		t.Fatalf("%d dials, want 2", dials)
	}
}

// TestH1PoolUnexpectedUpgrade: a 101 to a request that asked for no
// upgrade is a broken machine.
func TestH1PoolUnexpectedUpgrade(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, upOneRequest(func(n int, c net.Conn) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
	}))
	p, _ := upPool(t, 4, time.Minute, time.Minute)
	x, _ := upExchange(t, context.Background(), upHead("GET"))
	if x.Req.Upgrade {
		t.Fatal("the request asks for an upgrade")
	}
	_, err := upDo(p, x, m.addr, upHead("GET"), nil, 0)
	if pe, ok := perr.As(err); !ok || pe.Code != perr.MalformedResponse || !errors.Is(err, errUnexpectedUpgr) {
		t.Fatalf("err = %v, want %s and %v", err, perr.MalformedResponse, errUnexpectedUpgr)
	}
	m.waitGone(t, 1)
}

// TestH1PoolUpgrade: a 101 to a request that asked for it hands over the
// connection, with the bytes that came right after the head first.
func TestH1PoolUpgrade(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, upOneRequest(func(n int, c net.Conn) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello")
		ping := make([]byte, 4)
		if _, err := io.ReadFull(c, ping); err != nil || string(ping) != "ping" {
			return
		}
		io.WriteString(c, "pong")
	}))
	p, _ := upPool(t, 4, time.Minute, time.Minute)
	head := "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	x, _ := upExchange(t, context.Background(), head)
	if !x.Req.Upgrade {
		t.Fatal("the request does not ask for an upgrade")
	}
	resp, err := p.roundTrip(x, m.addr, []byte(head), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 101 || resp.tunnel == nil || resp.keep || resp.Body != nil {
		t.Fatalf("status %d tunnel %v keep %v body %v", resp.Status, resp.tunnel, resp.keep, resp.Body)
	}
	if up, _ := resp.Head.Get("Upgrade"); string(up) != "websocket" {
		t.Fatalf("Upgrade = %q", up)
	}
	resp.src.headDone()
	got := make([]byte, 5)
	if _, err := io.ReadFull(resp.tunnel, got); err != nil || string(got) != "hello" {
		t.Fatalf("read ahead: %q %v", got, err)
	}
	if _, err := io.WriteString(resp.tunnel, "ping"); err != nil {
		t.Fatal(err)
	}
	got = got[:4]
	if _, err := io.ReadFull(resp.tunnel, got); err != nil || string(got) != "pong" {
		t.Fatalf("tunnel: %q %v", got, err)
	}
	resp.src.release(false)
	if n := upIdleCount(p, m.addr); n != 0 {
		t.Fatalf("%d idle connections after a tunnel, want 0", n)
	}
	m.waitGone(t, 1)
}
