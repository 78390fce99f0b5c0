package server_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeproxy/edgeproxy/internal/config"
	fleetcat "github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// fleetEdge is an in-process edge with an embedded NATS server, serving
// one app from its file ("app", on ports 80 and 443) and whatever the
// fleet catalog adds.
func fleetEdge(t *testing.T, dataDir string) (*proxytest.Proxy, *fleetcat.Store, *nats.Conn) {
	t.Helper()
	local := proxytest.Machine(t, "local")
	cfg := fleetConfig(`embedded = true
listen = "127.0.0.1:0"`, "edge-1", dataDir, local)
	p := proxytest.Start(t, cfg, proxytest.Options{})
	nc, err := nats.Connect(p.FleetURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	store, err := fleetcat.NewStore(nc)
	if err != nil {
		t.Fatal(err)
	}
	return p, store, nc
}

// getHost asks the proxy's port 80 for host and returns the status and
// the machine id the demo machine reports (or the error code).
func getHost(t *testing.T, p *proxytest.Proxy, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.Addr(80)+"/", nil)
	req.Host = host
	c := p.Client(80, false)
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code")
	}
	return resp.StatusCode, string(b)
}

// until polls cond every 10 ms for up to 5 s and returns how long it took.
func until(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s: not within 5 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func TestFleetCatalogEmbedded(t *testing.T) {
	dir := t.TempDir()
	p, store, nc := fleetEdge(t, dir)
	ctx := t.Context()
	m1 := proxytest.Machine(t, "f1")
	app := &fleetcat.AppRecord{Name: "fleetapp", Hostnames: []string{"fleet.test"},
		HTTPService: &config.HTTPService{InternalPort: 8080}}
	if err := store.PutApp(ctx, app); err != nil {
		t.Fatal(err)
	}
	mr := &fleetcat.MachineRecord{ID: "f1", App: "fleetapp", Region: "iad", Address: "127.0.0.1",
		Ports: map[string]int{"8080": m1}, State: "started"}
	if err := store.PutMachine(ctx, mr); err != nil {
		t.Fatal(err)
	}
	took := until(t, "a fleet app served", func() bool {
		code, body := getHost(t, p, "fleet.test")
		return code == 200 && strings.Contains(body, `"f1"`)
	})
	t.Logf("app and machine written to routed: %v", took)

	// An app whose port this node cannot open is left out; the others
	// still apply.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	busy := &fleetcat.AppRecord{Name: "busy", Services: []config.Service{{InternalPort: 9000,
		Ports: []config.Port{{Port: &takenPort}}}}}
	if err := store.PutApp(ctx, busy); err != nil {
		t.Fatal(err)
	}
	if err := store.PutApp(ctx, &fleetcat.AppRecord{Name: "second", Hostnames: []string{"second.test"},
		HTTPService: &config.HTTPService{InternalPort: 8080}}); err != nil {
		t.Fatal(err)
	}
	mr2 := *mr
	mr2.ID, mr2.App, mr2.Version = "s1", "second", 0
	if err := store.PutMachine(ctx, &mr2); err != nil {
		t.Fatal(err)
	}
	until(t, "an app applied next to one whose port is taken", func() bool {
		code, body := getHost(t, p, "second.test")
		return code == 200 && strings.Contains(body, `"f1"`)
	})
	store.DeleteApp(ctx, "busy")

	// The file's own app still serves.
	if code, body := getHost(t, p, "app.test"); code != 200 || !strings.Contains(body, `"local"`) {
		t.Fatalf("the file's app: %d %s", code, body)
	}

	// Cordoned: no new requests.
	mr.Cordoned = true
	if err := store.PutMachine(ctx, mr); err != nil {
		t.Fatal(err)
	}
	until(t, "a cordoned machine left out", func() bool {
		code, _ := getHost(t, p, "fleet.test")
		return code == 503
	})
	mr.Cordoned = false
	store.PutMachine(ctx, mr)
	until(t, "uncordoned", func() bool { code, _ := getHost(t, p, "fleet.test"); return code == 200 })

	// Garbage in every bucket is refused record by record; serving goes on
	// and the previous good value of a key stays.
	js, _ := jetstream.New(nc)
	for bucket, key := range map[string]string{fleetcat.BucketApps: "fleetapp", fleetcat.BucketSummary: "fleetapp",
		fleetcat.MachineBucket("iad"): "fleetapp.f1", fleetcat.BucketNodes: "edge-1"} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatalf("%s: %v", bucket, err)
		}
		for _, junk := range []string{"not json", `{"schema": 99, "name": "fleetapp"}`, `{"schema": 1, "id": "f1", "app": "fleetapp", "region": "iad", "address": "nowhere", "state": "started"}`} {
			if _, err := kv.Put(ctx, key, []byte(junk)); err != nil {
				t.Fatal(err)
			}
			// Each value is given time to be delivered: the buckets keep
			// one value per key, and a watch that falls behind under load
			// would see only the last, which may not be refused in every
			// bucket.
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if code, body := getHost(t, p, "fleet.test"); code != 200 || !strings.Contains(body, `"f1"`) {
		t.Fatalf("after garbage: %d %s", code, body)
	}
	for _, bucket := range []string{"ep-apps", "ep-machines", "ep-summary", "ep-nodes"} {
		// A watch may skip a value overwritten before it was delivered
		// (the buckets keep one per key), so at least one of three; and
		// on a busy machine the watch may take a while to deliver it.
		until(t, bucket+": refusals counted", func() bool {
			return scrape(t, p, `edgeproxy_fleet_updates_total{bucket="`+bucket+`",result="refused"}`) >= 1
		})
	}

	// The catalog applied is cached for a start without NATS (written at
	// most every 2 s).
	until(t, "the catalog cached", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "catalog.json"))
		return err == nil && strings.Contains(string(b), "fleetapp")
	})

	// Removing the machine and the app takes them out of routing.
	if err := store.DeleteMachine(ctx, "iad", "fleetapp", "f1"); err != nil {
		t.Fatal(err)
	}
	if err := store.DeleteApp(ctx, "fleetapp"); err != nil {
		t.Fatal(err)
	}
	// (The port's one remaining app, the file's, then takes any Host.)
	until(t, "app removed", func() bool { _, body := getHost(t, p, "fleet.test"); return !strings.Contains(body, `"f1"`) })
}

// TestFleetEmbeddedHandover: a node with an embedded NATS server lets go
// of its port for a handover, so that the new process can open it and
// keep the catalog, and rejoins if the handover fails.
func TestFleetEmbeddedHandover(t *testing.T) {
	// Both processes must use the same NATS port: find a free one.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	natsAddr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := func(node string) string {
		return fleetConfig(fmt.Sprintf("embedded = true\nlisten = %q", natsAddr), node, filepath.Join(dir, "data"), proxytest.Machine(t, "local"))
	}
	old := proxytest.Start(t, cfg("node-old"), proxytest.Options{})
	m1 := proxytest.Machine(t, "f1")
	func() {
		nc, err := nats.Connect(old.FleetURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		st, _ := fleetcat.NewStore(nc)
		st.PutApp(t.Context(), &fleetcat.AppRecord{Name: "fleetapp", Hostnames: []string{"fleet.test"},
			HTTPService: &config.HTTPService{InternalPort: 8080}})
		st.PutMachine(t.Context(), &fleetcat.MachineRecord{ID: "f1", App: "fleetapp", Region: "iad",
			Address: "127.0.0.1", Ports: map[string]int{"8080": m1}, State: "started"})
	}()
	until(t, "served before the handover", func() bool { _, b := getHost(t, old, "fleet.test"); return strings.Contains(b, `"f1"`) })

	rejoin := old.PrepareHandover()
	if old.FleetURL() != "" {
		t.Fatal("the old node still runs its NATS server")
	}
	// Still serving from the catalog applied last.
	if _, b := getHost(t, old, "fleet.test"); !strings.Contains(b, `"f1"`) {
		t.Fatalf("the old node stopped serving the fleet's app: %s", b)
	}
	// The new process opens the same port, with the same store.
	next := proxytest.Start(t, cfg("node-new"), proxytest.Options{})
	until(t, "the new node serves the catalog", func() bool { _, b := getHost(t, next, "fleet.test"); return strings.Contains(b, `"f1"`) })
	// Were the handover to fail while the new one holds the port, the
	// old one could not rejoin; once it is gone, it can.
	if err := rejoin(); err == nil {
		t.Fatal("rejoined while another server holds the port")
	}
	next.Close()
	if err := rejoin(); err != nil {
		t.Fatalf("rejoin after a failed handover: %v", err)
	}
	if old.FleetURL() == "" {
		t.Fatal("no embedded server after rejoining")
	}
}
