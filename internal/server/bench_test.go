package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// BenchmarkHTTPRequest sends keep-alive HTTP/1.1 requests for a 100-byte
// response through the proxy to an in-process origin. Allocations per
// request include the client's and the origin's (the same in every run),
// so changes in allocs/op and B/op are the proxy's.
//
//	go test -run NONE -bench HTTPRequest -benchmem ./internal/server/
func BenchmarkHTTPRequest(b *testing.B) {
	body := []byte(strings.Repeat("x", 100))
	port := httpOrigin(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	}))
	cfg := "[log]\naccess_log = \"off\"\n" + singleApp(machine("m1", port), limits("requests", 1000, 0))
	p := proxytest.Start(b, cfg, proxytest.Options{})
	c := p.Client(80, false)
	req, _ := http.NewRequest("GET", "http://app.test/", nil)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 100 {
			b.Fatal(fmt.Sprintf("status %d, %d bytes", resp.StatusCode, n))
		}
	}
}

// BenchmarkCompressedResponse sends keep-alive requests for a 64 KiB HTML
// page through a port with http_options.compress, for each coding: the
// CPU a compressed response costs (ns/op) and its size on the wire
// (wire-bytes), in-process, with the client's decoding left out.
//
//	go test -run NONE -bench CompressedResponse -benchmem ./internal/server/
func BenchmarkCompressedResponse(b *testing.B) {
	page := htmlLike(64 << 10)
	port := httpOrigin(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write(page)
	}))
	cfg := "[log]\naccess_log = \"off\"\n" + singleApp(machine("m1", port), compressService)
	p := proxytest.Start(b, cfg, proxytest.Options{})
	for _, enc := range []string{"identity", "gzip", "br", "zstd"} {
		b.Run(enc, func(b *testing.B) {
			c := p.Client(80, false)
			c.Transport.(*http.Transport).DisableCompression = true
			req, _ := http.NewRequest("GET", "http://app.test/", nil)
			req.Header.Set("Accept-Encoding", enc)
			var wire int64
			b.ReportAllocs()
			b.SetBytes(int64(len(page)))
			for b.Loop() {
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
				wire += n
			}
			b.ReportMetric(float64(wire)/float64(b.N), "wire-bytes")
		})
	}
}

// htmlLike is n bytes of markup-like text, words drawn by a fixed
// sequence: about as compressible as a real page (4:1 under gzip), where
// a repeated line would flatter every coding.
func htmlLike(n int) []byte {
	words := strings.Fields(`the of edge proxy machine request response region app connection header
		body stream client server load balance certificate fleet worker <p> </p> <li> </li>
		<a href="/docs"> </a> class="item" data-id= 0 1 2 3 4 5 6 7 8 9`)
	out := make([]byte, 0, n+16)
	x := uint32(2463534242)
	for len(out) < n {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		if x%7 == 0 {
			out = append(out, '\n')
		}
		out = append(append(out, words[x%uint32(len(words))]...), ' ')
	}
	return out[:n]
}
