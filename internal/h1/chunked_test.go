package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http/httputil"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

const next = "GET / HTTP/1.1\r\n" // what follows a body on a keep-alive connection

// readChunked decodes body with a reader of r's buffer size, and returns
// the data, the trailers, the error, and what is left unread in r.
func readChunked(body string, size int, code perr.Code) (data, trailers string, err error, rest string) {
	br := bufio.NewReaderSize(strings.NewReader(body), size)
	c := NewChunkedReader(br, code, 64)
	d, err := io.ReadAll(c)
	left, _ := io.ReadAll(br)
	return string(d), string(c.Trailers()), err, string(left)
}

func TestChunkedReaderAccepts(t *testing.T) {
	for _, tc := range []struct{ body, data, trailers string }{
		{"0\r\n\r\n", "", ""},
		{"5\r\nhello\r\n0\r\n\r\n", "hello", ""},
		{"5;a=b\r\nhello\r\nA ; ext\r\n0123456789\r\n000\r\nX-Sum: 1\r\n\r\n", "hello0123456789", "X-Sum: 1\r\n"},
		{"5\t;x=\"q \xff\"\r\nhello\r\n0 \r\nA: 1\r\nB:\r\n\r\n", "hello", "A: 1\r\nB:\r\n"},
		{"1 \r\nh\r\n0;last\r\n\r\n", "h", ""},
		{"f\r\n" + strings.Repeat("z", 15) + "\r\n0\r\n\r\n", strings.Repeat("z", 15), ""},
		{"5;" + strings.Repeat("e", maxChunkLine-4) + "\r\nhello\r\n0\r\n\r\n", "hello", ""},
		{"0\r\nLong: " + strings.Repeat("v", 40) + "\r\n\r\n", "", "Long: " + strings.Repeat("v", 40) + "\r\n"},
	} {
		for _, size := range []int{16, 4096} {
			data, trailers, err, rest := readChunked(tc.body+next, size, perr.MalformedRequest)
			if err != nil || data != tc.data || trailers != tc.trailers || rest != next {
				t.Errorf("%.50q (buffer %d): data %q trailers %q err %v rest %q", tc.body, size, data, trailers, err, rest)
			}
		}
	}
}

func TestChunkedReaderRefuses(t *testing.T) {
	for _, body := range []string{
		"\r\n", "-5\r\nhello\r\n", "0x5\r\nhello\r\n", "+5\r\nhello\r\n", " 5\r\nhello\r\n",
		"5 junk\r\nhello\r\n", "5\nhello\r\n", "5\rhello\r\n", "5\r\nhello!\r\n", "5\r\nhello\n",
		"5\r\nhello\r\r", "1000000000000000\r\n", "5;\x01\r\nhello\r\n", "5;a\x7f\r\nhello\r\n",
		"5;a\nhello\r\n", ";\r\nhello\r\n", "g\r\n",
		"5;" + strings.Repeat("e", maxChunkLine) + "\r\nhello\r\n",
		"0\r\nBad Trailer: x\r\n\r\n", "0\r\nX: y\n\r\n", "0\r\nX: y\r\n\n", "0\r\nX: y\r\n folded\r\n\r\n",
		"0\r\nX : y\r\n\r\n", "0\r\nX: a\x00b\r\n\r\n", "0\r\nX: a\rb\r\n\r\n", "0\r\n\n",
		"0\r\nBig: " + strings.Repeat("v", 64) + "\r\n\r\n", // over the trailer limit
	} {
		for _, code := range []perr.Code{perr.MalformedRequest, perr.MalformedResponse} {
			_, _, err, _ := readChunked(body+next, 16, code)
			var e *Error
			if !errors.As(err, &e) || e.Code != code || e.Status != statusOf(code) {
				t.Errorf("%.50q: err %v, want %s", body, err, code)
			}
		}
	}
}

func TestChunkedReaderTruncated(t *testing.T) {
	body := "5;x\r\nhello\r\n0\r\nX: 1\r\n\r\n"
	for k := range len(body) {
		_, _, err, _ := readChunked(body[:k], 16, perr.MalformedRequest)
		if err != io.ErrUnexpectedEOF {
			t.Errorf("cut at %d: %v, want io.ErrUnexpectedEOF", k, err)
		}
	}
}

// TestChunkedReaderSticky: after an error every Read returns it; after the
// end, io.EOF; an empty Read reads nothing.
func TestChunkedReaderSticky(t *testing.T) {
	c := NewChunkedReader(bufio.NewReader(strings.NewReader("x\r\n")), perr.MalformedRequest, 0)
	_, err1 := c.Read(make([]byte, 4))
	_, err2 := c.Read(make([]byte, 4))
	if err1 == nil || err1 != err2 {
		t.Fatalf("errors %v then %v", err1, err2)
	}
	br := bufio.NewReader(strings.NewReader("3\r\nabc\r\n0\r\n\r\n" + next))
	c.Reset(br, perr.MalformedResponse, 0)
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d %v", n, err)
	}
	p := make([]byte, 2)
	var got []byte
	for {
		n, err := c.Read(p)
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(got) != "abc" || c.Trailers() != nil {
		t.Fatalf("data %q trailers %q", got, c.Trailers())
	}
	if n, err := c.Read(p); n != 0 || err != io.EOF {
		t.Fatalf("after the end: %d %v", n, err)
	}
	if br.Buffered() != len(next) {
		t.Fatalf("%d bytes left buffered, want %d", br.Buffered(), len(next))
	}
}

func TestChunkedReaderAllocs(t *testing.T) {
	body := []byte("5\r\nhello\r\n0\r\nX: 1\r\n\r\n")
	rd := bytes.NewReader(body)
	br := bufio.NewReader(rd)
	var c ChunkedReader
	p := make([]byte, 64)
	run := func() {
		rd.Reset(body)
		br.Reset(rd)
		c.Reset(br, perr.MalformedRequest, 0)
		for {
			if _, err := c.Read(p); err != nil {
				break
			}
		}
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Fatalf("%v allocations per body", n)
	}
}

// TestChunkedReaderAgreesWithHTTPUtil: on bodies both accept, net/http's
// decoder reads the same data.
func TestChunkedReaderAgreesWithHTTPUtil(t *testing.T) {
	for _, body := range []string{
		"0\r\n\r\n",
		"5\r\nhello\r\n0\r\n\r\n",
		"5;a=b\r\nhello\r\nA ; ext\r\n0123456789\r\n0\r\n\r\n",
		"1\r\na\r\n1\r\nb\r\n2\r\ncd\r\n0\r\n\r\n",
		string(AppendLastChunk(AppendChunk(AppendChunk(nil, []byte(strings.Repeat("q", 5000))), []byte("tail")), nil)),
	} {
		agreeWithHTTPUtil(t, []byte(body))
	}
}

func agreeWithHTTPUtil(t *testing.T, body []byte) {
	t.Helper()
	ours, err := io.ReadAll(NewChunkedReader(bufio.NewReader(bytes.NewReader(body)), perr.MalformedRequest, 0))
	if err != nil {
		return
	}
	// httputil's reader stops at the last chunk's line; the trailers are
	// the caller's to read.
	theirs, err := io.ReadAll(httputil.NewChunkedReader(bufio.NewReader(bytes.NewReader(body))))
	if err != nil {
		// The net/http reader refuses what it finds wasteful (many tiny
		// chunks with long extensions); refusing is not framing otherwise.
		return
	}
	if !bytes.Equal(ours, theirs) {
		t.Fatalf("%.80q: ours %q, httputil %q", body, ours, theirs)
	}
}

func TestAppendChunk(t *testing.T) {
	if got := string(AppendChunk([]byte("x"), []byte("0123456789abcdefg"))); got != "x11\r\n0123456789abcdefg\r\n" {
		t.Errorf("AppendChunk: %q", got)
	}
	if got := AppendChunk(nil, nil); len(got) != 0 {
		t.Errorf("empty chunk: %q", got)
	}
	if got := string(AppendLastChunk(nil, []byte("A: 1\r\n"))); got != "0\r\nA: 1\r\n\r\n" {
		t.Errorf("AppendLastChunk: %q", got)
	}
	// Round trip through the reader.
	body := AppendLastChunk(AppendChunk(AppendChunk(nil, []byte("hello ")), []byte("world")), []byte("T: v\r\n"))
	data, trailers, err, _ := readChunked(string(body), 4096, perr.MalformedResponse)
	if err != nil || data != "hello world" || trailers != "T: v\r\n" {
		t.Errorf("round trip: %q %q %v", data, trailers, err)
	}
}
