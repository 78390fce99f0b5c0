// Package admin owns the local admin API: Prometheus metrics, Go profiles
// (so a profile of a misbehaving proxy is one curl away), and health.
// Everything but /healthz and /ready needs the bearer token when one is
// configured; a non-loopback listener without a token is refused by
// config validation.
package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
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
	Listen   string
	Token    string
	Registry *prometheus.Registry
	// Unauthorized counts requests refused for a missing or wrong token.
	Unauthorized prometheus.Counter
	Log          *slog.Logger
}

// Start listens on o.Listen and serves until Close.
func Start(o Options) (*Server, error) {
	ln, err := net.Listen("tcp", o.Listen)
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
