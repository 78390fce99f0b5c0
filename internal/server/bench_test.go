package server_test

import (
	"fmt"
	"io"
	"net"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})}
	go origin.Serve(ln)
	defer origin.Close()
	cfg := "[log]\naccess_log = \"off\"\n" +
		singleApp(machine("m1", ln.Addr().(*net.TCPAddr).Port), limits("requests", 1000, 0))
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
