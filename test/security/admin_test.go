//go:build linux

package security_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// adminRequest sends one GET to the admin listener at addr with the given
// Host header and Authorization value ("" sends none) and returns the
// status and body. It keeps no connection open afterwards.
func adminRequest(t *testing.T, addr, host, auth, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Close = true
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %q): %v", path, host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s (Host %q): reading the body: %v", path, host, err)
	}
	return resp.StatusCode, string(body)
}

// withAdminToken returns cfg (see baseConfig) with an admin token.
func withAdminToken(cfg, token string) string {
	const listen = "[admin]\nlisten = \"127.0.0.1:0\"\n"
	if !strings.Contains(cfg, listen) {
		panic("withAdminToken: no [admin] table in the config")
	}
	return strings.Replace(cfg, listen, listen+"token = \""+token+"\"\n", 1)
}

// awaitAdminReady waits until the admin API answers /ready with 200: the
// proxy has finished starting. A test that stops the proxy sooner can
// race its signal handler being installed.
func awaitAdminReady(t *testing.T, env *proxyEnv) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		status, _ := adminRequest(t, env.adminAddr, "localhost", "", "/ready")
		if status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready still answers %d after %v", status, readyTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startAdminProxy runs the proxy on cfg (see baseConfig) in front of a
// machine that answers every request with 200, and waits until it is
// ready.
func startAdminProxy(t *testing.T, cfg string) *proxyEnv {
	t.Helper()
	m := startRecorder(t, serveEach(func(c *recConn, req *http.Request, body []byte) bool {
		_, err := io.WriteString(c, okResponse("ok"))
		return err == nil
	}))
	env := startProxy(t, cfg, m.Port())
	awaitAdminReady(t, env)
	return env
}

// TestAdminDNSRebinding: the token-less admin API on loopback is reachable
// by any web page the operator's browser opens, once that page's domain is
// re-pointed at 127.0.0.1 (DNS rebinding); the browser then sends the
// page's own name as Host. Before the fix every endpoint, /v1/config and
// the profiles included, answered such a request. Now only Host names
// and addresses that are loopback are answered without a token.
func TestAdminDNSRebinding(t *testing.T) {
	env := startAdminProxy(t, baseConfig)
	port := env.adminAddr[strings.LastIndex(env.adminAddr, ":"):]

	for _, host := range []string{
		"attacker.example" + port, "attacker.example", "localhost.attacker.example" + port,
		"127.0.0.1.nip.io" + port, "192.168.1.10" + port, "[2001:db8::1]" + port, "localhostx" + port,
	} {
		for _, path := range []string{"/v1/config", "/debug/pprof/cmdline", "/metrics", "/healthz"} {
			status, body := adminRequest(t, env.adminAddr, host, "", path)
			if status != http.StatusMisdirectedRequest {
				t.Errorf("Host %q %s: got %d, want 421 (body %.80q)", host, path, status, body)
			}
		}
	}
	for _, host := range []string{
		env.adminAddr, "127.0.0.1", "127.3.4.5" + port, "localhost" + port, "LOCALHOST" + port,
		"localhost." + port, "admin.localhost" + port, "[::1]" + port, "[::1]",
	} {
		if status, body := adminRequest(t, env.adminAddr, host, "", "/v1/apps"); status != http.StatusOK {
			t.Errorf("Host %q /v1/apps: got %d, want 200 (body %.80q)", host, status, body)
		}
	}
}

// TestAdminDNSRebindingWithToken: with a token the token is the
// protection (a rebinding page cannot know it), so Host is not checked and
// an admin API reached under any name keeps working.
func TestAdminDNSRebindingWithToken(t *testing.T) {
	env := startAdminProxy(t, withAdminToken(baseConfig, "rebind-tok"))
	if status, _ := adminRequest(t, env.adminAddr, "edge1.internal.example", "", "/v1/apps"); status != http.StatusUnauthorized {
		t.Errorf("any Host without the token: got %d, want 401", status)
	}
	if status, body := adminRequest(t, env.adminAddr, "edge1.internal.example", "Bearer rebind-tok", "/v1/apps"); status != http.StatusOK {
		t.Errorf("any Host with the token: got %d, want 200 (body %.80q)", status, body)
	}
}

// TestAdminConfigRedactsSecrets: /v1/config printed the tracing
// endpoint as written, credentials and API keys in its URL included, and
// the header values of health checks (where an app's check credentials
// go). Only admin.token was redacted.
func TestAdminConfigRedactsSecrets(t *testing.T) {
	extra := `
[tracing]
enabled = true
endpoint = "https://otel-user:hunter2-pass@127.0.0.1:1/otlp?api_key=qs-key-7777&tenant=t1"

[[apps]]
name = "checked"
hostnames = ["checked.test"]
  [apps.http_service]
  internal_port = 8080
    [[apps.http_service.checks]]
    path = "/health"
    headers = { Authorization = "Bearer check-cred-8888", X-Api-Key = "check-key-9999", Host = "checked.test" }
  [[apps.machines]]
  id = "c1"
  address = "127.0.0.1"
  ports = { 8080 = MACHINE_PORT }
`
	env := startAdminProxy(t, withApps(withAdminToken(withProxy(""), "admin-tok-5555"), extra))
	status, body := adminRequest(t, env.adminAddr, "localhost", "Bearer admin-tok-5555", "/v1/config")
	if status != http.StatusOK {
		t.Fatalf("/v1/config: got %d: %s", status, body)
	}
	for _, secret := range []string{"otel-user", "hunter2-pass", "qs-key-7777", "admin-tok-5555", "check-cred-8888", "check-key-9999"} {
		if strings.Contains(body, secret) {
			t.Errorf("/v1/config shows the secret %q", secret)
		}
	}
	// What is not secret stays, so the view still says where spans go.
	for _, want := range []string{`https://REDACTED@127.0.0.1:1/otlp?`, "api_key=REDACTED", "checked.test"} {
		if !strings.Contains(body, want) {
			t.Errorf("/v1/config lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/v1/config: %s", body)
	}
}

// TestAdminBearerSchemeCase: RFC 9110 (11.1) makes the auth scheme
// case-insensitive, but the admin API matched "Bearer " byte for byte and
// refused "bearer" and "BEARER" with a valid token.
func TestAdminBearerSchemeCase(t *testing.T) {
	env := startAdminProxy(t, withAdminToken(baseConfig, "case-tok"))
	for auth, want := range map[string]int{
		"Bearer case-tok":   http.StatusOK,
		"bearer case-tok":   http.StatusOK,
		"BEARER case-tok":   http.StatusOK,
		"bEaReR case-tok":   http.StatusOK,
		"Bearer   case-tok": http.StatusOK,
		"bearer CASE-TOK":   http.StatusUnauthorized, // the token itself is exact
		"Bearer case-to":    http.StatusUnauthorized,
		"Bearer case-tokk":  http.StatusUnauthorized,
		"Basic case-tok":    http.StatusUnauthorized,
		"Bearercase-tok":    http.StatusUnauthorized,
		"case-tok":          http.StatusUnauthorized,
		"Bearer":            http.StatusUnauthorized,
	} {
		if status, body := adminRequest(t, env.adminAddr, "localhost", auth, "/v1/apps"); status != want {
			t.Errorf("Authorization %q: got %d, want %d (body %.80q)", auth, status, want, body)
		}
	}
}
