package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const minimal = `
[[apps]]
name = "web"
  [apps.http_service]
  internal_port = 8080
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
`

func TestLoadAppliesDefaults(t *testing.T) {
	cfg, notices, err := Load(write(t, t.TempDir(), "c.toml", minimal))
	if err != nil {
		t.Fatal(err)
	}
	if len(notices) != 0 {
		t.Errorf("unexpected notices: %v", notices)
	}
	p := cfg.Proxy
	if p.Region != DefaultRegion || p.Bind != DefaultBind || p.ConnectTimeout.D() != DefaultConnectTimeout ||
		p.ConnectAttempts != DefaultConnectAttempts || p.IdleTimeout.D() != DefaultIdleTimeout || p.LogLevel != "info" {
		t.Errorf("defaults not applied: %+v", p)
	}
	m := cfg.Apps[0].Machines[0]
	if m.Region != DefaultRegion || m.State != "started" {
		t.Errorf("machine defaults not applied: %+v", m)
	}
	svcs := cfg.Apps[0].AllServices()
	if len(svcs) != 1 || len(svcs[0].Ports) != 2 {
		t.Fatalf("http_service should expand to one service with 2 ports: %+v", svcs)
	}
	if lo, _ := svcs[0].Ports[1].Range(); lo != 443 || !svcs[0].Ports[1].Has("tls") || !svcs[0].Ports[1].Has("http") {
		t.Errorf("port 443 should be tls+http: %+v", svcs[0].Ports[1])
	}
}

func TestDurationForms(t *testing.T) {
	cfg, _, err := Load(write(t, t.TempDir(), "c.toml", `
[proxy]
idle_timeout = "1m30s"
connect_timeout = 3
`+minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Proxy.IdleTimeout.D() != 90*time.Second || cfg.Proxy.ConnectTimeout.D() != 3*time.Second {
		t.Errorf("durations: %v %v", cfg.Proxy.IdleTimeout.D(), cfg.Proxy.ConnectTimeout.D())
	}
}

func TestFlyToml(t *testing.T) {
	dir := t.TempDir()
	raw, err := os.ReadFile("testdata/fly.toml")
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "fly.toml", string(raw))
	cfg, notices, err := Load(write(t, dir, "c.toml", `
[[apps]]
fly_toml = "fly.toml"
hostnames = ["flyapp.example.com"]
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.2"
`))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Apps[0]
	if a.Name != "flyapp" || a.HTTPService == nil || len(a.Services) != 1 || a.FromFlyToml() == "" {
		t.Fatalf("fly.toml not read: %+v", a)
	}
	if got := a.Services[0].Concurrency.HardLimit; got != 25 {
		t.Errorf("hard_limit = %d", got)
	}
	var lifecycle bool
	unused := map[string]bool{}
	for _, n := range notices {
		if strings.HasPrefix(n.Msg, "accepted, not used by edgeproxy: ") && n.Line > 0 {
			unused[n.Key] = true
		}
		if strings.Contains(n.Msg, "act only on the machines of an app with an [apps.driver]") && strings.HasSuffix(n.File, "fly.toml") && n.Line > 0 {
			lifecycle = true
		}
	}
	if !unused["build"] || !unused["env"] || !unused["vm[0]"] || !lifecycle {
		t.Errorf("notices missing: %v", notices)
	}
}

// TestProblems covers every class of config error: each case must produce
// a problem with the expected key path, line and message fragment.
func TestProblems(t *testing.T) {
	cases := []struct {
		name, body string
		key        string
		line       int
		msg        string
	}{
		{"syntax", "[proxy\nregion = 1", "", 2, "expected"},
		{"wrong type", "[proxy]\nregion = 5\n" + minimal, "proxy.region", 2, "must be a string in quotes, not a whole number"},
		{"unknown top key", "colour = 1\n" + minimal, "colour", 1, "unknown key"},
		{"unknown nested key", minimal + "  [[apps.services]]\n  internal_port = 1\n  intenal_port = 2\n", "apps[0].services[0].intenal_port", 11, "unknown key"},
		{"bad bind", "[proxy]\nbind = \"nowhere\"\n" + minimal, "proxy.bind", 2, "not an IP address"},
		{"bad region", "[proxy]\nregion = \"Bad Region\"\n" + minimal, "proxy.region", 2, "not a valid region"},
		{"bad port_map", "[proxy]\nport_map = { http = 1 }\n" + minimal, "proxy.port_map", 2, "not a port"},
		{"port_map clash", "[proxy]\nport_map = { 80 = 9000, 443 = 9000 }\n" + minimal, "proxy.port_map", 2, "both listen on local port 9000"},
		{"bad duration", "[proxy]\nidle_timeout = \"soon\"\n" + minimal, "proxy.idle_timeout", 2, "invalid duration"},
		{"wrong type, a string for a number", "[proxy]\nmax_header_bytes = \"big\"\n" + minimal, "proxy.max_header_bytes", 2, "must be a whole number, not a string in quotes"},
		{"bad log level", "[proxy]\nlog_level = \"loud\"\n" + minimal, "proxy.log_level", 2, "debug, info"},
		{"no apps", "[proxy]\n", "apps", 0, "no [[apps]]"},
		{"missing app name", "[[apps]]\n[apps.http_service]\ninternal_port = 1\n", "apps[0].name", 1, "required"},
		{"bad app name", strings.Replace(minimal, `"web"`, `"Web_1"`, 1), "apps[0].name", 3, "not a valid app name"},
		{"duplicate app", minimal + minimal, "apps[1].name", 11, "defined twice"},
		{"bad hostname", strings.Replace(minimal, `name = "web"`, "name = \"web\"\nhostnames = [\"bad host\"]", 1), "apps[0].hostnames", 4, "not a valid hostname"},
		{"no services", "[[apps]]\nname = \"x\"\n", "apps[0].services", 1, "no [[services]]"},
		{"bad internal_port", strings.Replace(minimal, "8080", "70000", 1), "apps[0].http_service.internal_port", 5, "between 1 and 65535"},
		{"port and range", svc(`port = 80
    start_port = 1
    end_port = 2
    handlers = []`), "apps[0].services[0].ports[0]", 7, "either port or start_port"},
		{"bad range", svc("start_port = 20\n    end_port = 10"), "apps[0].services[0].ports[0].start_port", 8, "not a valid port range"},
		{"unknown handler", svc(`port = 80
    handlers = ["gzip"]`), "apps[0].services[0].ports[0].handlers", 9, "unknown handler"},
		{"pg_tls with tls", svc(`port = 80
    handlers = ["pg_tls", "tls"]`), "apps[0].services[0].ports[0].handlers", 9, "cannot be combined"},
		{"force_https without http", svc(`port = 80
    handlers = []
    force_https = true`), "apps[0].services[0].ports[0].force_https", 10, "needs the http handler"},
		{"tls_options without tls", svc(`port = 80
    handlers = ["http"]
    tls_options = { alpn = ["h2"] }`), "apps[0].services[0].ports[0].tls_options", 10, "needs the tls"},
		{"old tls version", svc(`port = 443
    handlers = ["tls"]
    tls_options = { versions = ["TLSv1.1"] }`), "apps[0].services[0].ports[0].tls_options.versions", 10, "not supported"},
		{"proxy_proto version", svc(`port = 80
    handlers = ["proxy_proto"]
    proxy_proto_options = { version = "v3" }`), "apps[0].services[0].ports[0].proxy_proto_options.version", 10, "v1 or v2"},
		{"bad response header", svc(`port = 80
    handlers = ["http"]
    http_options = { response = { headers = { x-a = true } } }`), "apps[0].services[0].ports[0].http_options.response.headers.x-a", 10, "false to remove"},
		{"bad concurrency type", minimal + "  [apps.http_service.concurrency]\n  type = \"cpu\"\n", "apps[0].http_service.concurrency.type", 10, "connections or requests"},
		{"soft above hard", minimal + "  [apps.http_service.concurrency]\n  soft_limit = 30\n  hard_limit = 10\n", "apps[0].http_service.concurrency.soft_limit", 10, "above hard_limit"},
		{"udp with a handler", strings.Replace(svc("port = 53\n    handlers = [\"tls\"]"), `protocol = "tcp"`, `protocol = "udp"`, 1), "apps[0].services[0].ports[0].handlers", 9, "take no handlers"},
		{"unknown protocol", strings.Replace(svc("port = 53"), `protocol = "tcp"`, `protocol = "sctp"`, 1), "apps[0].services[0].protocol", 6, "not supported (tcp or udp)"},
		{"bad machine address", strings.Replace(minimal, `"127.0.0.1"`, `"localhost"`, 1), "apps[0].machines[0].address", 8, "not an IP address"},
		{"bad machine state", strings.Replace(minimal, `id = "m1"`, "id = \"m1\"\n  state = \"running\"", 1), "apps[0].machines[0].state", 8, "started, stopped or suspended"},
		{"duplicate machine", minimal + "  [[apps.machines]]\n  id = \"m1\"\n  address = \"127.0.0.2\"\n", "apps[0].machines[1].id", 10, "listed twice"},
		{"missing cert file", "[[certificates]]\ncert_file = \"nope.pem\"\nkey_file = \"nope.key\"\n" + minimal, "certificates[0].cert_file", 2, "cannot read cert_file"},
		{"raw port clash", minimal + `
[[apps]]
name = "other"
  [[apps.services]]
  internal_port = 1
    [[apps.services.ports]]
    port = 80
    handlers = []
`, "apps[1].services[0].ports[0]", 14, "same handlers"},
		{"shared port without hostnames", minimal + `
[[apps]]
name = "other"
  [apps.http_service]
  internal_port = 1
`, "apps[0].http_service", 4, "needs hostnames"},
		{"fly_toml and services", "[[apps]]\nname = \"a\"\nfly_toml = \"x.toml\"\n[apps.http_service]\ninternal_port = 1\n", "apps[0].fly_toml", 3, "not both"},
		{"missing fly_toml", "[[apps]]\nname = \"a\"\nfly_toml = \"missing.toml\"\n", "apps[0].fly_toml", 3, "cannot read fly.toml"},
		{"tracing without endpoint", "[tracing]\nenabled = true\n" + minimal, "tracing.endpoint", 1, "needs an OTLP/HTTP endpoint"},
		{"tracing endpoint not a URL", "[tracing]\nenabled = true\nendpoint = \"127.0.0.1:4318\"\n" + minimal, "tracing.endpoint", 3, "needs an OTLP/HTTP endpoint"},
		{"sample_ratio above 1", "[tracing]\nsample_ratio = 2\n" + minimal, "tracing.sample_ratio", 2, "between 0 and 1, got 2"},
		{"tripwire threshold above 1", "[tripwire]\nthreshold = 1.5\n" + minimal, "tripwire.threshold", 2, "at most 1 (a share of GOMAXPROCS), got 1.5"},
		// samples = 0 means the default (3), so the smallest bad value is -1.
		{"tripwire samples negative", "[tripwire]\nsamples = -1\n" + minimal, "tripwire.samples", 2, "between 1 and 600, got -1"},
		{"tripwire samples too many", "[tripwire]\nsamples = 601\n" + minimal, "tripwire.samples", 2, "between 1 and 600, got 601"},
		{"tripwire profile too short", "[tripwire]\nprofile_duration = \"100ms\"\n" + minimal, "tripwire.profile_duration", 2, "between 1s and 5m, got 100ms"},
		{"backhaul listener on an edge", fleetHead("edge") + "backhaul_listen = \"127.0.0.1:7000\"\n" + minimal,
			"fleet.backhaul_listen", 7, "only a worker listens for the backhaul"},
		{"backhaul listener without certificates", fleetHead("worker") + "backhaul_listen = \"127.0.0.1:7000\"\n" + minimal,
			"fleet.backhaul_listen", 7, "needs backhaul_ca_file, backhaul_cert_file and backhaul_key_file"},
		{"backhaul certificate alone", fleetHead("worker") + "backhaul_cert_file = \"w1.pem\"\n" + minimal,
			"fleet.backhaul_cert_file", 7, "go together"},
		{"backhaul listener nobody can dial", fleetHead("worker") + "backhaul_listen = \"0.0.0.0:7000\"\n" + minimal,
			"fleet.backhaul_advertise", 3, "names no address edges can dial"},
		{"bad upstream_bind", "[proxy]\nupstream_bind = \"here\"\n" + minimal, "proxy.upstream_bind", 2, "not an IP address"},
		{"tripwire max_files negative", "[tripwire]\nmax_files = -1\n" + minimal, "tripwire.max_files", 2, "at least 1, got -1"},
		{"hostname twice", appWith(`"a.example.com", "A.example.com"`, ""), "apps[0].hostnames", 4, `"A.example.com" is listed twice`},
		{"port map names no internal port", "[[apps]]\nname = \"web\"\n  [apps.http_service]\n  internal_port = 8080\n  [[apps.machines]]\n  id = \"m1\"\n  address = \"127.0.0.1\"\n  ports = { 8081 = 9000 }\n",
			"apps[0].machines[0].ports.8081", 8, "no service's internal_port"},
		{"typo of a known key", "[proxy]\nconect_timeout = \"3s\"\n" + minimal, "proxy.conect_timeout", 2, `unknown key; did you mean "connect_timeout"?`},
		{"acme directory not a URL", "[acme]\ndirectory = \"letsencrypt\"\n" + minimal, "acme.directory", 2, "not an ACME directory URL"},
		{"acme dns-01", "[acme]\nchallenges = [\"dns-01\"]\n" + minimal, "acme.challenges", 2, "dns-01 is not supported"},
		{"acme unknown challenge", "[acme]\nchallenges = [\"tls-sni-01\"]\n" + minimal, "acme.challenges", 2, "not a challenge type"},
		{"acme no challenge", "[acme]\nchallenges = []\n" + minimal, "acme.challenges", 2, "names no challenge"},
		{"acme roots unreadable", "[acme]\ntrusted_roots_file = \"nope.pem\"\n" + minimal, "acme.trusted_roots_file", 2, "cannot read"},
		{"acme wildcard without a file", "[acme]\n" + appWith(`"*.example.com"`, ""), "apps[0].hostnames", 5, "ACME cannot issue wildcard names"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Load(write(t, t.TempDir(), "c.toml", tc.body))
			ce, ok := err.(*Error)
			if !ok {
				t.Fatalf("want *Error, got %v", err)
			}
			for _, p := range ce.Problems {
				if p.Key == tc.key && strings.Contains(p.Msg, tc.msg) {
					if p.Line != tc.line {
						t.Errorf("problem %q at line %d, want %d", p, p.Line, tc.line)
					}
					if !strings.HasSuffix(p.File, "c.toml") && !strings.Contains(tc.name, "fly") {
						t.Errorf("problem names file %q", p.File)
					}
					return
				}
			}
			t.Errorf("no problem with key %q and message %q in:\n%v", tc.key, tc.msg, ce)
		})
	}
}

// fleetHead is a fleet node w1 of role, six lines long.
func fleetHead(role string) string {
	return "[proxy]\nregion = \"iad\"\n[fleet]\nembedded = true\nnode = \"w1\"\nrole = \"" + role + "\"\n"
}

// svc wraps a [[services.ports]] body in an app with one tcp service.
func svc(portBody string) string {
	return `
[[apps]]
name = "a"
  [[apps.services]]
  internal_port = 8080
  protocol = "tcp"
    [[apps.services.ports]]
    ` + portBody + "\n"
}

func TestAllProblemsReported(t *testing.T) {
	_, _, err := Load(write(t, t.TempDir(), "c.toml", "[proxy]\nbind = \"x\"\nregion = \"A B\"\n"))
	ce, ok := err.(*Error)
	if !ok || len(ce.Problems) < 3 {
		t.Fatalf("want at least 3 problems (bind, region, apps), got %v", err)
	}
}
