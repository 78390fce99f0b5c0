package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

// TestAdminRedactedConfig: every secret is replaced in the copy, and the
// running config it was made from, shared with live connections, keeps
// its own values.
func TestAdminRedactedConfig(t *testing.T) {
	check := func(secret string) []config.HTTPCheck {
		return []config.HTTPCheck{{Path: "/h", Headers: map[string]string{
			"Authorization": "Bearer " + secret, "x-api-key": secret, "host": "app.test", "User-Agent": "probe"}}}
	}
	cfg := &config.Config{
		Admin:   config.Admin{Token: "admin-secret"},
		Tracing: config.Tracing{Endpoint: "https://u:tracing-secret@otlp.example/?api_key=query-secret"},
		Apps: []config.App{{
			Name:        "a",
			Services:    []config.Service{{InternalPort: 1, HTTPChecks: check("svc-secret")}},
			HTTPService: &config.HTTPService{InternalPort: 2, Checks: check("hs-secret")},
		}, {Name: "b"}},
		Fleet: &config.Fleet{URLs: []string{"nats://fleetuser:nats-secret@10.0.0.1:4222"},
			Routes: []string{"nats-route://r:route-secret@10.0.0.2:6222"}},
	}
	b, err := json.Marshal(redactedConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	for _, secret := range []string{"admin-secret", "tracing-secret", "query-secret", "svc-secret", "hs-secret", `"u:`, "nats-secret", "route-secret", "fleetuser"} {
		if strings.Contains(out, secret) {
			t.Errorf("redacted config shows %q: %s", secret, out)
		}
	}
	for _, want := range []string{`"Token":"\u003credacted\u003e"`, "https://REDACTED@otlp.example/?api_key=REDACTED",
		`"host":"app.test"`, `"User-Agent":"probe"`, `"x-api-key":"\u003credacted\u003e"`} {
		if !strings.Contains(out, want) {
			t.Errorf("redacted config lacks %s: %s", want, out)
		}
	}
	if cfg.Admin.Token != "admin-secret" || !strings.Contains(cfg.Tracing.Endpoint, "tracing-secret") ||
		cfg.Apps[0].Services[0].HTTPChecks[0].Headers["x-api-key"] != "svc-secret" ||
		cfg.Apps[0].HTTPService.Checks[0].Headers["Authorization"] != "Bearer hs-secret" {
		t.Errorf("the running config was changed: %+v", cfg)
	}
}
