package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// requestSeeds are heads and near-heads for the request fuzzers.
var requestSeeds = []string{
	get, browserGet, curlGet,
	"GET / HTTP/1.0\r\n\r\n",
	"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + get,
	"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\nT: 1\r\n\r\n" + get,
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
	"POST / HTTP/1.1\r\nHost: a\r\nTrailer: X, Content-Length\r\nContent-Length: 0\r\n\r\n",
	"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
	"GET / HTTP/1.5\r\nHost: a\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"\r\n" + get,
}

// headFacts is a Head without its buffer, to compare two parses.
type headFacts struct {
	Method, Target, Reason, Host Span
	Minor                        uint8
	Status                       int
	Fields                       []Field
	ContentLength                int64
	Chunked, Close, Upgrade      bool
	Expect100, HasHost           bool
}

func factsOf(h *Head) headFacts {
	return headFacts{h.Method, h.Target, h.Reason, h.Host, h.Minor, h.Status,
		append([]Field(nil), h.Fields...), h.ContentLength,
		h.Chunked, h.Close, h.Upgrade, h.Expect100, h.HasHost}
}

// checkParse holds for any parse: an outcome of the documented kinds, and
// for an accepted head, spans within it, the same reading of the head
// alone, and ErrNeedMore on every proper prefix.
func checkParse(t *testing.T, in []byte, lim Limits, parse func([]byte, *Head) (int, error)) {
	var h Head
	n, err := parse(in, &h)
	if err != nil {
		var e *Error
		switch {
		case err == ErrNeedMore:
			if len(in) > lim.maxHead() {
				t.Fatalf("ErrNeedMore with %d bytes over a limit of %d", len(in), lim.maxHead())
			}
		case errors.As(err, &e):
			for _, c := range []byte(e.Reason) {
				if c < ' ' || c > '~' {
					t.Fatalf("reason %q echoes raw bytes", e.Reason)
				}
			}
			// A refusal stands whatever follows.
			var h2 Head
			if _, err2 := parse(append(in[:len(in):len(in)], "\r\n\r\n"...), &h2); !reflect.DeepEqual(err, err2) {
				t.Fatalf("refused with %v, then with more bytes %v", err, err2)
			}
		default:
			t.Fatalf("error of type %T: %v", err, err)
		}
		return
	}
	if n <= 0 || n > len(in) || n > lim.maxHead() || len(h.Buf) != n || &h.Buf[0] != &in[0] {
		t.Fatalf("n %d, Buf %d bytes, input %d", n, len(h.Buf), len(in))
	}
	for _, s := range []Span{h.Method, h.Target, h.Reason, h.Host} {
		if int(s.Off)+int(s.Len) > n {
			t.Fatalf("span %+v outside a head of %d bytes", s, n)
		}
	}
	for _, f := range h.Fields {
		if int(f.Name.Off)+int(f.Name.Len) > n || int(f.Value.Off)+int(f.Value.Len) > n || f.Name.Len == 0 {
			t.Fatalf("field %+v outside a head of %d bytes", f, n)
		}
	}
	want := factsOf(&h)
	var again Head
	if n2, err := parse(in[:n], &again); err != nil || n2 != n || !reflect.DeepEqual(factsOf(&again), want) {
		t.Fatalf("the head alone: n %d err %v, facts %+v, want %+v", n2, err, factsOf(&again), want)
	}
	// Every prefix of a short head, a sample of a long one's: checking all
	// would make the check quadratic and the fuzzer's minimising crawl.
	step := max(1, n/128)
	for k := 0; k < n; k += step {
		for _, k := range []int{k, n - 1 - k} {
			if _, err := parse(in[:k], &again); err != ErrNeedMore {
				t.Fatalf("prefix of %d bytes: %v, want ErrNeedMore", k, err)
			}
		}
	}
}

func limitOf(sel uint8) Limits {
	return Limits{MaxHead: []int{0, 64, 200, 8200}[sel%4]}
}

func FuzzParseRequest(f *testing.F) {
	for i, s := range requestSeeds {
		f.Add([]byte(s), uint8(i))
	}
	f.Fuzz(func(t *testing.T, in []byte, sel uint8) {
		lim := limitOf(sel)
		checkParse(t, in, lim, func(b []byte, h *Head) (int, error) { return ParseRequest(b, h, lim) })
	})
}

func FuzzParseResponse(f *testing.F) {
	for i, s := range []string{
		typicalResponse, "HTTP/1.1 200\nA: b\n\n", "HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(i))
	}
	methods := []string{"GET", "HEAD", "CONNECT", "POST"}
	f.Fuzz(func(t *testing.T, in []byte, sel uint8) {
		lim, method := limitOf(sel), []byte(methods[sel/4%4])
		checkParse(t, in, lim, func(b []byte, h *Head) (int, error) { return ParseResponse(b, h, method, lim) })
		var h Head
		if _, err := ParseResponse(in, &h, method, lim); err == nil {
			kind := ResponseBody(&h, method)
			if h.Chunked && h.ContentLength >= 0 || kind == BodyUntilClose && !h.Close {
				t.Fatalf("framing: chunked %v length %d kind %v close %v", h.Chunked, h.ContentLength, kind, h.Close)
			}
		}
	})
}

func FuzzChunked(f *testing.F) {
	for i, s := range []string{
		"0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n",
		"5;a=b\r\nhello\r\nA ; ext\r\n0123456789\r\n000\r\nX-Sum: 1\r\n\r\n",
		"5\r\nhello\n0\r\n\r\n", "0\r\nBad Trailer: x\r\n\r\n", "1 \r\nh\r\n0\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(i))
	}
	f.Fuzz(func(t *testing.T, body []byte, size uint8) {
		const follow = "GET /next HTTP/1.1\r\n"
		in := append(body[:len(body):len(body)], follow...)
		br := bufio.NewReaderSize(bytes.NewReader(in), 16+int(size))
		c := NewChunkedReader(br, perr.MalformedResponse, 256)
		data, err := io.ReadAll(c)
		if err != nil {
			var e *Error
			if err != io.ErrUnexpectedEOF && !(errors.As(err, &e) && e.Code == perr.MalformedResponse && e.Status == 502) {
				t.Fatalf("error %T %v", err, err)
			}
			return
		}
		// Nothing past the body was consumed, and what was is a body.
		rest, _ := io.ReadAll(br)
		if !bytes.HasSuffix(rest, []byte(follow)) {
			t.Fatalf("read into what follows: %q left", rest)
		}
		used := in[:len(in)-len(rest)]
		if !bytes.HasSuffix(used, []byte("\r\n")) || len(data) >= len(used) {
			t.Fatalf("consumed %q for %d data bytes", used, len(data))
		}
		trailers := c.Trailers()
		if trailers != nil && !bytes.HasSuffix(trailers, []byte("\r\n")) {
			t.Fatalf("trailers %q", trailers)
		}
		// What the writer makes of the data and trailers reads the same.
		var re []byte
		for p := data; len(p) > 0; p = p[min(len(p), 7):] {
			re = AppendChunk(re, p[:min(len(p), 7)])
		}
		re = AppendLastChunk(re, trailers)
		c2 := NewChunkedReader(bufio.NewReader(bytes.NewReader(re)), perr.MalformedResponse, 256)
		if data2, err := io.ReadAll(c2); err != nil || !bytes.Equal(data2, data) || !bytes.Equal(c2.Trailers(), trailers) {
			t.Fatalf("re-encoded %q: %q %q %v", re, data2, c2.Trailers(), err)
		}
		agreeWithHTTPUtil(t, used)
	})
}

// TestSeedsParse keeps the seeds meaningful: the fuzzers start from heads
// that parse, not only from refusals.
func TestSeedsParse(t *testing.T) {
	accepted := 0
	for _, s := range requestSeeds {
		var h Head
		if _, err := ParseRequest([]byte(s), &h, Limits{}); err == nil {
			accepted++
		} else if !strings.Contains(s, "\n\n") && !strings.Contains(s, "folded") && err == ErrNeedMore {
			t.Errorf("seed %.40q incomplete", s)
		}
	}
	if accepted < len(requestSeeds)/2 {
		t.Errorf("only %d of %d request seeds parse", accepted, len(requestSeeds))
	}
}
