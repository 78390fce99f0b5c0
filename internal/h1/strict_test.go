package h1

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// smuggling are request heads that parsers have read differently from one
// another: each is how a request can hide inside another between a proxy
// and an app. Every one is followed by smugglingTail, which is a valid
// last chunk and also 5 bytes, so a parser that takes either framing reads
// a whole body.
var smuggling = []struct{ name, head string }{
	{"CL then TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"},
	{"TE then CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"},
	{"TE chunked with CL 0", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"},
	{"two differing CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"},
	{"CL list 5, 5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"},
	{"CL list 5, 6", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"},
	{"CL +5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"},
	{"CL 0x5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n"},
	{"CL -1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"},
	{"CL with inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0 5\r\n\r\n"},
	{"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n"},
	{"CL 20 digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00000000000000000005\r\n\r\n"},
	{"CL space before colon", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n"},
	{"TE chunked, identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"},
	{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n"},
	{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
	{"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"},
	{"TE chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"},
	{"TE chunked + TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"},
	{"TE with KELVIN SIGN", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun\u212aed\r\n\r\n"},
	{"TE after VT", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n"},
	{"TE space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"},
	{"TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"},
	{"TE by obs-fold", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"},
	{"bare LF everywhere", "GET / HTTP/1.1\nHost: a\n\n"},
	{"bare LF in a field", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"},
	{"bare CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"},
	{"NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"},
	{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
	{"no Host in HTTP/1.1", "GET / HTTP/1.1\r\nX: a\r\n\r\n"},
	{"empty line first", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"method not a token", "G<T / HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"SP in the target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"HTTP/1.1 lower-case", "GET / http/1.1\r\nHost: a\r\n\r\n"},
	{"Trailer: Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n"},
}

const smugglingTail = "0\r\n\r\n"

// TestStrictness runs the smuggling heads through ParseRequest, net/http
// and fasthttp and logs which accepts each (go test -run Strictness -v).
// Only ParseRequest is held to refusing them all. For net/http and
// fasthttp, "head" is the head reader alone (http.ReadRequest,
// fasthttp.RequestHeader.Read) and "+body" the head and body read together
// (io.ReadAll of the Body, fasthttp.Request.Read).
func TestStrictness(t *testing.T) {
	var out strings.Builder
	fmt.Fprintf(&out, "\n%-26s  %-7s  %-13s  %-13s  %-13s  %-13s\n", "request head", "h1", "net/http head", "net/http+body", "fasthttp head", "fasthttp+body")
	count := [5]int{}
	for _, tc := range smuggling {
		in := []byte(tc.head + smugglingTail)
		var h Head
		_, err := ParseRequest(in, &h, Limits{})
		if err == nil || err == ErrNeedMore {
			t.Errorf("%s: ParseRequest accepts %q", tc.name, tc.head)
		}
		got := [5]bool{err == nil}
		got[1], got[2] = netHTTPAccepts(in)
		got[3], got[4] = fasthttpAccepts(in)
		fmt.Fprintf(&out, "%-26s", tc.name)
		for i, ok := range got {
			word := "refuses"
			if ok {
				word = "ACCEPTS"
				count[i]++
			}
			fmt.Fprintf(&out, "  %-*s", []int{7, 13, 13, 13, 13}[i], word)
		}
		out.WriteByte('\n')
	}
	fmt.Fprintf(&out, "%-26s  %-7d  %-13d  %-13d  %-13d  %-13d   (of %d)\n", "accepted", count[0], count[1], count[2], count[3], count[4], len(smuggling))
	t.Log(out.String())
}

func netHTTPAccepts(in []byte) (head, whole bool) {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
	if err != nil {
		return false, false
	}
	_, err = io.ReadAll(req.Body)
	return true, err == nil
}

func fasthttpAccepts(in []byte) (head, whole bool) {
	var h fasthttp.RequestHeader
	head = h.Read(bufio.NewReader(bytes.NewReader(in))) == nil
	var req fasthttp.Request
	whole = req.Read(bufio.NewReader(bytes.NewReader(in))) == nil
	return head, whole
}

// responseSmuggling are response heads that desynchronise a proxy's
// connection pool when read leniently: the proxy would take the next
// response's bytes for this one's body, or the reverse.
var responseSmuggling = []struct{ name, head string }{
	{"CL then TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"},
	{"two differing CL", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"},
	{"CL list 5, 6", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"},
	{"CL +5", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"},
	{"TE chunked, gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"},
	{"TE xchunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n"},
	{"TE on HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
	{"TE space before colon", "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n"},
	{"TE by obs-fold", "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"},
	{"bare CR in a value", "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n"},
	{"NUL in a value", "HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n"},
	{"status 2000", "HTTP/1.1 2000 OK\r\n\r\n"},
}

// TestResponseStrictness logs the same table for response heads, read by
// ParseResponse, http.ReadResponse (head, then head and body) and
// fasthttp.ResponseHeader.Read; only ParseResponse is held to refusing.
func TestResponseStrictness(t *testing.T) {
	var out strings.Builder
	fmt.Fprintf(&out, "\n%-26s  %-7s  %-13s  %-13s  %-13s\n", "response head", "h1", "net/http head", "net/http+body", "fasthttp head")
	for _, tc := range responseSmuggling {
		in := []byte(tc.head + smugglingTail)
		var h Head
		_, err := ParseResponse(in, &h, []byte("GET"), Limits{})
		if err == nil || err == ErrNeedMore {
			t.Errorf("%s: ParseResponse accepts %q", tc.name, tc.head)
		}
		got := [4]bool{err == nil}
		if resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(in)), nil); err == nil {
			got[1] = true
			_, err = io.ReadAll(resp.Body)
			got[2] = err == nil
		}
		var fh fasthttp.ResponseHeader
		got[3] = fh.Read(bufio.NewReader(bytes.NewReader(in))) == nil
		fmt.Fprintf(&out, "%-26s", tc.name)
		for i, ok := range got {
			word := "refuses"
			if ok {
				word = "ACCEPTS"
			}
			fmt.Fprintf(&out, "  %-*s", []int{7, 13, 13, 13}[i], word)
		}
		out.WriteByte('\n')
	}
	t.Log(out.String())
}
