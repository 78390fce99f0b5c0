package h1

import (
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

type respFacts struct {
	status         int
	reason         string
	minor          uint8
	length         int64
	chunked, close bool
	upgrade        bool
	fields         int
	body           BodyKind
}

func TestParseResponseAccepts(t *testing.T) {
	for _, tc := range []struct {
		in, method string
		want       respFacts
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", respFacts{200, "OK", 1, 5, false, false, false, 1, BodyLength}},
		{"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET", respFacts{200, "", 1, 0, false, false, false, 1, BodyNone}},
		{"HTTP/1.1 200 \r\n\r\n", "GET", respFacts{200, "", 1, -1, false, true, false, 0, BodyUntilClose}},
		{"HTTP/1.1 404 Not \tFound\xff\r\n\r\n", "GET", respFacts{404, "Not \tFound\xff", 1, -1, false, true, false, 0, BodyUntilClose}},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", respFacts{200, "OK", 1, -1, true, false, false, 1, BodyChunked}},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: ,chunked;x=1\r\n\r\n", "GET", respFacts{200, "OK", 1, -1, true, false, false, 2, BodyChunked}},
		{"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\ncontent-length: 7\r\n\r\n", "GET", respFacts{200, "OK", 1, 7, false, false, false, 2, BodyLength}},
		// Bare LF line endings, as small servers send them.
		{"HTTP/1.1 200 OK\nContent-Length: 5\n\n", "GET", respFacts{200, "OK", 1, 5, false, false, false, 1, BodyLength}},
		{"HTTP/1.1 200 OK\r\nX: y\n\r\n", "GET", respFacts{200, "OK", 1, -1, false, true, false, 1, BodyUntilClose}},
		{"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", respFacts{200, "OK", 0, 5, false, true, false, 1, BodyLength}},
		{"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", "GET", respFacts{200, "OK", 0, 5, false, false, false, 2, BodyLength}},
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", "GET", respFacts{200, "OK", 1, 5, false, true, false, 2, BodyLength}},
		{"HTTP/1.5 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", respFacts{200, "OK", 1, 5, false, false, false, 1, BodyLength}},
		// No body whatever the fields say.
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", respFacts{200, "OK", 1, 5, false, false, false, 1, BodyNone}},
		{"HTTP/1.1 200 OK\r\n\r\n", "HEAD", respFacts{200, "OK", 1, -1, false, false, false, 0, BodyNone}},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "GET", respFacts{304, "Not Modified", 1, 5, false, false, false, 1, BodyNone}},
		{"HTTP/1.1 204 No Content\r\n\r\n", "GET", respFacts{204, "No Content", 1, -1, false, false, false, 0, BodyNone}},
		{"HTTP/1.1 100 Continue\r\n\r\n", "POST", respFacts{100, "Continue", 1, -1, false, false, false, 0, BodyNone}},
		{"HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", respFacts{200, "Connection established", 1, -1, false, false, false, 0, BodyNone}},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "GET", respFacts{101, "Switching Protocols", 1, -1, false, false, true, 2, BodyNone}},
	} {
		var h Head
		n, err := ParseResponse([]byte(tc.in+"body"), &h, []byte(tc.method), Limits{})
		if err != nil || n != len(tc.in) {
			t.Errorf("%.60q: n %d err %v, want %d", tc.in, n, err, len(tc.in))
			continue
		}
		got := respFacts{h.Status, h.String(h.Reason), h.Minor, h.ContentLength, h.Chunked, h.Close, h.Upgrade, len(h.Fields), ResponseBody(&h, []byte(tc.method))}
		if got != tc.want {
			t.Errorf("%.60q:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseResponseRefuses(t *testing.T) {
	for _, in := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunk\"ed\", chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
		"HTTP/1.1 200 OK\r\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\rX",
		"HTTP/1.1 200 O\x01K\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 099 OK\r\n\r\n",
		"HTTP/1.1 600 OK\r\n\r\n",
		"HTTP/2.0 200 OK\r\n\r\n",
		"HTTP/1.1  200 OK\r\n\r\n",
		"http/1.1 200 OK\r\n\r\n",
		"ICY 200 OK\r\n\r\n",
		"\r\nHTTP/1.1 200 OK\r\n\r\n",
	} {
		var h Head
		_, err := ParseResponse([]byte(in), &h, []byte("GET"), Limits{})
		if e, ok := err.(*Error); !ok || e.Code != perr.MalformedResponse || e.Status != 502 {
			t.Errorf("%.70q: err %v, want PU02 502", in, err)
		}
	}
	var h Head
	big := "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 100) + "\r\n\r\n"
	if _, err := ParseResponse([]byte(big), &h, nil, Limits{MaxHead: 64}); !isCode(err, perr.MalformedResponse) {
		t.Errorf("head over the limit: %v", err)
	}
	if _, err := ParseResponse([]byte(big[:60]), &h, nil, Limits{MaxHead: 64}); err != ErrNeedMore {
		t.Errorf("prefix under the limit: %v", err)
	}
}

func TestParseResponseIncremental(t *testing.T) {
	for _, in := range []string{typicalResponse, "HTTP/1.1 200\nA: b\n\n", "HTTP/1.1 204 No Content\r\n\r\n"} {
		var h Head
		for k := range len(in) {
			if n, err := ParseResponse([]byte(in[:k]), &h, nil, Limits{}); err != ErrNeedMore {
				t.Fatalf("%.40q cut at %d: n %d err %v", in, k, n, err)
			}
		}
	}
}

func TestAppendHead(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{string(AppendStatusLine(nil, 1, 200, nil)), "HTTP/1.1 200 OK\r\n"},
		{string(AppendStatusLine(nil, 0, 404, []byte("Gone\r\nX: y"))), "HTTP/1.0 404 Gone  X: y\r\n"},
		{string(AppendStatusLine(nil, 1, 599, nil)), "HTTP/1.1 599 \r\n"},
		{string(AppendStatusLine([]byte("x"), 1, 1000, []byte("R"))), "xHTTP/1.1 1000 R\r\n"},
		{string(AppendField(nil, []byte("Host"), []byte("a\r\nb\tc"))), "Host: a  b\tc\r\n"},
		{string(AppendFieldString(nil, "Via", "1.1 edge\x00")), "Via: 1.1 edge \r\n"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	// What the proxy writes, it reads back.
	head := AppendStatusLine(nil, 1, 503, nil)
	head = AppendFieldString(head, "Content-Length", "0")
	head = append(head, "\r\n"...)
	var h Head
	if n, err := ParseResponse(head, &h, nil, Limits{}); err != nil || n != len(head) || h.Status != 503 || h.String(h.Reason) != "Service Unavailable" {
		t.Fatalf("%q: %d %v %+v", head, n, err, h)
	}
}

// TestInterimThenFinal: a 100 Continue and the final response in one read
// are two heads, parsed one after the other from the same buffer.
func TestInterimThenFinal(t *testing.T) {
	buf := []byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
	post := []byte("POST")
	var h Head
	n, err := ParseResponse(buf, &h, post, Limits{})
	if err != nil || h.Status != 100 || ResponseBody(&h, post) != BodyNone {
		t.Fatalf("interim: %d %v %d", n, err, h.Status)
	}
	m, err := ParseResponse(buf[n:], &h, post, Limits{})
	if err != nil || h.Status != 201 || ResponseBody(&h, post) != BodyLength || string(buf[n+m:]) != "ok" {
		t.Fatalf("final: %d %v %d", m, err, h.Status)
	}
	if v, ok := h.Get("content-length"); !ok || string(v) != "2" || h.Close {
		t.Fatalf("fields: %q %v close %v", v, ok, h.Close)
	}
}
