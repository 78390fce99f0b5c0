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
func checkMethod(m []byte) error {
	switch string(m) {
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
func isToken(s []byte) bool {
	if len(s) == 0 {
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

// keepTarget makes u's request target the bytes the client sent. A parsed
// URL would re-escape the path, which turns a "#" (or "{", "|", ...) into
// %XX, a name for another resource. The proxy interprets neither, so it
// has no reading of its own to keep consistent with the app's: the bytes
// go as they came. A path starting "//", which a URL would read as a host,
// keeps the parsed form.
func keepTarget(u *url.URL, raw string) {
	path, query, hasQuery := strings.Cut(raw, "?")
	if hasQuery {
		u.RawQuery = query
	}
	if path == "" || path[0] != '/' || strings.HasPrefix(path, "//") {
		return
	}
	u.Opaque = path
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
func defaultHost(x *Exchange) string {
	c := x.Conn
	if c.SNI != "" {
		return c.SNI
	}
	for _, h := range x.entry().Service.App.Hostnames {
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
