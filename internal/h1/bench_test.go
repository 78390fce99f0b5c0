package h1

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"

	"github.com/valyala/fasthttp"
)

// browserGet is a browser-like GET head: ten fields, about 500 bytes (the
// same head as before, with a few more fields).
const browserGet = "GET /assets/app.3f9a1c.js?v=20251104 HTTP/1.1\r\n" +
	"Host: example.fly.dev\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n" +
	"Accept-Language: en-GB,en;q=0.9\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Referer: https://example.fly.dev/\r\n" +
	"Cookie: session=7f3a9c2e1b; theme=dark\r\n" +
	"Sec-Fetch-Mode: no-cors\r\n" +
	"Sec-Fetch-Site: same-origin\r\n" +
	"Connection: keep-alive\r\n\r\n"

// curlGet is what curl sends by default.
const curlGet = "GET /healthz HTTP/1.1\r\n" +
	"Host: example.fly.dev\r\n" +
	"User-Agent: curl/8.11.0\r\n" +
	"Accept: */*\r\n\r\n"

// typicalResponse is an app's answer to browserGet.
const typicalResponse = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: application/javascript; charset=utf-8\r\n" +
	"Content-Length: 48213\r\n" +
	"Cache-Control: public, max-age=31536000, immutable\r\n" +
	"ETag: \"3f9a1c-bc55\"\r\n" +
	"Last-Modified: Tue, 04 Nov 2025 10:12:33 GMT\r\n" +
	"Vary: Accept-Encoding\r\n" +
	"Date: Wed, 05 Nov 2025 08:00:00 GMT\r\n" +
	"Server: uvicorn\r\n\r\n"

var requestInputs = []struct{ name, in string }{
	{"browser", browserGet},
	{"curl", curlGet},
}

// BenchmarkParseRequest compares ParseRequest with net/http's and
// fasthttp's request head readers on the same bytes. net/http and fasthttp
// read from a bufio.Reader, reset each iteration over a bytes.Reader; that
// costs a few ns, against hundreds for parsing.
func BenchmarkParseRequest(b *testing.B) {
	for _, in := range requestInputs {
		buf := []byte(in.in)
		b.Run(in.name+"/h1", func(b *testing.B) {
			var h Head
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseRequest(buf, &h, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(in.name+"/nethttp", func(b *testing.B) {
			rd := bytes.NewReader(buf)
			br := bufio.NewReader(rd)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(buf)
				br.Reset(rd)
				if _, err := http.ReadRequest(br); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(in.name+"/fasthttp", func(b *testing.B) {
			var h fasthttp.RequestHeader
			rd := bytes.NewReader(buf)
			br := bufio.NewReader(rd)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(buf)
				br.Reset(rd)
				if err := h.Read(br); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseResponse does the same for a response head.
func BenchmarkParseResponse(b *testing.B) {
	buf := []byte(typicalResponse)
	get := []byte("GET")
	b.Run("h1", func(b *testing.B) {
		var h Head
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseResponse(buf, &h, get, Limits{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("nethttp", func(b *testing.B) {
		rd := bytes.NewReader(buf)
		br := bufio.NewReader(rd)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			rd.Reset(buf)
			br.Reset(rd)
			if _, err := http.ReadResponse(br, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fasthttp", func(b *testing.B) {
		var h fasthttp.ResponseHeader
		rd := bytes.NewReader(buf)
		br := bufio.NewReader(rd)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			rd.Reset(buf)
			br.Reset(rd)
			if err := h.Read(br); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkChunkedReader is the decoder's cost on 16 KiB chunks.
func BenchmarkChunkedReader(b *testing.B) {
	data := bytes.Repeat([]byte("x"), 16<<10)
	var body []byte
	for range 8 {
		body = AppendChunk(body, data)
	}
	body = AppendLastChunk(body, nil)
	rd := bytes.NewReader(body)
	br := bufio.NewReaderSize(rd, 32<<10)
	var c ChunkedReader
	p := make([]byte, 32<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		br.Reset(rd)
		c.Reset(br, "PH01", 0)
		for {
			if _, err := c.Read(p); err != nil {
				break
			}
		}
	}
}
