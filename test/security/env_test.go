//go:build linux

package security_test

import (
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// baseConfig is one app, "sec", served as an http_service on public ports
// 80 (http) and 443 (tls + http, self-signed), both remapped to ports the
// kernel picks, with one machine: the recorder. MACHINE_PORT is replaced
// by the recorder's port, EXTRA_PROXY by lines for [proxy] and EXTRA_APPS
// by anything appended (more apps, options).
const baseConfig = `
[proxy]
bind = "127.0.0.1"
port_map = { 80 = 0, 443 = 0 }
lingering_timeout = "200ms"
EXTRA_PROXY

[admin]
listen = "127.0.0.1:0"

[[apps]]
name = "sec"
hostnames = ["sec.test"]
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.tls_options]
    default_self_signed = true
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
  ports = { 8080 = MACHINE_PORT }
EXTRA_APPS
`

// proxyEnv is a running proxy.
type proxyEnv struct {
	proxy     *proctest.Proc
	pid       int
	plainAddr string // public port 80
	tlsAddr   string // public port 443
	adminAddr string
}

// startProxy runs the proxy on cfg (see baseConfig) in front of the
// machine on machinePort and waits until it listens on 80, 443 and admin.
func startProxy(t *testing.T, cfg string, machinePort int) *proxyEnv {
	t.Helper()
	cfg = strings.ReplaceAll(cfg, "MACHINE_PORT", strconv.Itoa(machinePort))
	cfg = strings.ReplaceAll(cfg, "EXTRA_PROXY", "")
	cfg = strings.ReplaceAll(cfg, "EXTRA_APPS", "")
	path := filepath.Join(t.TempDir(), "edgeproxy.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "edgeproxy run", "run", "-config", path)
	ports, admin := p.AwaitListening(t, readyTimeout, 80, 443)
	return &proxyEnv{proxy: p, pid: p.Pid(), plainAddr: ports[80].String(),
		tlsAddr: ports[443].String(), adminAddr: admin.String()}
}

// withProxy returns baseConfig with lines added to [proxy].
func withProxy(lines string) string {
	return strings.Replace(baseConfig, "EXTRA_PROXY", lines+"\nEXTRA_PROXY", 1)
}

// withApps returns cfg with more config appended (apps, tables).
func withApps(cfg, more string) string {
	return strings.Replace(cfg, "EXTRA_APPS", more+"\nEXTRA_APPS", 1)
}

// client is an HTTP client for the proxy that accepts its self-signed
// certificate; h2 chooses HTTP/2 over TLS (or h2c over plain text).
func client(t *testing.T, h2 bool) *http.Client {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "sec.test"},
		Protocols:       new(http.Protocols),
	}
	if h2 {
		tr.Protocols.SetHTTP2(true)
		tr.Protocols.SetUnencryptedHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
