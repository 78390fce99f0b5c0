package admin

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestAdminIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"":                           true, // HTTP/1.0 without Host: no browser sends that
		"localhost":                  true,
		"localhost:9901":             true,
		"LocalHost:9901":             true,
		"localhost.:9901":            true,
		"admin.localhost:9901":       true,
		"a.b.localhost":              true,
		"127.0.0.1":                  true,
		"127.0.0.1:9901":             true,
		"127.255.0.9:1":              true,
		"[::1]":                      true,
		"[::1]:9901":                 true,
		"::1":                        true,
		"[::ffff:127.0.0.1]:9901":    true,
		"attacker.example":           false,
		"attacker.example:9901":      false,
		"localhost.attacker.example": false,
		"localhostx:9901":            false,
		"xlocalhost":                 false,
		"127.0.0.1.nip.io:9901":      false,
		"127.0.0.1.":                 false,
		"2130706433:9901":            false, // browsers send 127.0.0.1; anything else is not a literal
		"10.0.0.1:9901":              false,
		"0.0.0.0:9901":               false,
		"[2001:db8::1]:9901":         false,
		"[::]:9901":                  false,
		"[localhost]":                false,
		"[127.0.0.1]":                false,
	} {
		if got := isLoopbackHost(host); got != want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestAdminBearerCredentials(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer tok":     "tok",
		"bearer tok":     "tok",
		"BEARER tok":     "tok",
		"Bearer \t tok ": "tok",
		"\tBearer\ttok":  "tok",
		"Bearer TOK":     "TOK",
		"Bearer":         "",
		"Bearer ":        "",
		"Bearertok":      "",
		"Basic tok":      "",
		"tok":            "",
		"":               "",
	} {
		got, ok := bearerCredentials(h)
		if got != want || ok != (want != "") {
			t.Errorf("bearerCredentials(%q) = %q, %v; want %q", h, got, ok, want)
		}
	}
}

func TestAdminRequireToken(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	h := requireToken("s3cret", nil, ok)
	for auth, want := range map[string]int{
		"Bearer s3cret":  200,
		"bearer s3cret":  200,
		"BEARER s3cret":  200,
		"Bearer S3CRET":  401,
		"Bearer s3cre":   401,
		"Bearer s3crett": 401,
		"Basic s3cret":   401,
		"s3cret":         401,
		"":               401,
	} {
		req := httptest.NewRequest("GET", "/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Authorization %q: %d, want %d", auth, rec.Code, want)
		}
		if want == 401 && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: 401 without WWW-Authenticate", auth)
		}
	}
}

func TestAdminLoopbackHostOnly(t *testing.T) {
	h := loopbackHostOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for host, want := range map[string]int{"localhost:9901": 200, "127.0.0.1:9901": 200, "evil.example:9901": 421} {
		req := httptest.NewRequest("GET", "/v1/config", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %q: %d, want %d", host, rec.Code, want)
		}
	}
}

// TestStatusPageShellAndData: the page and its assets load without the
// token (they hold no data) under a policy that runs only their own
// script; the document they poll needs it.
func TestStatusPageShellAndData(t *testing.T) {
	s, err := Start(Options{Listen: "127.0.0.1:0", Token: "s3cret", Registry: prometheus.NewRegistry(),
		Log: slog.New(slog.DiscardHandler), Views: Views{
			Apps: func() any { return nil }, Machines: func() any { return nil },
			Connections: func(int, string) any { return nil }, Config: func() json.RawMessage { return nil },
			Reload: func() error { return nil }, Status: func() any { return map[string]int{"requests": 7} },
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://" + s.Addr().String()
	get := func(path, auth string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for path, want := range map[string]string{"/status": "<title>edgeproxy status</title>", "/status/status.js": "/v1/status", "/status/status.css": ".tile"} {
		resp, body := get(path, "")
		if resp.StatusCode != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d, body lacks %q", path, resp.StatusCode, want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
	}
	if resp, _ := get("/status/nope.js", ""); resp.StatusCode != 404 {
		t.Errorf("/status/nope.js: %d", resp.StatusCode)
	}
	if resp, _ := get("/v1/status", ""); resp.StatusCode != 401 {
		t.Errorf("/v1/status without the token: %d", resp.StatusCode)
	}
	resp, body := get("/v1/status", "Bearer s3cret")
	if resp.StatusCode != 200 || !strings.Contains(body, `"requests": 7`) || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("/v1/status with the token: %d %q %q", resp.StatusCode, body, resp.Header.Get("Cache-Control"))
	}
}
