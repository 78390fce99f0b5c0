package config

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestFlyTomlCorpus")

// TestFlyTomlCorpus loads each fly.toml of testdata/flytoml (written the
// ways flyctl writes them, current and older syntax) unchanged, and
// compares the services edgeproxy builds, and the notes validate gives,
// with the file's golden summary (-update rewrites them).
func TestFlyTomlCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/flytoml/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("%d fly.toml files in the corpus, want at least 30", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			abs, err := filepath.Abs(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, notices, err := Load(write(t, t.TempDir(), "c.toml", fmt.Sprintf(`
[[apps]]
fly_toml = %q
hostnames = ["corpus.example.com"]
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
`, abs)))
			if err != nil {
				t.Fatalf("refused:\n%v", err)
			}
			got := summarize(cfg.Apps[0], notices)
			golden := strings.TrimSuffix(f, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("services differ from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

// summarize is what an app's fly.toml turned into: its settings, each
// service with its ports, limits and checks, and the notes (by key).
func summarize(a App, notices []Problem) string {
	var b strings.Builder
	fmt.Fprintf(&b, "app %s primary_region=%q kill_signal=%s kill_timeout=%v\n", a.Name, a.PrimaryRegion, a.KillSignal, a.KillTimeout.D())
	for _, s := range a.AllServices() {
		fmt.Fprintf(&b, "service internal_port=%d protocol=%s", s.InternalPort, s.Protocol)
		if c := s.Concurrency; c != nil {
			fmt.Fprintf(&b, " concurrency=%s/%d/%d", c.Type, c.SoftLimit, c.HardLimit)
		}
		if s.AutoStopMachines != nil || s.AutoStartMachines != nil || s.MinMachinesRunning != nil {
			fmt.Fprintf(&b, " lifecycle=%v/%v/%v", s.AutoStopMachines, deref(s.AutoStartMachines), deref(s.MinMachinesRunning))
		}
		b.WriteString("\n")
		for _, p := range s.Ports {
			lo, hi := p.Range()
			fmt.Fprintf(&b, "  port %d-%d handlers=%s force_https=%v", lo, hi, strings.Join(p.Handlers, "+"), p.ForceHTTPS)
			if o := p.TLSOptions; o != nil {
				fmt.Fprintf(&b, " alpn=%v versions=%v", o.ALPN, o.Versions)
			}
			if o := p.HTTPOptions; o != nil {
				fmt.Fprintf(&b, " h2_backend=%v", o.H2Backend)
			}
			if o := p.ProxyProtoOptions; o != nil {
				fmt.Fprintf(&b, " proxy_proto=%s", o.Version)
			}
			b.WriteString("\n")
		}
		for _, c := range s.TCPChecks {
			fmt.Fprintf(&b, "  tcp_check every %v timeout %v grace %v\n", c.Interval.D(), c.Timeout.D(), c.Grace())
		}
		for _, c := range s.HTTPChecks {
			fmt.Fprintf(&b, "  http_check %s %s %s every %v timeout %v grace %v headers=%d\n", c.Method, c.Protocol, c.Path,
				c.Interval.D(), c.Timeout.D(), c.Grace(), len(c.Headers))
		}
	}
	var notes []string
	for _, n := range notices {
		notes = append(notes, fmt.Sprintf("note %s: %s", n.Key, n.Msg))
	}
	sort.Strings(notes)
	for _, n := range notes {
		b.WriteString(n + "\n")
	}
	return b.String()
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// Keys nobody wrote are errors, with the known key they are likely a
// typo of; keys flyctl writes are noted once, not refused.
func TestFlyTomlUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "fly.toml", `
app = "typos"
primary_regoin = "iad"

[http_service]
  interal_port = 8080
  [[http_service.checks]]
    intervl = "10s"

[[services]]
  internal_port = 9000
  [[services.ports]]
    port = 9000
    handlres = ["http"]
  [[services.tcp_checks]]
    restart_limit = 3

[checks.alive]
  type = "tcp"
  port = 9000
  restart_limit = 1
  timout = "2s"

[frobnicate]
  x = 1
`)
	_, _, err := Load(write(t, dir, "c.toml", "[[apps]]\nfly_toml = \"fly.toml\"\n  [[apps.machines]]\n  id = \"m1\"\n  address = \"127.0.0.1\"\n"))
	ce, ok := err.(*Error)
	if !ok {
		t.Fatalf("want *Error, got %v", err)
	}
	want := map[string]string{
		"primary_regoin":                 `did you mean "primary_region"?`,
		"http_service.interal_port":      `did you mean "internal_port"?`,
		"http_service.checks[0].intervl": `did you mean "interval"?`,
		"services[0].ports[0].handlres":  `did you mean "handlers"?`,
		"checks.alive.timout":            `did you mean "timeout"?`,
		"frobnicate":                     "unknown key",
	}
	for _, p := range ce.Problems {
		if w, ok := want[p.Key]; ok && strings.Contains(p.Msg, w) {
			delete(want, p.Key)
		}
		if strings.Contains(p.Key, "restart_limit") {
			t.Errorf("restart_limit, which flyctl writes, refused: %v", p)
		}
	}
	for k, w := range want {
		t.Errorf("no problem at %s saying %s; got %v", k, w, ce.Problems)
	}
}

// A hard_limit alone: validate says which soft limit it gets.
func TestHardLimitAloneNote(t *testing.T) {
	for _, tc := range []struct {
		hard, soft int
	}{{25, 20}, {5, 5}} {
		body := appWith(`"a.example.com"`, fmt.Sprintf("    [apps.http_service.concurrency]\n    hard_limit = %d\n    [apps.http_service.tls_options]\n    default_self_signed = true\n", tc.hard))
		_, notices, err := Load(write(t, t.TempDir(), "c.toml", body))
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("hard_limit %d with no soft_limit: soft_limit is %d", tc.hard, tc.soft)
		if !slices.ContainsFunc(notices, func(p Problem) bool { return strings.Contains(p.Msg, want) }) {
			t.Errorf("no note %q in %v", want, notices)
		}
	}
}

// Values of the wrong type are all reported, each with its indexed key,
// rather than the first one alone.
func TestTypeErrorsAllReported(t *testing.T) {
	_, _, err := Load(write(t, t.TempDir(), "c.toml", `
[proxy]
max_header_bytes = "big"

[[apps]]
name = "web"
hostnames = "a.example.com"
  [apps.http_service]
  internal_port = "8080"
  force_https = "yes"
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
`))
	ce, ok := err.(*Error)
	if !ok {
		t.Fatalf("want *Error, got %v", err)
	}
	want := map[string]string{
		"proxy.max_header_bytes":             "must be a whole number, not a string in quotes",
		"apps[0].hostnames":                  "must be a list [...], not a string in quotes",
		"apps[0].http_service.internal_port": "must be a whole number",
		"apps[0].http_service.force_https":   "must be true or false",
	}
	for _, p := range ce.Problems {
		if w, ok := want[p.Key]; ok && strings.Contains(p.Msg, w) {
			delete(want, p.Key)
		}
	}
	for k, w := range want {
		t.Errorf("no problem at %s saying %q in %v", k, w, ce.Problems)
	}
}
