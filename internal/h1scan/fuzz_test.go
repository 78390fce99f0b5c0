package h1scan

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
)

// FuzzAgreesWithNetHTTP: whatever the Scanner lets through whole, the
// server behind it (net/http) reads as the same requests with the same
// bodies. A difference in framing between the two is exactly how a
// request is smuggled; the Scanner may refuse more than net/http, never
// frame differently.
func FuzzAgreesWithNetHTTP(f *testing.F) {
	for _, seed := range []string{
		get, get + get,
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + get,
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\nT: 1\r\n\r\n" + get,
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.0\r\n\r\n" + get,
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\r\n" + get,
	} {
		f.Add([]byte(seed), uint8(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		// Where each request ends, by the Scanner, fed in pieces.
		s := New(maxHead)
		var ends []int
		n := int(split)%16 + 1
		for off := 0; off < len(in); off += n {
			piece := in[off:min(off+n, len(in))]
			for i := range piece {
				if _, err := s.Feed(piece[i : i+1]); err != nil {
					break
				}
				if s.Requests() > len(ends) {
					ends = append(ends, off+i+1)
				}
			}
			if s.Err() != nil || s.Mode() != ModeHTTP1 {
				break
			}
		}
		// net/http must see the same boundaries for every request the
		// Scanner let through whole. It may refuse one (it then answers
		// 400 and closes): refusing is safe, framing differently is not.
		cr := &countingReader{r: bytes.NewReader(in)}
		br := bufio.NewReader(cr)
		lastMethod := ""
		for i, end := range ends {
			if lastMethod == "POST" {
				// As net/http's server does before the request after a
				// POST: up to four CR or LF bytes are skipped.
				peek, _ := br.Peek(4)
				skip := 0
				for skip < len(peek) && (peek[skip] == '\r' || peek[skip] == '\n') {
					skip++
				}
				br.Discard(skip)
			}
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			lastMethod = req.Method
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			if got := cr.n - br.Buffered(); got != end {
				t.Fatalf("request %d ends at byte %d for net/http, %d for the Scanner", i, got, end)
			}
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
