//go:build linux

package security_test

// TestSmuggling: HTTP/1.1 request smuggling, one table row per case, run
// against the real binary in front of a recording machine.
// TestSmugglingTable checks the table and the checker themselves.
//
// Method. Every row is a request whose framing or meaning a lenient
// parser (an app's, another proxy's) could read otherwise than the proxy
// does: Content-Length beside Transfer-Encoding (CL.TE, TE.CL), obfuscated
// Transfer-Encoding (TE.TE), odd Content-Length values, broken chunked
// bodies and trailers, header and request-line syntax RFC 9112 rules out
// (sections 2 to 7, and the smuggling notes of section 11.2), Host
// against the target, and Expect. The proxy serves two apps on its plain
// port, so that it routes by host as an edge does; both have the
// recorder as their machine. Each row is written, in one write, on a new
// connection as
//
//	[first] case last
//
// where first is a well-formed GET /first (absent from the rows marked
// alone), case is the row's bytes for /case, and last is a well-formed
// GET /last with "Connection: close", the sentinel: the victim of a
// desync (a smuggled prefix would be glued to it, or it would be eaten as
// a body) and the end of the exchange (once it is answered the proxy
// closes, so a row needs no timeout to end). The answers are read until
// the proxy closes or smugWait passes; what the machine received is read
// byte for byte from the recorder, once it stops growing, and parsed by a
// strict parser of our own (smugParse), not by net/http's lenient one.
//
// A row expects one of two outcomes:
//
//   - refused: the proxy answers the row's status with the row's
//     Edgeproxy-Error-Code after the answer to first, closes the
//     connection (unless keepOpen: a refusal that leaves the framing in
//     no doubt, after which last is answered), and the machine receives
//     nothing of the case: no request and no byte beyond first (and last
//     with keepOpen), and rec.Requests() grows by exactly as much;
//   - forwarded: the machine receives exactly first, the case and last,
//     each complete, the case framed unambiguously (one Content-Length
//     that matches its body, or chunked alone, and no framing or Host
//     field in a trailer) with the body the client meant and the Host the
//     proxy routed by, and no other request (in particular no /smuggled);
//     the client gets the three answers, in order.
//
// Most rows follow first on the same connection: that shows the checks
// hold for every request of a connection, not only its first (the HTTP/1.1
// engine parses every head; the sniffer only sees a connection's start),
// and that a refusal neither swallows nor reorders the answer already
// owed. Rows marked alone are about a connection's first bytes: the
// classic CL.TE and TE.CL attacks, which open a fresh connection to
// poison the next request on it (last plays that request), and request
// lines that a connection's start could take for another protocol
// (HTTP/0.9, HTTP/2.0, an empty line).
//
// A refusal with status 0 is a connection closed without an answer, which
// is what the proxy does, as perr's PH01 documents, when a connection's
// first line names no HTTP/1 version (its client could not read an HTTP/1
// answer); the machine gets nothing of the request either way.
//
// A row whose correct outcome is not today's keeps the correct
// expectation and says why in known: it runs, logs what happened, and
// skips with "known: ..." instead of failing, so the gap shows under -v.
// A known row still fails if anything unsafe happens (a smuggled request
// or bytes that are no request at the machine, a framing it could read
// two ways, a body other than the client's, an answer to another request
// than the one asked, garbage to the client); only the named gap is
// skipped. Known rows are few on purpose: answers stricter than needed
// but safe (400 where RFC 9112 would allow 501, or would allow accepting
// the request) are encoded as they are.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// smugWait bounds one exchange.
	smugWait = 5 * time.Second
	// smugSettle bounds waiting for the machine's bytes to stop growing.
	smugSettle = 2 * time.Second
	// smugHost is the Host line of the app.
	smugHost = "Host: sec.test\r\n"
	// smugFirst is the well-formed request before a case.
	smugFirst = "GET /first HTTP/1.1\r\n" + smugHost + "\r\n"
	// smugLast is the sentinel after a case.
	smugLast = "GET /last HTTP/1.1\r\n" + smugHost + "Connection: close\r\n\r\n"
	// smugSmuggled is a request hidden in a body.
	smugSmuggled = "GET /smuggled HTTP/1.1\r\n" + smugHost + "\r\n"
	// smugSilent is the status of a refusal closed without an answer.
	smugSilent = 0
)

// smugTwoApps makes the plain port shared by a second app on the same
// machine, so that requests are routed by host.
const smugTwoApps = `
[[apps]]
name = "two"
hostnames = ["two.test"]
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.tls_options]
    default_self_signed = true
  [[apps.machines]]
  id = "m2"
  address = "127.0.0.1"
  ports = { 8080 = MACHINE_PORT }
`

// The known gaps (see the file comment).
const (
	smugKnownInBody = "refused inside its chunked body: the head (and the body so far) has already gone on, " +
		"so the machine gets the start of the request and then a close (safe: the body never completes and the " +
		"machine connection is dropped); the client does get the 400 and its code, which the row checks"
)

// smugOutcome is what a row expects.
type smugOutcome int

const (
	smugRefused smugOutcome = iota + 1
	smugForwarded
)

func (o smugOutcome) String() string {
	switch o {
	case smugRefused:
		return "refused"
	case smugForwarded:
		return "forwarded"
	}
	return "no outcome"
}

type smugCase struct {
	name string
	// alone: the case is the connection's first request (no first).
	alone bool
	// req is the case: a request for /case.
	req  string
	want smugOutcome
	// refused: the status (smugSilent: none) and the
	// Edgeproxy-Error-Code answered.
	status int
	code   string
	// keepOpen: a refusal that leaves the framing in no doubt; the
	// connection carries on and last is answered.
	keepOpen bool
	// forwarded: the body the machine must get, its request target (""
	// is /case) and Host ("" is sec.test).
	body   string
	target string
	host   string
	// known, when set, is why today's outcome is not want: the row runs,
	// logs, and skips.
	known string
}

// smugPost is a POST for /case with the given field lines (each ending in
// CRLF) and body.
func smugPost(fields, body string) string {
	return "POST /case HTTP/1.1\r\n" + smugHost + fields + "\r\n" + body
}

// smugGet is a GET for target with the given field lines.
func smugGet(target, fields string) string {
	return "GET " + target + " HTTP/1.1\r\n" + fields + "\r\n"
}

// smugCases is the table.
func smugCases() []smugCase {
	const (
		cl5     = "Content-Length: 5\r\n"
		te      = "Transfer-Encoding: chunked\r\n"
		chunked = "5\r\nhello\r\n0\r\n\r\n"
	)
	refused := func(status int, code string, c smugCase) smugCase {
		c.want, c.status, c.code = smugRefused, status, code
		return c
	}
	ph01 := func(c smugCase) smugCase { return refused(400, "PH01", c) }
	fwd := func(body string, c smugCase) smugCase {
		c.want, c.body = smugForwarded, body
		return c
	}
	// inBody is a chunked body refused after its head went on.
	inBody := func(body string, c smugCase) smugCase {
		c.req, c.known = smugPost(te, body), smugKnownInBody
		return ph01(c)
	}
	// smuggleTE is a chunked body that ends at once, followed by a
	// request that a reader going by Content-Length takes as body.
	smuggleTE := "0\r\n\r\n" + smugSmuggled
	clTE := smugPost("Content-Length: "+strconv.Itoa(len(smuggleTE))+"\r\n"+te, smuggleTE)
	// smuggleCL is a chunked body whose one chunk is a request, which a
	// reader going by a short Content-Length takes as the next request.
	smuggleCL := strconv.FormatInt(int64(len(smugSmuggled)), 16) + "\r\n" + smugSmuggled + "\r\n0\r\n\r\n"
	teCL := smugPost("Content-Length: 4\r\n"+te, smuggleCL)
	clSmuggled := "Content-Length: " + strconv.Itoa(len(smugSmuggled)) + "\r\n"

	return []smugCase{
		// CL.TE and TE.CL (RFC 9112 section 6.3, item 3: a request with
		// both is refused, and the connection closed).
		ph01(smugCase{name: "CL then TE", req: smugPost(cl5+te, chunked)}),
		ph01(smugCase{name: "TE then CL", req: smugPost(te+cl5, chunked)}),
		ph01(smugCase{name: "CL.TE smuggling a request", alone: true, req: clTE}),
		ph01(smugCase{name: "CL.TE after a request", req: clTE}),
		ph01(smugCase{name: "TE.CL smuggling a request", alone: true, req: teCL}),
		ph01(smugCase{name: "TE.CL after a request", req: teCL}),
		ph01(smugCase{name: "TE with Content-Length 0", req: smugPost(te+"Content-Length: 0\r\n", chunked)}),
		// A request inside a body is the body, whatever the framing.
		fwd(smugSmuggled, smugCase{name: "chunk holding a request", req: smugPost(te, smuggleCL)}),
		fwd(smugSmuggled, smugCase{name: "Content-Length body holding a request", req: smugPost(clSmuggled, smugSmuggled)}),
		// CL.0: a body on a method that usually has none.
		fwd(smugSmuggled, smugCase{name: "GET with a Content-Length body", req: smugGet("/case", smugHost+clSmuggled) + smugSmuggled}),
		fwd("hello", smugCase{name: "GET with a chunked body", req: smugGet("/case", smugHost+te) + chunked}),
		// Hop-by-hop abuse: framing fields named in Connection must not
		// be dropped while their body goes on.
		fwd("hello", smugCase{name: "Connection names Content-Length", req: smugPost("Connection: Content-Length\r\n"+cl5, "hello")}),
		fwd("hello", smugCase{name: "Connection names Transfer-Encoding", req: smugPost("Connection: Transfer-Encoding\r\n"+te, chunked)}),

		// TE.TE: obfuscated Transfer-Encoding. Only "chunked", alone and
		// once, is accepted (RFC 9112 section 6.1: chunked last, never
		// twice; an unknown coding would allow a 501, 400 is as safe).
		ph01(smugCase{name: "TE xchunked", req: smugPost("Transfer-Encoding: xchunked\r\n", chunked)}),
		ph01(smugCase{name: "TE space before colon", req: smugPost("Transfer-Encoding : chunked\r\n", chunked)}),
		fwd("hello", smugCase{name: "TE tab before value", req: smugPost("Transfer-Encoding:\tchunked\r\n", chunked)}),
		fwd("hello", smugCase{name: "TE trailing whitespace", req: smugPost("Transfer-Encoding: chunked \t\r\n", chunked)}),
		ph01(smugCase{name: "TE chunked, identity", req: smugPost("Transfer-Encoding: chunked, identity\r\n", chunked)}),
		// Chunked is last, so the framing is known, but identity is no
		// coding (RFC 7230 removed it): refusing is allowed and safe.
		ph01(smugCase{name: "TE identity, chunked", req: smugPost("Transfer-Encoding: identity, chunked\r\n", chunked)}),
		ph01(smugCase{name: "TE chunked, chunked", req: smugPost("Transfer-Encoding: chunked, chunked\r\n", chunked)}),
		ph01(smugCase{name: "TE empty element then chunked", req: smugPost("Transfer-Encoding: , chunked\r\n", chunked)}),
		ph01(smugCase{name: "TE quoted", req: smugPost("Transfer-Encoding: \"chunked\"\r\n", chunked)}),
		// Coding names are case-insensitive (RFC 9112 section 7).
		fwd("hello", smugCase{name: "TE CHUNKED", req: smugPost("Transfer-Encoding: CHUNKED\r\n", chunked)}),
		ph01(smugCase{name: "two TE chunked fields", req: smugPost(te+te, chunked)}),
		ph01(smugCase{name: "TE chunked then TE x", req: smugPost(te+"Transfer-encoding: x\r\n", chunked)}),
		ph01(smugCase{name: "TE obs-fold", req: smugPost("Transfer-Encoding:\r\n chunked\r\n", chunked)}),
		ph01(smugCase{name: "TE folded into another field", req: smugPost("X: a\r\n Transfer-Encoding: chunked\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "TE vertical tab", req: smugPost("Transfer-Encoding: chunked\x0b\r\n", chunked)}),
		ph01(smugCase{name: "TE after a bare LF", req: smugPost("X: a\nTransfer-Encoding: chunked\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "TE on HTTP/1.0",
			req: "POST /case HTTP/1.0\r\n" + smugHost + "Connection: keep-alive\r\n" + te + "\r\n" + chunked}),
		// Another field to the proxy and to the machine's HTTP server;
		// framed by its Content-Length at both.
		fwd("hello", smugCase{name: "Transfer_Encoding with Content-Length", req: smugPost("Transfer_Encoding: chunked\r\n"+cl5, "hello")}),

		// Content-Length (RFC 9112 section 6.3, item 5: 1*DIGIT; a list
		// of equal values may be taken as one, or refused).
		ph01(smugCase{name: "CL two differing", req: smugPost(cl5+"Content-Length: 6\r\n", "hello!")}),
		fwd("hello", smugCase{name: "CL two equal", req: smugPost(cl5+cl5, "hello")}),
		ph01(smugCase{name: "CL list 5, 5", req: smugPost("Content-Length: 5, 5\r\n", "hello")}),
		ph01(smugCase{name: "CL +5", req: smugPost("Content-Length: +5\r\n", "hello")}),
		ph01(smugCase{name: "CL -1", req: smugPost("Content-Length: -1\r\n", "hello")}),
		ph01(smugCase{name: "CL 0x5", req: smugPost("Content-Length: 0x5\r\n", "hello")}),
		ph01(smugCase{name: "CL 5 5", req: smugPost("Content-Length: 5 5\r\n", "hello")}),
		fwd("hello", smugCase{name: "CL with surrounding whitespace", req: smugPost("Content-Length:  5 \t\r\n", "hello")}),
		fwd("hello", smugCase{name: "CL leading zeros", req: smugPost("Content-Length: 005\r\n", "hello")}),
		ph01(smugCase{name: "CL overflow", req: smugPost("Content-Length: 99999999999999999999\r\n", "hello")}),
		ph01(smugCase{name: "CL 2^63", req: smugPost("Content-Length: 9223372036854775808\r\n", "hello")}),
		ph01(smugCase{name: "CL empty", req: smugPost("Content-Length:\r\n", "hello")}),
		ph01(smugCase{name: "CL space before colon", req: smugPost("Content-Length : 5\r\n", "hello")}),

		// Chunked bodies (RFC 9112 section 7.1). Extensions are dropped,
		// the body is chunked again on its way to the machine.
		fwd("hello", smugCase{name: "chunk extensions", req: smugPost(te, "5;ext=1\r\nhello\r\n0;last=\"x\"\r\n\r\n")}),
		inBody("10000000000000005\r\nhello\r\n0\r\n\r\n", smugCase{name: "chunk size overflow"}),
		inBody("-5\r\nhello\r\n0\r\n\r\n", smugCase{name: "chunk size negative"}),
		inBody("g\r\nhello\r\n0\r\n\r\n", smugCase{name: "chunk size not hex"}),
		inBody("0x5\r\nhello\r\n0\r\n\r\n", smugCase{name: "chunk size 0x5"}),
		inBody(" 5\r\nhello\r\n0\r\n\r\n", smugCase{name: "chunk size leading space"}),
		inBody("5\r\nhello0\r\n\r\n", smugCase{name: "chunk data without CRLF"}),
		inBody("3\r\nhello\r\n0\r\n\r\n", smugCase{name: "chunk data longer than its size"}),
		inBody("5\nhello\n0\n\n", smugCase{name: "chunked body with bare LFs"}),
		inBody("5\nhello\r\n0\r\n\r\n", smugCase{name: "chunk size line bare LF"}),
		inBody("5\r\nhello\n0\r\n\r\n", smugCase{name: "chunk data bare LF"}),
		// The "funky chunks" differential: a bare LF ending an extension.
		inBody("5;a\nhello\r\n0\r\n\r\n", smugCase{name: "chunk extension bare LF"}),
		inBody("5\r\nhello\r\n0\n\r\n", smugCase{name: "last chunk bare LF"}),
		// The final CRLF missing: last is read as a trailer line.
		inBody("5\r\nhello\r\n0\r\n", smugCase{name: "last chunk without the final CRLF"}),
		inBody("5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n", smugCase{name: "trailer obs-fold"}),
		// Trailer fields are not passed on: none can add framing or a
		// Host (RFC 9110 section 6.5.1).
		fwd("hello", smugCase{name: "trailer field", req: smugPost(te, "5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n")}),
		fwd("hello", smugCase{name: "trailer Content-Length", req: smugPost(te, "5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n")}),
		fwd("hello", smugCase{name: "trailer Host", req: smugPost(te, "5\r\nhello\r\n0\r\nHost: two.test\r\n\r\n")}),
		fwd("hello", smugCase{name: "trailer Transfer-Encoding", req: smugPost(te, "5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n")}),
		ph01(smugCase{name: "Trailer field declaring Content-Length",
			req: smugPost("Trailer: Content-Length\r\n"+te, "5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n")}),

		// Field syntax (RFC 9112 section 5, RFC 9110 section 5.5).
		ph01(smugCase{name: "bare CR in a value", req: smugPost("X: a\rb\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "NUL in a value", req: smugPost("X: a\x00b\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "NUL in a name", req: smugPost("X\x00Y: a\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "control byte in a value", req: smugPost("X: a\x1fb\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "DEL in a value", req: smugPost("X: a\x7fb\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "space in a name", req: smugPost("X Y: a\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "whitespace before the colon", req: smugPost("X-A\t: a\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "obs-fold", req: smugPost("X: a\r\n\tb\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "whitespace before the first field", req: "POST /case HTTP/1.1\r\n " + smugHost + cl5 + "\r\nhello"}),
		ph01(smugCase{name: "field without colon", req: smugPost("NoColon\r\n"+cl5, "hello")}),
		refused(431, "PH02", smugCase{name: "very long field line", req: smugPost("X: "+strings.Repeat("a", 70<<10)+"\r\n"+cl5, "hello")}),

		// Host (RFC 9112 section 3.2: none, two, or an invalid one is a
		// 400; the authority of an absolute-form target replaces it).
		ph01(smugCase{name: "duplicate Host", req: smugPost(smugHost+cl5, "hello")}),
		ph01(smugCase{name: "duplicate Host differing", req: smugPost("Host: two.test\r\n"+cl5, "hello")}),
		ph01(smugCase{name: "no Host", req: "POST /case HTTP/1.1\r\n" + cl5 + "\r\nhello"}),
		ph01(smugCase{name: "invalid Host", req: "POST /case HTTP/1.1\r\nHost: sec.test/x y\r\n" + cl5 + "\r\nhello"}),
		refused(404, "PR05", smugCase{name: "absolute-form of an unknown host", keepOpen: true,
			req: smugGet("http://other.test/case", smugHost)}),
		fwd("", smugCase{name: "absolute-form of the other app", host: "two.test",
			req: smugGet("http://two.test/case", smugHost)}),
		fwd("hello", smugCase{name: "absolute-form, Host of another",
			req: "POST http://sec.test/case HTTP/1.1\r\nHost: two.test\r\n" + cl5 + "\r\nhello"}),

		// Request line (RFC 9112 sections 2.2, 2.3 and 3).
		// The asterisk-form is meant for OPTIONS only, but the target
		// goes on as sent and frames nothing.
		fwd("", smugCase{name: "asterisk-form GET", target: "*", req: smugGet("*", smugHost)}),
		ph01(smugCase{name: "space in the target", req: smugGet("/ca se", smugHost)}),
		// Invalid in a request line (a SHOULD 400), passed on as sent:
		// the proxy does not read targets, so it has nothing to disagree
		// with the app about (httpproxy.keepTarget).
		fwd("", smugCase{name: "fragment in the target", target: "/case#frag", req: smugGet("/case#frag", smugHost)}),
		ph01(smugCase{name: "non-ASCII target", req: smugGet("/caf\xc3\xa9", smugHost)}),
		ph01(smugCase{name: "empty target", req: smugGet("", smugHost)}),
		refused(smugSilent, "", smugCase{name: "HTTP/0.9 request line", alone: true, req: "GET /case\r\n"}),
		ph01(smugCase{name: "HTTP/0.9 after a request", req: "GET /case\r\n"}),
		// A higher minor version is read as the highest one known
		// (RFC 9110 section 2.5).
		fwd("hello", smugCase{name: "HTTP/1.2", req: "POST /case HTTP/1.2\r\n" + smugHost + cl5 + "\r\nhello"}),
		refused(smugSilent, "", smugCase{name: "HTTP/2.0 request line", alone: true, req: "GET /case HTTP/2.0\r\n" + smugHost + "\r\n"}),
		ph01(smugCase{name: "HTTP/2.0 after a request", req: "GET /case HTTP/2.0\r\n" + smugHost + "\r\n"}),
		ph01(smugCase{name: "HTTP/2 preface after a request", req: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"}),
		ph01(smugCase{name: "HTTP/1.10", req: "GET /case HTTP/1.10\r\n" + smugHost + "\r\n"}),
		ph01(smugCase{name: "lowercase version", req: "GET /case http/1.1\r\n" + smugHost + "\r\n"}),
		// Methods are case-sensitive: "post" is an extension method.
		fwd("hello", smugCase{name: "lowercase method", req: "post /case HTTP/1.1\r\n" + smugHost + cl5 + "\r\nhello"}),
		// One empty line before a request is let through only after a
		// POST, where net/http skips it (old clients sent one after a
		// POST body); after a GET it is refused with the proxy's code.
		ph01(smugCase{name: "empty line before a request", req: "\r\n" + smugPost(cl5, "hello")}),
		fwd("hello", smugCase{name: "empty line after a POST", alone: true, req: smugPost(cl5, "hello") + "\r\n"}),
		ph01(smugCase{name: "two empty lines before a request", req: "\r\n\r\n" + smugPost(cl5, "hello")}),
		ph01(smugCase{name: "empty line opening the connection", alone: true, req: "\r\n" + smugPost(cl5, "hello")}),

		// Expect (RFC 9110 section 10.1.1). The proxy answers
		// 100-continue itself and drops the field.
		fwd("hello", smugCase{name: "Expect 100-continue", req: smugPost("Expect: 100-continue\r\n"+cl5, "hello")}),
		fwd("hello", smugCase{name: "Expect 100-continue chunked", req: smugPost("Expect: 100-continue\r\n"+te, chunked)}),
		// Any other expectation MAY be answered 417; net/http does, and
		// closes.
		refused(417, "PH12", smugCase{name: "Expect unknown", req: smugPost("Expect: something\r\n"+cl5, "hello")}),
	}
}

func TestSmuggling(t *testing.T) {
	rec := startRecorder(t, serveEach(func(c *recConn, req *http.Request, _ []byte) bool {
		io.WriteString(c, okResponse("for "+req.RequestURI))
		return true
	}))
	env := startProxy(t, withApps(baseConfig, smugTwoApps), rec.Port())
	for _, tc := range smugCases() {
		t.Run(tc.name, func(t *testing.T) {
			smugRun(t, env, rec, tc)
		})
	}
}

// smugRun runs one row.
func smugRun(t *testing.T, env *proxyEnv, rec *recorder, tc smugCase) {
	before := map[*recConn]int{}
	for _, c := range rec.Conns() {
		before[c] = len(c.Received())
	}
	reqsBefore := rec.Requests()
	raw := tc.req + smugLast
	if !tc.alone {
		raw = smugFirst + raw
	}
	ex := smugExchange(t, env.plainAddr, raw)
	got, unparsed := smugSince(rec, before)
	reqsDelta := rec.Requests() - reqsBefore
	t.Logf("today: client got %s; machine got %s", ex, smugDescribe(got, unparsed))

	problems := smugCheck(tc, ex, got, unparsed, reqsDelta)
	if tc.known == smugKnownInBody && !slices.ContainsFunc(ex.resps, func(r smugResp) bool { return r.status == 400 && r.code == "PH01" }) {
		// What a streaming proxy can do about a body it refuses once the
		// head went on: answer the client with the code, not a bare close.
		t.Errorf("a chunked body refused after its head: the client got %s, want 400 PH01", ex)
	}
	if tc.known == "" {
		for _, p := range problems {
			t.Error(p.msg)
		}
		return
	}
	// A known row fails on anything unsafe, and skips on the gap.
	gap := false
	for _, p := range problems {
		if p.unsafe {
			t.Errorf("unsafe: %s", p.msg)
		} else {
			gap = true
			t.Logf("gap: %s", p.msg)
		}
	}
	if t.Failed() {
		return
	}
	if !gap {
		t.Fatalf("marked known (%s) but now %s as it should be: drop the mark", tc.known, tc.want)
	}
	t.Skip("known: " + tc.known)
}

// smugProblem is one way an exchange differs from its row. Unsafe ones
// fail even a known row.
type smugProblem struct {
	unsafe bool
	msg    string
}

// smugCheck returns how the exchange differs from the row's expectation.
func smugCheck(tc smugCase, ex *smugResult, got []smugFwd, unparsed []byte, reqsDelta int) []smugProblem {
	var problems []smugProblem
	add := func(unsafe bool, format string, args ...any) {
		problems = append(problems, smugProblem{unsafe, fmt.Sprintf(format, args...)})
	}
	gap := func(format string, args ...any) { add(false, format, args...) }
	unsafe := func(format string, args ...any) { add(true, format, args...) }

	target, host := tc.target, tc.host
	if target == "" {
		target = "/case"
	}
	if host == "" {
		host = "sec.test"
	}

	// What the client got. Every 200 must answer a request the client
	// made, in order: /first, then the case, then /last.
	resps := ex.resps
	order := []string{"for /first", "for " + target, "for /last"}
	if tc.alone {
		order = order[1:]
	}
	for _, r := range resps {
		if r.status != 200 {
			continue
		}
		for len(order) > 0 && order[0] != r.body {
			order = order[1:]
		}
		if len(order) == 0 {
			unsafe("the client got %q, an answer to no request it made, or out of order", r.body)
			break
		}
		order = order[1:]
	}
	if ex.rest != "" {
		unsafe("the client got bytes that are no response: %.200q", ex.rest)
	}
	if !tc.alone {
		if len(resps) == 0 || resps[0].status != 200 || resps[0].body != "for /first" {
			gap("the first request was not answered first")
		} else {
			resps = resps[1:]
		}
	}
	if !ex.closed {
		gap("the proxy did not close the connection within %v", smugWait)
	}

	// What the machine got.
	paths := map[string]int{}
	for _, r := range got {
		paths[r.target]++
		if r.ambiguous != "" {
			unsafe("the machine got %s framed ambiguously: %s", r.target, r.ambiguous)
		}
		switch {
		case r.target == "/smuggled":
			unsafe("a smuggled request reached the machine")
		case r.target != "/first" && r.target != "/last" && r.target != target:
			unsafe("the machine got a request for %q, which the client never made", r.target)
		case !r.complete:
			gap("the machine got an incomplete request for %s", r.target)
		}
	}
	if len(unparsed) > 0 {
		unsafe("the machine got bytes that are no request: %.200q", unparsed)
	}
	wantPaths := map[string]int{"/last": 1}
	if !tc.alone {
		wantPaths["/first"] = 1
	}

	switch tc.want {
	case smugRefused:
		if !tc.keepOpen {
			delete(wantPaths, "/last")
		}
		var r smugResp
		if len(resps) > 0 {
			r, resps = resps[0], resps[1:]
		}
		if r.status != tc.status || r.code != tc.code {
			gap("the case was answered %d %q, want %d %q", r.status, r.code, tc.status, tc.code)
		}
		if tc.keepOpen {
			if len(resps) == 0 || resps[0].body != "for /last" {
				gap("the connection did not carry on after the refusal")
			} else {
				resps = resps[1:]
			}
		}
		if len(resps) > 0 {
			gap("%d more answers after the refusal: the connection was not closed", len(resps))
		}
		if n := len(wantPaths); reqsDelta != n {
			gap("rec.Requests() grew by %d, want %d", reqsDelta, n)
		}
	case smugForwarded:
		wantPaths[target]++
		var answers []string
		for _, r := range resps {
			answers = append(answers, fmt.Sprintf("%d %s", r.status, r.body))
		}
		if want := []string{"200 for " + target, "200 for /last"}; strings.Join(answers, "|") != strings.Join(want, "|") {
			gap("the client got %q, want %q", answers, want)
		}
		for _, r := range got {
			if r.target != target || !r.complete {
				continue
			}
			if string(r.body) != tc.body {
				unsafe("the machine got the body %q, want %q", r.body, tc.body)
			}
			if r.host != host {
				unsafe("the machine got Host %q, want %q", r.host, host)
			}
		}
	default:
		gap("the row expects no outcome")
	}
	for p, n := range paths {
		if n != wantPaths[p] && (p == "/first" || p == "/last" || p == target) {
			gap("the machine got %s %d times, want %d", p, n, wantPaths[p])
		}
	}
	for p, n := range wantPaths {
		if paths[p] == 0 && n > 0 {
			gap("the machine never got %s", p)
		}
	}
	return problems
}

// smugResult is what the client got.
type smugResult struct {
	resps []smugResp
	// rest is what follows the last response and does not parse.
	rest string
	// closed: the proxy closed the connection before smugWait.
	closed bool
}

type smugResp struct {
	status int
	code   string
	body   string
	// interim counts the 1xx responses before this one.
	interim int
}

func (r *smugResult) String() string {
	var parts []string
	for _, p := range r.resps {
		s := strconv.Itoa(p.status)
		if p.interim > 0 {
			s = fmt.Sprintf("%d×1xx+%s", p.interim, s)
		}
		if p.code != "" {
			s += " " + p.code
		}
		if p.status == 200 {
			s += " " + strings.TrimPrefix(p.body, "for ")
		}
		parts = append(parts, s)
	}
	if r.rest != "" {
		parts = append(parts, fmt.Sprintf("garbage %.60q", r.rest))
	}
	if r.closed {
		parts = append(parts, "closed")
	} else {
		parts = append(parts, "still open at the deadline")
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// smugExchange writes raw on a new connection and reads the answers until
// the proxy closes it or smugWait passes.
func smugExchange(t *testing.T, addr, raw string) *smugResult {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, smugWait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(smugWait))
	if _, err := io.WriteString(c, raw); err != nil {
		// A proxy that refuses early may close before all is written;
		// what it answered is still to be read.
		t.Logf("writing the request: %v", err)
	}
	b, err := io.ReadAll(c)
	res := &smugResult{closed: err == nil}
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		// A reset after the answer: closed, without lingering.
		res.closed = true
		t.Logf("reading the answer: %v", err)
	}
	br := bufio.NewReader(bytes.NewReader(b))
	interim := 0
	for {
		if _, err := br.Peek(1); err != nil {
			break
		}
		rest, _ := br.Peek(br.Buffered())
		rest = bytes.Clone(rest)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			res.rest = string(rest)
			break
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			res.rest = string(rest)
			break
		}
		if resp.StatusCode < 200 {
			interim++
			continue
		}
		res.resps = append(res.resps, smugResp{status: resp.StatusCode,
			code: resp.Header.Get("Edgeproxy-Error-Code"), body: string(body), interim: interim})
		interim = 0
	}
	return res
}

// smugSince waits until the machine has received all it will of a row
// (its bytes stop growing) and parses what each connection received since
// before.
func smugSince(rec *recorder, before map[*recConn]int) ([]smugFwd, []byte) {
	total := func() int { return len(rec.Received()) }
	last, stable := total(), 0
	for deadline := time.Now().Add(smugSettle); stable < 4 && time.Now().Before(deadline); {
		time.Sleep(25 * time.Millisecond)
		if n := total(); n != last {
			last, stable = n, 0
		} else {
			stable++
		}
	}
	var all []smugFwd
	var unparsed []byte
	for _, c := range rec.Conns() {
		reqs, rest := smugParse(c.Received()[before[c]:])
		all = append(all, reqs...)
		unparsed = append(unparsed, rest...)
	}
	return all, unparsed
}

// smugFwd is one request as the machine received it.
type smugFwd struct {
	method, target, host string
	// framing is "none", "length" or "chunked".
	framing string
	body    []byte
	// trailers are the trailer field lines of a chunked body.
	trailers []string
	// complete: the head and the whole body its framing announces.
	complete bool
	// ambiguous says why the framing could be read two ways, or is "".
	ambiguous string
}

// smugParse reads the requests in what one machine connection received,
// strictly: CRLF lines, one Content-Length or "chunked" alone, one Host.
// It stops at the first request that is incomplete or ambiguous (which it
// returns) or at bytes that are no request (which it returns as rest).
func smugParse(b []byte) (reqs []smugFwd, rest []byte) {
	for len(b) > 0 {
		end := bytes.Index(b, []byte("\r\n\r\n"))
		if end < 0 {
			if r, ok := smugRequestLine(string(b)); ok {
				// The start of a head.
				return append(reqs, r), nil
			}
			return reqs, b
		}
		lines := strings.Split(string(b[:end]), "\r\n")
		r, ok := smugRequestLine(lines[0])
		if !ok {
			return reqs, b
		}
		var cls, tes []string
		for _, l := range lines[1:] {
			name, value, ok := strings.Cut(l, ":")
			if !ok || name == "" || strings.ContainsAny(name, " \t") || strings.ContainsAny(l, "\r\n\x00") {
				r.ambiguous = fmt.Sprintf("malformed field line %q", l)
				continue
			}
			value = strings.Trim(value, " \t")
			switch strings.ToLower(name) {
			case "content-length":
				cls = append(cls, value)
			case "transfer-encoding":
				tes = append(tes, value)
			case "host":
				if r.host != "" {
					r.ambiguous = "two Host fields"
				}
				r.host = value
			}
		}
		b = b[end+4:]
		switch {
		case len(cls) > 0 && len(tes) > 0:
			r.ambiguous = "Content-Length with Transfer-Encoding"
		case len(tes) > 1 || len(tes) == 1 && tes[0] != "chunked":
			r.ambiguous = fmt.Sprintf("Transfer-Encoding %q", tes)
		case len(cls) > 1:
			r.ambiguous = fmt.Sprintf("Content-Length %q", cls)
		}
		if r.ambiguous != "" {
			return append(reqs, r), nil
		}
		switch {
		case len(tes) == 1:
			r.framing = "chunked"
			n, ok := smugChunked(b, &r)
			if !ok {
				return append(reqs, r), nil
			}
			b = b[n:]
		case len(cls) == 1:
			r.framing = "length"
			n, err := strconv.ParseUint(cls[0], 10, 63)
			if err != nil {
				r.ambiguous = fmt.Sprintf("Content-Length %q", cls[0])
				return append(reqs, r), nil
			}
			if uint64(len(b)) < n {
				r.body = b
				return append(reqs, r), nil
			}
			r.body, b = b[:n], b[n:]
		}
		r.complete = true
		reqs = append(reqs, r)
	}
	return reqs, nil
}

// smugRequestLine reads "METHOD target HTTP/1.x", the line or its start.
func smugRequestLine(l string) (smugFwd, bool) {
	l, _, _ = strings.Cut(l, "\r\n")
	parts := strings.Split(l, " ")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || !strings.HasPrefix(parts[2], "HTTP/1.") {
		return smugFwd{}, false
	}
	return smugFwd{method: parts[0], target: parts[1], framing: "none"}, true
}

// smugChunked reads a chunked body strictly into r and returns its length
// in b; ok is false if it is incomplete or malformed (r.ambiguous then
// says how).
func smugChunked(b []byte, r *smugFwd) (int, bool) {
	i := 0
	line := func() (string, bool) {
		j := bytes.Index(b[i:], []byte("\r\n"))
		if j < 0 {
			return "", false
		}
		l := string(b[i : i+j])
		i += j + 2
		return l, true
	}
	for {
		l, ok := line()
		if !ok {
			return 0, false
		}
		size, _, _ := strings.Cut(l, ";")
		n, err := strconv.ParseUint(size, 16, 62)
		if err != nil || size == "" || strings.ContainsAny(size, "+-xX \t") {
			r.ambiguous = fmt.Sprintf("chunk-size line %q", l)
			return 0, false
		}
		if n == 0 {
			break
		}
		if uint64(len(b)-i) < n+2 {
			r.body = append(r.body, b[i:]...)
			return 0, false
		}
		r.body = append(r.body, b[i:i+int(n)]...)
		i += int(n)
		if string(b[i:i+2]) != "\r\n" {
			r.ambiguous = "chunk data without CRLF"
			return 0, false
		}
		i += 2
	}
	for {
		l, ok := line()
		if !ok {
			return 0, false
		}
		if l == "" {
			return i, true
		}
		r.trailers = append(r.trailers, l)
		name, _, _ := strings.Cut(l, ":")
		switch strings.ToLower(name) {
		case "content-length", "transfer-encoding", "host", "trailer":
			r.ambiguous = fmt.Sprintf("trailer %q", l)
		}
	}
}

// smugDescribe summarises what the machine received.
func smugDescribe(reqs []smugFwd, unparsed []byte) string {
	var parts []string
	for _, r := range reqs {
		s := r.method + " " + r.target
		switch r.framing {
		case "length":
			s += fmt.Sprintf(" CL %q", r.body)
		case "chunked":
			s += fmt.Sprintf(" chunked %q", r.body)
		}
		if len(r.trailers) > 0 {
			s += fmt.Sprintf(" trailers %q", r.trailers)
		}
		if r.host != "sec.test" {
			s += fmt.Sprintf(" Host %q", r.host)
		}
		if !r.complete {
			s += " (incomplete)"
		}
		if r.ambiguous != "" {
			s += " (ambiguous: " + r.ambiguous + ")"
		}
		parts = append(parts, s)
	}
	if len(unparsed) > 0 {
		parts = append(parts, fmt.Sprintf("unparsed %.80q", unparsed))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// TestSmugglingTable checks the table of TestSmuggling, and that its
// machine-side parser sees what it is there to see, without the proxy.
func TestSmugglingTable(t *testing.T) {
	names := map[string]bool{}
	known := 0
	for _, tc := range smugCases() {
		switch {
		case names[tc.name]:
			t.Errorf("%s: two rows of that name", tc.name)
		case tc.want != smugRefused && tc.want != smugForwarded:
			t.Errorf("%s: no outcome", tc.name)
		case tc.want == smugForwarded && (tc.status != 0 || tc.code != "" || tc.keepOpen):
			t.Errorf("%s: a forwarded row with a refusal's status", tc.name)
		case tc.want == smugRefused && (tc.body != "" || tc.target != "" || tc.host != ""):
			t.Errorf("%s: a refused row with what to forward", tc.name)
		case tc.want == smugRefused && tc.status == smugSilent && !tc.alone:
			t.Errorf("%s: only a connection's first line can be closed without an answer", tc.name)
		case !strings.Contains(tc.req, "/case") && tc.target == "" && tc.want == smugForwarded:
			t.Errorf("%s: a forwarded row asks for no /case", tc.name)
		}
		names[tc.name] = true
		if tc.known != "" {
			known++
		}
	}
	if n := len(names); known*4 > n {
		t.Errorf("%d of %d rows are marked known: the table has stopped saying what the proxy does", known, n)
	}

	// The parser: what it must find in a machine's bytes.
	for _, c := range []struct {
		name, in, want string
	}{
		{"two requests", smugFirst + smugLast, "[GET /first, GET /last]"},
		{"a body", smugPost("Content-Length: 5\r\n", "hello"), `[POST /case CL "hello"]`},
		{"a chunked body", smugPost("Transfer-Encoding: chunked\r\n", "5;x\r\nhello\r\n0\r\n\r\n"), `[POST /case chunked "hello"]`},
		{"a request after a body", smugPost("Content-Length: 0\r\n", smugSmuggled), `[POST /case CL "", GET /smuggled]`},
		{"CL and TE", smugPost("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
			"[POST /case (incomplete) (ambiguous: Content-Length with Transfer-Encoding)]"},
		{"two CL", smugPost("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
			`[POST /case (incomplete) (ambiguous: Content-Length ["5" "5"])]`},
		{"a framing trailer", smugPost("Transfer-Encoding: chunked\r\n", "0\r\nContent-Length: 5\r\n\r\n"),
			`[POST /case chunked "" trailers ["Content-Length: 5"] (ambiguous: trailer "Content-Length: 5")]`},
		{"an incomplete body", smugPost("Transfer-Encoding: chunked\r\n", "5\r\nhel"), `[POST /case chunked "hel" (incomplete)]`},
		{"an incomplete head", "POST /case HTTP/1.1\r\nHost: se", `[POST /case Host "" (incomplete)]`},
		{"no request", "hello\r\n\r\n", `[unparsed "hello\r\n\r\n"]`},
	} {
		reqs, rest := smugParse([]byte(c.in))
		if got := smugDescribe(reqs, rest); got != c.want {
			t.Errorf("%s: parsed as %s, want %s", c.name, got, c.want)
		}
	}
}
