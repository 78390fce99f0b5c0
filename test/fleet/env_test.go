//go:build linux

package fleet_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/proctest"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// natsServer is a NATS server with JetStream; port 0 picks one.
type natsServer struct {
	proc  *proctest.Proc
	port  int
	store string
}

var listeningRE = regexp.MustCompile(`Listening for client connections on [0-9.]+:([0-9]+)`)

func startNATS(t *testing.T, port int, store string) *natsServer {
	t.Helper()
	if natsErr != nil {
		t.Fatal(natsErr)
	}
	p := fmt.Sprint(port)
	if port == 0 {
		p = "-1"
	}
	proc := startProc(t, "nats-server", natsBin, "-js", "-a", "127.0.0.1", "-p", p, "-sd", store, "-n", "fleet-test")
	deadline := time.Now().Add(readyTimeout)
	for {
		if m := listeningRE.FindStringSubmatch(proc.Output()); m != nil {
			fmt.Sscan(m[1], &port)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not start:\n%s", proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &natsServer{proc: proc, port: port, store: store}
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// edge is a running edgeproxy in the fleet.
type edge struct {
	name   string
	proc   *proctest.Proc
	config string
	http   string // public port 80
	admin  string
}

// placeholderApp keeps an edge's port 80 bound for the fleet's apps,
// which share it by Host.
const placeholderApp = proctest.PlaceholderApp

// edgeConfig: region iad, port 80 open for fleet apps, access log off, the
// fleet at url.
const edgeConfig = `
[proxy]
region = "iad"
bind = "127.0.0.1"
port_map = { 80 = 0 }
[admin]
listen = "127.0.0.1:0"
[log]
access_log = "off"
[fleet]
urls = [%q]
node = %q
data_dir = %q
` + placeholderApp

func startEdge(t *testing.T, name, natsURL, dir string) *edge {
	t.Helper()
	path := filepath.Join(dir, name+".toml")
	cfg := fmt.Sprintf(edgeConfig, natsURL, name, filepath.Join(dir, name+"-data"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return runEdge(t, name, path)
}

func runEdge(t *testing.T, name, path string) *edge {
	t.Helper()
	p := startProc(t, "edgeproxy "+name, edgeproxy(t), "run", "-config", path)
	ports, admin := p.AwaitListening(t, readyTimeout, 80)
	return &edge{name: name, proc: p, config: path, http: ports[80].String(), admin: admin.String()}
}

// get asks the edge for host and returns the status and body.
func (e *edge) get(host string) (int, string, error) {
	req, _ := http.NewRequest("GET", "http://"+e.http+"/", nil)
	req.Host = host
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// machines returns the edge's view of a machine: present, state, cordoned.
func (e *edge) machine(app, id string) (found bool, state string, cordoned bool) {
	resp, err := http.Get("http://" + e.admin + "/v1/machines")
	if err != nil {
		return false, "", false
	}
	defer resp.Body.Close()
	var ms []struct {
		App, ID, State string
		Cordoned       bool
	}
	json.NewDecoder(resp.Body).Decode(&ms)
	for _, m := range ms {
		if m.App == app && m.ID == id {
			return true, m.State, m.Cordoned
		}
	}
	return false, "", false
}

// metric reads one sample from the edge's /metrics (-1 if absent).
func (e *edge) metric(series string) float64 {
	if v, ok := proctest.Metric(e.admin, series); ok {
		return v
	}
	return -1
}

// apply publishes apps (TOML [[apps]] tables) to the fleet at url with
// edgeproxy fleet apply, as an operator would.
func apply(t *testing.T, dir, url, apps string) {
	t.Helper()
	path := filepath.Join(dir, "apps.toml")
	cfg := fmt.Sprintf("[proxy]\nregion = \"iad\"\n[fleet]\nurls = [%q]\n", url) + apps
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := proctest.RunCommand(t, 30*time.Second, edgeproxy(t), "fleet", "apply", "-config", path); err != nil {
		t.Fatalf("fleet apply: %v\n%s", err, out)
	}
}

// store is a client of the fleet's buckets for the test's own writes.
func store(t *testing.T, url string) *fleet.Store { return proxytest.FleetStore(t, url) }

// demo machines run in the test process: none of the scenarios is about
// them, and fewer processes keep the suite quick.
