package h1

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

const get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"

// reqFacts is what an accepted request head must read as.
type reqFacts struct {
	method, target, host string
	minor                uint8
	length               int64
	chunked, close       bool
	upgrade, expect100   bool
	hasHost              bool
	fields               int
	body                 BodyKind
}

func TestParseRequestAccepts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want reqFacts
	}{
		{get, reqFacts{method: "GET", target: "/", host: "a", minor: 1, length: -1, hasHost: true, fields: 1}},
		{"GET / HTTP/1.0\r\n\r\n", reqFacts{method: "GET", target: "/", length: -1, close: true}},
		{"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", reqFacts{method: "GET", target: "/", length: -1, fields: 1}},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", reqFacts{method: "GET", target: "/", host: "a", minor: 1, length: -1, hasHost: true, close: true, fields: 2}},
		{"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length:5\r\n\r\n",
			reqFacts{method: "POST", target: "/x?y=1", host: "a", minor: 1, length: 5, hasHost: true, fields: 3, body: BodyLength}},
		{"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\nContent-Length: 5\r\n\r\n",
			reqFacts{method: "POST", target: "/x", host: "a", minor: 1, length: 5, hasHost: true, fields: 3, body: BodyLength}},
		{"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
			reqFacts{method: "POST", target: "/x", host: "a", minor: 1, length: 0, hasHost: true, fields: 2}},
		{"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n",
			reqFacts{method: "POST", target: "/x", host: "a", minor: 1, length: -1, chunked: true, hasHost: true, fields: 2, body: BodyChunked}},
		{"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n",
			reqFacts{method: "GET", target: "/ws", host: "a", minor: 1, length: -1, upgrade: true, hasHost: true, fields: 3}},
		// An Upgrade field alone asks for nothing (RFC 9110 section 7.8).
		{"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
			reqFacts{method: "GET", target: "/ws", host: "a", minor: 1, length: -1, hasHost: true, fields: 2}},
		{"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
			reqFacts{method: "PUT", target: "/x", host: "a", minor: 1, length: 1, expect100: true, hasHost: true, fields: 3, body: BodyLength}},
		{"GET / HTTP/1.1\r\nHost: a\r\nExpect:\r\n\r\n", reqFacts{method: "GET", target: "/", host: "a", minor: 1, length: -1, hasHost: true, fields: 2}},
		{"GET / HTTP/1.1\r\nHost:\r\n\r\n", reqFacts{method: "GET", target: "/", minor: 1, length: -1, hasHost: true, fields: 1}},
		{"GET / HTTP/1.1\r\nHost: \t a.b:8080 \t\r\nX: \t v\xff \t\r\nEmpty:\r\n\r\n",
			reqFacts{method: "GET", target: "/", host: "a.b:8080", minor: 1, length: -1, hasHost: true, fields: 3}},
		{"POST /x HTTP/1.1\r\nHost: a\r\nTrailer: X-Sum, Content-Lengths\r\nTransfer-Encoding: chunked\r\n\r\n",
			reqFacts{method: "POST", target: "/x", host: "a", minor: 1, length: -1, chunked: true, hasHost: true, fields: 3, body: BodyChunked}},
		{"GET http://a/b?c HTTP/1.1\r\nHost: a\r\n\r\n", reqFacts{method: "GET", target: "http://a/b?c", host: "a", minor: 1, length: -1, hasHost: true, fields: 1}},
		{"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", reqFacts{method: "OPTIONS", target: "*", host: "a", minor: 1, length: -1, hasHost: true, fields: 1}},
		{"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", reqFacts{method: "CONNECT", target: "a:443", host: "a:443", minor: 1, length: -1, hasHost: true, fields: 1}},
		{"UPDATEREDIRECTREF / HTTP/1.1\r\nHost: a\r\n\r\n", reqFacts{method: "UPDATEREDIRECTREF", target: "/", host: "a", minor: 1, length: -1, hasHost: true, fields: 1}},
		{strings.Repeat("M", MaxMethod) + " / HTTP/1.1\r\nHost: a\r\n\r\n", reqFacts{method: strings.Repeat("M", MaxMethod), target: "/", host: "a", minor: 1, length: -1, hasHost: true, fields: 1}},
		{"PUT /" + strings.Repeat("a", MaxRequestLine-len("PUT / HTTP/1.1\r\n")) + " HTTP/1.1\r\nHost: a\r\n\r\n",
			reqFacts{method: "PUT", target: "/" + strings.Repeat("a", MaxRequestLine-len("PUT / HTTP/1.1\r\n")), host: "a", minor: 1, length: -1, hasHost: true, fields: 1}},
	} {
		var h Head
		n, err := ParseRequest([]byte(tc.in+"tail"), &h, Limits{})
		if err != nil || n != len(tc.in) {
			t.Errorf("%.60q: n %d err %v, want %d", tc.in, n, err, len(tc.in))
			continue
		}
		got := reqFacts{
			method: h.String(h.Method), target: h.String(h.Target), host: h.String(h.Host),
			minor: h.Minor, length: h.ContentLength, chunked: h.Chunked, close: h.Close,
			upgrade: h.Upgrade, expect100: h.Expect100, hasHost: h.HasHost,
			fields: len(h.Fields), body: RequestBody(&h),
		}
		if got != tc.want {
			t.Errorf("%.60q:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
		if string(h.Buf) != tc.in {
			t.Errorf("%.60q: Buf is %q", tc.in, h.Buf)
		}
	}
}

func TestParseRequestRefuses(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		in     string
		code   perr.Code
		status int
	}{
		{"\r\n" + get, perr.MalformedRequest, 400},
		{"\n" + get, perr.MalformedRequest, 400},
		{" GET / HTTP/1.1\r\nHost: a\r\n\r\n", perr.InvalidMethod, 400},
		{"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", perr.InvalidMethod, 400},
		{"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", perr.InvalidMethod, 400},
		{strings.Repeat("G", MaxMethod+1) + " / HTTP/1.1\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{strings.Repeat("G", 10000) + " / HTTP/1.1\r\n\r\n", perr.MalformedRequest, 400},
		{"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / http/1.1\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.x\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/11\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET /\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/2.0\r\nHost: a\r\n\r\n", perr.MalformedRequest, 505},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", perr.MalformedRequest, 505},
		{"GET /" + long(16<<10) + " HTTP/1.1\r\n\r\n", perr.RequestLineTooLong, 414},
		{"GET /" + long(MaxRequestLine-len("GET / HTTP/1.1\r\n")+1) + " HTTP/1.1\r\nHost: a\r\n\r\n", perr.RequestLineTooLong, 414},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: " + long(DefaultMaxHead) + "\r\n\r\n", perr.RequestHeadersTooLarge, 431},
		{"GET / HTTP/1.1\nHost: a\n\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\r\n\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\r\n\rX", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nBad Name: a\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nX\xff: a\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tfolded\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000001\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun\xe2\x84\xaaed\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", perr.MalformedRequest, 400},
		{"GET / HTTP/1.1\r\nX: y\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTrailer: X-Sum, transfer-encoding\r\nContent-Length: 0\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTrailer: TRAILER , X\r\nContent-Length: 0\r\n\r\n", perr.MalformedRequest, 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nExpect: something\r\nContent-Length: 1\r\n\r\n", perr.ExpectationFailed, 417},
		{"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue-x\r\nContent-Length: 1\r\n\r\n", perr.ExpectationFailed, 417},
		{"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-cont\r\nContent-Length: 1\r\n\r\n", perr.ExpectationFailed, 417},
		{"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\nContent-Length: 1\r\n\r\n", perr.ExpectationFailed, 417},
	} {
		var h Head
		_, err := ParseRequest([]byte(tc.in), &h, Limits{})
		var e *Error
		if !errors.As(err, &e) || e.Code != tc.code || e.Status != tc.status {
			t.Errorf("%.70q: err %v, want %s %d", tc.in, err, tc.code, tc.status)
		}
	}
}

// TestParseRequestIncremental: every proper prefix of an accepted head
// needs more, and the whole head fed at once is the same head.
func TestParseRequestIncremental(t *testing.T) {
	for _, in := range []string{
		get,
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX: \t v\xff \t\r\n\r\n",
		browserGet, curlGet,
	} {
		var h Head
		for k := range len(in) {
			if n, err := ParseRequest([]byte(in[:k]), &h, Limits{}); err != ErrNeedMore {
				t.Fatalf("%.40q cut at %d: n %d err %v, want ErrNeedMore", in, k, n, err)
			}
		}
		if n, err := ParseRequest([]byte(in), &h, Limits{}); err != nil || n != len(in) {
			t.Fatalf("%.40q: n %d err %v", in, n, err)
		}
	}
}

func TestParseRequestLimits(t *testing.T) {
	var h Head
	// A head of exactly MaxHead bytes passes; one byte more does not, and
	// a longer buffer without the head's end within the limit is refused.
	lim := Limits{MaxHead: len(get)}
	if n, err := ParseRequest([]byte(get+"xyz"), &h, lim); err != nil || n != len(get) {
		t.Fatalf("head at the limit: %d %v", n, err)
	}
	lim.MaxHead--
	if _, err := ParseRequest([]byte(get), &h, lim); !isCode(err, perr.RequestHeadersTooLarge) {
		t.Fatalf("head over the limit: %v", err)
	}
	if _, err := ParseRequest([]byte(get[:lim.MaxHead]), &h, lim); err != ErrNeedMore {
		t.Fatalf("prefix at the limit: %v", err)
	}
	// A head limit below the line limit wins over it.
	line := "GET /" + strings.Repeat("a", 9000)
	if _, err := ParseRequest([]byte(line), &h, Limits{MaxHead: 4096}); !isCode(err, perr.RequestHeadersTooLarge) {
		t.Fatalf("long line, small head limit: %v", err)
	}
	if _, err := ParseRequest([]byte(line), &h, Limits{}); !isCode(err, perr.RequestLineTooLong) {
		t.Fatalf("long line: %v", err)
	}
	// Garbage is refused before the head is complete.
	if _, err := ParseRequest([]byte("GET / HTTP/1.1\r\nX: \x00"), &h, Limits{}); !isCode(err, perr.MalformedRequest) {
		t.Fatalf("early garbage: %v", err)
	}
}

func isCode(err error, code perr.Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

func TestHeadAccessors(t *testing.T) {
	in := "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive,\tUpgrade \r\nX-A: 1\r\nx-a: 2\r\nConnection: Close\r\n\r\n"
	var h Head
	if _, err := ParseRequest([]byte(in), &h, Limits{}); err != nil {
		t.Fatal(err)
	}
	if v, ok := h.Get("X-a"); !ok || string(v) != "1" {
		t.Errorf("Get: %q %v", v, ok)
	}
	if !h.Has("HOST") || h.Has("Hos") || h.Has("Hostx") {
		t.Error("Has")
	}
	var vals []string
	h.Values("x-A", func(v []byte) { vals = append(vals, string(v)) })
	if strings.Join(vals, ",") != "1,2" {
		t.Errorf("Values: %q", vals)
	}
	for tok, want := range map[string]bool{"upgrade": true, "KEEP-ALIVE": true, "close": true, "keep": false, "": false} {
		if h.ConnectionHas(tok) != want {
			t.Errorf("ConnectionHas(%q) != %v", tok, want)
		}
	}
	if !h.NameIs(h.Fields[0], "host") || h.NameIs(h.Fields[0], "hosts") {
		t.Error("NameIs")
	}
	// A reused Head keeps its Fields' storage and forgets the old head.
	before := &h.Fields[:1][0]
	if _, err := ParseRequest([]byte("GET / HTTP/1.0\r\n\r\n"), &h, Limits{}); err != nil {
		t.Fatal(err)
	}
	if len(h.Fields) != 0 || h.HasHost || &h.Fields[:1][0] != before {
		t.Errorf("reuse: %d fields, host %v", len(h.Fields), h.HasHost)
	}
	if SkipEmptyLine([]byte("\r\nGET")) != 2 || SkipEmptyLine([]byte("\nGET")) != 0 || SkipEmptyLine([]byte("\r")) != 0 {
		t.Error("SkipEmptyLine")
	}
}

func TestParseRequestAllocs(t *testing.T) {
	var h Head
	buf := []byte(browserGet)
	ParseRequest(buf, &h, Limits{})
	if n := testing.AllocsPerRun(100, func() { ParseRequest(buf, &h, Limits{}) }); n != 0 {
		t.Fatalf("%v allocations per parse", n)
	}
	resp := []byte(typicalResponse)
	if n := testing.AllocsPerRun(100, func() { ParseResponse(resp, &h, []byte("GET"), Limits{}) }); n != 0 {
		t.Fatalf("%v allocations per response parse", n)
	}
}
