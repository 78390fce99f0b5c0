package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The http1-backhaul scenario: the origin is a machine a worker runs, and
// the edge the load generator talks to reaches it through the worker over
// the backhaul. Both are edgeproxy processes, started together (one
// process group, both pinned to the proxy's core) so their CPU and memory
// add up as one proxy's.

const backhaulWorkerFleet = `
[fleet]
embedded = true
listen = "127.0.0.1:{{.Ports.NATS}}"
node = "bench-worker"
role = "worker"
data_dir = "{{.Dir}}/worker-data"
backhaul_listen = "127.0.0.1:{{.Ports.Backhaul}}"
backhaul_ca_file = "{{.Dir}}/fleet/ca.pem"
backhaul_cert_file = "{{.Dir}}/fleet/bench-worker.pem"
backhaul_key_file = "{{.Dir}}/fleet/bench-worker-key.pem"
`

const backhaulEdgeFleet = `
[fleet]
urls = ["nats://127.0.0.1:{{.Ports.NATS}}"]
node = "bench-edge"
role = "edge"
data_dir = "{{.Dir}}/edge-data"
backhaul_ca_file = "{{.Dir}}/fleet/ca.pem"
backhaul_cert_file = "{{.Dir}}/fleet/bench-edge.pem"
backhaul_key_file = "{{.Dir}}/fleet/bench-edge-key.pem"
`

// writeBackhaul makes the fleet's certificates and the worker's and the
// edge's configs, and validates them.
func (e *env) writeBackhaul(d configData) error {
	ca := filepath.Join(e.dir, "fleet")
	os.RemoveAll(ca)
	if err := runQuiet(e.edgeproxyBin, "fleet", "ca", "init", "-dir", ca); err != nil {
		return err
	}
	for _, n := range []string{"bench-worker", "bench-edge"} {
		if err := runQuiet(e.edgeproxyBin, "fleet", "cert", "issue", "-ca-dir", ca, "-node", n, "-out", ca); err != nil {
			return err
		}
	}
	w := d
	w.Ports.HTTP, w.Ports.HTTPS, w.Ports.TCP = d.Ports.WorkerHTTP, d.Ports.WorkerHTTPS, d.Ports.WorkerTCP
	edge := d
	edge.EdgeproxyAdmin = fmt.Sprintf("127.0.0.1:%d", d.Ports.EdgeAdmin)
	for _, f := range []struct {
		file, tmpl string
		data       configData
	}{
		{"backhaul-worker.toml", edgeproxyTmpl + backhaulWorkerFleet, w},
		{"backhaul-edge.toml", edgeproxyHeadTmpl + backhaulEdgeFleet, edge},
	} {
		cfg, err := render(f.tmpl, f.data)
		if err != nil {
			return fmt.Errorf("%s: %w", f.file, err)
		}
		path := filepath.Join(e.dir, f.file)
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return err
		}
		if err := runQuiet(e.edgeproxyBin, "validate", "-config", path); err != nil {
			return fmt.Errorf("%s does not validate: %w", path, err)
		}
	}
	return nil
}

// backhaulLaunch starts the worker in the background and the edge in its
// place: one process group, which the driver stops as a whole.
func backhaulLaunch(e *env) ([]string, []string) {
	return []string{"sh", "-c", `"$0" run -config "$1" & exec "$0" run -config "$2"`, e.edgeproxyBin,
			filepath.Join(e.dir, "backhaul-worker.toml"), filepath.Join(e.dir, "backhaul-edge.toml")},
		[]string{"GOMAXPROCS=1"}
}

// backhaulConns reads how many backhaul connections the edge holds to the
// worker once the load is over: the requests of 64 client connections
// share them.
func backhaulConns(e *env) string {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.ports.EdgeAdmin))
	if err != nil {
		return "backhaul connections: unknown (" + err.Error() + ")"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "edgeproxy_backhaul_connections{") {
			return "backhaul connections edge→worker: " + line[strings.LastIndex(line, " ")+1:]
		}
	}
	return "backhaul connections: none reported"
}
