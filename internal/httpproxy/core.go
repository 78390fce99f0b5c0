package httpproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/compress"
	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/route"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// The forwarding core. A front end (HTTP/1.1 in front_h1.go, HTTP/2 in
// front_h2.go) parses a request into an Exchange and calls Serve; the core
// runs the phases below in order and talks back to the client only through
// the front end's Responder. Nothing calls back up into a front end.
//
//	route     Host (or SNI) -> app service; 421 when the TLS connection
//	          was made for another app; force_https
//	admit     the app's connection limit for shared ports; the method
//	pick      balance -> lease a machine (queue, autostart), or the
//	          connection's pinned machine
//	connect   a pooled machine connection, or a new guarded dial
//	forward   the rewritten head and the body
//	response  the machine's head; fly-replay goes back to pick with the
//	          recorded body; failures go back to pick while a retry is safe
//	respond   the rewritten head and the body, framed by the front end
//	log       always: access log, metrics, span, error code
//
// The attempt's target (app service, machine, lease) lives in one place,
// Exchange.target, so that metrics and logs name the app that served the
// request after a replay to another one.

// Body is a request body as the front end framed it.
type Body struct {
	// R is nil for a request without a body.
	R io.Reader
	// Length is the body's length, -1 when unknown (chunked on HTTP/1.1,
	// a stream on HTTP/2).
	Length int64
}

// Responder is the way back to the client, implemented by each front end.
// Fields are raw header lines ("Name: value\r\n"), as the core built them;
// the front end adds its own framing.
type Responder interface {
	// Interim sends an informational (1xx) response.
	Interim(status int, fields []byte) error
	// Head starts the final response. length is the body's length, -1
	// when unknown (streamed), and bodyless says no body follows whatever
	// length says (HEAD, 204, 304).
	Head(status int, fields []byte, length int64, bodyless bool) error
	// Write sends body bytes; Flush pushes what is buffered to the client.
	Write(p []byte) (int, error)
	Flush() error
	// End finishes the body, with trailer field lines or nil.
	End(trailers []byte) error
	// Tunnel hands the client connection over after a 101: the returned
	// conn carries the client's bytes (those read ahead come first).
	Tunnel() (net.Conn, error)
	// Cut makes a read of the request body (or a write of the response)
	// blocked on the client return now.
	Cut(write bool)
	// Proto is the client's HTTP major version, 1 or 2.
	Proto() int
}

// Exchange is one request's state, from the front end's parse to the log
// line. Its phases read and write it; the front end owns Req and Body.
type Exchange struct {
	Conn *Conn
	// Req is the client's request head. Its buffer belongs to the front
	// end and stays valid until Serve returns.
	Req  *h1.Head
	Body Body
	W    Responder
	// Ctx ends when the client is gone (HTTP/2 stream reset) or the
	// request is cut; front ends without that pass context.Background().
	Ctx context.Context
	// Trailer is where an HTTP/2 front end collects the request's
	// trailers (net/http fills it when the body ends), or nil.
	Trailer http.Header

	h     *Handler
	env   *Env
	port  *route.Port
	id    []byte
	idBuf requestID
	start time.Time
	// cancel ends Ctx when it can end (see Serve).
	cancel    context.CancelCauseFunc
	stallBody stallReader

	// target is the current attempt's app service and machine.
	target struct {
		entry *catalog.Port
		lease *upstream.Lease
	}
	// relayTo is the machine a relayed request goes to (relay.go).
	relayTo *catalog.Machine
	// body is the request body kept for retries and replays, or nil.
	body *replayBody
	want upstream.Want
	// pinned: the request went to its connection's machine without a
	// balancing decision of its own.
	pinned bool
	// extra holds header lines the core adds to the machine's request for
	// this attempt (replay source, replay failure, preferred instance).
	extra []byte
	// code is the error code the request ended with, if any.
	code perr.Code
	// status and sent are what the client was sent.
	status int
	sent   int64
	// tunnelIn and tunnelOut count an upgraded connection's bytes.
	tunnelIn, tunnelOut int64
	stalls              *stallWatch
	headSent            bool
	// aborted: the response could not be (fully) sent; the front end
	// ends the client connection or stream rather than reuse it.
	aborted bool
	// ownLease: the lease is the request's own, released with the
	// attempt (a pinned one stays with the connection).
	ownLease bool
	// finalWant is the want of the last replay, for the routing fields.
	finalWant *upstream.Want
	// replaySrc and replayFailed are fly-replay-src and fly-replay-failed
	// for the next attempt.
	replaySrc, replayFailed string
	// dropReplayHeader: the machine's fly-replay was invalid and ignored.
	dropReplayHeader bool
	zeroReads        int
	// zEnc, zIn and zOut record a compressed response: its coding and
	// body bytes before and after.
	zEnc      compress.Encoding
	zIn, zOut int64
	// zLimited: the response would have been compressed but for
	// max_compressed_responses.
	zLimited bool
}

// Aborted reports whether the response was cut short: the front end must
// not reuse the connection (HTTP/1.1) or must reset the stream (HTTP/2).
func (x *Exchange) Aborted() bool { return x.aborted }

// Status is the status sent to the client, 0 if none was.
func (x *Exchange) Status() int { return x.status }

// entry is the app service of the current attempt.
func (x *Exchange) entry() *catalog.Port { return x.target.entry }

// app is the current attempt's app name, "" before routing.
func (x *Exchange) app() string {
	if x.target.entry == nil {
		return ""
	}
	return x.target.entry.Service.App.Name
}

// Serve runs the request's phases.
func (h *Handler) Serve(x *Exchange) {
	c := x.Conn
	x.h = h
	x.env, x.port = c.current()
	x.id = x.idBuf.set(x.env.Region)
	x.start = time.Now()
	if x.Ctx == nil {
		x.Ctx = context.Background()
	}
	defer h.log(x)
	if x.stalls == nil {
		x.stalls = &stallWatch{}
	}
	x.stalls.start(x, x.env.BodyTimeout, x.env.BodyMinBytes)
	defer x.stalls.stop()
	if x.Body.R != nil {
		x.stallBody = stallReader{r: x.Body.R, w: x.stalls}
		x.body = newReplayBody(&x.stallBody, x.Body.Length)
	}
	if x.Ctx.Done() != nil {
		// A context that can end (an HTTP/2 stream's) also ends when the
		// request is cut. One that cannot (HTTP/1.1's) stays as it is: a
		// cut reaches the machine side through the client's socket and the
		// attempt's own cancellation, without a context per request.
		ctx, cancel := context.WithCancelCause(x.Ctx)
		defer cancel(nil)
		x.Ctx, x.cancel = ctx, cancel
	}
	if tr := x.env.Tracing; tr != nil && tr.Enabled {
		var span trace.Span
		x.Ctx, span = tr.Tracer.Start(tr.Propagator.Extract(x.Ctx, headCarrier{h: x.Req}), "proxy request",
			trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
				attribute.String("http.request.method", x.Req.String(x.Req.Method)),
				attribute.String("server.address", x.Req.String(x.Req.Host)),
				attribute.String("edgeproxy.request_id", x.ID()), attribute.Int64("edgeproxy.conn_id", int64(c.ID))))
		defer func() {
			span.SetAttributes(attribute.Int("http.response.status_code", x.status))
			if x.code != "" {
				span.SetStatus(otelcodes.Error, string(x.code))
			}
			span.End()
		}()
	}
	var resp *upResponse
	var err error
	if c.Relay != nil {
		if err := h.relayRoute(x); err != nil {
			x.fail(err)
			return
		}
		resp, err = h.relayForward(x)
	} else {
		if answered, err := h.route(x); err != nil || answered {
			if err != nil {
				x.fail(err)
			}
			return
		}
		if err := routingWant(x.Req, &x.want); err != nil {
			x.fail(err)
			return
		}
		x.want.Explain = x.entry().HTTP.DebugRouting
		resp, err = h.follow(x)
	}
	if err != nil {
		x.fail(err)
		return
	}
	h.respond(x, resp)
}

// route is the route and admit phases: the app service, the 421 rule, the
// app's connection limit, force_https. answered is true when the phase
// answered the request itself (a redirect).
func (h *Handler) route(x *Exchange) (answered bool, err error) {
	c := x.Conn
	if err := checkMethod(x.Req.Bytes(x.Req.Method)); err != nil {
		return false, err
	}
	host := x.hostView()
	entry := x.routeTraced(host)
	if entry == nil {
		return false, perr.New(perr.UnknownHost, fmt.Errorf("host %q on port %d", x.hostString(), x.port.Public))
	}
	if c.misdirected(x.port, host, entry) {
		return false, perr.New(perr.MisdirectedRequest, fmt.Errorf("host %q (app %s) on a TLS connection for %q",
			x.hostString(), entry.Service.App.Name, c.SNI))
	}
	x.target.entry = entry
	if c.AdmitApp != nil {
		if err := c.AdmitApp(entry.Service.App.Name); err != nil {
			return false, perr.New(perr.AppConnLimit, err)
		}
	}
	if !c.TLS && x.env.Challenge != nil && x.acmeChallenge() {
		return true, nil
	}
	if entry.ForceHTTPS && !c.TLS {
		x.redirectHTTPS(x.hostString())
		return true, nil
	}
	return false, nil
}

// acmeChallenge answers an ACME HTTP-01 validation for one of the apps'
// hostnames, before any force_https redirect (the CA follows none to a
// port whose certificate it is about to issue).
func (x *Exchange) acmeChallenge() bool {
	const prefix = "/.well-known/acme-challenge/"
	target := x.Req.Bytes(x.Req.Target)
	if !bytes.HasPrefix(target, []byte(prefix)) {
		return false
	}
	body, ok := x.env.Challenge(x.Ctx, x.hostString(), string(target))
	if !ok {
		return false
	}
	fields := make([]byte, 0, 128)
	fields = append(fields, "Content-Type: text/plain\r\n"...)
	fields = h1.AppendField(fields, fieldRequestID, x.id)
	fields = x.h.dates.appendField(fields, x.start)
	x.answer(200, fields, body)
	return true
}

// hostString is the request's Host. Routing looks it up in maps keyed by
// string; the conversion in the lookup itself does not allocate, but the
// name is kept for errors and the 421 rule, which are rare.
func (x *Exchange) hostString() string {
	if !x.Req.HasHost {
		return ""
	}
	return string(x.Req.Bytes(x.Req.Host))
}

// routeTraced routes the request, with a tracing span when tracing is on.
func (x *Exchange) routeTraced(host string) *catalog.Port {
	tr := x.env.Tracing
	if tr == nil || !tr.Enabled {
		return x.Conn.route(x.port, host)
	}
	_, span := tr.Tracer.Start(x.Ctx, "route", trace.WithAttributes(attribute.String("server.address", host)))
	cp := x.Conn.route(x.port, host)
	if cp != nil {
		span.SetAttributes(attribute.String("app", cp.Service.App.Name))
	} else {
		span.SetStatus(otelcodes.Error, string(perr.UnknownHost))
	}
	span.End()
	return cp
}

// cut is what a stall cut (stall.go) does: the code the request ends
// with, the blocked client read or write made to return, and the machine
// side cancelled, which closes its connection.
func (x *Exchange) cut(code perr.Code) {
	x.stalls.code.Store(&code)
	if m := x.env.Metrics; m != nil {
		kind := "body"
		if code == perr.ClientNotReading {
			kind = "response"
		}
		m.Timeouts.WithLabelValues(kind).Inc()
	}
	x.W.Cut(code == perr.ClientNotReading)
	if x.cancel != nil {
		x.cancel(perr.New(code, nil))
	}
	if pc := x.stalls.attempt.Load(); pc != nil {
		pc.cancelFor(x)
	}
}

// ended reports whether the request was cut or its client went away.
func (x *Exchange) ended() bool {
	_, cut := x.cutCode()
	return cut || x.Ctx.Err() != nil
}

// cutCode is the code of a cut, if the request was cut.
func (x *Exchange) cutCode() (perr.Code, bool) {
	if c := x.stalls.code.Load(); c != nil {
		return *c, true
	}
	return "", false
}

// ID is the request's id, as logs and headers carry it.
func (x *Exchange) ID() string { return string(x.id) }

// hostView is the request's Host as a string without a copy, for lookups
// during Serve only: it aliases the head's buffer, so nothing may keep it.
func (x *Exchange) hostView() string {
	if !x.Req.HasHost {
		return ""
	}
	b := x.Req.Bytes(x.Req.Host)
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
