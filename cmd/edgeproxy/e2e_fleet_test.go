//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// TestFleetCLI runs a node with an embedded NATS server and no apps of its
// own, publishes apps with `edgeproxy fleet apply`, and reaches them
// through the node; then cordons, lists and removes with the CLI.
func TestFleetCLI(t *testing.T) {
	bin := binary(t)
	curl := requireTool(t, "curl")
	dir := t.TempDir()
	m1 := startDemoMachine(t, "m1")
	node := filepath.Join(dir, "node.toml")
	os.WriteFile(node, []byte(fmt.Sprintf(`
[proxy]
bind = "127.0.0.1"
port_map = { 80 = 0 }
[admin]
listen = "127.0.0.1:0"
[fleet]
embedded = true
listen = "127.0.0.1:0"
node = "node-1"
data_dir = %q
`, filepath.Join(dir, "data"))+proctest.PlaceholderApp), 0o600)
	p := startProc(t, "edgeproxy run", "run", "-config", node)
	url := ""
	p.Await(t, "the embedded NATS server's URL", readyTimeout, func(r proctest.Record) bool {
		url, _ = r["url"].(string)
		return r["msg"] == "fleet: embedded NATS listening"
	})
	port80 := ""
	p.Await(t, "port 80", readyTimeout, func(r proctest.Record) bool {
		if r["msg"] == "listening" && r["port"] == float64(80) {
			port80 = proctest.MustAddr(t, r).String()
			return true
		}
		return false
	})
	apps := filepath.Join(dir, "apps.toml")
	os.WriteFile(apps, []byte(fmt.Sprintf(`
[fleet]
urls = [%q]
[[apps]]
name = "web"
hostnames = ["web.test"]
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
  ports = { 8080 = %d }
`, url, m1)), 0o600)
	fleetCmd := func(args ...string) string {
		t.Helper()
		out, err := runClient(t, bin, append([]string{"fleet"}, args...)...)
		if err != nil {
			t.Fatalf("edgeproxy fleet %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if out := fleetCmd("apply", "-config", apps, "-dry-run"); !strings.Contains(out, "add    app     web") || !strings.Contains(out, "dry run") {
		t.Fatalf("dry run:\n%s", out)
	}
	start := time.Now()
	fleetCmd("apply", "-config", apps)
	get := func() string {
		out, _ := runClient(t, curl, "-s", "--max-time", "2", "-H", "Host: web.test", "http://"+port80+"/")
		return out
	}
	for !strings.Contains(get(), `"m1"`) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the applied app is not served: %s", get())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("fleet apply to served: %v", time.Since(start))
	if out := fleetCmd("apply", "-config", apps); !strings.Contains(out, "no changes") {
		t.Fatalf("a second apply changed something:\n%s", out)
	}
	if out := fleetCmd("machines", "-config", apps); !strings.Contains(out, "m1") || !strings.Contains(out, "fleet-apply") {
		t.Fatalf("machines:\n%s", out)
	}
	if out := fleetCmd("nodes", "-config", apps); !strings.Contains(out, "node-1") {
		t.Fatalf("nodes:\n%s", out)
	}
	// A CPU profile of the node, over NATS.
	prof := filepath.Join(dir, "cpu.pprof")
	if out := fleetCmd("profile", "-config", apps, "-node", "node-1", "-seconds", "1", "-o", prof); !strings.Contains(out, "CPU profile") {
		t.Fatalf("profile:\n%s", out)
	}
	if out, err := runClient(t, bin, "fleet", "profile", "-config", apps, "-node", "nobody", "-seconds", "1", "-timeout", "2s"); err == nil || !strings.Contains(out, "nobody") {
		t.Fatalf("profile of a node that is not there: %v\n%s", err, out)
	}
	fleetCmd("cordon", "-config", apps, "m1")
	for !strings.Contains(get(), "PR01") {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("a cordoned machine still serves: %s", get())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// An empty file removes what the owner published.
	os.WriteFile(apps, []byte(fmt.Sprintf("[fleet]\nurls = [%q]\n", url)), 0o600)
	if out := fleetCmd("apply", "-config", apps); !strings.Contains(out, "remove app     web") {
		t.Fatalf("removal:\n%s", out)
	}
}
