package httpproxy

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// recorder notes the status and body bytes of a response for the access
// log and metrics. Unwrap lets http.ResponseController (which the reverse
// proxy uses to flush) reach the real writer; Hijack, which it uses for
// upgrades, is the recorder's own, to see the tunnel.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	// tunnel is the client connection of an upgraded (101) exchange,
	// whose bytes never pass through Write.
	tunnel *tunnelConn
	// stalls, if set, watches writes for a client that stopped reading.
	stalls *stallWatch
}

func (r *recorder) WriteHeader(code int) {
	if code >= 200 {
		r.keepContentType()
	}
	if r.status == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
		r.keepContentType()
	}
	if r.stalls == nil {
		n, err := r.ResponseWriter.Write(p)
		r.bytes += int64(n)
		return n, err
	}
	r.stalls.writing.Add(1)
	n, err := r.ResponseWriter.Write(p)
	r.stalls.writing.Add(-1)
	r.stalls.moved.Add(int64(n))
	r.bytes += int64(n)
	return n, err
}

// keepContentType stops net/http from guessing a Content-Type for a
// response that has none: the machine's headers go as it sent them, and
// a guess (text/html from a few bytes) would turn a harmless download
// into a page, nosniff or not. A present but empty entry is how net/http
// is told.
func (r *recorder) keepContentType() {
	h := r.ResponseWriter.Header()
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Hijack hands the client connection to the reverse proxy for a 101
// tunnel, counting what flows through it: the session is then logged as
// the 101 it was, with its bytes, not as a response that never came.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	r.status = http.StatusSwitchingProtocols
	r.tunnel = &tunnelConn{Conn: c}
	return r.tunnel, brw, nil
}

// tunnelConn counts the bytes of a hijacked client connection. The
// reverse proxy reads and writes it from two goroutines and may return
// before both end, hence the atomics.
type tunnelConn struct {
	net.Conn
	in, out atomic.Int64
}

func (c *tunnelConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *tunnelConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// errNoHalfClose ends a tunnel whose client connection cannot half-close,
// as the reverse proxy does itself for such connections.
var errNoHalfClose = errors.New("client connection cannot half-close")

// CloseWrite passes the machine's end of the stream on, which the
// reverse proxy does only for connections that can.
func (c *tunnelConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}

// moved returns the bytes a tunnel carried, received and sent.
func (r *recorder) moved() (in, out int64) {
	if r.tunnel == nil {
		return 0, 0
	}
	return r.tunnel.in.Load(), r.tunnel.out.Load()
}

// observe records a finished request: one access-log line and the request
// metrics. It runs deferred, so aborted responses are recorded too.
func observe(env *Env, st *reqState, r *http.Request, rec *recorder, start time.Time) {
	took := time.Since(start)
	app := ""
	if st.entry != nil {
		app = st.entry.Service.App.Name
	}
	if st.conn.RequestDone != nil && app != "" {
		st.conn.RequestDone(app)
	}
	status := rec.status
	if status == 0 {
		status = 499 // the response was aborted before its header
	}
	if m := env.Metrics; m != nil {
		m.HTTPRequests.WithLabelValues(app, telemetry.StatusClass(status)).Inc()
		m.HTTPRequestDuration.WithLabelValues(app).Observe(took.Seconds())
		if st.code != "" {
			m.Errors.WithLabelValues(st.code).Inc()
		}
	}
	if env.AccessLog == nil {
		return
	}
	tunIn, tunOut := rec.moved()
	attrs := []slog.Attr{
		slog.String("type", "http"),
		slog.String("request_id", st.id),
		slog.Uint64("conn_id", st.conn.ID),
		slog.String("app", app),
		slog.String("region", env.Region),
		slog.String("client", st.conn.Client.Addr().String()),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
		slog.String("proto", r.Proto),
		slog.Int("status", status),
		slog.Int64("bytes_in", max(r.ContentLength, 0)+tunIn),
		slog.Int64("bytes_out", rec.bytes+tunOut),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
	}
	if l := st.lease; l != nil {
		attrs = append(attrs, slog.String("machine", l.Machine.ID), slog.String("machine_region", l.Machine.Region))
		if l.StartWait > 0 {
			// The request waited for a machine to start: cold starts
			// show in the log, by how long.
			attrs = append(attrs, slog.Float64("start_wait_ms", float64(l.StartWait.Microseconds())/1000))
		}
	}
	if st.code != "" {
		attrs = append(attrs, slog.String("error_code", st.code))
	}
	env.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "access", attrs...)
}
