package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func TestIsChallenge(t *testing.T) {
	for _, tc := range []struct {
		protos []string
		want   bool
	}{
		{[]string{ALPN}, true},
		{[]string{"h2", ALPN}, false}, // a validation offers it alone
		{[]string{"h2", "http/1.1"}, false},
		{nil, false},
	} {
		if got := IsChallenge(&tls.ClientHelloInfo{SupportedProtos: tc.protos}); got != tc.want {
			t.Errorf("IsChallenge(%v) = %v, want %v", tc.protos, got, tc.want)
		}
	}
}

// HTTPChallenge answers only challenge paths of managed names, and asks
// the storage nothing for the rest.
func TestHTTPChallengeOnlyForManagedNames(t *testing.T) {
	m := New(Options{Directory: "https://127.0.0.1:1/dir", HTTP: true, TLSALPN: true,
		Storage: &certmagic.FileStorage{Path: t.TempDir()}})
	defer m.Close()
	m.SetPorts(0, 1) // only HTTP-01; nothing is ever ordered (no Manage)
	m.managed["a.example.com"] = true
	for _, tc := range []struct{ host, path string }{
		{"a.example.com", "/index.html"},
		{"b.example.com", ChallengePath + "token"},
		{"a.example.com:80", ChallengePath + "token"}, // managed, but no challenge is under way
	} {
		if body, ok := m.HTTPChallenge(context.Background(), tc.host, tc.path); ok {
			t.Errorf("HTTPChallenge(%s, %s) answered %q", tc.host, tc.path, body)
		}
	}
	if m.ChallengeConfig() != nil {
		t.Error("a TLS-ALPN-01 config although no tls port was set")
	}
}

func TestZapLinesReachSlog(t *testing.T) {
	var buf bytes.Buffer
	l := zapLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	l.Named("obtain").With(zap.String("identifier", "a.example.com")).Info("obtaining certificate", zap.Int("attempt", 2))
	l.Debug("not shown")
	out := buf.String()
	for _, want := range []string{`"msg":"obtaining certificate"`, `"component":"acme"`, `"logger":"obtain"`, `"identifier":"a.example.com"`, `"attempt":2`} {
		if !strings.Contains(out, want) {
			t.Errorf("log line %s lacks %s", out, want)
		}
	}
	if strings.Contains(out, "not shown") {
		t.Error("a debug line passed an info logger")
	}
}
