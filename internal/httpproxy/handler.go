package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/route"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// ownedRequestHeaders are set by the proxy; copies sent by clients are
// removed so an app can trust them.
var ownedRequestHeaders = []string{
	"Fly-Client-Ip", "Fly-Forwarded-Port", "Fly-Region", "Fly-Request-Id",
	"X-Forwarded-Proto", "X-Forwarded-Port", "X-Forwarded-Ssl", "X-Request-Start",
	"Fly-Replay-Src", "Fly-Replay-Failed", "Fly-Preferred-Instance-Unavailable",
}

// ErrorCodeHeader carries the error code on responses the proxy makes
// itself, so clients and tests need not parse the body.
const ErrorCodeHeader = perr.CodeHeader

// Handler serves every HTTP request of every port. It is stateless apart
// from the shared pools; per-connection facts come from the request's
// context (see WithConn).
type Handler struct {
	proxy *httputil.ReverseProxy
}

// NewHandler makes the handler over the shared upstream pools; bufs lends
// the response copy buffers (nil: one per response).
func NewHandler(pools *Pools, errLog *slog.Logger, bufs *iox.BufferPool) *Handler {
	h := &Handler{}
	var bp httputil.BufferPool
	if bufs != nil {
		bp = &copyBuffers{p: bufs}
	}
	h.proxy = &httputil.ReverseProxy{
		// Without a pool the reverse proxy allocates (and clears) 32 KiB
		// for every response it copies.
		BufferPool:     bp,
		Rewrite:        rewrite,
		Transport:      roundTripper{pools: pools},
		ModifyResponse: modifyResponse,
		ErrorHandler:   writeError,
		ErrorLog:       slog.NewLogLogger(errLog.Handler(), slog.LevelDebug),
		// Zero flushes responses of unknown length (streams, SSE, gRPC) on
		// every write and buffers fixed-length ones, which is what both
		// want.
		FlushInterval: 0,
	}
	return h
}

// copyBuffers adapts the server's buffer pool to httputil.BufferPool.
// The pool holds *[]byte; boxes keeps the emptied pointers, so that giving
// a buffer back does not allocate a new one each time.
type copyBuffers struct {
	p     *iox.BufferPool
	boxes sync.Pool
}

func (c *copyBuffers) Get() []byte {
	bp := c.p.Get()
	b := *bp
	*bp = nil
	c.boxes.Put(bp)
	return b
}

func (c *copyBuffers) Put(b []byte) {
	bp, _ := c.boxes.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = b
	c.p.Put(bp)
}

// reqState is one request's routing facts, reached by the reverse proxy's
// hooks through the request context.
type reqState struct {
	conn  *Conn
	env   *Env
	port  *route.Port
	entry *catalog.Port
	id    string
	lease *upstream.Lease
	// body is the request's body, kept for retries and replays, or nil.
	body *replayBody
	// want is where the request may go, from its routing headers.
	want upstream.Want
	// pinned is true when the request went to its connection's machine
	// without a balancing decision of its own.
	pinned bool
	// code is the error code the request ended with, if any.
	code string
	// cut is set when the request was cut for a stalled client (stall.go).
	cut atomic.Pointer[perr.Code]
}

type stateKey struct{}

func stateFrom(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	return st
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := ConnFrom(r.Context())
	if c == nil {
		http.Error(w, "edgeproxy: request without connection state", http.StatusInternalServerError)
		return
	}
	// Each request uses the current runtime: a reload reaches requests on
	// keep-alive connections opened before it.
	env, port := c.current()
	st := &reqState{conn: c, env: env, port: port, id: newRequestID(env.Region)}
	rec := &recorder{ResponseWriter: w}
	w = rec
	defer observe(env, st, r, rec, time.Now())
	stalls := newStallWatch(env.BodyTimeout, env.BodyMinBytes)
	defer stalls.stop()
	rec.stalls = stalls
	if r.Body != nil && r.Body != http.NoBody {
		st.body = newReplayBody(&stallReader{ReadCloser: r.Body, w: stalls}, r.ContentLength)
	}
	ctx := r.Context()
	if !c.AbortOnClose && r.ProtoMajor == 1 {
		// net/http cancels a request when its client's stream ends, but a
		// client that sends a complete request and then half-closes (FIN or
		// close_notify) is legal and expects its answer (docs/incident.md); only
		// a failed write ends it. HTTP/2 streams keep their cancellation: a
		// reset stream is an explicit "stop".
		ctx = context.WithoutCancel(ctx)
		if r.Body == http.NoBody {
			// Nothing more of this request is read from the client while it
			// runs; the server may skip watching the socket (IgnoresClose).
			c.ignoringClose.Store(true)
			defer c.ignoringClose.Store(false)
		}
	}
	if tr := env.Tracing; tr != nil && tr.Enabled {
		// Continue the client's trace (W3C traceparent) or start one; the
		// span is passed on to the machine by rewrite.
		var span trace.Span
		ctx, span = tr.Tracer.Start(tr.Propagator.Extract(ctx, propagation.HeaderCarrier(r.Header)), "proxy request",
			trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
				attribute.String("http.request.method", r.Method), attribute.String("server.address", r.Host),
				attribute.String("edgeproxy.request_id", st.id), attribute.Int64("edgeproxy.conn_id", int64(c.ID))))
		defer func() {
			span.SetAttributes(attribute.Int("http.response.status_code", rec.status))
			if st.code != "" {
				span.SetStatus(otelcodes.Error, st.code)
			}
			span.End()
		}()
	}
	// A cut (stall.go) cancels the upstream request; its code decides
	// what the client and the log see.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stalls.start(stallCut(st, rec, cancel))
	defer func() {
		if code := st.cut.Load(); code != nil {
			st.code = string(*code)
		}
	}()
	ctx = context.WithValue(ctx, stateKey{}, st)
	r = r.WithContext(ctx)
	if err := checkMethod(r.Method); err != nil {
		writeError(w, r, err)
		return
	}
	st.entry = st.routeTraced(ctx, r.Host)
	if st.entry == nil {
		writeError(w, r, perr.New(perr.UnknownHost, fmt.Errorf("host %q on port %d", r.Host, port.Public)))
		return
	}
	if c.misdirected(port, r.Host, st.entry) {
		writeError(w, r, perr.New(perr.MisdirectedRequest, fmt.Errorf("host %q (app %s) on a TLS connection for %q",
			r.Host, st.entry.Service.App.Name, c.SNI)))
		return
	}
	if c.AdmitApp != nil {
		if err := c.AdmitApp(st.entry.Service.App.Name); err != nil {
			writeError(w, r, perr.New(perr.AppConnLimit, err))
			return
		}
	}
	if st.entry.ForceHTTPS && !c.TLS {
		redirectHTTPS(w, r, env.HTTPSPort)
		return
	}
	h.proxy.ServeHTTP(w, r)
}

// redirectHTTPS sends the client to the same URL over https. httpsPort is
// where public port 443 really listens: it differs only when port_map
// moves it for a local run, and then the redirect must name it.
func redirectHTTPS(w http.ResponseWriter, r *http.Request, httpsPort int) {
	host := route.NormalizeHost(r.Host)
	if host == "" {
		writeError(w, r, perr.New(perr.MalformedRequest, fmt.Errorf("cannot redirect to https: bad Host %q", r.Host)))
		return
	}
	if httpsPort != 0 && httpsPort != 443 {
		host = net.JoinHostPort(host, strconv.Itoa(httpsPort))
	}
	w.Header().Set("Fly-Request-Id", stateFrom(r.Context()).id)
	http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusMovedPermanently)
}

// rewrite sets the forwarding headers of docs/config.md (Headers) on the outgoing
// request. ReverseProxy has already removed hop-by-hop headers and the
// client's X-Forwarded-For/Host/Proto from pr.Out.
func rewrite(pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	c := st.conn
	out := pr.Out
	h := out.Header
	// Header keys are written in canonical form and values share one
	// backing array: this runs for every request, and Header.Set would
	// canonicalise each key and allocate each value's slice.
	for _, k := range ownedRequestHeaders {
		delete(h, k)
	}
	dropUnderscoreSpoofs(h)
	// The proxy answers 100-continue itself (net/http sends the 100 when
	// the body is first read, once a machine is connected): passed on,
	// the transport would hold every body until the machine said 100,
	// or a second went by, and most apps never say it.
	delete(h, "Expect")
	out.URL.Scheme = "http"
	keepTarget(out.URL, pr.In.URL)
	out.Host = pr.In.Host
	if out.Host == "" {
		out.Host = defaultHost(st)
	}
	clientIP, port := c.clientIP(), c.publicPort()
	vals := make([]string, 0, 11)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set("Fly-Client-Ip", clientIP)
	// Appending keeps the chain a client's own proxies built; the proxy's
	// own entry is the last one and the only one apps should trust.
	if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
		set("X-Forwarded-For", strings.Join(prior, ", ")+", "+clientIP)
	} else {
		set("X-Forwarded-For", clientIP)
	}
	set("Fly-Forwarded-Port", port)
	set("Fly-Region", st.env.Region)
	set("X-Forwarded-Port", port)
	if c.TLS {
		set("X-Forwarded-Proto", "https")
		set("X-Forwarded-Ssl", "on")
	} else {
		set("X-Forwarded-Proto", "http")
		set("X-Forwarded-Ssl", "off")
	}
	if prior := h["Via"]; len(prior) > 0 {
		h["Via"] = append(prior, via(pr.In.ProtoMajor))
	} else {
		set("Via", via(pr.In.ProtoMajor))
	}
	set("Fly-Request-Id", st.id)
	// Apps measure queueing time from this, as on the platform.
	var start [24]byte
	set("X-Request-Start", string(strconv.AppendInt(append(start[:0], "t="...), time.Now().UnixMicro(), 10)))
	if _, ok := h["User-Agent"]; !ok {
		// The reverse proxy would set this itself, to stop Go's default
		// agent being sent, with a slice of its own.
		set("User-Agent", "")
	}
	if tr := st.env.Tracing; tr != nil && tr.Enabled {
		delete(h, "Traceparent")
		delete(h, "Tracestate")
		tr.Propagator.Inject(pr.In.Context(), propagation.HeaderCarrier(h))
	}
}

// routeTraced routes the request, with a tracing span when tracing is on.
func (st *reqState) routeTraced(ctx context.Context, host string) *catalog.Port {
	tr := st.env.Tracing
	if tr == nil || !tr.Enabled {
		return st.conn.route(st.port, host)
	}
	_, span := tr.Tracer.Start(ctx, "route", trace.WithAttributes(attribute.String("server.address", host)))
	cp := st.conn.route(st.port, host)
	if cp != nil {
		span.SetAttributes(attribute.String("app", cp.Service.App.Name))
	} else {
		span.SetStatus(otelcodes.Error, string(perr.UnknownHost))
	}
	span.End()
	return cp
}

// serverValue is shared by every response: net/http only reads it.
var serverValue = []string{"edgeproxy"}

func via(major int) string {
	if major == 2 {
		return "2 edgeproxy"
	}
	return "1.1 edgeproxy"
}

func modifyResponse(resp *http.Response) error {
	st := stateFrom(resp.Request.Context())
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The client's socket carries the tunnel from now on.
		st.conn.ignoringClose.Store(false)
		if st.conn.Switched != nil {
			st.conn.Switched()
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols && strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") && st.conn.WebSocket != nil {
		st.conn.WebSocket()
	}
	h := resp.Header
	opts := st.entry.HTTP
	if !opts.Pristine {
		if len(h["Server"]) == 0 {
			h["Server"] = serverValue
		}
		vals := make([]string, 2)
		if prior := h["Via"]; len(prior) > 0 {
			h["Via"] = append(prior, via(resp.Request.ProtoMajor))
		} else {
			vals[0] = via(resp.Request.ProtoMajor)
			h["Via"] = vals[0:1:1]
		}
		vals[1] = st.id
		h["Fly-Request-Id"] = vals[1:2:2]
	}
	for _, name := range opts.RemoveHeaders {
		h.Del(name)
	}
	for name, vals := range opts.AddHeaders {
		for _, v := range vals {
			h.Add(name, v)
		}
	}
	return nil
}

// writeError answers a request the proxy could not serve with the code's
// status, the code in a header and a one-line text body users can search.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	pe, ok := perr.As(err)
	if !ok {
		pe = perr.New(perr.InternalError, err)
		if errors.Is(err, context.Canceled) {
			pe = perr.New(perr.ClientClosed, err)
		}
	}
	st := stateFrom(r.Context())
	if st != nil {
		if code := st.cut.Load(); code != nil {
			pe = perr.New(*code, err)
		}
	}
	defer func() {
		if st != nil {
			st.code = string(pe.Code)
		}
	}()
	if st != nil && st.cut.Load() == nil && st.body != nil && st.body.failed.Load() {
		// The client cut its body short, or sent one the proxy refused:
		// whatever the upstream side saw (a cancelled request, a machine
		// that gave up) follows from that. The client may still be
		// reading, having only half-closed.
		pe = perr.New(perr.RequestBodyIncomplete, err)
		if f := st.conn.BodyRefused; f != nil {
			if code := f(); code != nil {
				pe = perr.New(*code, err)
			}
		}
	}
	if st != nil && st.env.Log != nil {
		st.env.Log.Warn("request failed", "code", string(pe.Code), "source", pe.Source.String(),
			"request_id", st.id, "conn_id", st.conn.ID, "host", r.Host, "error", pe.Error())
	}
	if pe.Code == perr.ClientClosed || pe.Code == perr.ClientNotReading {
		// Nobody is listening for the answer, and returning normally would
		// make net/http send an empty 200: abort the response instead.
		panic(http.ErrAbortHandler)
	}
	h := w.Header()
	h.Set(ErrorCodeHeader, string(pe.Code))
	h.Set("Server", "edgeproxy")
	if st != nil {
		h.Set("Fly-Request-Id", st.id)
	}
	if ct, ok := grpcContentType(r); ok {
		writeGRPCError(w, ct, pe)
		return
	}
	status := pe.HTTPStatus()
	if status == 0 {
		status = http.StatusBadGateway
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, errorText(pe))
}

// errorText is the body of an error response: the code's line, with the
// cause of a routing failure. Routing failures are explained to the
// client: which app, and why no machine could take the request (every
// machine failing its checks, and the check's verdict), so a one-machine
// app whose check fails says so instead of a bare 503.
func errorText(pe *perr.Error) string {
	line := pe.Line()
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

// newRequestID makes an id unique enough to find one request in logs:
// 64 random bits and the edge's region, like the platform's ids.
func newRequestID(region string) string {
	var b [16]byte
	const hexdigits = "0123456789abcdef"
	v := rand.Uint64()
	for i := range b {
		b[i] = hexdigits[v&0xf]
		v >>= 4
	}
	return string(b[:]) + "-" + region
}
