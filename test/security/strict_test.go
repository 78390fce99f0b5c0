//go:build linux

package security_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStrictEveryRequest: what is refused as a connection's first request
// is refused as its second too, and never reaches the machine.
func TestStrictEveryRequest(t *testing.T) {
	rec := startRecorder(t, serveEach(func(c *recConn, req *http.Request, _ []byte) bool {
		io.WriteString(c, okResponse("for "+req.URL.Path))
		return true
	}))
	env := startProxy(t, baseConfig, rec.Port())
	first := "GET /first HTTP/1.1\r\nHost: sec.test\r\n\r\n"
	for _, tc := range []struct {
		name, second, status, code string
	}{
		{"10,000-byte method", strings.Repeat("G", 10000) + " / HTTP/1.1\r\nHost: sec.test\r\n\r\n", "400", "PH01"},
		{"bare LF", "GET /second HTTP/1.1\nHost: sec.test\n\n", "400", "PH01"},
		{"double space", "GET  /second HTTP/1.1\r\nHost: sec.test\r\n\r\n", "400", "PH01"},
		{"16 KB target", "GET /" + strings.Repeat("a", 16<<10) + " HTTP/1.1\r\nHost: sec.test\r\n\r\n", "414", "PH08"},
		{"Content-Length with Transfer-Encoding", "POST /second HTTP/1.1\r\nHost: sec.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400", "PH01"},
		{"obs-fold", "GET /second HTTP/1.1\r\nHost: sec.test\r\nX: a\r\n b\r\n\r\n", "400", "PH01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := rec.Requests()
			got := rawExchange(t, env.plainAddr, first+tc.second, 5*time.Second)
			if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.Contains(got, "for /first") {
				t.Fatalf("the first request was not answered: %.200q", got)
			}
			i := strings.Index(got, "for /first")
			rest := got[i+len("for /first"):]
			if !strings.HasPrefix(rest, "HTTP/1.1 "+tc.status+" ") || !strings.Contains(rest, "Edgeproxy-Error-Code: "+tc.code) {
				t.Fatalf("second request: got %.300q, want %s with %s", rest, tc.status, tc.code)
			}
			if n := rec.Requests() - before; n != 1 {
				t.Fatalf("machine got %d requests, want only the first", n)
			}
		})
	}
}

// TestContentLengthWithTransferEncodingCloses: refused as nginx does, and
// the connection is closed, never kept for a request whose framing the
// two ends could read differently.
func TestContentLengthWithTransferEncodingCloses(t *testing.T) {
	rec := startRecorder(t, serveEach(func(c *recConn, req *http.Request, _ []byte) bool {
		io.WriteString(c, okResponse("for "+req.URL.Path))
		return true
	}))
	env := startProxy(t, baseConfig, rec.Port())
	req := "POST /x HTTP/1.1\r\nHost: sec.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: sec.test\r\n\r\n"
	got := rawExchange(t, env.plainAddr, req, 5*time.Second)
	if !strings.HasPrefix(got, "HTTP/1.1 400 ") || strings.Count(got, "HTTP/1.1") != 1 {
		t.Fatalf("got %q, want one 400 and the connection closed", got)
	}
	if strings.Contains(string(rec.Received()), "smuggled") || rec.Requests() != 0 {
		t.Fatalf("machine received %q", rec.Received())
	}
}
