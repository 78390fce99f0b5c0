package deploy_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// unit is a systemd unit file: section -> key -> values (a key may
// repeat).
type unit map[string]map[string][]string

func readUnit(t *testing.T) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(readFile(t, unitFile)))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			t.Fatalf("%s:%d: continuation lines are not supported by this test", unitFile, n)
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: not KEY=VALUE in a section: %q", unitFile, n, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		u[section][k] = append(u[section][k], v)
	}
	return u
}

func (u unit) get(section, key string) string {
	if v := u[section][key]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// execLines are the unit's commands that run edgeproxy.
type execLine struct {
	key  string
	argv []string
}

func (u unit) execLines(t *testing.T) []execLine {
	t.Helper()
	var out []execLine
	for _, key := range sortedKeys(u["Service"]) {
		if !strings.HasPrefix(key, "Exec") {
			continue
		}
		for _, v := range u["Service"][key] {
			v = strings.TrimLeft(v, "-@+!:")
			if strings.ContainsAny(v, `"'$%`) {
				t.Fatalf("%s: %s=%s: quoting and specifiers are not supported by this test", unitFile, key, v)
			}
			argv := strings.Fields(v)
			if len(argv) > 0 && filepath.Base(argv[0]) == "edgeproxy" {
				out = append(out, execLine{key, argv})
			}
		}
	}
	return out
}

// buildEdgeproxy builds ./cmd/edgeproxy into a temporary directory.
func buildEdgeproxy(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "edgeproxy")
	out, err := run(t, root, 5*time.Minute, "go", "build", "-o", bin, "./cmd/edgeproxy")
	if err != nil {
		t.Fatalf("go build ./cmd/edgeproxy: %v\n%s", err, out)
	}
	return bin
}

// helpFlags runs "edgeproxy CMD -h" and reads the flags it lists, and
// whether each takes a value.
func helpFlags(t *testing.T, bin, cmd string) map[string]bool {
	t.Helper()
	out, err := run(t, root, 30*time.Second, bin, cmd, "-h")
	if err != nil {
		t.Fatalf("edgeproxy %s -h: %v\n%s", cmd, err, out)
	}
	flags := map[string]bool{}
	re := regexp.MustCompile(`^\s+-([A-Za-z0-9][-A-Za-z0-9_.]*)(?:\s+(\S+))?`)
	for _, line := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			flags[m[1]] = m[2] != ""
		}
	}
	if len(flags) == 0 {
		t.Fatalf("edgeproxy %s -h lists no flags:\n%s", cmd, out)
	}
	return flags
}

// TestSystemdUnit: the unit's edgeproxy commands use flags the binary
// accepts, the binary parses them as given (it goes on to the files they
// name), the pid file is the same everywhere and lives in the runtime
// directory, and docs/operations.md points at the unit and quotes its
// commands as they are.
func TestSystemdUnit(t *testing.T) {
	u := readUnit(t)
	execs := u.execLines(t)
	keys := map[string]bool{}
	for _, e := range execs {
		keys[e.key] = true
	}
	for _, k := range []string{"ExecStart", "ExecReload"} {
		if !keys[k] {
			t.Fatalf("%s: no %s running edgeproxy", unitFile, k)
		}
	}

	bin := buildEdgeproxy(t)
	help := map[string]map[string]bool{}
	pidFiles := map[string]bool{}
	for _, e := range execs {
		if len(e.argv) < 2 {
			t.Errorf("%s: %s runs edgeproxy without a command", unitFile, e.key)
			continue
		}
		cmd := e.argv[1]
		if help[cmd] == nil {
			help[cmd] = helpFlags(t, bin, cmd)
		}
		flags := help[cmd]
		// Walk the arguments as the flag package would, and replace each
		// absolute path with one that does not exist here.
		args := []string{cmd}
		var missing []string
		for i := 2; i < len(e.argv); i++ {
			a := e.argv[i]
			if !strings.HasPrefix(a, "-") || a == "-" {
				args = append(args, a)
				continue
			}
			name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
			takesValue, ok := flags[name]
			if !ok {
				t.Errorf("%s: %s passes -%s, which \"edgeproxy %s -h\" does not list (it has %s)", unitFile, e.key, name, cmd, strings.Join(sortedKeys(flags), ", "))
				continue
			}
			if takesValue && !hasVal {
				if i+1 >= len(e.argv) {
					t.Errorf("%s: %s: -%s needs a value", unitFile, e.key, name)
					continue
				}
				i++
				val, hasVal = e.argv[i], true
			}
			if name == "pid-file" {
				pidFiles[val] = true
			}
			if hasVal && filepath.IsAbs(val) {
				m := filepath.Join(t.TempDir(), "missing", filepath.Base(val))
				missing = append(missing, m)
				val = m
			}
			if hasVal {
				args = append(args, "-"+name, val)
			} else {
				args = append(args, "-"+name)
			}
		}
		// Run the command as the unit would, with the files missing: it
		// must get past its flags to the files (and fail there).
		out, err := run(t, root, 30*time.Second, bin, args...)
		if strings.Contains(out, "flag provided but not defined") || strings.Contains(out, "Usage of") || strings.Contains(out, "usage:") {
			t.Errorf("%s: %s: edgeproxy %s refuses its arguments: %v\n%s", unitFile, e.key, strings.Join(args, " "), err, out)
		} else if len(missing) > 0 {
			named := false
			for _, m := range missing {
				named = named || strings.Contains(out, m)
			}
			if err == nil || !named {
				t.Errorf("%s: %s: edgeproxy %s with its files missing should fail naming one; got %v:\n%s", unitFile, e.key, strings.Join(args, " "), err, out)
			}
		}
	}

	pid := u.get("Service", "PIDFile")
	if pid == "" {
		t.Errorf("%s: no PIDFile=: systemd cannot follow the process an upgrade starts", unitFile)
	}
	pidFiles[pid] = true
	if len(pidFiles) != 1 {
		t.Errorf("%s: PIDFile= and the -pid-file flags differ: %s", unitFile, strings.Join(sortedKeys(pidFiles), ", "))
	}
	if rd := u.get("Service", "RuntimeDirectory"); rd == "" || filepath.Dir(pid) != filepath.Join("/run", rd) {
		t.Errorf("%s: the pid file %s is not in RuntimeDirectory=%s (/run/%s), which systemd creates for User=", unitFile, pid, rd, rd)
	}

	// The doc points at the unit and quotes its lines as they are.
	doc := readFile(t, opsDoc)
	if !strings.Contains(doc, unitFile) {
		t.Errorf("%s does not mention %s", opsDoc, unitFile)
	}
	lines := map[string]bool{}
	for _, key := range sortedKeys(u["Service"]) {
		for _, v := range u["Service"][key] {
			lines[key+"="+v] = true
		}
	}
	quoted := regexp.MustCompile("`(Exec[A-Za-z]*=[^`]*)`")
	for _, m := range quoted.FindAllStringSubmatch(doc, -1) {
		if !lines[m[1]] {
			t.Errorf("%s quotes %q, which is not a line of %s", opsDoc, m[1], unitFile)
		}
	}
}

// TestSystemdAnalyzeVerify runs "systemd-analyze verify" on the unit (with
// ExecStart's binary pointed at a real build) where systemd is installed.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not on PATH")
	}
	bin := buildEdgeproxy(t)
	src := readFile(t, unitFile)
	dir := t.TempDir()
	file := filepath.Join(dir, "edgeproxy.service")
	var b strings.Builder
	for _, line := range strings.Split(src, "\n") {
		if strings.HasPrefix(line, "Exec") {
			k, v, _ := strings.Cut(line, "=")
			if f := strings.Fields(v); len(f) > 0 && filepath.Base(f[0]) == "edgeproxy" {
				line = k + "=" + bin + strings.TrimPrefix(v, f[0])
			}
		}
		fmt.Fprintln(&b, line)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, dir, time.Minute, sa, "verify", "--man=no", file)
	if err != nil {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}
	// Unknown keys and bad values are warnings ("..., ignoring"): any
	// line about the unit file is a failure.
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, file) || strings.Contains(line, "edgeproxy.service") {
			t.Errorf("systemd-analyze verify %s: %s", unitFile, line)
		}
	}
}
