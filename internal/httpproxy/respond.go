package httpproxy

import (
	"context"
	"errors"
	"html"
	"io"
	"net"
	"strconv"

	"github.com/edgeproxy/edgeproxy/internal/compress"
	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/route"
)

// The respond phase: the machine's answer to the client, and the answers
// the proxy makes itself (errors, redirects).

// respond sends a machine's response to the client and ends the attempt.
func (h *Handler) respond(x *Exchange, r *upResponse) {
	bp := headBufs.Get().(*[]byte)
	method := x.Req.Bytes(x.Req.Method)
	bodyless := r.Body == nil || string(method) == "HEAD" || r.Status == 204 || r.Status == 304
	var z compressPlan
	var cw *compress.Writer
	if r.tunnel == nil {
		z = x.compression(r, bodyless)
	}
	if z.enc != compress.None {
		// An encoder is taken before the head says the body is encoded:
		// at the limit the response goes as it is.
		if cw = h.compress.Get(z.enc, x.W, x.env.CompressLimit); cw == nil {
			z.enc, x.zLimited = compress.None, true
		}
	}
	fields := x.responseFields((*bp)[:0], r, z)
	r.src.headDone()
	if r.tunnel != nil {
		h.tunnel(x, r, fields)
		*bp = fields[:0]
		headBufs.Put(bp)
		return
	}
	length := r.Length
	if z.enc != compress.None {
		// The compressed length is known only at the end: chunked on
		// HTTP/1.1, no content-length on HTTP/2.
		length = -1
	}
	err := x.W.Head(r.Status, fields, length, bodyless)
	*bp = fields[:0]
	headBufs.Put(bp)
	x.status, x.headSent = r.Status, true
	if err != nil {
		if cw != nil {
			cw.Release()
		}
		x.endAttempt(r, false)
		x.clientGone(err)
		return
	}
	if r.Body == nil || bodyless {
		x.endAttempt(r, r.Body == nil)
		if err := x.W.End(nil); err != nil {
			x.clientGone(err)
		}
		return
	}
	werr, rerr := h.copyBody(x, r, cw)
	switch {
	case rerr != nil:
		// The machine's body failed part way: the client must not take
		// the truncated body for a whole one.
		x.endAttempt(r, false)
		code := perr.BodyReadFailed
		if c := x.stalls.code.Load(); c != nil {
			code = *c
		} else if x.ended() {
			code = perr.ClientClosed
		}
		x.code = code
		x.aborted = true
	case werr != nil:
		x.endAttempt(r, false)
		x.clientGone(werr)
	default:
		// The trailers are the connection's until it is released.
		trailers := r.trailers()
		err := x.W.End(trailers)
		x.endAttempt(r, true)
		if err != nil {
			x.clientGone(err)
		}
	}
}

// copyBody streams the body to the client, through cw when the response
// is compressed. A body of unknown length is a stream (server-sent
// events, gRPC, a long poll): each piece is flushed as it comes, through
// the encoder too, so an event is never held back; one of known length is
// flushed at its end. The encoder's trailer is written only when the
// machine's body ended whole: a body cut short stays visibly incomplete.
func (h *Handler) copyBody(x *Exchange, r *upResponse, cw *compress.Writer) (werr, rerr error) {
	bp := h.bufs.Get()
	defer h.bufs.Put(bp)
	buf := *bp
	stream := r.Length < 0
	if cw != nil {
		defer func() {
			x.zIn, x.zOut, x.zEnc = cw.In(), cw.Out(), cw.Encoding()
			cw.Release()
		}()
	}
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if w := x.sendPiece(buf[:n], cw, stream); w != nil {
				return w, nil
			}
		}
		if err == io.EOF {
			if cw == nil {
				return nil, nil
			}
			out := cw.Out()
			x.stalls.writing.Add(1)
			w := cw.Close()
			x.stalls.writing.Add(-1)
			x.sent += cw.Out() - out
			return w, nil
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			// A reader that returns nothing and no error makes no
			// progress; iox.Copy's rule applies here too.
			if x.zeroReads++; x.zeroReads > 100 {
				return nil, io.ErrNoProgress
			}
		}
	}
}

// sendPiece writes one piece of a response body to the client, through
// cw when it is compressed, and flushes it when the body is a stream.
// What counts as moved is what reached the client.
func (x *Exchange) sendPiece(p []byte, cw *compress.Writer, stream bool) error {
	if cw == nil {
		x.stalls.writing.Add(1)
		m, w := x.W.Write(p)
		x.stalls.writing.Add(-1)
		x.stalls.moved.Add(int64(m))
		x.sent += int64(m)
		if w == nil && stream {
			w = x.W.Flush()
		}
		return w
	}
	out := cw.Out()
	x.stalls.writing.Add(1)
	_, w := cw.Write(p)
	if w == nil && stream {
		if w = cw.Flush(); w == nil {
			w = x.W.Flush()
		}
	}
	x.stalls.writing.Add(-1)
	moved := cw.Out() - out
	x.stalls.moved.Add(moved)
	x.sent += moved
	return w
}

// tunnel answers a 101 and joins the client and machine connections.
func (h *Handler) tunnel(x *Exchange, r *upResponse, fields []byte) {
	x.status, x.headSent = 101, true
	if x.Conn.Switched != nil {
		x.Conn.Switched()
	}
	if up, _ := r.Head.Get("Upgrade"); h1.EqualFold(up, "websocket") && x.Conn.WebSocket != nil {
		x.Conn.WebSocket()
	}
	if err := x.W.Head(101, fields, 0, true); err != nil {
		x.endAttempt(r, false)
		x.clientGone(err)
		return
	}
	client, err := x.W.Tunnel()
	if err != nil {
		x.endAttempt(r, false)
		x.fail(err)
		return
	}
	in, out, _ := iox.Duplex(client, r.tunnel, iox.DuplexOptions{Pool: h.bufs, NoSplice: true})
	x.tunnelIn, x.tunnelOut = in, out
	x.endAttempt(r, false)
}

// clientGone ends a request whose client stopped taking the response.
func (x *Exchange) clientGone(err error) {
	x.aborted = true
	if c := x.stalls.code.Load(); c != nil {
		x.code = *c
		return
	}
	x.code = perr.ClientClosed
}

// fail answers a request the proxy could not serve with the code's
// status, the code in a header and a one-line text body users can search
// (or a gRPC status for a gRPC call).
func (x *Exchange) fail(err error) {
	pe, ok := perr.As(err)
	if !ok {
		pe = perr.New(perr.InternalError, err)
		if errors.Is(err, context.Canceled) {
			pe = perr.New(perr.ClientClosed, err)
		}
	}
	if code := x.stalls.code.Load(); code != nil {
		pe = perr.New(*code, err)
	} else if x.body != nil && x.body.failed.Load() {
		// The client cut its body short, or sent one the proxy refused:
		// whatever the machine side saw follows from that.
		pe = perr.New(perr.RequestBodyIncomplete, err)
		var he *h1.Error
		if errors.As(x.body.srcErr, &he) {
			pe = perr.New(he.Code, err)
		}
	}
	x.code = pe.Code
	if x.env.Log != nil {
		// The line says what to check (the code's hint) and where: the
		// app and the last machine tried. The client gets only the code.
		attrs := []any{"code", string(pe.Code), "source", pe.Source.String(), "request_id", x.ID(), "conn_id", x.Conn.ID,
			"app", x.app(), "host", x.Req.String(x.Req.Host)}
		if l := x.target.lease; l != nil {
			attrs = append(attrs, "machine", l.Machine.ID)
		}
		attrs = append(attrs, "error", pe.Error())
		if hint := perr.HintOf(pe.Code); hint != "" {
			attrs = append(attrs, "hint", hint)
		}
		x.env.Log.Warn("request failed", attrs...)
	}
	if pe.Code == perr.ClientClosed || pe.Code == perr.ClientNotReading || x.headSent {
		// Nobody is listening for the answer, or one is under way.
		x.aborted = true
		return
	}
	fields := make([]byte, 0, 256)
	fields = append(fields, perr.CodeHeader+": "...)
	fields = append(fields, pe.Code...)
	fields = append(fields, "\r\nServer: edgeproxy\r\n"...)
	fields = h1.AppendField(fields, fieldRequestID, x.id)
	fields = x.h.dates.appendField(fields, x.start)
	if x.Conn.Relay != nil {
		// For the edge, which answers the client itself.
		fields = appendRelayError(fields, pe)
	} else if ct, ok := grpcContentType(x.Req); ok {
		fields = appendGRPCError(fields, ct, pe, x.debugRouting())
		x.answer(200, fields, nil)
		return
	}
	status := pe.HTTPStatus()
	if status == 0 {
		status = 502
	}
	fields = append(fields, "Content-Type: text/plain; charset=utf-8\r\n"...)
	x.answer(status, fields, []byte(errorText(pe, x.debugRouting())))
}

// debugRouting reports whether the request's port has debug_routing on:
// then an error page may say which machines failed and why.
func (x *Exchange) debugRouting() bool {
	e := x.target.entry
	return e != nil && e.HTTP.DebugRouting
}

// answer sends a response the proxy made itself.
func (x *Exchange) answer(status int, fields, body []byte) {
	bodyless := string(x.Req.Bytes(x.Req.Method)) == "HEAD"
	x.status, x.headSent = status, true
	if err := x.W.Head(status, fields, int64(len(body)), bodyless); err != nil {
		x.clientGone(err)
		return
	}
	if !bodyless && len(body) > 0 {
		n, err := x.W.Write(body)
		x.sent += int64(n)
		if err != nil {
			x.clientGone(err)
			return
		}
	}
	if err := x.W.End(nil); err != nil {
		x.clientGone(err)
	}
}

// redirectHTTPS sends the client to the same URL over https. The https
// port is where public port 443 really listens: it differs only when
// port_map moves it for a local run, and then the redirect must name it.
func (x *Exchange) redirectHTTPS(host string) {
	name := route.NormalizeHost(host)
	if name == "" {
		x.fail(perr.New(perr.MalformedRequest, errors.New("cannot redirect to https: bad Host "+strconv.Quote(host))))
		return
	}
	if p := x.env.HTTPSPort; p != 0 && p != 443 {
		name = net.JoinHostPort(name, strconv.Itoa(p))
	}
	target := x.Req.Bytes(x.Req.Target)
	url := "https://" + name + string(target)
	if len(target) == 0 || target[0] != '/' {
		url = "https://" + name + "/"
	}
	fields := make([]byte, 0, 256)
	fields = h1.AppendFieldString(fields, "Location", url)
	fields = h1.AppendField(fields, fieldRequestID, x.id)
	fields = x.h.dates.appendField(fields, x.start)
	var body []byte
	if m := string(x.Req.Bytes(x.Req.Method)); m == "GET" || m == "HEAD" {
		fields = append(fields, "Content-Type: text/html; charset=utf-8\r\n"...)
		body = []byte("<a href=\"" + html.EscapeString(url) + "\">Moved Permanently</a>.\n\n")
	}
	x.answer(301, fields, body)
}

// interimFields are a 1xx response's fields as the client gets them.
func interimFields(h *h1.Head) []byte { return appendEndToEnd(nil, h, "") }

// appendEndToEnd appends h's fields less hop-by-hop and framing ones, and
// less the field named also, if any.
func appendEndToEnd(dst []byte, h *h1.Head, also string) []byte {
	for _, f := range h.Fields {
		name := h.Bytes(f.Name)
		if roleOfResponse(name) == dropField || (also != "" && h1.EqualFold(name, also)) {
			continue
		}
		dst = append(dst, name...)
		dst = append(dst, ": "...)
		dst = append(dst, h.Bytes(f.Value)...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// errorText is the body of an error response: the code's line, with the
// cause of a routing failure. Routing failures are explained to the
// client: which app, and why no machine could take the request (every
// machine failing its checks, and the check's verdict), so a one-machine
// app whose check fails says so instead of a bare 503.
func errorText(pe *perr.Error, debug bool) string {
	line := pe.Line()
	if !debug {
		// The app's machine ids and check paths are the operator's,
		// not every client's: the log line and the debug header have
		// them.
		return line
	}
	if detail := routingDetail(pe); detail != "" {
		return line[:len(line)-1] + ": " + detail + "\n"
	}
	return line
}

// routingDetail is the cause of a routing error (PR..), which edgeproxy
// wrote itself from the catalog, never from client or machine bytes.
func routingDetail(pe *perr.Error) string {
	switch pe.Code {
	case perr.NoHealthyInstances, perr.NoCandidate, perr.NoCandidateTimeout:
		if pe.Err != nil {
			return pe.Err.Error()
		}
	}
	return ""
}
