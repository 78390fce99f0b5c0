package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// compressPage is what compressMachine's /page sends: 10 KiB of HTML.
func compressPage() []byte {
	return bytes.Repeat([]byte("<p>edgeproxy compresses what the machine sends</p>\n"), 200)
}

// compressMachine is a machine whose responses exercise every rule of
// http_options.compress. /sse sends one event, then waits for next to be
// closed before the second, so a test can see the first arrive while the
// machine still holds the stream open.
func compressMachine(t testing.TB, next chan struct{}) int {
	t.Helper()
	page := compressPage()
	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("Vary", r.URL.Query().Get("vary"))
		w.Header().Set("Cache-Control", r.URL.Query().Get("cc"))
		w.Write(page)
	})
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(page[:100])
	})
	mux.HandleFunc("/png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(page)
	})
	mux.HandleFunc("/gzipped", func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		g := gzip.NewWriter(&b)
		g.Write(page)
		g.Close()
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(b.Bytes())
	})
	mux.HandleFunc("/partial", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(page)-1, 2*len(page)))
		w.WriteHeader(206)
		w.Write(page)
	})
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		// ?then=D sends the second event after D instead of waiting for
		// next, so that a benchmark's streams end by themselves.
		var after <-chan time.Time
		if d, err := time.ParseDuration(r.URL.Query().Get("then")); err == nil {
			after = time.After(d)
		}
		select {
		case <-next:
		case <-after:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: second\n\n")
	})
	return httpOrigin(t, mux)
}

// httpOrigin serves h on a loopback port until the test ends and returns
// the port: a machine for the proxy under test.
func httpOrigin(t testing.TB, h http.Handler) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

const compressService = `
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.tls_options]
    default_self_signed = true
    [apps.http_service.http_options]
    compress = true
`

func decodeBody(t testing.TB, enc string, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch enc {
	case "":
		return body
	case "gzip":
		g, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r = g
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "zstd":
		z, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer z.Close()
		r = z
	default:
		t.Fatalf("unexpected Content-Encoding %q", enc)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", enc, err)
	}
	return out
}

func TestCompression(t *testing.T) {
	next := make(chan struct{})
	defer close(next)
	port := compressMachine(t, next)
	p := proxytest.Start(t, singleApp(machine("m1", port), compressService), proxytest.Options{})
	page := compressPage()
	cases := []struct {
		path, accept string
		enc          string // the coding expected
		vary         bool
	}{
		{"/page", "gzip, deflate, br, zstd", "zstd", true},
		{"/page", "gzip, deflate, br", "gzip", true},
		{"/page", "br, gzip;q=0.8", "br", true},
		{"/page", "gzip", "gzip", true},
		{"/page", "br;q=0.5, gzip;q=0.9", "gzip", true},
		{"/page", "br", "br", true},
		{"/page", "gzip;q=0, identity", "", true},
		{"/page", "", "", true},
		{"/page?cc=public,+no-transform", "gzip", "", false},
		{"/page?vary=Origin", "zstd", "zstd", true},
		{"/small", "gzip", "", false},
		{"/png", "gzip", "", false},
		{"/gzipped", "br", "gzip", false}, // the machine's own coding, untouched
		{"/partial", "gzip", "", false},
	}
	for _, h2 := range []bool{false, true} {
		c := p.Client(443, h2)
		c.Transport.(*http.Transport).DisableCompression = true
		for _, tc := range cases {
			name := fmt.Sprintf("h2=%v %s %q", h2, tc.path, tc.accept)
			req, _ := http.NewRequest("GET", "https://app.test"+tc.path, nil)
			if tc.accept != "" {
				req.Header.Set("Accept-Encoding", tc.accept)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			enc := resp.Header.Get("Content-Encoding")
			want := tc.enc
			if enc != want {
				t.Errorf("%s: Content-Encoding %q, want %q", name, enc, want)
				continue
			}
			vary := strings.Join(resp.Header.Values("Vary"), ",")
			if strings.Contains(strings.ToLower(vary), "accept-encoding") != tc.vary {
				t.Errorf("%s: Vary %q", name, vary)
			}
			if tc.path == "/gzipped" {
				continue
			}
			plain := decodeBody(t, enc, body)
			switch tc.path {
			case "/small":
				if !bytes.Equal(plain, page[:100]) {
					t.Errorf("%s: body changed", name)
				}
			default:
				if !bytes.Equal(plain, page) {
					t.Errorf("%s: decoded %d bytes, not the page", name, len(plain))
				}
			}
			if enc == "" {
				continue
			}
			if len(body) >= len(page)/4 {
				t.Errorf("%s: %d bytes for a %d-byte page", name, len(body), len(page))
			}
			if resp.Header.Get("Content-Length") != "" || resp.ContentLength >= 0 {
				t.Errorf("%s: a compressed body carries the machine's length %d", name, resp.ContentLength)
			}
			if et := resp.Header.Get("ETag"); et != `W/"v1"` {
				t.Errorf("%s: ETag %q, want the weak form", name, et)
			}
			if ar := resp.Header.Get("Accept-Ranges"); ar != "" {
				t.Errorf("%s: Accept-Ranges %q on a compressed body", name, ar)
			}
		}
	}
	if got := scrape(t, p, `edgeproxy_http_compressed_total{app="app",encoding="zstd"}`); got != 4 {
		t.Errorf("zstd responses counted %v, want 4", got)
	}
	in := scrape(t, p, `edgeproxy_http_compress_bytes_total{app="app",direction="in"}`)
	out := scrape(t, p, `edgeproxy_http_compress_bytes_total{app="app",direction="out"}`)
	compressed := 0
	for _, tc := range cases {
		if tc.enc != "" && tc.path != "/gzipped" {
			compressed += 2 // over HTTP/1.1 and HTTP/2
		}
	}
	if in != float64(compressed*len(page)) || out <= 0 || out >= in/4 {
		t.Errorf("compress bytes: in %v out %v (page %d)", in, out, len(page))
	}
}

// TestCompressedStreamNotBuffered: an event stream is compressed event
// by event. The machine sends one event and holds the stream open; the
// client must decode that event before the machine sends more.
func TestCompressedStreamNotBuffered(t *testing.T) {
	for _, enc := range []string{"gzip", "br", "zstd"} {
		for _, h2 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/h2=%v", enc, h2), func(t *testing.T) {
				next := make(chan struct{})
				port := compressMachine(t, next)
				p := proxytest.Start(t, singleApp(machine("m1", port), compressService), proxytest.Options{})
				c := p.Client(443, h2)
				c.Transport.(*http.Transport).DisableCompression = true
				req, _ := http.NewRequest("GET", "https://app.test/sse", nil)
				req.Header.Set("Accept-Encoding", enc)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if got := resp.Header.Get("Content-Encoding"); got != enc {
					t.Fatalf("Content-Encoding %q, want %q", got, enc)
				}
				expectEvents(t, streamDecoder(t, enc, resp.Body), next)
			})
		}
	}
}

// expectEvents reads compressMachine's /sse stream (decoded): the first
// event must arrive while the machine holds the stream open, then next
// is closed and the second must follow.
func expectEvents(t *testing.T, dec io.Reader, next chan struct{}) {
	t.Helper()
	lines := bufio.NewReader(dec)
	got := make(chan string, 1)
	go func() {
		l, _ := lines.ReadString('\n')
		got <- l
	}()
	select {
	case l := <-got:
		if l != "data: first\n" {
			t.Fatalf("first event: %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first event did not arrive while the machine held the stream: buffered")
	}
	close(next)
	if rest, err := io.ReadAll(lines); err != nil || string(rest) != "\ndata: second\n\n" {
		t.Fatalf("rest of the stream: %q, %v", rest, err)
	}
}

// streamDecoder decodes a compressed stream as it arrives.
func streamDecoder(t testing.TB, enc string, r io.Reader) io.Reader {
	t.Helper()
	switch enc {
	case "gzip":
		g, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		return g
	case "br":
		return brotli.NewReader(r)
	case "zstd":
		z, err := zstd.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(z.Close)
		return z
	}
	return r
}

// BenchmarkStreamFirstEvent measures how long a server-sent event takes
// from the request to the client's decoded first event, with and without
// compression: the machine sends one event and holds the stream open for
// 20 ms, so a proxy that buffered the stream would deliver it 20 ms late
// at best. The figure to compare is first-event-us between identity and
// each coding.
func BenchmarkStreamFirstEvent(b *testing.B) {
	for _, enc := range []string{"identity", "gzip", "br", "zstd"} {
		b.Run(enc, func(b *testing.B) {
			next := make(chan struct{})
			defer close(next)
			port := compressMachine(b, next)
			p := proxytest.Start(b, singleApp(machine("m1", port), compressService), proxytest.Options{})
			c := p.Client(80, false)
			c.Transport.(*http.Transport).DisableCompression = true
			var total time.Duration
			// The client's decoders are made once and reset for each
			// response, so the figure is the proxy's, not the cost of
			// setting up a decoder.
			var decoders benchDecoders
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ctx, cancel := context.WithCancel(context.Background())
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://app.test/sse?then=20ms", nil)
				req.Header.Set("Accept-Encoding", enc)
				start := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				line, err := bufio.NewReader(decoders.reset(b, enc, resp.Body)).ReadString('\n')
				if err != nil || line != "data: first\n" {
					b.Fatalf("first event: %q, %v", line, err)
				}
				total += time.Since(start)
				cancel()
				resp.Body.Close()
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N), "first-event-us")
		})
	}
}

// TestCompressionBehindWorker: in a fleet, the edge that answers the
// client compresses, once, and a stream relayed by the worker is still
// delivered event by event.
func TestCompressionBehindWorker(t *testing.T) {
	next := make(chan struct{})
	port := compressMachine(t, next)
	app := strings.Replace(fmt.Sprintf(backhaulApp, port), "debug_routing = true", "debug_routing = true\n    compress = true", 1)
	b := startBackhaulPairApp(t, proxytest.Options{}, app)
	var c *http.Client
	waitFor(t, "the edge to serve app.test", 10*time.Second, func() bool {
		if b.edge.Server.Addr(80) == nil {
			return false
		}
		c = b.edge.Client(80, false)
		req, _ := http.NewRequest("GET", "http://app.test/small", nil)
		resp, err := c.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	c.Transport.(*http.Transport).DisableCompression = true
	req, _ := http.NewRequest("GET", "http://app.test/page", nil)
	req.Header.Set("Accept-Encoding", "br")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := compressPage()
	if resp.Header.Get("Content-Encoding") != "br" || !bytes.Equal(decodeBody(t, "br", body), page) {
		t.Fatalf("through the worker: Content-Encoding %q, %d bytes", resp.Header.Get("Content-Encoding"), len(body))
	}
	if v := resp.Header.Values("Content-Encoding"); len(v) != 1 {
		t.Errorf("Content-Encoding %q: compressed twice?", v)
	}

	req, _ = http.NewRequest("GET", "http://app.test/sse", nil)
	req.Header.Set("Accept-Encoding", "zstd")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	expectEvents(t, streamDecoder(t, "zstd", resp.Body), next)
	if n := scrape(t, b.edge, `edgeproxy_http_compressed_total{app="app",encoding="br"}`); n != 1 {
		t.Errorf("edge counted %v br responses, want 1", n)
	}
	if n := scrape(t, b.worker, `edgeproxy_http_compressed_total{app="app",encoding="br"}`); n > 0 {
		t.Errorf("worker counted %v br responses: the body was compressed twice", n)
	}
}

// benchDecoders keeps one decoder per coding for a benchmark's client.
type benchDecoders struct {
	gz *gzip.Reader
	br *brotli.Reader
	zs *zstd.Decoder
}

func (d *benchDecoders) reset(b *testing.B, enc string, r io.Reader) io.Reader {
	var err error
	switch enc {
	case "gzip":
		if d.gz == nil {
			d.gz, err = gzip.NewReader(r)
		} else {
			err = d.gz.Reset(r)
		}
		if err != nil {
			b.Fatal(err)
		}
		return d.gz
	case "br":
		if d.br == nil {
			d.br = brotli.NewReader(r)
		} else if err = d.br.Reset(r); err != nil {
			b.Fatal(err)
		}
		return d.br
	case "zstd":
		if d.zs == nil {
			d.zs, err = zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
			b.Cleanup(d.zs.Close)
		} else {
			err = d.zs.Reset(r)
		}
		if err != nil {
			b.Fatal(err)
		}
		return d.zs
	}
	return r
}

// TestCompressionLimit: with max_compressed_responses = 1, a stream
// being compressed holds the one encoder, and a page meanwhile goes
// uncompressed (still with Vary) and is counted; once the stream ends the
// page is compressed again, and no encoder stays out.
func TestCompressionLimit(t *testing.T) {
	next := make(chan struct{})
	port := compressMachine(t, next)
	cfg := "[limits]\nmax_compressed_responses = 1\n" + singleApp(machine("m1", port), compressService)
	p := proxytest.Start(t, cfg, proxytest.Options{})
	c := p.Client(80, false)
	c.Transport.(*http.Transport).DisableCompression = true
	get := func(path, enc string) *http.Response {
		req, _ := http.NewRequest("GET", "http://app.test"+path, nil)
		req.Header.Set("Accept-Encoding", enc)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	stream := get("/sse", "zstd")
	if stream.Header.Get("Content-Encoding") != "zstd" {
		t.Fatalf("stream: Content-Encoding %q", stream.Header.Get("Content-Encoding"))
	}
	if n := scrape(t, p, "edgeproxy_http_compressing"); n != 1 {
		t.Errorf("compressing %v while the stream runs, want 1", n)
	}
	page := get("/page", "gzip")
	io.Copy(io.Discard, page.Body)
	page.Body.Close()
	if vary := strings.Join(page.Header.Values("Vary"), ","); page.Header.Get("Content-Encoding") != "" || !strings.Contains(vary, "Accept-Encoding") {
		t.Errorf("at the limit: Content-Encoding %q, Vary %q", page.Header.Get("Content-Encoding"), vary)
	}
	waitMetric(t, p, `edgeproxy_http_compress_limited_total{app="app"}`, 1)

	expectEvents(t, streamDecoder(t, "zstd", stream.Body), next)
	stream.Body.Close()
	waitMetric(t, p, "edgeproxy_http_compressing", 0)
	page = get("/page", "gzip")
	io.Copy(io.Discard, page.Body)
	page.Body.Close()
	if page.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("after the stream: Content-Encoding %q", page.Header.Get("Content-Encoding"))
	}
	waitMetric(t, p, "edgeproxy_http_compressing", 0)
}
