package httpproxy

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// recorder notes the status and body bytes of a response for the access
// log and metrics. Unwrap lets http.ResponseController (which the reverse
// proxy uses to flush and to hijack for upgrades) reach the real writer.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

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
		slog.Int64("bytes_in", max(r.ContentLength, 0)),
		slog.Int64("bytes_out", rec.bytes),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
	}
	if l := st.lease; l != nil {
		attrs = append(attrs, slog.String("machine", l.Machine.ID), slog.String("machine_region", l.Machine.Region))
	}
	if st.code != "" {
		attrs = append(attrs, slog.String("error_code", st.code))
	}
	env.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "access", attrs...)
}
