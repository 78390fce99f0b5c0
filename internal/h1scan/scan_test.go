package h1scan

import (
	"strings"
	"testing"
)

const maxHead = 16 << 10

// feedAll scans in as one connection's bytes, in pieces of size n (0:
// whole), and returns the bytes passed and the error.
func feedAll(in string, n int) (int, *Error, *Scanner) {
	s := New(maxHead)
	if n == 0 {
		n = len(in)
	}
	passed := 0
	for off := 0; off < len(in); off += n {
		k, err := s.Feed([]byte(in[off:min(off+n, len(in))]))
		passed += k
		if err != nil {
			return passed, err, s
		}
	}
	return passed, nil, s
}

const get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"

func TestAccepts(t *testing.T) {
	for _, in := range []string{
		get,
		get + get,
		"GET / HTTP/1.0\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + get,
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length:5\r\n\r\nhello",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + get,
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n5;a=b\r\nhello\r\nA ; ext\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: \t v\xff \t\r\nEmpty:\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nTrailer: X-Sum, Content-Lengths\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Sum: 1\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\r\n" + get, // one empty line after a POST
		"GET http://a/b?c HTTP/1.1\r\nHost: a\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"PUT /" + strings.Repeat("a", 8000) + " HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		for _, n := range []int{0, 1, 7} {
			passed, err, s := feedAll(in, n)
			if err != nil || passed != len(in) || !s.AtRequestStart() {
				t.Errorf("%q in pieces of %d: passed %d of %d, err %v, between requests %v", in, n, passed, len(in), err, s.AtRequestStart())
			}
		}
	}
}

func TestRefuses(t *testing.T) {
	for _, tc := range []struct {
		in     string
		status int
	}{
		{strings.Repeat("G", 10000) + " / HTTP/1.1\r\n\r\n", 400},
		{"GET / HTTP/1.1\nHost: a\n\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\n\r\n", 400},
		{"GET  / HTTP/1.1\r\n\r\n", 400},
		{"GET /  HTTP/1.1\r\n\r\n", 400},
		{"GET / HTTP/2.0\r\n\r\n", 400},
		{"GET /" + strings.Repeat("a", 16<<10) + " HTTP/1.1\r\n\r\n", 414},
		{"GET / HTTP/1.1\r\nHost: a\r\nX:" + strings.Repeat("a", maxHead) + "\r\n\r\n", 431},
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400},
		{"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", 400},
		{"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello", 400},
		{"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello", 400},
		{"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"\r\n" + get, 400}, // the first request: no empty line first
		{get + "\r\n\r\n" + get, 400},
		// An empty line after a GET: net/http would refuse it.
		{get + "\r\n" + get, 400},
		{"POSTX /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n\r\n" + get, 400},
		{"POS /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n\r\n" + get, 400},
		// Host twice, or none in HTTP/1.1, as net/http refuses.
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400},
		// A Trailer naming a framing field, which net/http refuses.
		{"POST / HTTP/1.1\r\nHost: a\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTrailer: X-Sum, transfer-encoding\r\nContent-Length: 0\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTrailer: TRAILER , X\r\nContent-Length: 0\r\n\r\n", 400},
		// Expect other than 100-continue, which net/http answers 417.
		{"POST / HTTP/1.1\r\nHost: a\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx", 417},
		{"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue-x\r\nContent-Length: 1\r\n\r\nx", 417},
		{"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-cont\r\nContent-Length: 1\r\n\r\nx", 417},
	} {
		for _, n := range []int{0, 1, 5} {
			_, err, _ := feedAll(tc.in, n)
			if err == nil || err.Status != tc.status || err.InBody {
				t.Errorf("%.60q in pieces of %d: err %v, want status %d in the head", tc.in, n, err, tc.status)
			}
		}
	}
}

func TestRefusesChunkFraming(t *testing.T) {
	head := "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, body := range []string{
		"\r\n", "-5\r\nhello\r\n", "0x5\r\nhello\r\n", " 5\r\nhello\r\n",
		"5 junk\r\nhello\r\n", "5\nhello\r\n", "5\r\nhello!\r\n", "5\r\nhello\n",
		"1000000000000000\r\n", "5;\x01\r\nhello\r\n", "0\r\nBad Trailer: x\r\n\r\n",
	} {
		passed, err, _ := feedAll(head+body+get, 0)
		if err == nil || !err.InBody || passed < len(head) {
			t.Errorf("body %q: passed %d, err %v; want an error in the body after the head", body, passed, err)
		}
	}
}

// TestRefusedRequestIsWithheld: bytes of the requests before a refused one
// pass; the refused request's own bytes do not, wherever the reads split.
func TestRefusedRequestIsWithheld(t *testing.T) {
	good := "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" + get
	in := good + "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
	for n := 1; n <= len(in); n++ {
		passed, err, _ := feedAll(in, n)
		if err == nil {
			t.Fatalf("pieces of %d: accepted", n)
		}
		// A refused head may be passed in part from earlier reads, never
		// whole.
		if passed < len(good) || passed >= len(in) {
			t.Fatalf("pieces of %d: passed %d bytes, want at least %d and not the whole refused head", n, passed, len(good))
		}
		if n == len(in) && passed != len(good) {
			t.Fatalf("one piece: passed %d, want exactly %d", passed, len(good))
		}
	}
}

func TestModes(t *testing.T) {
	s := New(maxHead)
	pre := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	if n, err := s.Feed([]byte(pre + "\x00\x00\x00\x04")); err != nil || n != len(pre)+4 || s.Mode() != ModeH2 {
		t.Fatalf("preface: %d %v mode %v", n, err, s.Mode())
	}
	// A request that merely starts with P.
	if _, err, s := feedAll("PUT / HTTP/1.1\r\nHost: a\r\n\r\n", 1); err != nil || s.Mode() != ModeHTTP1 {
		t.Fatalf("PUT: %v mode %v", err, s.Mode())
	}
	if _, err, _ := feedAll("PRI * HTTP/2.0\r\n\r\nXX", 0); err == nil {
		t.Fatal("a broken preface was accepted")
	}

	up := "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
	s = New(maxHead)
	s.Feed([]byte(up))
	s.Switched(true)
	if n, err := s.Feed([]byte("\x81\x05hello")); err != nil || n != 7 || s.Mode() != ModeOpaque {
		t.Fatalf("after 101: %d %v mode %v", n, err, s.Mode())
	}
	s = New(maxHead)
	s.Feed([]byte(up))
	s.Switched(false)
	if _, err := s.Feed([]byte("GET / HTTP/1.1\nHost: a\n\n")); err == nil {
		t.Fatal("after a refused upgrade, requests are no longer checked")
	}
	// Frames before the 101 are refused.
	s = New(maxHead)
	if _, err := s.Feed([]byte(up + "\x81\x05hello")); err == nil {
		t.Fatal("a client talking before the 101 was accepted")
	}
}
