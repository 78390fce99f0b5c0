package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

func TestH1PoolMalformedResponse(t *testing.T) {
	cases := []struct {
		name, reply string
	}{
		{"not HTTP", "SSH-2.0-OpenSSH_9.6\r\n\r\n"},
		{"HTTP/2 preface", "HTTP/2 200\r\n\r\n"},
		{"status out of range", "HTTP/1.1 999 Nope\r\n\r\n"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"},
		{"differing lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
		{"length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"not chunked last", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"},
		{"bare CR", "HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			upCheckLeaks(t)
			m := upServe(t, upOneRequest(func(_ int, c net.Conn) { io.WriteString(c, tc.reply) }))
			p, _ := upPool(t, 4, time.Minute, time.Minute)
			x, _ := upExchange(t, context.Background(), upHead("GET"))
			_, err := upDo(p, x, m.addr, upHead("GET"), nil, 0)
			upWantMalformed(t, err, x)
			m.waitGone(t, 1)
		})
	}

	t.Run("cut between lines", func(t *testing.T) {
		upCheckLeaks(t)
		// Cut off between two header lines: the connection failed, which
		// the caller's retry rules decide on.
		m := upServe(t, upOneRequest(func(_ int, c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n")
			c.(*net.TCPConn).CloseWrite()
		}))
		p, _ := upPool(t, 4, time.Minute, time.Minute)
		x, _ := upExchange(t, context.Background(), upHead("GET"))
		_, err := upDo(p, x, m.addr, upHead("GET"), nil, 0)
		if err == nil {
			t.Fatal("no error")
		}
		if pe, ok := perr.As(classify(err, x)); !ok || pe.Code != perr.InstanceClosed {
			t.Fatalf("cut short: %v classified as %v, want %s", err, pe, perr.InstanceClosed)
		}
	})

	t.Run("bad chunk framing", func(t *testing.T) {
		upCheckLeaks(t)
		m := upServe(t, upOneRequest(func(_ int, c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n")
		}))
		p, _ := upPool(t, 4, time.Minute, time.Minute)
		r := mustGetBody(t, p, m.addr)
		var he *h1.Error
		if !errors.As(r.readErr, &he) || he.Code != perr.MalformedResponse {
			t.Fatalf("body error = %v, want %s", r.readErr, perr.MalformedResponse)
		}
		if n := upIdleCount(p, m.addr); n != 0 {
			t.Fatalf("%d idle connections after a broken body, want 0", n)
		}
		m.waitGone(t, 1)
	})
}

// mustGetBody is a GET whose head must come, whatever its body does.
func mustGetBody(t *testing.T, p *h1Pool, addr netip.AddrPort) *upResult {
	t.Helper()
	r, err := upGet(t, p, context.Background(), "GET", addr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestH1PoolResponseHeadLimit(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, upOneRequest(func(_ int, c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		for range maxResponseHeader/len(line) + 2 {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	}))
	p, _ := upPool(t, 4, time.Minute, time.Minute)
	x, _ := upExchange(t, context.Background(), upHead("GET"))
	_, err := upDo(p, x, m.addr, upHead("GET"), nil, 0)
	upWantMalformed(t, err, x)
	m.waitGone(t, 1)
}

func TestH1PoolIdleLimits(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, upAnswer(10, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	other := upServe(t, upAnswer(10, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	p, d := upPool(t, 1, 100*time.Millisecond, time.Minute)
	// Two responses open at once need two connections; only one is kept.
	var resps []*upResponse
	for range 2 {
		x, _ := upExchange(t, context.Background(), upHead("GET"))
		resp, err := p.roundTrip(x, m.addr, []byte(upHead("GET")), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	for _, r := range resps {
		r.src.headDone()
		if b, err := io.ReadAll(r.Body); err != nil || string(b) != "ok" {
			t.Fatalf("%q %v", b, err)
		}
		r.src.release(true)
	}
	m.waitGone(t, 2)
	if n := upIdleCount(p, m.addr); n != 1 {
		t.Fatalf("%d idle connections, want 1", n)
	}
	// The limit is per machine: another machine keeps one of its own.
	mustGet(t, p, "GET", other.addr)
	if a, b := upIdleCount(p, m.addr), upIdleCount(p, other.addr); a != 1 || b != 1 {
		t.Fatalf("%d and %d idle connections, want 1 and 1", a, b)
	}
	if dials := d.dials(); dials != 3 {
		t.Fatalf("%d dials, want 3", dials)
	}
	// The kept ones are closed once idle for the timeout.
	m.waitGone(t, 1)
	other.waitGone(t, 1)
	p.mu.Lock()
	left := len(p.idle)
	p.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d addresses still pooled", left)
	}
}

// TestH1PoolShut: shut closes the idle connections, and the pool neither
// sends nor keeps anything after.
func TestH1PoolShut(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, upAnswer(10, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	p, _ := upPool(t, 4, time.Minute, time.Minute)
	x, _ := upExchange(t, context.Background(), upHead("GET"))
	resp, err := p.roundTrip(x, m.addr, []byte(upHead("GET")), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustGet(t, p, "GET", m.addr)
	if n := upIdleCount(p, m.addr); n != 1 {
		t.Fatalf("%d idle connections, want 1", n)
	}
	p.shut()
	m.waitGone(t, 2)
	// A response open at the shut is not pooled at its end.
	resp.src.headDone()
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
		t.Fatalf("%q %v", b, err)
	}
	resp.src.release(true)
	m.waitGone(t, 1)
	if _, err := upGet(t, p, context.Background(), "GET", m.addr); !errors.Is(err, errPoolClosed) {
		t.Fatalf("err = %v, want %v", err, errPoolClosed)
	}
}

// TestH1PoolRetiresConnectionsWithLeftovers: bytes past the end of a
// response, in the same read or arriving while the connection is idle,
// answer no request; the connection that carries them is closed, never
// handed to the next request.
func TestH1PoolRetiresConnectionsWithLeftovers(t *testing.T) {
	cases := []struct {
		name, method string
		reply        string
		// rest is written once the pool read the head of reply.
		rest string
		// idle is written once the first response was released.
		idle string
	}{
		{name: "body after HEAD", method: "HEAD", reply: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{name: "body after 204", method: "GET",
			reply: "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"},
		{name: "body after 304", method: "GET",
			reply: "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nwrong"},
		{name: "over-long body", method: "GET",
			reply: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"},
		{name: "second response", method: "GET",
			reply: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"},
		{name: "after chunked body", method: "GET",
			reply: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"},
		{name: "408 while idle", method: "GET", reply: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			idle: "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n"},
		{name: "response while idle", method: "GET", reply: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			idle: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"},
		{name: "after a big head's chunked body", method: "GET",
			reply: upBigHead(20) + "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"},
		{name: "after a big head's body", method: "GET",
			reply: upBigHead(20) + "Content-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"},
		{name: "after a big head's chunked body, apart", method: "GET",
			reply: upBigHead(20) + "Transfer-Encoding: chunked\r\n\r\n",
			rest:  "2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"},
		{name: "after a big head's body, apart", method: "GET",
			reply: upBigHead(20) + "Content-Length: 2\r\n\r\n",
			rest:  "okHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			upCheckLeaks(t)
			headRead := make(chan struct{})
			released := make(chan struct{})
			wrote := make(chan struct{})
			m := upServe(t, func(n int, c net.Conn, br *bufio.Reader) {
				if _, err := upReadRequest(br); err != nil {
					return
				}
				if n > 1 {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
					return
				}
				io.WriteString(c, tc.reply)
				if tc.rest != "" {
					<-headRead
					io.WriteString(c, tc.rest)
				}
				if tc.idle != "" {
					<-released
					io.WriteString(c, tc.idle)
				}
				close(wrote)
				// Should the connection be reused after all, its next
				// request gets a telltale answer rather than none.
				upAnswer(1, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nreused")(n, c, br)
			})
			p, d := upPool(t, 4, time.Minute, time.Minute)
			x, _ := upExchange(t, context.Background(), upHead(tc.method))
			first, err := upDoHook(p, x, m.addr, upHead(tc.method), nil, 0, func() { close(headRead) })
			if err != nil || first.readErr != nil {
				t.Fatalf("first request: %v, %v", err, first.readErr)
			}
			if first.status/100 != 2 && first.status != 304 {
				t.Fatalf("first request got %d", first.status)
			}
			close(released)
			<-wrote
			upWaitArrived(t, d.conn(0))
			second := mustGet(t, p, "GET", m.addr)
			if second.status != 200 || second.body != "second" {
				t.Fatalf("second request got %d %q, want the answer to itself", second.status, second.body)
			}
			upWantConns(t, m, d, 2)
			m.waitGone(t, 1)
		})
	}
}

// upChunks reads its pieces one per Read, so a chunked body goes out as
// one chunk per piece.
type upChunks []string

func (c *upChunks) Read(p []byte) (int, error) {
	if len(*c) == 0 {
		return 0, io.EOF
	}
	n := copy(p, (*c)[0])
	if n == len((*c)[0]) {
		*c = (*c)[1:]
	} else {
		(*c)[0] = (*c)[0][n:]
	}
	return n, nil
}

// TestH1PoolSendsBodyFramed: a request body reaches the machine exactly
// as framed, and the connection carries the next request after it.
func TestH1PoolSendsBodyFramed(t *testing.T) {
	upCheckLeaks(t)
	got := make(chan string, 8)
	m := upServe(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			raw, err := upReadRequest(br)
			if err == io.EOF {
				return
			}
			got <- raw
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	p, d := upPool(t, 4, time.Minute, time.Minute)
	big := bytes.Repeat([]byte("0123456789abcdef"), 100<<10/16+3)
	cases := []struct {
		name, head string
		body       func() io.Reader
		length     int64
		// wire is the body as the machine must read it; for a long
		// chunked body, whose chunk sizes are the sender's choice, the
		// body decoded from strict chunked framing.
		wire    string
		decoded bool
	}{
		{"length", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n",
			func() io.Reader { return strings.NewReader("hello world") }, 11, "hello world", false},
		{"chunked", "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
			func() io.Reader { return &upChunks{"hello", " ", "world"} }, -1,
			"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n", false},
		{"empty chunked", "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
			func() io.Reader { return strings.NewReader("") }, -1, "0\r\n\r\n", false},
		{"big length", "PUT /d HTTP/1.1\r\nHost: a\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n",
			func() io.Reader { return bytes.NewReader(big) }, int64(len(big)), string(big), false},
		{"big chunked", "PUT /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
			func() io.Reader { return &upChunks{string(big[:40000]), string(big[40000:])} }, -1,
			string(big), true},
		{"no body", upHead("GET"), nil, 0, "", false},
	}
	for _, tc := range cases {
		x, _ := upExchange(t, context.Background(), tc.head)
		var body io.Reader
		if tc.body != nil {
			body = tc.body()
		}
		r, err := upDo(p, x, m.addr, tc.head, body, tc.length)
		if err != nil || r.status != 200 || r.body != "ok" {
			t.Fatalf("%s: %v %v", tc.name, r, err)
		}
		select {
		case raw := <-got:
			if tc.decoded {
				if !strings.HasPrefix(raw, tc.head) {
					t.Fatalf("%s: the machine read a head of %q", tc.name, raw[:min(len(raw), len(tc.head))])
				}
				if raw, err = upDechunk(raw[len(tc.head):]); err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				raw = tc.head + raw
			}
			if want := tc.head + tc.wire; raw != want {
				if len(raw) > 200 || len(want) > 200 {
					t.Fatalf("%s: the machine read %d bytes, want %d (equal prefix %d)", tc.name, len(raw), len(want), commonPrefix(raw, want))
				}
				t.Fatalf("%s: the machine read %q, want %q", tc.name, raw, want)
			}
		case <-time.After(upWait):
			t.Fatalf("%s: the machine read no request", tc.name)
		}
	}
	upWantConns(t, m, d, 1)
	p.shut()
	m.waitGone(t, 1)
	select {
	case raw := <-got:
		t.Fatalf("the machine read more: %q", raw)
	default:
	}
}

// upDechunk decodes a whole chunked body strictly: sizes in hex, CRLF
// after each size and each chunk, no trailers, nothing after the end.
func upDechunk(wire string) (string, error) {
	var out strings.Builder
	for {
		line, rest, ok := strings.Cut(wire, "\r\n")
		if !ok {
			return "", fmt.Errorf("chunk size line without CRLF at %d bytes from the end", len(wire))
		}
		size, err := strconv.ParseUint(line, 16, 63)
		if err != nil {
			return "", fmt.Errorf("chunk size %q", line)
		}
		if size == 0 {
			if rest != "\r\n" {
				return "", fmt.Errorf("after the last chunk: %q", rest[:min(len(rest), 40)])
			}
			return out.String(), nil
		}
		if uint64(len(rest)) < size+2 || rest[size:size+2] != "\r\n" {
			return "", fmt.Errorf("chunk of %d bytes not followed by CRLF", size)
		}
		out.WriteString(rest[:size])
		wire = rest[size+2:]
	}
}

func commonPrefix(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// upEndless is a body that never ends.
type upEndless struct{}

func (upEndless) Read(p []byte) (int, error) { return len(p), nil }

// TestH1PoolEarlyAnswer: a machine that answers before it read the body
// (a 413) and then neither reads nor closes. The answer comes through;
// the connection is not pooled, since the rest of the body would be read
// as the next request, and the writer of the body is made to return.
func TestH1PoolEarlyAnswer(t *testing.T) {
	for _, length := range []int64{1 << 40, -1} {
		t.Run(fmt.Sprintf("length=%d", length), func(t *testing.T) {
			upCheckLeaks(t)
			hold := make(chan struct{})
			defer close(hold)
			m := upServe(t, func(n int, c net.Conn, br *bufio.Reader) {
				if n > 1 {
					upAnswer(1, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")(n, c, br)
					return
				}
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
				<-hold
			})
			p, d := upPool(t, 4, time.Minute, time.Minute)
			head := "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1099511627776\r\n\r\n"
			if length < 0 {
				head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
			}
			x, w := upExchange(t, context.Background(), head)
			r, err := upDo(p, x, m.addr, head, upEndless{}, length)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != 413 || r.hasBody || !r.clean {
				t.Fatalf("%d body %v clean %v, want a clean 413 without a body", r.status, r.hasBody, r.clean)
			}
			if n := upIdleCount(p, m.addr); n != 0 {
				t.Fatalf("%d idle connections after an answer to a body not sent whole, want 0", n)
			}
			// The client's side is cut too (from the grace timer's
			// goroutine: it may land just after release returned).
			for deadline := time.Now().Add(upWait); w.cutCount() == 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the client's side was not cut")
				}
			}
			if r := mustGet(t, p, "GET", m.addr); r.status != 200 || r.body != "next" {
				t.Fatalf("next: %d %q", r.status, r.body)
			}
			upWantConns(t, m, d, 2)
		})
	}
}

// TestH1PoolChunkedTrailers: the trailers of a chunked response come after
// its body's EOF, and the connection is pooled after them.
func TestH1PoolChunkedTrailers(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, upAnswer(2, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, X-Count\r\n\r\n"+
		"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Sum: 7\r\nX-Count: 2\r\n\r\n"))
	p, d := upPool(t, 4, time.Minute, time.Minute)
	for i := range 2 {
		x, _ := upExchange(t, context.Background(), upHead("GET"))
		resp, err := p.roundTrip(x, m.addr, []byte(upHead("GET")), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Length != -1 || !resp.keep || resp.Body == nil {
			t.Fatalf("length %d keep %v body %v", resp.Length, resp.keep, resp.Body)
		}
		resp.src.headDone()
		if tr := resp.trailers(); tr != nil {
			t.Fatalf("trailers before the body ended: %q", tr)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != "abcdefg" {
			t.Fatalf("request %d: %q %v", i, b, err)
		}
		if tr := string(resp.trailers()); tr != "X-Sum: 7\r\nX-Count: 2\r\n" {
			t.Fatalf("request %d: trailers %q", i, tr)
		}
		resp.src.release(true)
	}
	if dials := d.dials(); dials != 1 {
		t.Fatalf("%d dials, want 1", dials)
	}
}

// upBigHead is the start of a 200 response head with fillers fields of
// 1000 bytes and X-Last: end, without its empty line.
func upBigHead(fillers int) string {
	var head strings.Builder
	head.WriteString("HTTP/1.1 200 OK\r\n")
	for i := range fillers {
		fmt.Fprintf(&head, "X-Filler-%d: %s\r\n", i, strings.Repeat("a", 1000))
	}
	head.WriteString("X-Last: end\r\n")
	return head.String()
}

// TestH1PoolBigResponseHead: a head longer than the read buffer (and within
// the limit) is read whole, and the body after it is intact, whether it
// came with the head or after.
func TestH1PoolBigResponseHead(t *testing.T) {
	const fillers = 100
	head := upBigHead(fillers)
	if len(head) <= h1ReadBuffer || len(head) >= maxResponseHeader {
		t.Fatalf("head of %d bytes", len(head))
	}
	body := strings.Repeat("0123456789", 4<<10) // 40 KiB: longer than the buffer too
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\nX-Sum: 1\r\n\r\n", len(body), body)
	cases := []struct {
		name, fields, body, trailers string
		length                       int64
		apart                        bool // the body comes after the head was read
	}{
		{"length", "Content-Length: " + strconv.Itoa(len(body)) + "\r\n", body, "", int64(len(body)), false},
		{"length apart", "Content-Length: " + strconv.Itoa(len(body)) + "\r\n", body, "", int64(len(body)), true},
		{"short length", "Content-Length: 5\r\n", "hello", "", 5, false},
		{"chunked", "Transfer-Encoding: chunked\r\n", chunked, "X-Sum: 1\r\n", -1, false},
		{"chunked apart", "Transfer-Encoding: chunked\r\n", chunked, "X-Sum: 1\r\n", -1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			upCheckLeaks(t)
			headRead := make(chan struct{})
			m := upServe(t, func(n int, c net.Conn, br *bufio.Reader) {
				if n > 1 {
					upAnswer(1, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")(n, c, br)
					return
				}
				if _, err := upReadRequest(br); err != nil {
					return
				}
				if tc.apart {
					io.WriteString(c, head+tc.fields+"\r\n")
					<-headRead
					io.WriteString(c, tc.body)
				} else {
					io.WriteString(c, head+tc.fields+"\r\n"+tc.body)
				}
				upAnswer(1, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")(n, c, br)
			})
			p, _ := upPool(t, 4, time.Minute, time.Minute)
			x, _ := upExchange(t, context.Background(), upHead("GET"))
			resp, err := p.roundTrip(x, m.addr, []byte(upHead("GET")), nil, 0)
			close(headRead)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != 200 || resp.Length != tc.length || len(resp.Head.Fields) != fillers+2 {
				t.Fatalf("status %d length %d, %d fields", resp.Status, resp.Length, len(resp.Head.Fields))
			}
			if v, _ := resp.Head.Get("X-Last"); string(v) != "end" {
				t.Fatalf("X-Last = %q", v)
			}
			if v, _ := resp.Head.Get("X-Filler-99"); string(v) != strings.Repeat("a", 1000) {
				t.Fatalf("X-Filler-99 is %d bytes", len(v))
			}
			resp.src.headDone()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.body
			if tc.length < 0 {
				want = body
			}
			if string(b) != want {
				t.Fatalf("body of %d bytes, want %d (equal prefix %d)", len(b), len(want), commonPrefix(string(b), want))
			}
			if tr := string(resp.trailers()); tr != tc.trailers {
				t.Fatalf("trailers %q, want %q", tr, tc.trailers)
			}
			keep := resp.keep
			resp.src.release(true)
			// A head longer than the buffer leaves its connection out of
			// the pool (upConn.response).
			if keep {
				t.Error("keep = true after a head longer than the read buffer")
			}
			if n := upIdleCount(p, m.addr); n != 0 {
				t.Errorf("%d idle connections after a head longer than the read buffer, want 0", n)
			}
			// The next request gets its own answer, on this connection or
			// a new one.
			if r := mustGet(t, p, "GET", m.addr); r.status != 200 || r.body != "next" {
				t.Fatalf("next: %d %q", r.status, r.body)
			}
		})
	}
}

// TestH1PoolConcurrent: requests from many goroutines share the pool's
// connections, each getting its own answer.
func TestH1PoolConcurrent(t *testing.T) {
	upCheckLeaks(t)
	m := upServe(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			raw, err := upReadRequest(br)
			if err != nil {
				return
			}
			// The answer names the request's path.
			path := strings.Fields(raw)[1]
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(path), path); err != nil {
				return
			}
		}
	})
	p, d := upPool(t, 4, time.Minute, time.Minute)
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				path := fmt.Sprintf("/w%d/%d", w, i)
				head := "GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n"
				buf := []byte(head)
				h := new(h1.Head)
				if _, err := h1.ParseRequest(buf, h, h1.Limits{}); err != nil {
					errs <- err
					return
				}
				x := &Exchange{Conn: &Conn{}, Req: h, W: &upResponder{}, Ctx: context.Background(), stalls: &stallWatch{}}
				r, err := upDo(p, x, m.addr, head, nil, 0)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", path, err)
					return
				}
				if r.status != 200 || r.body != path {
					errs <- fmt.Errorf("%s: got %d %q", path, r.status, r.body)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if dials := d.dials(); dials > workers {
		t.Errorf("%d dials for %d workers", dials, workers)
	}
	if n := upIdleCount(p, m.addr); n > 4 {
		t.Errorf("%d idle connections, more than the limit of 4", n)
	}
}
