package h1scan

import "testing"

// A browser-sized GET head, about 500 bytes.
const browserGet = "GET /assets/app.3f9a1c.js HTTP/1.1\r\n" +
	"Host: example.fly.dev\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n" +
	"Accept-Language: en-GB,en;q=0.9\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Cookie: session=7f3a9c2e1b; theme=dark\r\n" +
	"Sec-Fetch-Mode: navigate\r\n" +
	"Connection: keep-alive\r\n\r\n"

// BenchmarkFeedHead is the Scanner's cost per request head.
func BenchmarkFeedHead(b *testing.B) {
	s := New(64 << 10)
	p := []byte(browserGet)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := s.Feed(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFeedBody is its cost on a Content-Length body, skipped in bulk.
func BenchmarkFeedBody(b *testing.B) {
	s := New(64 << 10)
	head := []byte("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1099511627776\r\n\r\n")
	if _, err := s.Feed(head); err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 32<<10)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		s.Feed(p)
	}
}
