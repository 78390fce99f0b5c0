//go:build linux

package lifecycle_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// app is the one app an env's proxy serves: web.test on port 80, its
// machines run by the exec driver as demo machines.
type app struct {
	machines   []string          // ids, all written stopped unless in started
	started    []string          // ids written started
	regions    map[string]string // id → region; iad when absent
	autostop   string            // off, stop or suspend
	minRunning int
	soft, hard int
	interval   string // proxy.autostop_interval
	// bad is a machine whose command exits at once; bootDelay delays
	// every machine's listening.
	bad          string
	bootDelay    string
	startTimeout string
	// api, when set, runs the machines behind a fake Machines API (the
	// machines-api driver) instead of as processes (exec).
	api *apiFake
	// fleet, when set, is the [fleet] table's lines (data_dir added).
	fleet string
}

// env is a running proxy with its app.
type env struct {
	t     *testing.T
	dir   string
	proc  *proctest.Proc
	http  string
	admin string
	ports map[string]int // machine id → port its process listens on
}

// script runs one machine: the demo machine on $PORT, after BOOT_DELAY;
// the machine named BAD exits at once instead, as a broken image would.
const script = `if [ "$FLY_MACHINE_ID" = "$BAD" ]; then echo "cannot boot" >&2; exit 3; fi
sleep "${BOOT_DELAY:-0}"
exec "$EDGEPROXY" demo-machine -listen "127.0.0.1:$PORT" -id "$FLY_MACHINE_ID"`

func start(t *testing.T, a app) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), ports: map[string]int{}}
	a.soft = max(a.soft, 1)
	a.hard = max(a.hard, a.soft)
	if a.autostop == "" {
		a.autostop = "off"
	}
	if a.interval == "" {
		a.interval = "5m"
	}
	if a.startTimeout == "" {
		a.startTimeout = "10s"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `[proxy]
region = "iad"
bind = "127.0.0.1"
port_map = { 80 = 0 }
autostop_interval = %q
[admin]
listen = "127.0.0.1:0"
[log]
access_log = "stdout"

[[apps]]
name = "web"
hostnames = ["web.test"]
kill_signal = "SIGTERM"
kill_timeout = "2s"
primary_region = "iad"
  [apps.driver]
%s  start_timeout = %q
  [[apps.services]]
  internal_port = 8080
  auto_stop_machines = %q
  min_machines_running = %d
    [apps.services.concurrency]
    type = "requests"
    soft_limit = %d
    hard_limit = %d
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
      [apps.services.ports.http_options]
      debug_routing = true
`, a.interval, e.driver(a), a.startTimeout, a.autostop, a.minRunning, a.soft, a.hard)
	ports := proctest.FreePorts(t, len(a.machines))
	for i, id := range a.machines {
		e.ports[id] = ports[i]
		state := "stopped"
		for _, s := range a.started {
			if s == id {
				state = "started"
			}
		}
		region := "iad"
		if r := a.regions[id]; r != "" {
			region = r
		}
		fmt.Fprintf(&b, "  [[apps.machines]]\n  id = %q\n  region = %q\n  address = \"127.0.0.1\"\n  ports = { 8080 = %d }\n  state = %q\n",
			id, region, ports[i], state)
	}
	if a.api != nil {
		a.api.add(a, e.ports)
	}
	if a.fleet != "" {
		fmt.Fprintf(&b, "\n[fleet]\n%s\ndata_dir = %q\n", a.fleet, filepath.Join(e.dir, "fleet"))
	}
	e.run("edgeproxy", b.String())
	return e
}

// run writes cfg and runs the proxy on it until the test ends.
func (e *env) run(name, cfg string) {
	t := e.t
	t.Helper()
	path := filepath.Join(e.dir, "edgeproxy.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.proc = proctest.Run(t, proctest.Limits{Lifetime: 4 * time.Minute, Grace: 10 * time.Second},
		name, edgeproxy(t), "run", "-config", path)
	got, admin := e.proc.AwaitListening(t, readyTimeout, 80)
	e.http, e.admin = got[80].String(), admin.String()
}

// driver is the [apps.driver] lines but start_timeout.
func (e *env) driver(a app) string {
	if a.api != nil {
		token := filepath.Join(e.dir, "token")
		if err := os.WriteFile(token, []byte(apiToken+"\n"), 0o600); err != nil {
			e.t.Fatal(err)
		}
		return fmt.Sprintf("  type = \"machines-api\"\n  url = %q\n  token_file = %q\n  request_timeout = \"1s\"\n  retries = 2\n",
			a.api.url, token)
	}
	return fmt.Sprintf("  type = \"exec\"\n  command = [\"sh\", \"-c\", %q]\n  env = { EDGEPROXY = %q, BAD = %q, BOOT_DELAY = %q }\n  log_dir = %q\n",
		script, edgeproxy(e.t), a.bad, a.bootDelay, filepath.Join(e.dir, "logs"))
}

// result is one request's outcome: the machine that answered, or the
// error code, and the routing header.
type result struct {
	status  int
	machine string
	code    string
	route   string
	err     error
}

// get asks web.test for path on client c (nil: a new connection).
func (e *env) get(c *http.Client, path string) result {
	if c == nil {
		c = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	}
	req, _ := http.NewRequest("GET", "http://"+e.http+path, nil)
	req.Host = "web.test"
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, code: resp.Header.Get("Edgeproxy-Error-Code"), route: resp.Header.Get("Edgeproxy-Route")}
	var v struct {
		MachineID string `json:"machine_id"`
	}
	if json.Unmarshal(body, &v) == nil {
		r.machine = v.MachineID
	}
	return r
}

// machineView is a line of GET /v1/machines.
type machineView struct {
	ID              string `json:"id"`
	Region          string `json:"region"`
	State           string `json:"state"`
	Cordoned        bool   `json:"cordoned"`
	LastTransition  string `json:"last_transition"`
	LastStartFailed string `json:"last_start_failed"`
	StartError      string `json:"start_error"`
}

func (e *env) machines() map[string]machineView {
	e.t.Helper()
	resp, err := http.Get("http://" + e.admin + "/v1/machines")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var ms []machineView
	if err := json.NewDecoder(resp.Body).Decode(&ms); err != nil {
		e.t.Fatal(err)
	}
	out := map[string]machineView{}
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

// started lists the machines the proxy has started now.
func (e *env) started() []string {
	var out []string
	for id, m := range e.machines() {
		if m.State == "started" {
			out = append(out, id)
		}
	}
	return out
}

// metric reads one sample from /metrics (0 if absent).
func (e *env) metric(series string) float64 {
	v, _ := proctest.Metric(e.admin, series)
	return v
}

// listening reports whether a machine's process accepts on its port.
func (e *env) listening(id string) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", e.ports[id]), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// machinePIDs are the processes the proxy started for machines, from its
// log.
func (e *env) machinePIDs() map[string]int {
	out := map[string]int{}
	for line := range strings.Lines(e.proc.Output()) {
		var r struct {
			Msg     string `json:"msg"`
			Machine string `json:"machine"`
			PID     int    `json:"pid"`
		}
		if json.Unmarshal([]byte(line), &r) == nil && r.Msg == "machine process started" {
			out[r.Machine] = r.PID
		}
	}
	return out
}

// alive reports whether pid runs (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// waitFor polls cond every 20 ms up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}
