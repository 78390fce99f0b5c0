package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Limits on what a single request may ask for, so a typo in a test cannot park a handler.
const (
	maxStreamChunks   = 1000
	maxStreamInterval = 10 * time.Second
	maxSleep          = 30 * time.Second
)

// Report is the JSON body of most responses: what the machine saw of the request, so tests on
// the proxy side can assert what was forwarded. Path is the escaped path as it came on the wire
// (so "%2F" survives), Query the raw query string, RemoteAddr the TCP peer (the proxy, when
// there is one) and Proxy the PROXY header the connection started with, if any. ConnID numbers
// the connections of one Serve call from 1, which lets tests see connection reuse.
type Report struct {
	MachineID  string              `json:"machine_id"`
	ConnID     uint64              `json:"conn_id"`
	Method     string              `json:"method"`
	Path       string              `json:"path"`
	Query      string              `json:"query"`
	Proto      string              `json:"proto"`
	Host       string              `json:"host"`
	RemoteAddr string              `json:"remote_addr"`
	Headers    map[string][]string `json:"headers"`
	BodyBytes  int64               `json:"body_bytes"`
	Proxy      *ProxyReport        `json:"proxy"`
}

type connInfoKey struct{}

func (m *machine) newHTTPServer(ctx context.Context) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	// Prior-knowledge h2c only: what a proxy configured with h2_backend speaks to a machine.
	protos.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           &handler{id: m.cfg.id},
		Protocols:         &protos,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if dc, ok := c.(*demoConn); ok {
				return context.WithValue(ctx, connInfoKey{}, dc.info)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}
}

// handler routes by exact path rather than with http.ServeMux, because ServeMux redirects
// unclean paths and the machine must report paths exactly as the proxy sent them.
type handler struct {
	id string
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Demo-Machine-Id", h.id)
	switch p := r.URL.Path; {
	case p == "/echo":
		h.echo(w, r)
	case p == "/stream":
		h.stream(w, r)
	case p == "/ws":
		h.websocket(w, r)
	case p == "/sleep":
		h.sleep(w, r)
	case p == "/replay":
		// Asks the proxy to replay the request elsewhere: /replay?to=
		// instance=ID (or region=R, app=A); the client never sees this.
		// A replayed request (it carries Fly-Replay-Src) is answered:
		// asking again would loop.
		if r.Header.Get("Fly-Replay-Src") == "" {
			w.Header().Set("Fly-Replay", r.URL.Query().Get("to"))
		}
		writeJSON(w, http.StatusOK, h.report(r))
	case strings.HasPrefix(p, "/status/"):
		h.status(w, r, strings.TrimPrefix(p, "/status/"))
	default:
		writeJSON(w, http.StatusOK, h.report(r))
	}
}

// report reads the request body to its end, so body_bytes counts what actually arrived.
func (h *handler) report(r *http.Request) Report {
	n, _ := io.Copy(io.Discard, r.Body)
	info, _ := r.Context().Value(connInfoKey{}).(connInfo)
	return Report{
		MachineID:  h.id,
		ConnID:     info.id,
		Method:     r.Method,
		Path:       r.URL.EscapedPath(),
		Query:      r.URL.RawQuery,
		Proto:      r.Proto,
		Host:       r.Host,
		RemoteAddr: r.RemoteAddr,
		Headers:    r.Header,
		BodyBytes:  n,
		Proxy:      info.proxy,
	}
}

func (h *handler) fail(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"machine_id": h.id, "error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if !bodyAllowed(status) {
		return
	}
	// An encoding error here means the client went away; there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// status answers /status/NNN with that code. A 1xx other than 101 goes out as an informational
// response followed by a 200 report, since HTTP requires a final response after it. 101 is
// refused: net/http would treat it as a final response and leave the client believing the
// protocol switched; /ws is the way to get a real 101.
func (h *handler) status(w http.ResponseWriter, r *http.Request, s string) {
	code, err := strconv.Atoi(s)
	if err != nil || len(s) != 3 || code < 100 || code > 599 {
		h.fail(w, http.StatusBadRequest, fmt.Sprintf("status %q: want a code from 100 to 599", s))
		return
	}
	if code == http.StatusSwitchingProtocols {
		h.fail(w, http.StatusBadRequest, "status 101 is only sent by /ws")
		return
	}
	rep := h.report(r)
	if code < 200 {
		w.WriteHeader(code)
		code = http.StatusOK
	}
	writeJSON(w, code, rep)
}

// echo streams the request body back as it arrives. Both directions stay open at once: a client
// may wait for each echo before sending more, as gRPC bidirectional streams do.
func (h *handler) echo(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// HTTP/1 in net/http otherwise stops reading the request body once the response starts;
	// HTTP/2 streams are always full duplex and report ErrNotSupported here.
	if err := rc.EnableFullDuplex(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		h.fail(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	// Send the header now: a client may hold its first chunk until it sees the response start.
	if err := rc.Flush(); err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// stream writes n lines "chunk 1\n" ... "chunk n\n", flushing each and pausing interval between
// them, so tests can check that a proxy does not buffer responses.
func (h *handler) stream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, interval := 5, 50*time.Millisecond
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			h.fail(w, http.StatusBadRequest, fmt.Sprintf("n %q: want a count >= 0", s))
			return
		}
		n = min(v, maxStreamChunks)
	}
	if s := q.Get("interval"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 {
			h.fail(w, http.StatusBadRequest, fmt.Sprintf("interval %q: want a duration >= 0", s))
			return
		}
		interval = min(v, maxStreamInterval)
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	for i := 1; i <= n; i++ {
		if i > 1 && !sleepCtx(r.Context(), interval) {
			return
		}
		if _, err := fmt.Fprintf(w, "chunk %d\n", i); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}

// sleep reads the request, waits d (default 100ms), then reports; it gives tests a slow
// upstream for timeout, drain and cancellation cases.
func (h *handler) sleep(w http.ResponseWriter, r *http.Request) {
	d := 100 * time.Millisecond
	if s := r.URL.Query().Get("d"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 {
			h.fail(w, http.StatusBadRequest, fmt.Sprintf("d %q: want a duration >= 0", s))
			return
		}
		d = min(v, maxSleep)
	}
	rep := h.report(r)
	if !sleepCtx(r.Context(), d) {
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// sleepCtx waits d and reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
