package httpproxy

import (
	"context"
	"log/slog"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/compress"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// log is the log phase: it runs for every request, answered or not, and
// records one access-log line and the request metrics, against the app
// of the attempt that answered.
func (h *Handler) log(x *Exchange) {
	took := time.Since(x.start)
	app := x.app()
	if x.Conn.RequestDone != nil && app != "" {
		x.Conn.RequestDone(app)
	}
	status := x.status
	if status == 0 {
		status = 499 // the response was aborted before its head
	}
	env := x.env
	if m := env.Metrics; m != nil {
		m.HTTPRequests.WithLabelValues(app, telemetry.StatusClass(status)).Inc()
		m.HTTPRequestDuration.WithLabelValues(app).Observe(took.Seconds())
		if x.code != "" {
			m.Errors.WithLabelValues(string(x.code)).Inc()
		}
		if x.zLimited {
			m.HTTPCompressLimited.WithLabelValues(app).Inc()
		}
		if x.zEnc != compress.None {
			m.HTTPCompressed.WithLabelValues(app, x.zEnc.String()).Inc()
			m.HTTPCompressBytes.WithLabelValues(app, "in").Add(float64(x.zIn))
			m.HTTPCompressBytes.WithLabelValues(app, "out").Add(float64(x.zOut))
		}
	}
	if env.AccessLog == nil {
		return
	}
	r := x.Req
	target := r.Bytes(r.Target)
	path := target
	for i, c := range target {
		if c == '?' {
			path = target[:i]
			break
		}
	}
	proto := "HTTP/1.1"
	switch {
	case x.W.Proto() == 2:
		proto = "HTTP/2.0"
	case r.Minor == 0:
		proto = "HTTP/1.0"
	}
	bodyIn := int64(0)
	if x.body != nil {
		bodyIn = x.body.Size()
	}
	attrs := []slog.Attr{
		slog.String("type", "http"),
		slog.String("request_id", x.ID()),
		slog.Uint64("conn_id", x.Conn.ID),
		slog.String("app", app),
		slog.String("region", env.Region),
		slog.String("client", x.Conn.Client.Addr().String()),
		slog.String("method", r.String(r.Method)),
		slog.String("host", x.hostString()),
		slog.String("path", string(path)),
		slog.String("proto", proto),
		slog.Int("status", status),
		slog.Int64("bytes_in", bodyIn+x.tunnelIn),
		slog.Int64("bytes_out", x.sent+x.tunnelOut),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
	}
	if l := x.target.lease; l != nil {
		attrs = append(attrs, slog.String("machine", l.Machine.ID), slog.String("machine_region", l.Machine.Region))
		if l.StartWait > 0 {
			// The request waited for a machine to start: cold starts
			// show in the log, by how long.
			attrs = append(attrs, slog.Float64("start_wait_ms", float64(l.StartWait.Microseconds())/1000))
		}
	}
	if x.code != "" {
		attrs = append(attrs, slog.String("error_code", string(x.code)))
	}
	env.AccessLog.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)
}
