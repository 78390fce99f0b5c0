package sniff

import (
	"strings"
	"testing"
)

func TestHTTP1(t *testing.T) {
	tests := []struct {
		in   string
		want Result
		line RequestLine
	}{
		{"GET / HTTP/1.1\r\n", Match, RequestLine{"GET", "/", "HTTP/1.1"}},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Match, RequestLine{"GET", "/", "HTTP/1.1"}},
		{"POST /a/b?c=d&e=%20 HTTP/1.0\r\n", Match, RequestLine{"POST", "/a/b?c=d&e=%20", "HTTP/1.0"}},
		{"OPTIONS * HTTP/1.1\r\n", Match, RequestLine{"OPTIONS", "*", "HTTP/1.1"}},
		{"CONNECT db.internal:5432 HTTP/1.1\r\n", Match, RequestLine{"CONNECT", "db.internal:5432", "HTTP/1.1"}},
		{"GET http://x.example/ HTTP/1.1\r\n", Match, RequestLine{"GET", "http://x.example/", "HTTP/1.1"}},
		{"M-SEARCH * HTTP/1.1\r\n", Match, RequestLine{"M-SEARCH", "*", "HTTP/1.1"}},
		{"get / HTTP/1.9\r\n", Match, RequestLine{"get", "/", "HTTP/1.9"}},
		{"UPDATEREDIRECTREF / HTTP/1.1\r\n", Match, RequestLine{"UPDATEREDIRECTREF", "/", "HTTP/1.1"}},
		{strings.Repeat("M", maxMethod) + " / HTTP/1.1\r\n", Match, RequestLine{strings.Repeat("M", maxMethod), "/", "HTTP/1.1"}},

		{"", NeedMore, RequestLine{}},
		{"G", NeedMore, RequestLine{}},
		{"GET", NeedMore, RequestLine{}},
		{"GET ", NeedMore, RequestLine{}},
		{"GET /index.html", NeedMore, RequestLine{}},
		{"GET / ", NeedMore, RequestLine{}},
		{"GET / HTTP/1.", NeedMore, RequestLine{}},
		{"GET / HTTP/1.1\r", NeedMore, RequestLine{}},
		{strings.Repeat("M", maxMethod), NeedMore, RequestLine{}},

		{" GET / HTTP/1.1\r\n", NoMatch, RequestLine{}},
		{"\r\nGET / HTTP/1.1\r\n", NoMatch, RequestLine{}},
		{"GET  / HTTP/1.1\r\n", NoMatch, RequestLine{}},
		{"GET /  HTTP/1.1\r\n", NoMatch, RequestLine{}},
		{"GET\t/ HTTP/1.1\r\n", NoMatch, RequestLine{}},
		{"GET(x) / HTTP/1.1\r\n", NoMatch, RequestLine{}},
		{"GET /\x7f HTTP/1.1\r\n", NoMatch, RequestLine{}},
		{"GET /caf\xc3\xa9 HTTP/1.1\r\n", NoMatch, RequestLine{}},
		{"GET / HTTP/1.1\n", NoMatch, RequestLine{}},
		{"GET / HTTP/1.x\r\n", NoMatch, RequestLine{}},
		{"GET / HTTP/2.0\r\n", NoMatch, RequestLine{}},
		{"GET / http/1.1\r\n", NoMatch, RequestLine{}},
		{"GET / HTTP/1.1 \r\n", NoMatch, RequestLine{}},
		{"GET / HTTP/1.10\r\n", NoMatch, RequestLine{}},
		{"GET /\r\n", NoMatch, RequestLine{}},
		{strings.Repeat("M", maxMethod+1), NoMatch, RequestLine{}},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NoMatch, RequestLine{}},
		{"SSH-2.0-OpenSSH_9.6\r\n", NoMatch, RequestLine{}},
		{"\x16\x03\x01\x02\x00\x01", NoMatch, RequestLine{}},
		{"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n", NoMatch, RequestLine{}},
	}
	for _, tt := range tests {
		v := checkPrefixes(t, []byte(tt.in), http1Verdict)
		if v.r != tt.want || v.info.(RequestLine) != tt.line {
			t.Errorf("HTTP1(%q) = %v, %+v; want %v, %+v", tt.in, v.r, v.info, tt.want, tt.line)
		}
	}
}

// TestHTTP1LineLimit pins the boundary: a line of exactly MaxRequestLine
// bytes matches, one byte longer is refused without waiting for the CRLF.
func TestHTTP1LineLimit(t *testing.T) {
	line := func(n int) string {
		target := "/" + strings.Repeat("a", n-len("GET / HTTP/1.1\r\n"))
		return "GET " + target + " HTTP/1.1\r\n"
	}
	if r, _ := HTTP1([]byte(line(MaxRequestLine))); r != Match {
		t.Errorf("line of %d bytes: %v, want Match", MaxRequestLine, r)
	}
	long := line(MaxRequestLine + 1)
	if r, _ := HTTP1([]byte(long)); r != NoMatch {
		t.Errorf("line of %d bytes: %v, want NoMatch", MaxRequestLine+1, r)
	}
	// The decision comes at the first target byte past the limit.
	cut := MaxRequestLine - len(" HTTP/1.1\r\n") + 1
	if r, _ := HTTP1([]byte(long[:cut])); r != NoMatch {
		t.Errorf("long target cut at %d: %v, want NoMatch", cut, r)
	}
	if r, _ := HTTP1([]byte(long[:cut-1])); r != NeedMore {
		t.Errorf("long target cut at %d: %v, want NeedMore", cut-1, r)
	}
}

func TestHTTP1Attempt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Result
	}{
		// Malformed HTTP/1 request lines: answered 400.
		{"GET /a b HTTP/1.1\r\n", Match},
		{"GET  / HTTP/1.1\r\n", Match},
		{"GET / HTTP/1.1\n", Match},
		{"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", Match},
		{strings.Repeat("G", 100) + " / HTTP/1.1\r\n", Match},
		{"\r\n\r\nGET(x) / HTTP/1.0\r\n", Match},
		{"GET /\xc3\xa9 HTTP/1.1\r\n", Match},
		// Not HTTP at all: closed.
		{"INVALID CONNECTION PREFACE\r\n\r\n", NoMatch}, // h2spec http2/3.5/2
		{"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", NoMatch},
		{"\x00\x01 not http\r\n\r\n", NoMatch},
		{"\x16\x03\x01\x02\x00\x01", NoMatch}, // a TLS ClientHello
		{"GET / HTTP/1.1\x00\r\n", NoMatch},
		{"SSH-2.0-OpenSSH_9.6\r\n", NoMatch},
		{"\r\n\n\r\nhello\n", NoMatch},
		// Text, the line not ended yet.
		{"", NeedMore},
		{"\r", NeedMore},
		{"\r\n", NeedMore},
		{"INVALID CONNECTION PREF", NeedMore},
		{"GET /a b HTTP/1.1\r", NeedMore},
	} {
		if got := HTTP1Attempt([]byte(tc.in)); got != tc.want {
			t.Errorf("HTTP1Attempt(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestH2Preface(t *testing.T) {
	for i := range len(h2Preface) {
		if r := H2Preface([]byte(h2Preface[:i])); r != NeedMore {
			t.Errorf("H2Preface(%q) = %v, want NeedMore", h2Preface[:i], r)
		}
	}
	if r := H2Preface([]byte(h2Preface + "\x00\x00\x12\x04")); r != Match {
		t.Errorf("preface and a SETTINGS frame: %v, want Match", r)
	}
	for _, in := range []string{"PRI * HTTP/1.1\r\n", "GET", "pri", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r"} {
		if r := H2Preface([]byte(in)); r != NoMatch {
			t.Errorf("H2Preface(%q) = %v, want NoMatch", in, r)
		}
	}
}

func TestDetect(t *testing.T) {
	hello := readGolden(t, "go-alpn.bin")
	tests := []struct {
		in   string
		want Protocol
		r    Result
	}{
		{"", ProtoUnknown, NeedMore},
		{string(hello), ProtoTLS, Match},
		{string(hello[:len(hello)-1]), ProtoUnknown, NeedMore},
		{"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", ProtoUnknown, NoMatch},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", ProtoHTTP1, Match},
		{"GET / HTTP/1.1\r", ProtoUnknown, NeedMore},
		{h2Preface, ProtoH2C, Match},
		{"PRI * HTTP/2.0\r\n", ProtoUnknown, NeedMore},
		{"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n", ProtoPROXYv1, Match},
		{"PROXY ", ProtoPROXYv1, Match},
		{"PROXY", ProtoUnknown, NeedMore},
		{"PROXYISH\r\n", ProtoUnknown, NoMatch},
		// Both a PROXY v1 signature and a request line: the ranking decides.
		{"PROXY / HTTP/1.1\r\n", ProtoPROXYv1, Match},
		{proxyV2Sig + "\x21\x11\x00\x0c", ProtoPROXYv2, Match},
		{proxyV2Sig[:11], ProtoUnknown, NeedMore},
		{"\r\n\r\nx", ProtoUnknown, NoMatch},
		{"SSH-2.0-OpenSSH_9.6\r\n", ProtoUnknown, NoMatch},
		{"\x00\x00\x00\x08\x04\xd2\x16\x2f", ProtoUnknown, NoMatch}, // PostgreSQL SSLRequest
	}
	for _, tt := range tests {
		v := checkPrefixes(t, []byte(tt.in), detectVerdict)
		if v.r != tt.r || v.info.(Protocol) != tt.want {
			t.Errorf("Detect(%.40q) = %v, %v; want %v, %v", tt.in, v.info, v.r, tt.want, tt.r)
		}
	}
}

func TestStrings(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{NeedMore.String(), "NeedMore"}, {Match.String(), "Match"}, {NoMatch.String(), "NoMatch"},
		{Result(9).String(), "Result(?)"},
		{ProtoUnknown.String(), "unknown"}, {ProtoTLS.String(), "tls"}, {ProtoHTTP1.String(), "http1"},
		{ProtoH2C.String(), "h2c"}, {ProtoPROXYv1.String(), "proxy-v1"}, {ProtoPROXYv2.String(), "proxy-v2"},
		{Protocol(9).String(), "protocol(?)"},
	} {
		if tt.got != tt.want {
			t.Errorf("String() = %q, want %q", tt.got, tt.want)
		}
	}
}
