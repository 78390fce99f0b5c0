package route_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/route"

	"pgregory.net/rapid"
)

// build goes through the same steps as a reload: config.Load, catalog.Build,
// route.Build, so the table under test is one the server would really use.
func build(t *testing.T, body string) *route.Table {
	t.Helper()
	_, snap := load(t, body)
	return route.Build(snap)
}

func load(t *testing.T, body string) (*config.Config, *catalog.Snapshot) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgeproxy.toml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := catalog.Build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, snap
}

// Three apps share 80 and 443 through http_service; "raw" alone owns a TCP
// port and a range. Hostnames are written in mixed case on purpose: config
// accepts that and routing must not care.
const routes = `
[[apps]]
name = "api"
hostnames = ["API.Example.com"]
  [apps.http_service]
  internal_port = 8080
  [[apps.machines]]
  id = "api1"
  address = "127.0.0.1"

[[apps]]
name = "wild"
hostnames = ["*.example.com"]
  [apps.http_service]
  internal_port = 8080
  [[apps.machines]]
  id = "wild1"
  address = "127.0.0.1"

[[apps]]
name = "other"
hostnames = ["other.test", "www.other.test"]
  [apps.http_service]
  internal_port = 8080
  [[apps.machines]]
  id = "other1"
  address = "127.0.0.1"

[[apps]]
name = "raw"
  [[apps.services]]
  internal_port = 5000
    [[apps.services.ports]]
    port = 5000
    [[apps.services.ports]]
    start_port = 6000
    end_port = 6002
    handlers = ["proxy_proto"]
  [[apps.machines]]
  id = "raw1"
  address = "127.0.0.1"
`

func appOf(cp *catalog.Port) string {
	if cp == nil {
		return ""
	}
	return cp.Service.App.Name
}

func TestTablePorts(t *testing.T) {
	tab := build(t, routes)
	want := []int{80, 443, 5000, 6000, 6001, 6002}
	got := tab.Ports()
	if len(got) != len(want) {
		t.Fatalf("Ports() = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Ports() = %v, want %v", got, want)
		}
	}
	if tab.Port(81) != nil {
		t.Error("Port(81) should be nil: nothing serves it")
	}
	for _, tt := range []struct {
		port     int
		shared   bool
		entries  int
		handlers string
	}{
		{80, true, 3, "http"},
		{443, true, 3, "tls+http"},
		{5000, false, 1, "tcp"},
		{6001, false, 1, "proxy_proto"},
	} {
		p := tab.Port(tt.port)
		if p == nil {
			t.Fatalf("Port(%d) is nil", tt.port)
		}
		if p.Public != tt.port || p.Shared() != tt.shared || len(p.Entries()) != tt.entries || p.Handlers.String() != tt.handlers {
			t.Errorf("Port(%d): public %d shared %v entries %d handlers %s; want shared %v entries %d handlers %s",
				tt.port, p.Public, p.Shared(), len(p.Entries()), p.Handlers, tt.shared, tt.entries, tt.handlers)
		}
	}
}

func TestLookupUnshared(t *testing.T) {
	tab := build(t, routes)
	// An unshared port needs no name: raw TCP has none, and a client's
	// wrong SNI must not make a single-app port refuse it.
	for _, port := range []int{5000, 6000, 6002} {
		for _, name := range []string{"", "raw.example.com", "api.example.com", "garbage!!", "a b", strings.Repeat("x", 400)} {
			if got := appOf(tab.Port(port).Lookup(name)); got != "raw" {
				t.Errorf("port %d Lookup(%q) = %q, want raw", port, name, got)
			}
		}
	}
}

func TestLookupShared(t *testing.T) {
	tab := build(t, routes)
	tests := []struct {
		name string
		want string
	}{
		{"api.example.com", "api"},
		{"API.EXAMPLE.COM", "api"},
		{"api.example.com.", "api"},
		{"api.example.com:443", "api"},
		{"Api.Example.Com.:8443", "api"},
		{"other.test", "other"},
		{"WWW.other.test", "other"},
		// Wildcards match exactly one label.
		{"a.example.com", "wild"},
		{"A.Example.Com:80", "wild"},
		{"www.example.com.", "wild"},
		{"a.b.example.com", ""},
		{"a.api.example.com", ""},
		{"example.com", ""},
		{".example.com", ""},
		{"*.example.com", ""},
		{"xexample.com", ""},
		// A wildcard of one app does not reach into another app's names.
		{"x.other.test", ""},
		{"other.test.example", ""},
		{"", ""},
		{".", ""},
		{":443", ""},
		{"api.example.com/", ""},
		{"api.example.com\x00", ""},
		{"api example.com", ""},
		{"ápi.example.com", ""},
		{"[::1]:443", ""},
		{"127.0.0.1", ""},
		{strings.Repeat("a.", 130) + "example.com", ""},
	}
	for _, port := range []int{80, 443} {
		for _, tt := range tests {
			if got := appOf(tab.Port(port).Lookup(tt.name)); got != tt.want {
				t.Errorf("port %d Lookup(%q) = %q, want %q", port, tt.name, got, tt.want)
			}
		}
	}
}

// TestLookupExactBeatsWildcard checks precedence both ways round in the
// config, so it cannot depend on the order apps are added to the table.
func TestLookupExactBeatsWildcard(t *testing.T) {
	app := func(name, host string) string {
		return `
[[apps]]
name = "` + name + `"
hostnames = ["` + host + `"]
  [apps.http_service]
  internal_port = 8080
  [[apps.machines]]
  id = "` + name + `1"
  address = "127.0.0.1"
`
	}
	for _, body := range []string{
		app("exact", "api.example.com") + app("wild", "*.example.com"),
		app("wild", "*.example.com") + app("exact", "api.example.com"),
	} {
		tab := build(t, body)
		p := tab.Port(443)
		if got := appOf(p.Lookup("api.example.com")); got != "exact" {
			t.Errorf("Lookup(api.example.com) = %q, want exact", got)
		}
		if got := appOf(p.Lookup("web.example.com")); got != "wild" {
			t.Errorf("Lookup(web.example.com) = %q, want wild", got)
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	if len(long) != 253 {
		t.Fatalf("bad fixture length %d", len(long))
	}
	tests := []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"example.com:443", "example.com"},
		{"EXAMPLE.com.:8443", "example.com"},
		{"example.com:", "example.com"},
		{"under_score.example", "under_score.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"127.0.0.1:80", "127.0.0.1"},
		{"[::1]:443", "::1"},
		{"localhost", "localhost"},
		{long, long},
		{long + ".", long},
		{long + ":443", long},
		{long + "e", ""},
		{"", ""},
		{".", ""},
		{":443", ""},
		{"[::1]", "::1"}, // an IPv6 literal Host, brackets dropped
		{"exa mple.com", ""},
		{"exa\tmple.com", ""},
		{"example.com\r\n", ""},
		{"*.example.com", ""},
		{"a/b", ""},
		{"a@b", ""},
		{"é.com", ""},
		{"%41.com", ""},
	}
	for _, tt := range tests {
		if got := route.NormalizeHost(tt.in); got != tt.want {
			t.Errorf("NormalizeHost(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestLookupProperties compares Lookup on the shared port with a model of
// the rules over names built from a small set of labels, so exact names,
// one-deep and deeper wildcard candidates and near misses all come up, in
// every spelling a client may use.
func TestLookupProperties(t *testing.T) {
	tab := build(t, routes)
	exact := map[string]string{"api.example.com": "api", "other.test": "other", "www.other.test": "other"}
	model := func(name string) string {
		if app, ok := exact[name]; ok {
			return app
		}
		if first, rest, ok := strings.Cut(name, "."); ok && first != "" && rest == "example.com" {
			return "wild"
		}
		return ""
	}
	labels := []string{"api", "a", "www", "example", "com", "other", "test", "b-c", "x_y"}
	rapid.Check(t, func(rt *rapid.T) {
		parts := rapid.SliceOfN(rapid.SampledFrom(labels), 1, 4).Draw(rt, "labels")
		name := strings.Join(parts, ".")
		want := model(name)
		spelled := name
		if rapid.Bool().Draw(rt, "upper") {
			spelled = strings.ToUpper(spelled)
		}
		if rapid.Bool().Draw(rt, "dot") {
			spelled += "."
		}
		if rapid.Bool().Draw(rt, "port") {
			spelled += ":" + rapid.SampledFrom([]string{"80", "443", "8443", ""}).Draw(rt, "portnum")
		}
		for _, port := range []int{80, 443} {
			if got := appOf(tab.Port(port).Lookup(spelled)); got != want {
				rt.Fatalf("port %d Lookup(%q) = %q, want %q", port, spelled, got, want)
			}
		}
	})
}

// TestRebuildMatchesBuild: a table rebuilt for a machine change routes
// exactly as one built from scratch, to the new snapshot's ports, for any
// set of changed apps.
func TestRebuildMatchesBuild(t *testing.T) {
	cfg, prevSnap := load(t, routes)
	prev := route.Build(prevSnap)
	names := []string{"api", "wild", "other", "raw"}
	hosts := []string{"api.example.com", "x.example.com", "other.test", "www.other.test", "none.test", ""}
	rapid.Check(t, func(rt *rapid.T) {
		changed := map[string]bool{}
		next := *cfg
		next.Apps = append([]config.App(nil), cfg.Apps...)
		for i, n := range names {
			if rapid.Bool().Draw(rt, n) {
				changed[n] = true
				next.Apps[i].Machines = []config.Machine{{ID: n + "2", Region: "iad", Address: "127.0.0.2", State: "stopped"}}
			}
		}
		snap, err := catalog.Rebuild(&next, prevSnap, changed)
		if err != nil {
			rt.Fatal(err)
		}
		got, want := route.Rebuild(prev, snap, changed), route.Build(snap)
		if !slices.Equal(got.Ports(), want.Ports()) {
			rt.Fatalf("ports %v, want %v", got.Ports(), want.Ports())
		}
		for _, pub := range want.Ports() {
			g, w := got.Port(pub), want.Port(pub)
			if !slices.Equal(g.Entries(), w.Entries()) {
				rt.Fatalf("port %d: entries differ", pub)
			}
			for _, h := range hosts {
				if g.Lookup(h) != w.Lookup(h) {
					rt.Fatalf("port %d host %q: %s, want %s", pub, h, appOf(g.Lookup(h)), appOf(w.Lookup(h)))
				}
			}
			for _, e := range g.Entries() {
				if snap.App(e.Service.App.Name) != e.Service.App {
					rt.Fatalf("port %d: entry of %s points at an old snapshot", pub, e.Service.App.Name)
				}
			}
		}
		// The table rebuilt from must not have changed.
		if prev.Port(80).Lookup("api.example.com").Service.App != prevSnap.App("api") {
			rt.Fatal("the previous table was written to")
		}
	})
}
