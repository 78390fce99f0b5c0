package httpproxy

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// checkMethod refuses what no machine should be asked: a method that is
// not an HTTP token, which net/http's HTTP/2 server lets through and its
// client then refuses to send (the app would be blamed, 502), and
// CONNECT, a tunnel request the reverse proxy cannot carry.
func checkMethod(m string) error {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
		http.MethodOptions, http.MethodPatch:
		return nil
	case http.MethodConnect:
		return perr.New(perr.ConnectUnsupported, nil)
	}
	if !isToken(m) {
		return perr.New(perr.InvalidMethod, fmt.Errorf("method %q", m))
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// underscoreGuarded are the names, in canonical form, whose underscore
// spellings a client may not send: the ones the proxy sets or vouches for.
// CGI, WSGI, Rack and PHP turn "-" into "_" when they make variables of
// header names, so Fly_Client_IP and Fly-Client-IP both become
// HTTP_FLY_CLIENT_IP there, and the client's copy can win. Only these
// names are dropped, not every name with an underscore (nginx's
// underscores_in_headers off): other such headers are the client's own
// business and some apps rely on them. Read only.
var underscoreGuarded = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range ownedRequestHeaders {
		m[k] = true
	}
	// Set (or appended to) by the proxy, or trusted from proxies by
	// common frameworks; and the framing fields, which the proxy frames
	// itself: a client's Transfer_Encoding would tell such an app
	// (HTTP_TRANSFER_ENCODING) the body is chunked when the proxy sent
	// it with a Content-Length.
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip", "Transfer-Encoding", "Content-Length"} {
		m[k] = true
	}
	return m
}()

// dropUnderscoreSpoofs removes headers whose names spell a guarded name
// with "_" for any "-" (see underscoreGuarded). Only names with an
// underscore are looked at, so ordinary requests cost one byte scan per
// header and allocate nothing.
func dropUnderscoreSpoofs(h http.Header) {
	for k := range h {
		if strings.IndexByte(k, '_') < 0 {
			continue
		}
		if underscoreGuarded[http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))] {
			delete(h, k)
		}
	}
}

// keepTarget makes out's request target the one the client sent. net/http
// re-escapes the path it parsed, which turns a "#" (or "{", "|", ...)
// into %XX, a name for another resource, and the reverse proxy rewrites a
// query it cannot parse. The proxy interprets neither, so it has no
// reading of its own to keep consistent with the app's: the bytes go as
// they came. Targets that cannot be written as they came (control bytes,
// spaces, a path starting "//", which a URL would read as a host) keep
// net/http's form.
func keepTarget(out, in *url.URL) {
	if sendable(in.RawQuery) {
		out.RawQuery = in.RawQuery
	}
	// RawPath is set only when the client's path differs from net/http's
	// own escaping of it.
	raw := in.RawPath
	if raw == "" || raw[0] != '/' || strings.HasPrefix(raw, "//") || !sendable(raw) {
		return
	}
	out.Opaque = raw
}

// sendable reports whether s holds only visible ASCII, which a request
// line carries as it is.
func sendable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// defaultHost is the Host a machine gets for a request that named none
// (HTTP/1.0 without Host, an empty Host, HTTP/2 without :authority). Left
// empty, the transport would write the machine's own address there, which
// the client never used and apps put in links and redirects; a Host must
// go, since machines are spoken to in HTTP/1.1. Like nginx's $host, which
// falls back to the server's name (RFC 9112 section 3.3: the server's
// default name), it is the name the connection was made for: the TLS
// server name, else the app's first hostname, else the address the client
// connected to.
func defaultHost(st *reqState) string {
	c := st.conn
	if c.SNI != "" {
		return c.SNI
	}
	for _, h := range st.entry.Service.App.Hostnames {
		if !strings.HasPrefix(h, "*.") {
			return h
		}
	}
	if !c.Local.IsValid() {
		return ""
	}
	ip := c.Local.Addr().Unmap()
	port := c.Local.Port()
	if c.TLS && port == 443 || !c.TLS && port == 80 {
		if ip.Is6() {
			return "[" + ip.String() + "]"
		}
		return ip.String()
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
}
