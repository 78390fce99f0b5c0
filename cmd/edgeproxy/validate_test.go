package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

// These tests call run in-process, so they exercise exactly the code the
// binary runs for "validate", "version" and unknown commands without
// paying for a build; e2e_test.go covers the built binary.

// runCLI runs the command line in-process and returns its exit status and
// output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// lineOf finds the 1-based line of the first line of body containing
// marker, so expectations follow the config text instead of hard-coded
// numbers that drift whenever a config is edited.
func lineOf(t *testing.T, body, marker string) int {
	t.Helper()
	return nthLineOf(t, body, marker, 1)
}

// nthLineOf is lineOf for markers that occur several times, such as the
// "[[apps.services.ports]]" header of each app.
func nthLineOf(t *testing.T, body, marker string, n int) int {
	t.Helper()
	seen := 0
	for i, l := range strings.Split(body, "\n") {
		if strings.Contains(l, marker) {
			if seen++; seen == n {
				return i + 1
			}
		}
	}
	t.Fatalf("occurrence %d of %q not in config", n, marker)
	return 0
}

// reported is one "error: FILE:LINE: KEY: message" line of validate.
type reported struct {
	file string
	line int
	key  string
	msg  string
}

func (r reported) String() string { return fmt.Sprintf("%s:%d: %s: %s", r.file, r.line, r.key, r.msg) }

// errorLineRE is the documented shape of a problem with a known line and
// key. The file is matched lazily so a colon in the message cannot be
// taken for the line separator.
var errorLineRE = regexp.MustCompile(`^error: (.+?):(\d+): ([^\s:]+): (.*)$`)

// parseErrors returns every "error:" line; one that does not have the
// FILE:LINE: KEY: shape fails the test, since every problem validate
// reports here is expected to point at a line and key.
func parseErrors(t *testing.T, stdout string) []reported {
	t.Helper()
	var out []reported
	for _, l := range strings.Split(stdout, "\n") {
		if !strings.HasPrefix(l, "error: ") {
			continue
		}
		m := errorLineRE.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("error line without FILE:LINE: KEY: %q", l)
			continue
		}
		n, _ := strconv.Atoi(m[2])
		out = append(out, reported{file: m[1], line: n, key: m[3], msg: m[4]})
	}
	return out
}

// want is an expected problem; msg is a fragment of its message.
type want struct {
	file string
	line int
	key  string
	msg  string
}

// checkProblems asserts that validate reported exactly the wanted
// problems, one line each, in any order, with the summary count.
func checkProblems(t *testing.T, cfgPath, stdout string, wants []want) {
	t.Helper()
	got := parseErrors(t, stdout)
	used := make([]bool, len(got))
	for _, w := range wants {
		found := false
		for i, g := range got {
			if !used[i] && g.file == w.file && g.line == w.line && g.key == w.key && strings.Contains(g.msg, w.msg) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing problem %s:%d: %s: ...%s...", w.file, w.line, w.key, w.msg)
		}
	}
	for i, g := range got {
		if !used[i] {
			t.Errorf("unexpected problem %s", g)
		}
	}
	summary := fmt.Sprintf("%s: %d problem(s)", cfgPath, len(wants))
	if !strings.Contains(stdout, summary) {
		t.Errorf("summary %q missing", summary)
	}
	if t.Failed() {
		t.Logf("validate output:\n%s", stdout)
	}
}

// goodConfig has a certificate, so validate also proves it loads
// certificates the way run does, not only the TOML.
const goodConfig = `
[proxy]
bind = "127.0.0.1"
port_map = { 80 = 18080, 443 = 18443 }

[[certificates]]
cert_file = "cert.pem"
key_file = "key.pem"

[[apps]]
name = "web"
hostnames = ["web.test"]
  [apps.http_service]
  internal_port = 8080
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
  ports = { 8080 = 18081 }
`

// writeCert puts a real certificate and key for names in dir under the
// given file names.
func writeCert(t *testing.T, dir, certName, keyName string, names ...string) {
	t.Helper()
	cert, key, err := tlsterm.WriteTestCert(dir, names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, mv := range [][2]string{{cert, certName}, {key, keyName}} {
		if err := os.Rename(mv[0], filepath.Join(dir, mv[1])); err != nil {
			t.Fatal(err)
		}
	}
}

func TestValidateGoodConfig(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "cert.pem", "key.pem", "web.test")
	path := writeFile(t, dir, "edgeproxy.toml", goodConfig)

	code, stdout, stderr := runCLI(t, "validate", "-config", path)
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// http_service stands for ports 80 and 443.
	if want := path + ": ok (1 apps, 2 public ports)"; !strings.Contains(stdout, want) {
		t.Errorf("stdout %q does not contain %q", stdout, want)
	}
	if strings.Contains(stdout, "error:") || strings.Contains(stdout, "note:") {
		t.Errorf("a clean config printed errors or notes:\n%s", stdout)
	}
}

// problemsConfig has the problems that config.Load finds on its own: a
// bind address that is a name, two raw TCP apps on one port, and a
// certificate file that does not exist.
const problemsConfig = `
[proxy]
bind = "localhost"

[[certificates]]
cert_file = "missing.pem"
key_file = "key.pem"

[[apps]]
name = "a"
  [[apps.services]]
  internal_port = 9000
    [[apps.services.ports]]
    port = 5000
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"

[[apps]]
name = "b"
  [[apps.services]]
  internal_port = 9000
    [[apps.services.ports]]
    port = 5000
  [[apps.machines]]
  id = "m2"
  address = "127.0.0.1"
`

// clashWants are the two bindings of the raw TCP port clash in body: a
// clash is reported on each side, so either app's owner finds it.
func clashWants(t *testing.T, path, body string) []want {
	const msg = "port 5000 is also used by app"
	return []want{
		{path, nthLineOf(t, body, "[[apps.services.ports]]", 1), "apps[0].services[0].ports[0]", msg},
		{path, nthLineOf(t, body, "[[apps.services.ports]]", 2), "apps[1].services[0].ports[0]", msg},
	}
}

func TestValidateListsEveryConfigProblem(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "unused.pem", "key.pem", "a.test")
	path := writeFile(t, dir, "edgeproxy.toml", problemsConfig)

	code, stdout, _ := runCLI(t, "validate", "-config", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wants := append([]want{
		{path, lineOf(t, problemsConfig, `bind = "localhost"`), "proxy.bind", `"localhost" is not an IP address`},
		{path, lineOf(t, problemsConfig, `cert_file = "missing.pem"`), "certificates[0].cert_file", "no such file"},
	}, clashWants(t, path, problemsConfig)...)
	checkProblems(t, path, stdout, wants)
}

func TestValidateUnknownKey(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "cert.pem", "key.pem", "web.test")
	body := strings.Replace(goodConfig, `bind = "127.0.0.1"`, "bind = \"127.0.0.1\"\ncolour = \"blue\"", 1)
	path := writeFile(t, dir, "edgeproxy.toml", body)

	code, stdout, _ := runCLI(t, "validate", "-config", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	checkProblems(t, path, stdout, []want{
		{path, lineOf(t, body, "colour"), "proxy.colour", "unknown key"},
	})
}

func TestValidateCertificateNotPEM(t *testing.T) {
	dir := t.TempDir()
	// A real key next to a certificate file that exists but holds no PEM,
	// so the only problem is the certificate's contents.
	writeCert(t, dir, "unused.pem", "key.pem", "web.test")
	writeFile(t, dir, "cert.pem", "this is not a certificate\n")
	path := writeFile(t, dir, "edgeproxy.toml", goodConfig)

	code, stdout, _ := runCLI(t, "validate", "-config", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	// The problem points at the file that holds the bad contents.
	checkProblems(t, path, stdout, []want{
		{path, lineOf(t, goodConfig, "cert_file ="), "certificates[0].cert_file", "bad PEM"},
	})
}

// TestValidateReportsAllProblemsAtOnce is the promise of validate: one run
// shows everything to fix. It combines every kind of problem above.
func TestValidateReportsAllProblemsAtOnce(t *testing.T) {
	// Known product bugs, described in the report that added this test:
	// config.Load skips validation when the TOML has unknown keys
	// (internal/config/load.go, Load), certificate contents are only
	// checked by server.BuildRuntime after Load succeeded
	// (cmd/edgeproxy/run.go, runValidate), and the first app of a port
	// clash is told the port is "also used" by itself
	// (internal/config/ports.go, portClash). Remove this skip once fixed.
	dir := t.TempDir()
	writeCert(t, dir, "unused.pem", "key.pem", "a.test")
	writeFile(t, dir, "notpem.pem", "this is not a certificate\n")
	body := strings.Replace(problemsConfig, `bind = "localhost"`, "bind = \"localhost\"\ncolour = \"blue\"", 1) + `
[[certificates]]
cert_file = "notpem.pem"
key_file = "key.pem"
`
	path := writeFile(t, dir, "edgeproxy.toml", body)

	code, stdout, _ := runCLI(t, "validate", "-config", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	clash := clashWants(t, path, body)
	// Each side of the clash must name the other app, not itself.
	clash[0].msg += ` "b"`
	clash[1].msg += ` "a"`
	wants := append([]want{
		{path, lineOf(t, body, "colour"), "proxy.colour", "unknown key"},
		{path, lineOf(t, body, `bind = "localhost"`), "proxy.bind", `"localhost" is not an IP address`},
		{path, lineOf(t, body, `cert_file = "missing.pem"`), "certificates[0].cert_file", "no such file"},
		{path, lineOf(t, body, `cert_file = "notpem.pem"`), "certificates[1].cert_file", "bad PEM"},
	}, clash...)
	checkProblems(t, path, stdout, wants)
}

func TestValidateNotesIgnoredFlyTomlSections(t *testing.T) {
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join("testdata", "fly.toml"))
	if err != nil {
		t.Fatal(err)
	}
	flyPath := writeFile(t, dir, "fly.toml", string(raw))
	path := writeFile(t, dir, "edgeproxy.toml", `
[[apps]]
fly_toml = "fly.toml"
hostnames = ["flyapp.test"]
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
`)

	code, stdout, _ := runCLI(t, "validate", "-config", path)
	if code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, stdout)
	}
	// One note per section edgeproxy does not use, naming the fly.toml
	// and the section, and saying why.
	var note string
	for _, sec := range []string{"build", "env", "vm[0]"} {
		found := false
		for _, l := range strings.Split(stdout, "\n") {
			if strings.HasPrefix(l, "note: "+flyPath+":") && strings.Contains(l, ": "+sec+": accepted, not used by edgeproxy: ") {
				found = true
				note += l + "\n"
			}
		}
		if !found {
			t.Errorf("no note naming %s and section %s:\n%s", flyPath, sec, stdout)
		}
	}
	// primary_region is read now (min_machines_running counts there).
	if strings.Contains(note, "primary_region") {
		t.Errorf("note lists primary_region as ignored: %q", note)
	}
	if !strings.Contains(stdout, path+": ok") {
		t.Errorf("a config with only notes should be ok:\n%s", stdout)
	}
}

func TestValidateUnreadableConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.toml")
	code, stdout, _ := runCLI(t, "validate", "-config", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(stdout, "error: "+path+": cannot read config") {
		t.Errorf("stdout does not explain the missing file:\n%s", stdout)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := runCLI(t, "version")
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if !strings.HasPrefix(stdout, "edgeproxy ") {
		t.Errorf("version printed %q, want it to start with %q", stdout, "edgeproxy ")
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"no command", nil, "usage: edgeproxy"},
		{"unknown validate flag", []string{"validate", "-confg", "x.toml"}, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.stderr)
			}
		})
	}
}

// Every subcommand's -h prints its help and exits 0, and validate and
// run take the config file as an argument too.
func TestCLIHelpVersionAndConfigArgument(t *testing.T) {
	for _, cmd := range []string{"run", "validate", "upgrade", "gen-cert", "storm", "profile"} {
		code, stdout, stderr := runCLI(t, cmd, "-h")
		help := stdout + stderr
		if code != 0 || !(strings.Contains(help, "Usage of "+cmd) || strings.Contains(help, "usage: edgeproxy "+cmd)) {
			t.Errorf("%s -h: exit %d, help %q", cmd, code, help)
		}
	}
	for _, v := range []string{"version", "--version", "-version"} {
		if code, out, _ := runCLI(t, v); code != 0 || !strings.HasPrefix(out, "edgeproxy ") {
			t.Errorf("%s: exit %d, %q", v, code, out)
		}
	}
	path := writeFile(t, t.TempDir(), "edgeproxy.toml", `
[[apps]]
name = "web"
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.tls_options]
    default_self_signed = true
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
`)
	if code, out, _ := runCLI(t, "validate", path); code != 0 || !strings.Contains(out, ": ok") {
		t.Errorf("validate FILE: exit %d, %q", code, out)
	}
	if code, _, stderr := runCLI(t, "validate", "-config", "other.toml", path); code != 2 || !strings.Contains(stderr, "given twice") {
		t.Errorf("validate -config X FILE: exit %d, %q", code, stderr)
	}
}

// storm says when nothing listens at its target, rather than reporting
// every connection refused as a result.
func TestStormSaysNothingListens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, stdout, stderr := runCLI(t, "storm", "-target", addr, "-count", "5", "-q")
	if code != 1 || !strings.Contains(stderr, "nothing answers at "+addr) || stdout != "" {
		t.Errorf("exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
}
