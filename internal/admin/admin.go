// Package admin owns the local admin API: Prometheus metrics, Go profiles
// (so a profile of a misbehaving proxy is one curl away), and health.
// Everything but /healthz and /ready needs the bearer token when one is
// configured; a non-loopback listener without a token is refused by
// config validation.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the admin HTTP server.
type Server struct {
	srv   *http.Server
	ln    net.Listener
	ready *atomic.Bool
	log   *slog.Logger
}

// Options configure the admin server.
type Options struct {
	Listen string
	// ListenFunc opens the socket; nil uses net.Listen (a graceful restart
	// passes one that inherits sockets).
	ListenFunc func(network, addr string) (net.Listener, error)
	Token      string
	Registry   *prometheus.Registry
	// Unauthorized counts requests refused for a missing or wrong token.
	Unauthorized prometheus.Counter
	Log          *slog.Logger
	// Views feed the /v1 endpoints.
	Views Views
}

// Views are the server's JSON views the /v1 endpoints serve.
type Views struct {
	Apps        func() any
	Machines    func() any
	Connections func(limit int, by string) any
	Config      func() json.RawMessage
	// Reload reloads the config file; its error lists every problem.
	Reload func() error
}

// Start listens on o.Listen and serves until Close.
func Start(o Options) (*Server, error) {
	listen := o.ListenFunc
	if listen == nil {
		listen = net.Listen
	}
	ln, err := listen("tcp", o.Listen)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, ready: new(atomic.Bool), log: o.Log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	private := http.NewServeMux()
	private.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{}))
	private.HandleFunc("/debug/pprof/", pprof.Index)
	private.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	private.HandleFunc("/debug/pprof/profile", pprof.Profile)
	private.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	private.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if v := o.Views; v.Apps != nil {
		private.HandleFunc("GET /v1/apps", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, v.Apps()) })
		private.HandleFunc("GET /v1/machines", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, v.Machines()) })
		private.HandleFunc("GET /v1/connections", func(w http.ResponseWriter, r *http.Request) {
			limit := 50
			if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 {
				limit = min(n, 10000)
			}
			by := r.URL.Query().Get("sort")
			if by != "" && by != "oldest" && by != "busiest" {
				http.Error(w, `sort must be "oldest" or "busiest"`, http.StatusBadRequest)
				return
			}
			writeJSON(w, v.Connections(limit, by))
		})
		private.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
			if err := v.Reload(); err != nil {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnprocessableEntity)
				json.NewEncoder(w).Encode(map[string]string{"result": "failed", "error": err.Error()})
				return
			}
			writeJSON(w, map[string]string{"result": "ok"})
		})
		private.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(v.Config())
		})
	}
	mux.Handle("/", requireToken(o.Token, o.Unauthorized, private))
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// Profiles run for as long as asked (seconds=N), so no write timeout.
		IdleTimeout: 60 * time.Second,
	}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Log.Error("admin server stopped", "error", err.Error())
		}
	}()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// SetReady sets what /ready answers.
func (s *Server) SetReady(v bool) { s.ready.Store(v) }

// Close stops the admin server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		return s.srv.Close()
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func requireToken(token string, unauthorized prometheus.Counter, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(strings.TrimSpace(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			if unauthorized != nil {
				unauthorized.Inc()
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="edgeproxy"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
