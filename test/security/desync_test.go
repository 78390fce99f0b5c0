//go:build linux

package security_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// poison is a complete response a broken machine sends where none belongs.
// A proxy that reuses the connection serves it to the next client.
var poison = okResponse("poison")

// TestDesyncEveryClientGetsItsOwnResponse: a machine that sends more than
// its response's framing says (a body after a HEAD, two responses to one
// request, a body longer than its Content-Length, a 408 on an idle
// connection) must not make the proxy hand those bytes to the next client
// on the pooled connection. Every client gets the answer to its own
// request, whatever the front end.
func TestDesyncEveryClientGetsItsOwnResponse(t *testing.T) {
	cases := []struct {
		name string
		// method and h2 are how the first client asks.
		method string
		h2     bool
		// answer is what the machine writes for the first request.
		answer func(c *recConn, path string)
	}{
		{"body after HEAD", http.MethodHead, false, func(c *recConn, path string) {
			io.WriteString(c, okResponse("for "+path)+poison)
		}},
		{"body after HEAD from an h2 client", http.MethodHead, true, func(c *recConn, path string) {
			io.WriteString(c, okResponse("for "+path)+poison)
		}},
		{"two responses to one request", http.MethodGet, false, func(c *recConn, path string) {
			io.WriteString(c, okResponse("for "+path)+poison)
		}},
		{"body longer than Content-Length", http.MethodGet, false, func(c *recConn, path string) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfor /1"+poison)
		}},
		{"a later segment after the response", http.MethodGet, false, func(c *recConn, path string) {
			io.WriteString(c, okResponse("for "+path))
			time.Sleep(50 * time.Millisecond)
			io.WriteString(c, poison)
		}},
		{"408 on the idle connection", http.MethodGet, false, func(c *recConn, path string) {
			io.WriteString(c, okResponse("for "+path))
			time.Sleep(50 * time.Millisecond)
			io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 7\r\n\r\ntimeout")
		}},
	}
	// POSTs go through the upstream path that streams request bodies,
	// GETs and HEADs through the bodiless one: both must hold.
	var all []struct {
		name   string
		method string
		h2     bool
		answer func(c *recConn, path string)
	}
	for _, tc := range cases {
		all = append(all, tc)
		if tc.method == http.MethodGet {
			tc.name += " to a POST"
			tc.method = http.MethodPost
			all = append(all, tc)
		}
	}
	for _, tc := range all {
		t.Run(tc.name, func(t *testing.T) {
			rec := startRecorder(t, serveEach(func(c *recConn, req *http.Request, _ []byte) bool {
				if req.URL.Path == "/1" {
					tc.answer(c, req.URL.Path)
					return true
				}
				io.WriteString(c, okResponse("for "+req.URL.Path))
				return true
			}))
			env := startProxy(t, baseConfig, rec.Port())
			var body io.Reader
			if tc.method == http.MethodPost {
				body = strings.NewReader("a body")
			}
			first, err := http.NewRequest(tc.method, "https://"+env.tlsAddr+"/1", body)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.h2 {
				first.URL.Scheme, first.URL.Host = "http", env.plainAddr
			}
			resp, err := client(t, tc.h2).Do(first)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// Let the late bytes of the slow cases land on the idle
			// connection before the next clients take it.
			time.Sleep(200 * time.Millisecond)
			// Later clients, each on a connection of its own, over both
			// front ends.
			for i, h2 := range []bool{false, true, false, false} {
				path := "/next" + string(rune('a'+i))
				url := "http://" + env.plainAddr + path
				if h2 {
					url = "https://" + env.tlsAddr + path
				}
				var resp *http.Response
				var err error
				if i == 3 {
					resp, err = client(t, h2).Post(url, "text/plain", strings.NewReader("more"))
				} else {
					resp, err = client(t, h2).Get(url)
				}
				if err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if got, want := string(b), "for "+path; got != want || resp.StatusCode != 200 {
					t.Errorf("client %d asked for %s, got status %d body %q", i, path, resp.StatusCode, got)
				}
			}
			if n := rec.Requests(); n != 5 {
				t.Errorf("machine received %d requests, want 5", n)
			}
		})
	}
}
