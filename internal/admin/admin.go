// Package admin owns the local admin API: Prometheus metrics, Go profiles
// (so a profile of a misbehaving proxy is one curl away), and health.
// Everything but /healthz and /ready needs the bearer token when one is
// configured; a non-loopback listener without a token is refused by
// config validation, and a token-less one answers only requests whose
// Host is a loopback name or address (see loopbackHostOnly).
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
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
	// Status is the status page's document (/v1/status).
	Status func() any
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
		private.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			writeJSON(w, v.Status())
		})
		// The page is a shell that holds no data: every number on it
		// comes from /v1/status, behind the token like the rest. A
		// browser cannot send a bearer token when it opens a URL, so
		// the shell is public and asks for the token itself.
		mux.Handle("GET /status", statusPage())
		mux.Handle("GET /status/", statusPage())
		private.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(v.Config())
		})
	}
	mux.Handle("/", requireToken(o.Token, o.Unauthorized, private))
	var handler http.Handler = mux
	if o.Token == "" {
		handler = loopbackHostOnly(mux)
	}
	s.srv = &http.Server{
		Handler:           handler,
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

// requireToken passes on requests that carry the token as RFC 6750
// bearer credentials, and answers others 401. An empty token checks
// nothing: config validation allows that only on loopback, where
// loopbackHostOnly guards the listener instead.
func requireToken(token string, unauthorized prometheus.Counter, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	// Digests of equal length are compared, so that neither the time
	// taken nor an early return on a length mismatch (as
	// subtle.ConstantTimeCompare does) tells a guesser anything about the
	// token, its length included.
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearerCredentials(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !ok {
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

// bearerCredentials returns the credentials of an Authorization header
// value of the Bearer scheme, and whether it is one. RFC 9110 (11.1)
// makes the scheme name case-insensitive, so "bearer" and "BEARER" are
// the same scheme; the credentials are compared exactly by the caller.
// One or more spaces (or tabs) separate the two.
func bearerCredentials(h string) (string, bool) {
	h = strings.Trim(h, " \t")
	i := strings.IndexAny(h, " \t")
	if i < 0 || !strings.EqualFold(h[:i], "Bearer") {
		return "", false
	}
	cred := strings.TrimLeft(h[i:], " \t")
	return cred, cred != ""
}

// loopbackHostOnly guards the token-less admin API against DNS
// rebinding. Such a listener is on loopback, but any web page the
// operator's browser opens can reach it once the page's own domain is
// re-pointed at 127.0.0.1; the browser then treats the admin API as that
// page's origin and lets it read every answer (config, metrics, the
// command line, profiles). The browser still sends the page's name as
// Host, so only Hosts that cannot be rebound are answered: loopback
// names and addresses. Anything else gets 421 Misdirected Request.
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isLoopbackHost(r.Host) {
			http.Error(w, "misdirected request: without admin.token the admin API answers only "+
				"Host localhost, *.localhost or a loopback address", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isLoopbackHost reports whether a Host header (with or without a port)
// names this machine in a way no DNS answer can change: "localhost" and
// names under ".localhost" (RFC 6761: resolvers and browsers answer them
// with loopback themselves), with or without the root's trailing dot, or
// a literal loopback address (127.0.0.0/8, ::1, IPv4-mapped 127/8).
//
// An empty Host is accepted: only an HTTP/1.0 request can lack one (the
// server refuses HTTP/1.1 without it), and browsers, the only clients a
// rebinding attack can drive, always send one.
func isLoopbackHost(hostport string) bool {
	if hostport == "" {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		// An IPv6 literal without a port; SplitHostPort has already
		// taken the brackets off one with a port.
		ip, err := netip.ParseAddr(host[1 : len(host)-1])
		return err == nil && ip.Is6() && ip.Unmap().IsLoopback()
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().IsLoopback()
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}
