package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"
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
