//go:build linux

package ops_test

// The proxy under test: its config variants, and the operator's actions on
// it (start, reload by SIGHUP or the admin API, upgrade, stop).

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

const (
	adminToken = "ops-s3cret"
	// betaPublic is the public port the beta app opens and closes; it is
	// mapped to the local port p4.
	betaPublic = 8080
	// supervisorLife bounds every proxy generation.
	supervisorLife = 4 * time.Minute
	// reloadWait bounds waiting for a reload's outcome in the log.
	reloadWait = 10 * time.Second
	// exitWait bounds an old generation's drain (drain_timeout is 30s by
	// default; nothing here takes more than a few seconds).
	exitWait = 45 * time.Second
)

// variant is one config file. Apps: alpha (http_service on 80 and 443,
// machines a1, a2 and optionally a3), echo (raw TCP on 5000 to the demo
// machines' echo) and, when betaHost is set, beta (http on the public port
// betaPublic and/or 80, by Host, on its own machine).
type variant struct {
	alphaA3  bool
	betaHost string
	betaP4   bool
	betaOn80 bool
	// fleet runs the fleet's NATS server embedded in the proxy, on the
	// env's natsAddr with its store under the env's directory.
	fleet bool
	// bad makes the file invalid: "key" (unknown key), "handler" (unknown
	// handler), "attempts" (value out of range), "hostname" (a name claimed
	// by two apps on one port).
	bad string
}

func (v variant) String() string {
	s := fmt.Sprintf("alpha a3=%v", v.alphaA3)
	if v.betaHost != "" {
		s += fmt.Sprintf(", beta %s p4=%v on80=%v", v.betaHost, v.betaP4, v.betaOn80)
	}
	if v.bad != "" {
		s += ", invalid: " + v.bad
	}
	return s
}

// ports are the local ports of the public ports.
type ports struct{ p80, p443, p5000, p4 int }

func (e *opsEnv) render(v variant) string {
	var b strings.Builder
	p := e.ports
	fmt.Fprintf(&b, `[proxy]
bind = "127.0.0.1"
port_map = { 80 = %d, 443 = %d, 5000 = %d, %d = %d }
`, p.p80, p.p443, p.p5000, betaPublic, p.p4)
	switch v.bad {
	case "key":
		b.WriteString("idle_timout = \"10s\"\n")
	case "attempts":
		b.WriteString("connect_attempts = 99\n")
	}
	fmt.Fprintf(&b, `
[log]
access_log = "off"

[admin]
listen = "127.0.0.1:0"
token = %q

[[apps]]
name = "alpha"
hostnames = ["alpha.test"]
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.tls_options]
    default_self_signed = true
`, adminToken)
	machine := func(id string, internal, port int) {
		fmt.Fprintf(&b, "  [[apps.machines]]\n  id = %q\n  address = \"127.0.0.1\"\n  ports = { %d = %d }\n", id, internal, port)
	}
	machine("a1", 8080, e.demo[0])
	machine("a2", 8080, e.demo[1])
	if v.alphaA3 {
		machine("a3", 8080, e.demo[2])
	}
	handlers := "[]"
	if v.bad == "handler" {
		handlers = `["gzip"]`
	}
	fmt.Fprintf(&b, `
[[apps]]
name = "echo"
  [[apps.services]]
  internal_port = 9000
    [[apps.services.ports]]
    port = 5000
    handlers = %s
`, handlers)
	machine("e1", 9000, e.demo[0])
	machine("e2", 9000, e.demo[1])
	if v.betaHost != "" {
		hosts := fmt.Sprintf("%q", v.betaHost)
		if v.bad == "hostname" {
			hosts += `, "alpha.test"`
		}
		fmt.Fprintf(&b, "\n[[apps]]\nname = \"beta\"\nhostnames = [%s]\n  [[apps.services]]\n  internal_port = 8080\n", hosts)
		if v.betaP4 {
			fmt.Fprintf(&b, "    [[apps.services.ports]]\n    port = %d\n    handlers = [\"http\"]\n", betaPublic)
		}
		if v.betaOn80 {
			b.WriteString("    [[apps.services.ports]]\n    port = 80\n    handlers = [\"http\"]\n")
		}
		machine("b1", 8080, e.demo[2])
	}
	if v.fleet {
		fmt.Fprintf(&b, "\n[fleet]\nembedded = true\nlisten = %q\nnode = \"ops\"\ndata_dir = %q\n",
			e.natsAddr, filepath.Join(e.dir, "fleet"))
	}
	return b.String()
}

// opsEnv is a running proxy with its demo machines.
type opsEnv struct {
	t                         *testing.T
	bin                       string
	dir                       string
	cfgPath, pidPath, logPath string
	ports                     ports
	demo                      [3]int // demo machines d1, d2, d3
	sup                       *supervisor
	logs                      *logWatch
	admin                     string // admin address, kept across upgrades
	natsAddr                  string // the embedded NATS server's, with variant.fleet
	valid                     variant
}

// startEnv starts three demo machines and the proxy with cfg. Ports are
// drawn again if the proxy cannot bind one.
func startEnv(t *testing.T, cfg variant) *opsEnv {
	t.Helper()
	e := &opsEnv{t: t, bin: binary(t), dir: t.TempDir()}
	for i := range e.demo {
		e.demo[i] = startDemo(t, fmt.Sprintf("d%d", i+1))
	}
	e.cfgPath = filepath.Join(e.dir, "edgeproxy.toml")
	e.pidPath = filepath.Join(e.dir, "edgeproxy.pid")
	for attempt := 1; ; attempt++ {
		p := proctest.FreePorts(t, 5)
		e.ports = ports{p[0], p[1], p[2], p[3]}
		e.natsAddr = "127.0.0.1:" + strconv.Itoa(p[4])
		e.logPath = filepath.Join(e.dir, fmt.Sprintf("proxy-%d.log", attempt))
		e.writeConfig(cfg)
		err := e.startProxy()
		if err == nil {
			return e
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("proxy did not start: %v", err)
		}
		t.Logf("proxy start attempt %d: %v; drawing new ports", attempt, err)
	}
}

func (e *opsEnv) startProxy() error {
	t := e.t
	f, err := os.OpenFile(e.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the supervisor and the proxy hold their own copies
	sup := startSupervised(t, supervisorLife, f, e.bin, "run", "-config", e.cfgPath, "-pid-file", e.pidPath)
	e.logs = newLogWatch(e.logPath)
	ok := waitFor(15*time.Second, func() bool {
		started, exits, _ := sup.state()
		if hasKey(exits, started) {
			return true
		}
		return e.logs.count("listening") >= 3 && e.logs.count("admin listening") >= 1 && started != 0
	})
	started, exits, _ := sup.state()
	if hasKey(exits, started) || !ok {
		log, _ := os.ReadFile(e.logPath)
		return fmt.Errorf("proxy exited (%v) or did not listen in time: %s", exits, log)
	}
	e.sup = sup
	recs, _ := e.logs.since(0)
	for _, r := range recs {
		if r["msg"] == "admin listening" {
			e.admin = r.str("addr")
		}
	}
	if !waitFor(10*time.Second, func() bool { pid, err := readPID(e.pidPath); return err == nil && pid == started }) {
		return fmt.Errorf("pid file %s does not name pid %d", e.pidPath, started)
	}
	t.Cleanup(e.stop)
	return nil
}

// writeConfig replaces the config file atomically, so the proxy never
// reads half of it. Valid variants are remembered: an upgrade needs one.
func (e *opsEnv) writeConfig(v variant) {
	tmp := e.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(e.render(v)), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.cfgPath); err != nil {
		e.t.Fatal(err)
	}
	if v.bad == "" {
		e.valid = v
	}
}

func (e *opsEnv) pid() int {
	pid, err := readPID(e.pidPath)
	if err != nil {
		e.t.Fatalf("pid file: %v", err)
	}
	return pid
}

// reload writes v and asks the proxy to reload it, by SIGHUP or by POST
// /v1/reload, and waits for the outcome in the log. It returns whether the
// config was taken and what the proxy said.
func (e *opsEnv) reload(via string, v variant) (bool, string) {
	t := e.t
	t.Helper()
	okBefore, refusedBefore := e.logs.count("config reloaded"), e.logs.count(refusedPrefix)
	_, from := e.logs.since(1 << 30)
	e.writeConfig(v)
	var api string
	switch via {
	case "SIGHUP":
		if err := syscall.Kill(e.pid(), syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP: %v", err)
		}
	case "POST /v1/reload":
		status, body := e.adminDo("POST", "/v1/reload")
		api = fmt.Sprintf("%d %s", status, strings.TrimSpace(body))
	default:
		t.Fatalf("unknown reload trigger %q", via)
	}
	if !waitFor(reloadWait, func() bool {
		return e.logs.count("config reloaded") > okBefore || e.logs.count(refusedPrefix) > refusedBefore
	}) {
		t.Fatalf("%s: no reload outcome in the log within %v", via, reloadWait)
	}
	recs, _ := e.logs.since(from)
	var said []string
	for _, r := range recs {
		if m := r.str("msg"); m == "config reloaded" || strings.HasPrefix(m, refusedPrefix) {
			said = append(said, fmt.Sprintf("%s (%v %v %v %v)", m, r["key"], r["problem"], r["error"], r["line"]))
		}
	}
	ok := e.logs.count("config reloaded") > okBefore
	if api != "" {
		said = append(said, "admin API: "+api)
		if ok != strings.HasPrefix(api, "200 ") {
			t.Errorf("POST /v1/reload answered %q but the log says reloaded=%v", api, ok)
		}
	}
	return ok, strings.Join(said, "; ")
}

// adminDo makes one admin API request on a new connection, so that each
// request reaches whichever process accepts it now.
func (e *opsEnv) adminDo(method, path string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+e.admin+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}

// upgrade runs "edgeproxy upgrade -pid-file" with the last valid config in
// place (the new process reads the file) and returns the old and new pids.
func (e *opsEnv) upgrade() (old, cur int) {
	t := e.t
	t.Helper()
	e.writeConfig(e.valid)
	old = e.pid()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.bin, "upgrade", "-pid-file", e.pidPath, "-wait", "50s").CombinedOutput()
	if err != nil {
		t.Fatalf("edgeproxy upgrade: %v\n%s", err, out)
	}
	cur = e.pid()
	if cur == old {
		t.Fatalf("edgeproxy upgrade returned (%s) but the pid file still names %d", strings.TrimSpace(string(out)), old)
	}
	return old, cur
}

// stop ends the current generation with SIGTERM, as an operator stopping
// the service would, and checks it drained and exited 0.
func (e *opsEnv) stop() {
	t := e.t
	pid, err := readPID(e.pidPath)
	if err != nil || !alive(pid) {
		t.Errorf("no serving proxy to stop (pid file: %d, %v)", pid, err)
		return
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM %d: %v", pid, err)
		return
	}
	st, err := e.sup.waitExit(pid, exitWait)
	if err != nil || st != 0 {
		t.Errorf("proxy pid %d after SIGTERM: status %d, %v", pid, st, err)
	}
	if t.Failed() {
		e.logTail(200)
	}
}

// logTail logs the proxy's log lines above INFO, and the last n lines.
func (e *opsEnv) logTail(n int) {
	b, _ := os.ReadFile(e.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var notable []string
	for _, l := range lines {
		if !strings.Contains(l, `"level":"INFO"`) && !strings.Contains(l, `"level":"DEBUG"`) {
			notable = append(notable, l)
		}
	}
	if len(notable) > 50 {
		notable = append(notable[:50], fmt.Sprintf("... and %d more", len(notable)-50))
	}
	e.t.Logf("proxy log (%d lines); above INFO:\n%s\nlast %d lines:\n%s", len(lines),
		strings.Join(notable, "\n"), min(n, len(lines)), strings.Join(lines[max(0, len(lines)-n):], "\n"))
}
