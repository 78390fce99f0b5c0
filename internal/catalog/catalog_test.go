package catalog_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
)

func load(t *testing.T, body string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgeproxy.toml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func build(t *testing.T, body string, prev *catalog.Snapshot) *catalog.Snapshot {
	t.Helper()
	snap, err := catalog.Build(load(t, body), prev)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestHTTPServiceExpands(t *testing.T) {
	snap := build(t, `
[proxy]
region = "ams"
[[apps]]
name = "web"
hostnames = ["Web.Example.com"]
  [apps.http_service]
  internal_port = 8080
  force_https = true
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
`, nil)
	if snap.Region != "ams" {
		t.Errorf("Region = %q", snap.Region)
	}
	app := snap.App("web")
	if app == nil || snap.App("nope") != nil {
		t.Fatalf("App lookup: web=%v nope=%v", app, snap.App("nope"))
	}
	if !slices.Equal(app.Hostnames, []string{"web.example.com"}) {
		t.Errorf("Hostnames = %v, want lowercased", app.Hostnames)
	}
	if len(app.Services) != 1 {
		t.Fatalf("%d services, want 1", len(app.Services))
	}
	svc := app.Services[0]
	if svc.App != app || svc.Index != 0 || svc.InternalPort != 8080 {
		t.Errorf("service: app %p index %d internal %d", svc.App, svc.Index, svc.InternalPort)
	}
	if len(svc.Ports) != 2 {
		t.Fatalf("%d ports, want 2", len(svc.Ports))
	}
	p80, p443 := svc.Ports[0], svc.Ports[1]
	if p80.Lo != 80 || p80.Hi != 80 || p80.Handlers != (catalog.Handlers{HTTP: true}) || !p80.ForceHTTPS || p80.Service != svc {
		t.Errorf("port 80: %+v", p80)
	}
	if p443.Lo != 443 || p443.Hi != 443 || p443.Handlers != (catalog.Handlers{TLS: true, HTTP: true}) || p443.ForceHTTPS {
		t.Errorf("port 443: %+v", p443)
	}
	if !slices.Equal(p443.TLS.ALPN, []string{"h2", "http/1.1"}) {
		t.Errorf("443 ALPN = %v, want [h2 http/1.1]", p443.TLS.ALPN)
	}
	if p80.Handlers.String() != "http" || p443.Handlers.String() != "tls+http" {
		t.Errorf("handler names %q %q", p80.Handlers, p443.Handlers)
	}
}

func TestTLSOptionsALPN(t *testing.T) {
	snap := build(t, `
[[apps]]
name = "web"
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.tls_options]
    alpn = ["http/1.1"]
[[apps]]
name = "tcp"
  [[apps.services]]
  internal_port = 9000
    [[apps.services.ports]]
    port = 9443
    handlers = ["tls"]
`, nil)
	if got := snap.App("web").Services[0].Ports[1].TLS.ALPN; !slices.Equal(got, []string{"http/1.1"}) {
		t.Errorf("explicit ALPN replaced: %v", got)
	}
	// TLS without http parses nothing after the handshake, so it offers no
	// ALPN by default.
	if got := snap.App("tcp").Services[0].Ports[0].TLS.ALPN; got != nil {
		t.Errorf("tls-only port ALPN = %v, want none", got)
	}
}

func TestConcurrency(t *testing.T) {
	tests := []struct {
		name       string
		conc       string
		unit       catalog.Unit
		soft, hard int
	}{
		{"defaults", "", catalog.Connections, config.DefaultSoftLimit, 0},
		{"requests", "type = \"requests\"", catalog.Requests, config.DefaultSoftLimit, 0},
		{"connections explicit", "type = \"connections\"\nsoft_limit = 5\nhard_limit = 10", catalog.Connections, 5, 10},
		{"requests with limits", "type = \"requests\"\nsoft_limit = 7\nhard_limit = 7", catalog.Requests, 7, 7},
		{"hard only keeps default soft", "hard_limit = 30", catalog.Connections, config.DefaultSoftLimit, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `
[[apps]]
name = "web"
  [[apps.services]]
  internal_port = 5000
    [[apps.services.ports]]
    port = 5000
`
			if tt.conc != "" {
				body += "    [apps.services.concurrency]\n    " + tt.conc + "\n"
			}
			svc := build(t, body, nil).App("web").Services[0]
			if svc.Unit != tt.unit || svc.Soft != tt.soft || svc.Hard != tt.hard {
				t.Errorf("unit %v soft %d hard %d; want %v %d %d", svc.Unit, svc.Soft, svc.Hard, tt.unit, tt.soft, tt.hard)
			}
		})
	}
	if catalog.Connections.String() != "connections" || catalog.Requests.String() != "requests" {
		t.Error("Unit names")
	}
}

func TestMachines(t *testing.T) {
	snap := build(t, `
[proxy]
region = "ams"
[[apps]]
name = "web"
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
  [[apps.machines]]
  id = "mapped"
  address = "127.0.0.1"
  ports = { "8080" = 18080 }
  [[apps.machines]]
  id = "v6"
  address = "::1"
  region = "iad"
  state = "stopped"
`, nil)
	app := snap.App("web")
	mapped, v6 := app.Machines[0], app.Machines[1]
	tests := []struct {
		m    *catalog.Machine
		port int
		want string
	}{
		{mapped, 8080, "127.0.0.1:18080"},
		{mapped, 9090, "127.0.0.1:9090"}, // no mapping: the internal port itself
		{v6, 8080, "[::1]:8080"},
	}
	for _, tt := range tests {
		if got := tt.m.AddrFor(tt.port); got != netip.MustParseAddrPort(tt.want) {
			t.Errorf("%s.AddrFor(%d) = %v, want %s", tt.m.ID, tt.port, got, tt.want)
		}
	}
	if mapped.Region != "ams" || !mapped.Started() {
		t.Errorf("defaults: region %q started %v", mapped.Region, mapped.Started())
	}
	if v6.Region != "iad" || v6.Started() {
		t.Errorf("v6: region %q started %v", v6.Region, v6.Started())
	}
	svc := app.Services[0]
	if svc.Load(mapped) == nil || svc.Load(v6) == nil || svc.Load(mapped) == svc.Load(v6) {
		t.Error("every machine needs its own load counter")
	}
}

// The reload fixture: two services (index 0 a [[services]], index 1 the
// http_service) and two machines; the second config drops m2 and adds m3.
const before = `
[[apps]]
name = "web"
  [[apps.services]]
  internal_port = 5000
    [[apps.services.ports]]
    port = 5000
  [apps.http_service]
  internal_port = 8080
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
  [[apps.machines]]
  id = "m2"
  address = "127.0.0.2"
[[apps]]
name = "other"
  [[apps.services]]
  internal_port = 7000
    [[apps.services.ports]]
    port = 7000
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.3"
`

func TestLoadsCarryOver(t *testing.T) {
	old := build(t, before, nil)
	web := old.App("web")
	m1 := web.Machines[0]
	for i, n := range []int{3, 5} {
		for range n {
			web.Services[i].Load(m1).TryAcquire(0)
		}
	}
	web.Services[0].Load(web.Machines[1]).TryAcquire(0)
	other := old.App("other")
	other.Services[0].Load(other.Machines[0]).TryAcquire(0)

	next := build(t, `
[[apps]]
name = "web"
  [[apps.services]]
  internal_port = 5000
    [[apps.services.ports]]
    port = 5001
  [apps.http_service]
  internal_port = 8080
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.9"
  [[apps.machines]]
  id = "m3"
  address = "127.0.0.2"
[[apps]]
name = "renamed"
  [[apps.services]]
  internal_port = 7000
    [[apps.services.ports]]
    port = 7000
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.3"
`, old)
	nweb := next.App("web")
	n1, n3 := nweb.Machines[0], nweb.Machines[1]
	// Same app, index and internal_port: the very same counter, so work
	// started before the reload still counts against the limit after it,
	// even though the machine moved address and the public port changed.
	for i, want := range []int64{3, 5} {
		if nweb.Services[i].Load(n1) != web.Services[i].Load(m1) {
			t.Errorf("service %d: m1's counter was not carried over", i)
		}
		if got := nweb.Services[i].Load(n1).Value(); got != want {
			t.Errorf("service %d: m1 load %d, want %d", i, got, want)
		}
		if got := nweb.Services[i].Load(n3).Value(); got != 0 {
			t.Errorf("service %d: new machine m3 load %d, want 0", i, got)
		}
		if nweb.Services[i].Waiters() != web.Services[i].Waiters() {
			t.Errorf("service %d: waiters not carried over", i)
		}
	}
	if nweb.Services[0].Load(web.Machines[1]) != nil {
		t.Error("removed machine m2 still has a counter")
	}
	// Another app's machine with the same ID shares nothing.
	if got := next.App("renamed").Services[0].Load(next.App("renamed").Machines[0]).Value(); got != 0 {
		t.Errorf("renamed app inherited load %d", got)
	}
	// Releasing through the old snapshot's counter is seen by the new one:
	// that is how a lease taken before a reload gives its unit back.
	web.Services[1].Load(m1).Release()
	if got := nweb.Services[1].Load(n1).Value(); got != 4 {
		t.Errorf("release through old snapshot: new load %d, want 4", got)
	}
}

func TestLoadsFreshWhenServiceChanges(t *testing.T) {
	old := build(t, before, nil)
	web := old.App("web")
	for _, svc := range web.Services {
		svc.Load(web.Machines[0]).TryAcquire(0)
	}
	// Service 0 changes internal_port and a new service comes before the
	// http_service, which moves from index 1 to index 2.
	next := build(t, `
[[apps]]
name = "web"
  [[apps.services]]
  internal_port = 5005
    [[apps.services.ports]]
    port = 5000
  [[apps.services]]
  internal_port = 6000
    [[apps.services.ports]]
    port = 6000
  [apps.http_service]
  internal_port = 8080
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
`, old)
	nweb := next.App("web")
	for i, svc := range nweb.Services[:2] {
		if got := svc.Load(nweb.Machines[0]).Value(); got != 0 {
			t.Errorf("service %d (internal %d): load %d carried over, want fresh", i, svc.InternalPort, got)
		}
		if svc.Waiters() == web.Services[0].Waiters() || svc.Waiters() == web.Services[1].Waiters() {
			t.Errorf("service %d: waiters shared with a different old service", i)
		}
	}
	// The http_service moved position but kept its internal port: it is the
	// same service, and its load carries over.
	moved := nweb.Services[2]
	if got := moved.Load(nweb.Machines[0]).Value(); got != 1 || moved.Waiters() != web.Services[1].Waiters() {
		t.Errorf("moved http_service: load %d, waiters shared %v; want 1 and true", got, moved.Waiters() == web.Services[1].Waiters())
	}
}

// A service with processes reaches only the machines of those process
// groups; one without reaches them all.
func TestProcessGroups(t *testing.T) {
	snap := build(t, `
[[apps]]
name = "multi"
  [apps.http_service]
  internal_port = 8080
  processes = ["web"]
  [[apps.services]]
  internal_port = 9000
  processes = ["worker", "app"]
    [[apps.services.ports]]
    port = 9000
  [[apps.services]]
  internal_port = 9100
    [[apps.services.ports]]
    port = 9100
  [[apps.machines]]
  id = "w1"
  address = "127.0.0.1"
  process_group = "web"
  [[apps.machines]]
  id = "k1"
  address = "127.0.0.2"
  process_group = "worker"
  [[apps.machines]]
  id = "d1"
  address = "127.0.0.3"
`, nil)
	app := snap.App("multi")
	got := map[int][]string{}
	for _, svc := range app.Services {
		for _, m := range svc.Machines {
			got[svc.InternalPort] = append(got[svc.InternalPort], m.ID)
		}
		for _, m := range app.Machines {
			if (svc.Load(m) != nil) != slices.Contains(svc.Machines, m) {
				t.Errorf("service %d: machine %s has a load counter iff it serves: %v", svc.InternalPort, m.ID, svc.Load(m) != nil)
			}
		}
	}
	want := map[int][]string{9000: {"k1", "d1"}, 9100: {"w1", "k1", "d1"}, 8080: {"w1"}}
	for port, ids := range want {
		if !slices.Equal(got[port], ids) {
			t.Errorf("service %d serves %v, want %v", port, got[port], ids)
		}
	}
	if g := app.Machine("d1").ProcessGroup; g != "app" {
		t.Errorf("a machine without process_group is in group %q, want app", g)
	}
}
