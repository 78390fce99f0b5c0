package httpproxy

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/edgeproxy/edgeproxy/internal/compress"
	"github.com/edgeproxy/edgeproxy/internal/h1"
)

// The forward and respond phases' head rewrites. Heads are written as
// bytes, field by field in the order they came: nothing is parsed into a
// map, and a request's fields reach the machine as the client ordered
// and spelled them, less those that belong to a hop or to the proxy.

// headBufs lends the buffers machine request heads are built in.
var headBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

var fieldRequestID = []byte("Fly-Request-Id")

// fieldRole is what a rewrite does with a field, by its name.
type fieldRole uint8

const (
	keepField   fieldRole = iota
	dropField             // hop-by-hop, framing, or the proxy's own
	xffField              // X-Forwarded-For: merged into the proxy's
	teField               // TE: only "trailers" goes on
	traceField            // traceparent, tracestate: replaced when tracing
	idField               // Fly-Request-Id in a response
	replayField           // Fly-Replay in a response
)

// lowerName lowers an ASCII field name into buf without allocating, "_"
// read as "-" when dashes is set; ok is false for a name longer than buf
// (no name the rewrites look for is).
func lowerName(buf *[40]byte, name []byte, dashes bool) (low []byte, underscore, ok bool) {
	if len(name) > len(buf) {
		return nil, false, false
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' && dashes {
			c, underscore = '-', true
		}
		buf[i] = c
	}
	return buf[:len(name)], underscore, true
}

// roleOf classifies a request field name, ASCII case-insensitively,
// without allocating.
func roleOf(name []byte) fieldRole {
	var buf [40]byte
	// CGI-style servers read "_" as "-": a client's underscore spelling
	// of a guarded name would pass for the real one.
	low, underscore, ok := lowerName(&buf, name, true)
	if !ok {
		return keepField
	}
	role := roleOfLower(string(low))
	if underscore {
		if role != keepField || guardedUnderscore(string(low)) {
			return dropField
		}
		return keepField
	}
	return role
}

func roleOfLower(name string) fieldRole {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
		"trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect",
		// The proxy's own request fields: a client's copies would let it
		// pass for another client, port or region.
		"fly-client-ip", "fly-forwarded-port", "fly-region", "x-forwarded-proto", "x-forwarded-port",
		"x-forwarded-ssl", "x-request-start", "fly-replay-src", "fly-replay-failed",
		"fly-preferred-instance-unavailable", "forwarded", "x-forwarded-host":
		return dropField
	case "x-forwarded-for":
		return xffField
	case "te":
		return teField
	case "traceparent", "tracestate":
		return traceField
	case "fly-request-id":
		return idField
	case "fly-replay":
		return replayField
	}
	return keepField
}

// guardedUnderscore: names whose underscore spellings are dropped though
// the dash spelling is the client's to send.
func guardedUnderscore(name string) bool {
	return name == "x-real-ip"
}

// requestHead builds the machine's request head for the current attempt
// into dst: the request line as the client sent it, Host, the client's
// fields less hop-by-hop and proxy-owned ones, the platform's fields, the
// attempt's own, and the body's framing.
func (x *Exchange) requestHead(dst []byte, preferredGone string) []byte {
	if x.relayTo != nil {
		return x.relayHead(dst)
	}
	r := x.Req
	c := x.Conn
	dst = append(dst, r.Bytes(r.Method)...)
	dst = append(dst, ' ')
	dst = append(dst, r.Bytes(r.Target)...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	if r.HasHost && r.Host.Len > 0 {
		dst = append(dst, r.Bytes(r.Host)...)
	} else {
		dst = append(dst, defaultHost(x)...)
	}
	dst = append(dst, "\r\n"...)
	tracing := x.env.Tracing != nil && x.env.Tracing.Enabled
	named := r.Has("Connection") && connectionNamesFields(r)
	var xff []byte
	trailers := false
	for _, f := range r.Fields {
		name := r.Bytes(f.Name)
		switch roleOf(name) {
		case dropField, idField:
			continue
		case xffField:
			xff = appendList(xff, r.Bytes(f.Value))
			continue
		case teField:
			trailers = trailers || h1.ListHas(r.Bytes(f.Value), "trailers")
			continue
		case traceField:
			if tracing {
				continue
			}
		}
		if named && r.ConnectionHas(string(name)) {
			continue
		}
		dst = append(dst, name...)
		dst = append(dst, ": "...)
		dst = append(dst, r.Bytes(f.Value)...)
		dst = append(dst, "\r\n"...)
	}
	ip, port := c.clientIP(), c.publicPort()
	dst = h1.AppendFieldString(dst, "Fly-Client-Ip", ip)
	// Appending keeps the chain a client's own proxies built; the proxy's
	// own entry is the last one and the only one apps should trust.
	dst = append(dst, "X-Forwarded-For: "...)
	if len(xff) > 0 {
		dst = append(append(dst, xff...), ", "...)
	}
	dst = append(append(dst, ip...), "\r\n"...)
	dst = h1.AppendFieldString(dst, "Fly-Forwarded-Port", port)
	dst = h1.AppendFieldString(dst, "Fly-Region", x.env.Region)
	dst = h1.AppendFieldString(dst, "X-Forwarded-Port", port)
	if c.TLS {
		dst = append(dst, "X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n"...)
	} else {
		dst = append(dst, "X-Forwarded-Proto: http\r\nX-Forwarded-Ssl: off\r\n"...)
	}
	dst = append(dst, "Via: "...)
	dst = append(dst, via(x.W.Proto())...)
	dst = append(dst, "\r\n"...)
	dst = h1.AppendField(dst, fieldRequestID, x.id)
	// Apps measure queueing time from this, as on the platform.
	dst = append(dst, "X-Request-Start: t="...)
	dst = strconv.AppendInt(dst, time.Now().UnixMicro(), 10)
	dst = append(dst, "\r\n"...)
	if trailers {
		dst = append(dst, "Te: trailers\r\n"...)
	}
	if x.replaySrc != "" {
		dst = h1.AppendFieldString(dst, hdrReplaySrc, x.replaySrc)
	}
	if x.replayFailed != "" {
		dst = h1.AppendFieldString(dst, hdrReplayFailed, x.replayFailed)
	}
	if preferredGone != "" {
		dst = h1.AppendFieldString(dst, hdrPreferredGone, preferredGone)
	}
	if tracing {
		car := appendCarrier{b: dst}
		x.env.Tracing.Propagator.Inject(x.Ctx, &car)
		dst = car.b
	}
	if r.Upgrade {
		up, _ := r.Get("Upgrade")
		dst = append(dst, "Connection: Upgrade\r\nUpgrade: "...)
		dst = append(append(dst, up...), "\r\n"...)
	}
	return x.appendFraming(dst)
}

// appendFraming ends a machine's request head with the body's framing.
func (x *Exchange) appendFraming(dst []byte) []byte {
	r := x.Req
	switch {
	case x.body == nil:
		if methodMayHaveBody(r.Bytes(r.Method)) {
			dst = append(dst, "Content-Length: 0\r\n"...)
		}
	case x.Body.Length >= 0:
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, x.Body.Length, 10)
		dst = append(dst, "\r\n"...)
	default:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// methodMayHaveBody: methods whose bodiless requests carry an explicit
// zero length, as net/http's client writes them.
func methodMayHaveBody(m []byte) bool {
	switch string(m) {
	case "POST", "PUT", "PATCH":
		return true
	}
	return false
}

// connectionNamesFields reports whether Connection lists a token other
// than the usual ones: a field it names is the hop's own and is dropped.
func connectionNamesFields(r *h1.Head) bool {
	named := false
	r.Values("Connection", func(v []byte) {
		h1.ForList(v, func(t []byte) {
			switch {
			case h1.EqualFold(t, "close"), h1.EqualFold(t, "keep-alive"), h1.EqualFold(t, "upgrade"), h1.EqualFold(t, "te"):
			default:
				named = true
			}
		})
	})
	return named
}

// appendList appends a comma-separated list element.
func appendList(dst, v []byte) []byte {
	if len(dst) > 0 {
		dst = append(dst, ", "...)
	}
	return append(dst, v...)
}

// appendCarrier writes trace context fields into a head being built.
type appendCarrier struct{ b []byte }

func (c *appendCarrier) Get(string) string { return "" }
func (c *appendCarrier) Keys() []string    { return nil }
func (c *appendCarrier) Set(k, v string) {
	c.b = h1.AppendFieldString(c.b, http.CanonicalHeaderKey(k), v)
}

// headCarrier reads trace context from a client's head.
type headCarrier struct{ h *h1.Head }

func (c headCarrier) Get(k string) string {
	if v, ok := c.h.Get(k); ok {
		return string(v)
	}
	return ""
}
func (c headCarrier) Set(string, string) {}
func (c headCarrier) Keys() []string {
	var keys []string
	for _, f := range c.h.Fields {
		keys = append(keys, c.h.String(f.Name))
	}
	return keys
}

var _ propagation.TextMapCarrier = headCarrier{}

// responseFields builds the field lines of the client's response from a
// machine's: hop-by-hop and framing fields out, the platform's in, the
// port's response header options applied, and the compression plan's
// changes made.
func (x *Exchange) responseFields(dst []byte, r *upResponse, z compressPlan) []byte {
	if x.relayTo != nil {
		return relayResponseFields(dst, r)
	}
	h := r.Head
	opts := x.entry().HTTP
	named := h.Has("Connection") && connectionNamesFields(h)
	hasServer := false
	for _, f := range h.Fields {
		name := h.Bytes(f.Name)
		switch roleOfResponse(name) {
		case dropField:
			if !(r.Status == 101 && h1.EqualFold(name, "upgrade")) {
				continue
			}
		case idField:
			if !opts.Pristine {
				continue
			}
		case replayField:
			if x.dropReplayHeader {
				continue
			}
		case serverField:
			hasServer = true
		}
		if named && h.ConnectionHas(string(name)) || removed(opts.RemoveHeaders, name) {
			continue
		}
		value := h.Bytes(f.Value)
		weak := false
		if z.enc != compress.None {
			var keep bool
			if keep, value, weak = compressedField(name, value); !keep {
				continue
			}
		}
		dst = append(dst, name...)
		dst = append(dst, ": "...)
		if weak {
			dst = append(dst, "W/"...)
		}
		dst = append(dst, value...)
		dst = append(dst, "\r\n"...)
	}
	dst = appendCompressFields(dst, h, z)
	if !opts.Pristine {
		if !hasServer && !removedString(opts.RemoveHeaders, "Server") {
			dst = append(dst, "Server: edgeproxy\r\n"...)
		}
		if !removedString(opts.RemoveHeaders, "Via") {
			dst = append(dst, "Via: "...)
			dst = append(append(dst, via(x.W.Proto())...), "\r\n"...)
		}
		if !removedString(opts.RemoveHeaders, "Fly-Request-Id") {
			dst = h1.AppendField(dst, fieldRequestID, x.id)
		}
	}
	if !h.Has("Date") {
		dst = x.h.dates.appendField(dst, x.start)
	}
	if len(opts.AddHeaders) > 0 {
		names := make([]string, 0, len(opts.AddHeaders))
		for name := range opts.AddHeaders {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			for _, v := range opts.AddHeaders[name] {
				dst = h1.AppendFieldString(dst, name, v)
			}
		}
	}
	return x.routingFields(dst)
}

const serverField fieldRole = 100

// roleOfResponse classifies a response field: the request's hop-by-hop
// set, Server noted, and the request-only drops kept.
func roleOfResponse(name []byte) fieldRole {
	var buf [40]byte
	low, _, ok := lowerName(&buf, name, false)
	if !ok {
		return keepField
	}
	switch string(low) {
	case "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
		"te", "trailer", "transfer-encoding", "upgrade", "content-length":
		return dropField
	case "fly-request-id":
		return idField
	case "fly-replay":
		return replayField
	case "server":
		return serverField
	}
	return keepField
}

func removed(list []string, name []byte) bool {
	for _, r := range list {
		if h1.EqualFold(name, r) {
			return true
		}
	}
	return false
}

// removedString is removed for a name the proxy adds itself.
func removedString(list []string, name string) bool {
	for _, r := range list {
		if strings.EqualFold(r, name) {
			return true
		}
	}
	return false
}

// routingFields adds the routing facts a client asked for: which
// preferred instance was unavailable, and the debug explanation.
func (x *Exchange) routingFields(dst []byte) []byte {
	l := x.target.lease
	want := x.finalWant
	if want == nil {
		want = &x.want
	}
	if want.Instance != "" && !want.ForceInstance && l != nil && l.Machine.ID != want.Instance {
		dst = h1.AppendFieldString(dst, hdrPreferredGone, want.Instance)
	}
	if want.Explain && l != nil {
		v := ""
		switch {
		case x.pinned:
			// No decision was made for this request: say so, rather than
			// repeat the connection's first decision as if it were new.
			v = "machine=" + l.Machine.ID +
				"; policy=pinned; why=concurrency type connections keeps a client connection on one machine while it is usable"
		case l.Explain != nil:
			v = l.Explain.String()
			if l.Started != "" {
				v = "started " + l.Started + " (waited " + strconv.FormatInt(l.StartWait.Milliseconds(), 10) + " ms); " + v
			}
		}
		if v != "" {
			if b := x.env.Dialer.Backhaul; b != nil {
				if node := b.Worker(l.Machine); node != "" {
					v += "; worker=" + node
				}
			}
			dst = h1.AppendFieldString(dst, DebugRoutingHeader, v)
		}
	}
	return dst
}

// dateCache renders the Date field once a second.
type dateCache struct {
	v atomic.Pointer[dateValue]
}

type dateValue struct {
	sec  int64
	line []byte
}

func (d *dateCache) appendField(dst []byte, now time.Time) []byte {
	sec := now.Unix()
	v := d.v.Load()
	if v == nil || v.sec != sec {
		line := append([]byte("Date: "), now.UTC().AppendFormat(nil, http.TimeFormat)...)
		v = &dateValue{sec: sec, line: append(line, "\r\n"...)}
		d.v.Store(v)
	}
	return append(dst, v.line...)
}
