// Command deps is `make deps`: it lists the updates of go.mod's direct
// dependencies and of the Go toolchain, and with -apply takes the chosen
// ones and checks them: the previous build (HEAD) and the new one, the
// test suite, the connection-shape suite, a storm against the new build,
// the quick benchmark against both and govulncheck, in one report. See
// docs/dependencies.md.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	apply          string
	check          bool
	vulndb         string
	scenarios      string
	tolerance      float64
	skip           map[string]bool
	stormCount     int
	benchForce     bool
	benchWait      time.Duration
	buildVulnDBDir string
}

// defaultScenarios cover plain HTTP, TLS, HTTP/2, handshakes, bulk bytes
// and idle memory in about three minutes for both builds.
const defaultScenarios = "http1,https1,h2,handshake,http1-1mib,tcp-stream,idle-tls"

func main() {
	var o options
	var skip string
	flag.StringVar(&o.apply, "apply", "", `updates to apply: "all", or module paths (path@version for another version) and "go" (go@go1.27.4) for the toolchain; empty lists only`)
	flag.BoolVar(&o.check, "check", false, "apply nothing, run the checks on the working tree against HEAD (after fixing code an update broke)")
	flag.StringVar(&o.vulndb, "vulndb", os.Getenv("VULNDB"), `vulnerability database: "" tries `+publicVulnDB+` then a local mirror built from `+vulndbModule+`; a directory or URL; "off"`)
	flag.StringVar(&o.scenarios, "bench-scenarios", defaultScenarios, "bench scenarios, comma-separated")
	flag.Float64Var(&o.tolerance, "bench-tolerance", 0.15, "bench change (0.15 = 15%) beyond which a figure is flagged")
	flag.StringVar(&skip, "skip", "", "checks to skip, comma-separated: tests, storm, bench, vuln")
	flag.IntVar(&o.stormCount, "storm-count", 2000, "connections in the storm")
	flag.BoolVar(&o.benchForce, "bench-force", false, "run the bench even if the machine is busy (the results say so)")
	flag.DurationVar(&o.benchWait, "bench-wait", 3*time.Minute, "how long the bench waits for a busy machine to calm down before refusing")
	flag.StringVar(&o.buildVulnDBDir, "build-vulndb", "", "only build a local vulnerability database in `DIR` from "+vulndbModule+" on the module proxy, then exit")
	flag.Parse()
	o.skip = map[string]bool{}
	for _, s := range strings.FieldsFunc(skip, func(r rune) bool { return r == ',' || r == ' ' }) {
		switch s {
		case "tests", "storm", "bench", "vuln":
			o.skip[s] = true
		default:
			fatalf("-skip: unknown check %q (tests, storm, bench, vuln)", s)
		}
	}
	root, err := repoRoot()
	if err != nil {
		fatalf("%v", err)
	}
	d := &deps{root: root, o: o}
	if o.buildVulnDBDir != "" {
		dir, _ := filepath.Abs(o.buildVulnDBDir)
		src, err := d.mirrorFromProxy(dir)
		if err != nil {
			fatalf("%v", err)
		}
		fmt.Printf("vulnerability database written to %s (%s)\nuse it with: make deps VULNDB=%s\n", dir, src, dir)
		return
	}
	os.Exit(d.run())
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "deps: "+format+"\n", args...)
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "deps: "+format+"\n", args...)
}

type deps struct {
	root    string
	o       options
	work    string // temporary directory of this run
	govulnc string // govulncheck binary
}

func repoRoot() (string, error) {
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", errors.New("not in a git checkout")
	}
	return strings.TrimSpace(string(out)), nil
}

// env returns the environment for a child: GOTOOLCHAIN set to toolchain
// (unless empty) and no make variables of the `make deps` that started us.
func env(toolchain string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES":
			continue
		case "GOTOOLCHAIN":
			if toolchain != "" {
				continue
			}
		}
		out = append(out, kv)
	}
	if toolchain != "" {
		out = append(out, "GOTOOLCHAIN="+toolchain)
	}
	return out
}

// run runs a command in dir and returns its combined output; with log set
// the output is written there too.
func run(dir string, environ []string, log string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, environ
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	if log != "" {
		os.WriteFile(log, buf.Bytes(), 0o644)
	}
	if err != nil {
		return buf.Bytes(), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(buf.String(), 20))
	}
	return buf.Bytes(), nil
}

// output runs a command and returns its standard output only.
func output(dir string, environ []string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, environ
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, tail(stderr.String(), 10))
	}
	return out, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// state is what go.mod and the pins say at one moment.
type state struct {
	mod      *ModFile
	makefile string // Makefile's GOTOOLCHAIN
	ci       string // .ci/run's GOTOOLCHAIN
}

func (d *deps) readState() (*state, error) {
	out, err := output(d.root, env(""), "go", "mod", "edit", "-json")
	if err != nil {
		return nil, err
	}
	mod, err := parseModFile(out)
	if err != nil {
		return nil, err
	}
	return newState(mod, func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(d.root, name)) }), nil
}

// newState is mod with the toolchain pins of the Makefile and .ci/run,
// as read reads them (a missing file leaves its pin empty).
func newState(mod *ModFile, read func(name string) ([]byte, error)) *state {
	s := &state{mod: mod}
	if b, err := read("Makefile"); err == nil {
		s.makefile = makefileToolchain(string(b))
	}
	if b, err := read(".ci/run"); err == nil {
		s.ci = ciToolchain(string(b))
	}
	return s
}

// headState reads go.mod and the pins as committed at HEAD.
func (d *deps) headState() (*state, error) {
	gomod, err := output(d.root, nil, "git", "show", "HEAD:go.mod")
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "deps-head-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "go.mod"), gomod, 0o644); err != nil {
		return nil, err
	}
	out, err := output(tmp, env(""), "go", "mod", "edit", "-json", "go.mod")
	if err != nil {
		return nil, err
	}
	mod, err := parseModFile(out)
	if err != nil {
		return nil, err
	}
	return newState(mod, func(name string) ([]byte, error) { return output(d.root, nil, "git", "show", "HEAD:"+name) }), nil
}

// toolchain is the version builds of this state use: the Makefile's
// export wins, as it does for every make target.
func (s *state) toolchain() string {
	if s.makefile != "" {
		return s.makefile
	}
	return s.mod.Toolchain
}

// list gathers the listing: module updates, toolchain updates.
func (d *deps) list(s *state) (*Listing, []GoVersion) {
	l := &Listing{Pinned: map[string]string{"go.mod": s.mod.Toolchain, "Makefile": s.makefile, ".ci/run": s.ci}}
	direct := s.mod.Direct()
	logf("listing updates of %d direct dependencies", len(direct))
	out, err := output(d.root, env(""), "go", append([]string{"list", "-m", "-u", "-json"}, direct...)...)
	if err == nil {
		var mods []Module
		if mods, err = parseGoList(out); err == nil {
			l.Updates = directUpdates(s.mod, mods)
		}
	}
	if err != nil {
		l.UpdatesErr = firstLine(err.Error())
	}
	var available []GoVersion
	cur, err := parseGoVersion(s.toolchain())
	if err == nil {
		var out []byte
		if out, err = output(d.root, env(""), "go", "list", "-m", "-versions", "-json", "golang.org/toolchain"); err == nil {
			available, err = parseToolchainVersions(out, runtime.GOOS, runtime.GOARCH)
		}
	}
	if err != nil {
		l.ToolchainErr = firstLine(err.Error())
	} else {
		l.Toolchain = toolchainUpdate(cur, available)
	}
	return l, available
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func (d *deps) run() int {
	started := time.Now()
	sel, err := parseSelection(d.o.apply)
	if err != nil {
		fatalf("%v", err)
	}
	before, err := d.readState()
	if err != nil {
		fatalf("%v", err)
	}
	l, available := d.list(before)
	if sel.Empty() && !d.o.check {
		if !d.o.skip["vuln"] {
			l.Vuln = d.vulncheck(before.toolchain())
		} else {
			l.Vuln.Skipped = "skipped (-skip vuln)"
		}
		fmt.Print(l.render())
		fmt.Println("\nApply with: make deps APPLY=all, or APPLY=\"MODULE ... go\" (docs/dependencies.md).")
		return 0
	}
	var plan Plan
	if !d.o.check {
		if plan, err = resolve(sel, before.mod, l.Updates, l.Toolchain, available); err != nil {
			fatalf("%v", err)
		}
		if plan.Empty() {
			fmt.Print(l.render())
			fmt.Println("\nNothing to apply.")
			return 0
		}
	}
	d.work, err = os.MkdirTemp("", "edgeproxy-deps-")
	if err != nil {
		fatalf("%v", err)
	}
	head, err := d.headState()
	if err != nil {
		fatalf("%v", err)
	}
	rep := &Report{Started: started, Tolerance: d.o.tolerance, WorkDir: d.work}
	if out, err := output(d.root, nil, "git", "rev-parse", "--short", "HEAD"); err == nil {
		rep.Head = strings.TrimSpace(string(out))
	}
	rep.Preexisting = diffModFiles(head.mod, before.mod)

	// The previous build: HEAD as committed, with HEAD's toolchain.
	prevBin := filepath.Join(d.work, "prev", "edgeproxy")
	logf("building the previous binary (HEAD %s, %s)", rep.Head, head.toolchain())
	if err := d.buildHead(head.toolchain(), prevBin); err != nil {
		rep.Checks = append(rep.Checks, CheckResult{"build previous", "FAIL", firstLine(err.Error())})
		prevBin = ""
	} else {
		rep.Checks = append(rep.Checks, CheckResult{"build previous", "PASS", "HEAD " + rep.Head + " with " + head.toolchain()})
	}

	after := before
	if !d.o.check {
		logf("applying %d module update(s)%s", len(plan.Modules), map[bool]string{true: " and the toolchain", false: ""}[plan.Toolchain != nil])
		if err := d.apply(plan, before); err != nil {
			logf("%v", err)
			rep.Checks = append(rep.Checks, CheckResult{"apply", "FAIL", firstLine(err.Error())})
			rep.Finished = time.Now()
			fmt.Print(rep.render())
			fmt.Fprintf(os.Stderr, "\nthe update did not apply; go.mod, go.sum, Makefile and .ci/run are as they were\n%v\n", err)
			return 1
		}
		if after, err = d.readState(); err != nil {
			fatalf("%v", err)
		}
		rep.Applied = diffModFiles(before.mod, after.mod)
		if plan.Toolchain != nil {
			rep.Applied = append(rep.Applied, Change{Path: "GOTOOLCHAIN (Makefile, .ci/run)", From: before.toolchain(), To: after.toolchain()})
			rep.Stale = d.staleToolchain(before.toolchain())
		}
	} else {
		rep.Applied = diffModFiles(head.mod, after.mod)
		rep.Preexisting = nil
		if head.toolchain() != after.toolchain() {
			rep.Applied = append(rep.Applied, Change{Path: "GOTOOLCHAIN (Makefile)", From: head.toolchain(), To: after.toolchain()})
		}
	}
	rep.Dirty = d.dirty()
	tc := after.toolchain()

	newBin := filepath.Join(d.work, "new", "edgeproxy")
	logf("building the new binary (working tree, %s)", tc)
	if _, err := run(d.root, env(tc), filepath.Join(d.work, "build-new.log"), "go", "build", "-o", newBin, "./cmd/edgeproxy"); err != nil {
		rep.Checks = append(rep.Checks, CheckResult{"build new", "FAIL", firstLine(err.Error()) + " (see build-new.log)"})
		newBin = ""
	} else {
		rep.Checks = append(rep.Checks, CheckResult{"build new", "PASS", "working tree with " + tc})
	}

	if d.o.skip["tests"] {
		rep.Checks = append(rep.Checks, CheckResult{"tests (make test)", "SKIP", "-skip tests"}, CheckResult{"shapes (test/shapes)", "SKIP", "-skip tests"})
	} else {
		rep.Checks = append(rep.Checks, d.tests(tc)...)
	}

	switch {
	case d.o.skip["storm"]:
		rep.Checks = append(rep.Checks, CheckResult{"storm (new build)", "SKIP", "-skip storm"})
	case newBin == "":
		rep.Checks = append(rep.Checks, CheckResult{"storm (new build)", "FAIL", "no new build"})
	default:
		logf("storm against the new build (%d connections)", d.o.stormCount)
		c, problems := d.storm(newBin)
		rep.Checks = append(rep.Checks, c)
		rep.Storm = problems
	}

	switch {
	case d.o.skip["bench"]:
	case prevBin == "" || newBin == "":
		rep.Checks = append(rep.Checks, CheckResult{"bench", "FAIL", "a build is missing"})
	default:
		rep.Bench, err = d.bench(tc, prevBin, newBin)
		if err != nil {
			rep.Checks = append(rep.Checks, CheckResult{"bench", "WARN", firstLine(err.Error())})
		} else {
			rep.BenchOK = true
		}
	}

	if d.o.skip["vuln"] {
		rep.Vuln.Skipped = "skipped (-skip vuln)"
	} else {
		rep.Vuln = d.vulncheck(tc)
	}
	rep.Finished = time.Now()
	text := rep.render()
	os.WriteFile(filepath.Join(d.work, "report.txt"), []byte(text), 0o644)
	fmt.Print("\n" + text)
	if rep.Failed() {
		return 1
	}
	return 0
}

// buildHead exports HEAD to the work directory and builds it.
func (d *deps) buildHead(toolchain, bin string) error {
	src := filepath.Join(d.work, "prev-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	archive := exec.Command("git", "archive", "HEAD")
	archive.Dir = d.root
	untar := exec.Command("tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return err
	}
	untar.Stdin = pipe
	if err := untar.Start(); err != nil {
		return err
	}
	if err := archive.Run(); err != nil {
		return fmt.Errorf("git archive HEAD: %v", err)
	}
	if err := untar.Wait(); err != nil {
		return fmt.Errorf("tar: %v", err)
	}
	version := "prev"
	if out, err := output(d.root, nil, "git", "describe", "--tags", "--always"); err == nil {
		version = strings.TrimSpace(string(out))
	}
	_, err = run(src, env(toolchain), filepath.Join(d.work, "build-prev.log"), "go", "build", "-ldflags", "-X main.version="+version, "-o", bin, "./cmd/edgeproxy")
	return err
}

// apply takes the plan: one go get for the modules, the toolchain pins,
// then go mod tidy. On failure every file it touched is put back.
func (d *deps) apply(p Plan, before *state) error {
	files := []string{"go.mod", "go.sum", "Makefile", filepath.Join(".ci", "run")}
	saved := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(d.root, f))
		if err != nil {
			return err
		}
		saved[f] = b
	}
	restore := func() {
		for f, b := range saved {
			os.WriteFile(filepath.Join(d.root, f), b, 0o644)
		}
	}
	tc := before.toolchain()
	if p.Toolchain != nil {
		tc = p.Toolchain.String()
	}
	if args := goGetArgs(p); args != nil {
		if _, err := run(d.root, env(tc), filepath.Join(d.work, "go-get.log"), "go", args...); err != nil {
			restore()
			return err
		}
	}
	if p.Toolchain != nil {
		if _, err := run(d.root, env(tc), "", "go", "mod", "edit", "-toolchain="+tc); err != nil {
			restore()
			return err
		}
		for _, f := range []struct {
			name string
			set  func(string, string) (string, error)
		}{{"Makefile", setMakefileToolchain}, {filepath.Join(".ci", "run"), setCIToolchain}} {
			out, err := f.set(string(saved[f.name]), tc)
			if err != nil {
				restore()
				return err
			}
			if err := os.WriteFile(filepath.Join(d.root, f.name), []byte(out), 0o644); err != nil {
				restore()
				return err
			}
		}
	}
	if _, err := run(d.root, env(tc), filepath.Join(d.work, "go-mod-tidy.log"), "go", "mod", "tidy"); err != nil {
		restore()
		return err
	}
	return nil
}

// dirty lists uncommitted files other than the ones an update changes.
func (d *deps) dirty() []string {
	out, err := output(d.root, nil, "git", "status", "--porcelain")
	if err != nil {
		return nil
	}
	var files []string
	for _, line := range strings.Split(string(out), "\n") {
		if len(line) < 4 {
			continue
		}
		f := strings.TrimSpace(line[3:])
		switch {
		case f == "go.mod", f == "go.sum", f == "Makefile", f == ".ci/run", f == "tools/", strings.HasPrefix(f, "tools/deps/"), f == "docs/dependencies.md":
			continue
		}
		files = append(files, f)
	}
	return files
}

// staleToolchain lists tracked files that still name the old toolchain.
func (d *deps) staleToolchain(old string) []string {
	out, _ := output(d.root, nil, "git", "grep", "-l", "-F", old)
	var files []string
	for _, f := range strings.Fields(string(out)) {
		if f != "go.mod" && f != "Makefile" && f != ".ci/run" && !strings.HasPrefix(f, "tools/deps/") {
			files = append(files, f)
		}
	}
	return files
}

const shapesPkg = "github.com/edgeproxy/edgeproxy/test/shapes"

// tests runs make test, and reads the shape suite's result from it (or
// runs the suite alone when make test stopped before go test).
func (d *deps) tests(tc string) []CheckResult {
	logf("running make test (the full suite; several minutes)")
	start := time.Now()
	out, err := run(d.root, env(tc), filepath.Join(d.work, "make-test.log"), "make", "test")
	took := time.Since(start).Round(time.Second)
	res := parseGoTestText(out)
	var checks []CheckResult
	switch {
	case err == nil:
		checks = append(checks, CheckResult{"tests (make test)", "PASS", fmt.Sprintf("%d packages ok, %s", len(res.Passed), took)})
	case !res.Ran:
		checks = append(checks, CheckResult{"tests (make test)", "FAIL", "stopped before go test (lint or build): " + firstLine(tail(string(out), 3)) + " (see make-test.log)"})
	default:
		detail := fmt.Sprintf("%d packages failed: %s", len(res.Failed), strings.Join(res.Failed, ", "))
		if len(res.FailedTests) > 0 {
			detail += "; tests: " + strings.Join(limit(res.FailedTests, 8), ", ")
		}
		checks = append(checks, CheckResult{"tests (make test)", "FAIL", detail + " (see make-test.log)"})
	}
	switch res.Status(shapesPkg) {
	case "ok":
		checks = append(checks, CheckResult{"shapes (test/shapes)", "PASS", "in make test (-race)"})
	case "FAIL":
		checks = append(checks, CheckResult{"shapes (test/shapes)", "FAIL", "in make test; see make-test.log"})
	default:
		logf("running the shape suite alone")
		out, _ := run(d.root, env(tc), filepath.Join(d.work, "shapes.json"), "go", "test", "-count=1", "-json", "./test/shapes")
		sr := parseTest2JSON(out)
		switch sr.Status(shapesPkg) {
		case "ok":
			checks = append(checks, CheckResult{"shapes (test/shapes)", "PASS", "go test -count=1 ./test/shapes"})
		case "FAIL":
			checks = append(checks, CheckResult{"shapes (test/shapes)", "FAIL", strings.Join(limit(sr.FailedTests, 8), ", ") + " (see shapes.json)"})
		default:
			checks = append(checks, CheckResult{"shapes (test/shapes)", "FAIL", "did not run (see shapes.json)"})
		}
	}
	return checks
}

func limit(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// stormConfig is examples/quickstart.toml's web app on free loopback
// ports, with the admin API (for the storm's metrics) on one more.
func stormConfig(http, https, admin, m1, m2 int) string {
	return fmt.Sprintf(`# Written by tools/deps for the storm: examples/quickstart.toml's web app.
[proxy]
region = "local"
bind = "127.0.0.1"
port_map = { 80 = %d, 443 = %d }

[admin]
listen = "127.0.0.1:%d"

[[apps]]
name = "hello"
hostnames = ["hello.localhost"]

  [apps.http_service]
  internal_port = 8080
  force_https = false

    [apps.http_service.tls_options]
    default_self_signed = true

    [apps.http_service.concurrency]
    type = "requests"
    soft_limit = 20
    hard_limit = 100

    [[apps.http_service.checks]]
    interval = "5s"
    timeout = "2s"
    path = "/healthz"

  [[apps.machines]]
  id = "machine-1"
  address = "127.0.0.1"
  ports = { 8080 = %d }

  [[apps.machines]]
  id = "machine-2"
  address = "127.0.0.1"
  ports = { 8080 = %d }
`, http, https, admin, m1, m2)
}

// storm starts the new build with two demo machines, storms it and judges
// the report.
func (d *deps) storm(bin string) (CheckResult, []string) {
	fail := func(format string, args ...any) (CheckResult, []string) {
		return CheckResult{"storm (new build)", "FAIL", fmt.Sprintf(format, args...)}, nil
	}
	ports, err := freePorts(5)
	if err != nil {
		return fail("no free ports: %v", err)
	}
	dir := filepath.Join(d.work, "storm")
	os.MkdirAll(dir, 0o755)
	cfg := filepath.Join(dir, "storm.toml")
	if err := os.WriteFile(cfg, []byte(stormConfig(ports[0], ports[1], ports[2], ports[3], ports[4])), 0o644); err != nil {
		return fail("%v", err)
	}
	if out, err := run(dir, env(""), "", bin, "validate", "-config", cfg); err != nil {
		return fail("config refused: %s", firstLine(string(out)))
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			done := make(chan struct{})
			go func() { p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				p.Process.Kill()
				<-done
			}
		}
	}()
	start := func(log string, args ...string) (*exec.Cmd, error) {
		f, err := os.Create(filepath.Join(dir, log))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, f, f
		if err := cmd.Start(); err != nil {
			f.Close()
			return nil, err
		}
		procs = append(procs, cmd)
		return cmd, nil
	}
	for i, p := range ports[3:] {
		if _, err := start(fmt.Sprintf("machine-%d.log", i+1), "demo-machine", "-listen", "127.0.0.1:"+strconv.Itoa(p), "-id", fmt.Sprintf("machine-%d", i+1)); err != nil {
			return fail("demo machine: %v", err)
		}
	}
	proxy, err := start("edgeproxy.log", "run", "-config", cfg)
	if err != nil {
		return fail("proxy: %v", err)
	}
	// Ready: the admin API says so and the app answers through the proxy.
	exited := make(chan struct{})
	go func() { proxy.Process.Wait(); close(exited) }()
	// No keep-alive: a pooled connection of ours would count as one the
	// proxy left open after the storm.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	ready := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !ready; time.Sleep(200 * time.Millisecond) {
		select {
		case <-exited:
			return fail("the proxy exited at start (see storm/edgeproxy.log)")
		default:
		}
		r1, err1 := client.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", ports[2]))
		if err1 == nil {
			r1.Body.Close()
		}
		r2, err2 := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", ports[0]))
		if err2 == nil {
			r2.Body.Close()
		}
		ready = err1 == nil && r1.StatusCode == 200 && err2 == nil && r2.StatusCode == 200
	}
	if !ready {
		return fail("the proxy did not become ready in 30 s (see storm/edgeproxy.log)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "storm", "-target", fmt.Sprintf("127.0.0.1:%d", ports[1]), "-sni", "hello.localhost",
		"-count", strconv.Itoa(d.o.stormCount), "-concurrency", "100", "-duration", "90s", "-timeout", "8s",
		"-pid", strconv.Itoa(proxy.Process.Pid), "-metrics", fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[2]), "-json", "-q")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	os.WriteFile(filepath.Join(dir, "storm.json"), out, 0o644)
	if err != nil && len(out) == 0 {
		return fail("storm: %v: %s", err, firstLine(stderr.String()))
	}
	// The storm's clients are gone: every connection they made must now
	// be closed at the proxy too.
	public := map[int]bool{ports[0]: true, ports[1]: true}
	open := 0
	for deadline := time.Now().Add(settleWait); ; time.Sleep(500 * time.Millisecond) {
		open = 0
		for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			if b, err := os.ReadFile(f); err == nil {
				open += countOpenConns(string(b), public)
			}
		}
		if open == 0 || time.Now().After(deadline) {
			break
		}
	}
	v, jerr := judgeStorm(out, open)
	if jerr != nil {
		return fail("%v", jerr)
	}
	status := "PASS"
	if !v.Pass || err != nil {
		status = "FAIL"
	}
	return CheckResult{"storm (new build)", status, v.Summary}, v.Problems
}

// quickFiles are what `bench -quick` writes into bench/results.
var quickFiles = []string{"quick.csv", "quick-summary.csv", "quick-meta.json"}

// bench runs the quick benchmark on each build and compares them. The
// files the bench writes into bench/results are put back as they were.
func (d *deps) bench(tc, prevBin, newBin string) ([]BenchDelta, error) {
	resDir := filepath.Join(d.root, "bench", "results")
	saved := map[string][]byte{}
	for _, f := range quickFiles {
		if b, err := os.ReadFile(filepath.Join(resDir, f)); err == nil {
			saved[f] = b
		}
	}
	defer func() {
		for _, f := range quickFiles {
			if b, ok := saved[f]; ok {
				os.WriteFile(filepath.Join(resDir, f), b, 0o644)
			} else {
				os.Remove(filepath.Join(resDir, f))
			}
		}
	}()
	var rows [2][]BenchRow
	for i, b := range []struct{ name, bin string }{{"prev", prevBin}, {"new", newBin}} {
		logf("bench (quick) on the %s build: %s", b.name, d.o.scenarios)
		args := []string{"run", "./bench/cmd/bench", "-quick", "-docs=false", "-proxies", "edgeproxy", "-runs", "1",
			"-edgeproxy-bin", b.bin, "-scenarios", d.o.scenarios, "-wait", d.o.benchWait.String()}
		if d.o.benchForce {
			args = append(args, "-force")
		}
		out, err := run(d.root, env(tc), filepath.Join(d.work, "bench-"+b.name+".log"), "go", args...)
		csvPath := filepath.Join(resDir, "quick.csv")
		data, rerr := os.ReadFile(csvPath)
		if rerr == nil && !bytes.Equal(data, saved["quick.csv"]) {
			os.WriteFile(filepath.Join(d.work, "bench-"+b.name+".csv"), data, 0o644)
		} else if err != nil {
			return nil, fmt.Errorf("bench on the %s build: %s (see bench-%s.log)", b.name, firstLine(tail(string(out), 1)), b.name)
		}
		if rows[i], err = parseBenchCSV(bytes.NewReader(data)); err != nil {
			return nil, err
		}
	}
	return compareBench(rows[0], rows[1], d.o.tolerance), nil
}

// vulncheck runs govulncheck on the working tree with the first database
// that answers.
func (d *deps) vulncheck(tc string) VulnSection {
	var v VulnSection
	db, source, err := d.chooseDB()
	if err != nil {
		v.Skipped = err.Error()
		return v
	}
	v.DBSource = source
	if d.govulnc == "" {
		// Built once into the user's cache and reused: the version is pinned.
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		bin := filepath.Join(cache, "edgeproxy-deps", "bin", strings.ReplaceAll(filepath.Base(govulncheckPkg), "@", "-"))
		if _, err := os.Stat(filepath.Join(bin, "govulncheck")); err != nil {
			logf("building %s", govulncheckPkg)
			if _, err := run(d.root, append(env(tc), "GOBIN="+bin), "", "go", "install", govulncheckPkg); err != nil {
				v.Skipped = "could not build govulncheck: " + firstLine(err.Error())
				return v
			}
		}
		d.govulnc = filepath.Join(bin, "govulncheck")
	}
	logf("govulncheck with %s", source)
	out, err := output(d.root, env(tc), d.govulnc, "-format", "json", "-db", db, "./...")
	if d.work != "" {
		os.WriteFile(filepath.Join(d.work, "govulncheck.json"), out, 0o644)
	}
	res, perr := parseGovulncheckJSON(out)
	if perr != nil || (err != nil && len(res.Findings) == 0 && res.DB == "") {
		msg := "govulncheck failed"
		if err != nil {
			msg += ": " + firstLine(err.Error())
		}
		v.Skipped = msg
		return v
	}
	v.Ran, v.Result = true, res
	return v
}

// chooseDB picks the vulnerability database: -vulndb if given, else the
// public one if it answers, else a local mirror built from golang.org/x/vulndb.
func (d *deps) chooseDB() (db, source string, err error) {
	switch v := d.o.vulndb; {
	case v == "off":
		return "", "", errors.New("-vulndb off")
	case strings.HasPrefix(v, "http://") || strings.HasPrefix(v, "https://"):
		if !reachable(v) {
			return "", "", fmt.Errorf("the vulnerability database at %s does not answer", v)
		}
		return v, v + " (VULNDB)", nil
	case v != "":
		dir, err := filepath.Abs(strings.TrimPrefix(v, "file://"))
		if err != nil {
			return "", "", err
		}
		return d.localDB(dir)
	}
	if reachable(publicVulnDB) {
		return publicVulnDB, describeDB(publicVulnDB), nil
	}
	logf("%s does not answer; using a local mirror built from %s", publicVulnDB, vulndbModule)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "edgeproxy-deps", "vulndb")
	src, err := d.mirrorFromProxy(dir)
	if err != nil {
		return "", "", fmt.Errorf("no vulnerability database reachable: %s does not answer and the local mirror could not be built (%v); give VULNDB=DIR", publicVulnDB, err)
	}
	return "file://" + dir, "local mirror " + dir + " built from " + src + " (" + publicVulnDB + " unreachable)", nil
}

// localDB accepts a database in govulncheck's layout, a golang.org/x/vulndb
// checkout (data/osv) or a directory of OSV files.
func (d *deps) localDB(dir string) (string, string, error) {
	if _, err := os.Stat(filepath.Join(dir, "index", "modules.json")); err == nil {
		return "file://" + dir, "local database " + dir + " (VULNDB)", nil
	}
	osv := dir
	if _, err := os.Stat(filepath.Join(dir, "data", "osv")); err == nil {
		osv = filepath.Join(dir, "data", "osv")
	}
	out, err := os.MkdirTemp("", "deps-vulndb-")
	if err != nil {
		return "", "", err
	}
	var asOf time.Time
	if fi, err := os.Stat(osv); err == nil {
		asOf = fi.ModTime()
	}
	info, err := buildVulnDB(osv, filepath.Join(out, "db"), asOf)
	if err != nil {
		return "", "", fmt.Errorf("VULNDB=%s is neither a database (index/modules.json) nor OSV files: %v", dir, err)
	}
	return "file://" + filepath.Join(out, "db"), fmt.Sprintf("database built from the OSV files in %s (%d entries)", osv, info.Entries), nil
}

// mirrorFromProxy builds, in dir, a database from the newest
// golang.org/x/vulndb the module proxy has, unless dir already holds that
// version. It returns "golang.org/x/vulndb@VERSION (TIME)".
func (d *deps) mirrorFromProxy(dir string) (string, error) {
	tmp, err := os.MkdirTemp("", "deps-vulndb-mod-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// Outside any module, so this project's go.mod and go.sum are not touched.
	e := append(env(""), "GOFLAGS=-mod=mod")
	out, err := output(tmp, e, "go", "mod", "download", "-json", vulndbModule+"@latest")
	if err != nil {
		return "", err
	}
	var m struct{ Version, Dir, Info, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", err
	}
	if m.Error != "" || m.Dir == "" {
		return "", fmt.Errorf("%s: %s", vulndbModule, m.Error)
	}
	var when struct{ Time time.Time }
	if b, err := os.ReadFile(m.Info); err == nil {
		json.Unmarshal(b, &when)
	}
	src := vulndbModule + "@" + m.Version
	if !when.Time.IsZero() {
		src += " of " + when.Time.UTC().Format("2006-01-02")
	}
	stamp := filepath.Join(dir, "SOURCE")
	if b, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(b)) == src {
		return src, nil
	}
	logf("building a vulnerability database from %s", src)
	info, err := buildVulnDB(filepath.Join(m.Dir, "data", "osv"), dir, when.Time)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(stamp, []byte(src+"\n"), 0o644); err != nil {
		return "", err
	}
	logf("%d entries for %d modules, newest modified %s", info.Entries, info.Modules, info.Modified.Format(time.RFC3339))
	return src, nil
}

// reachable says whether a vulnerability database answers over HTTP.
func reachable(url string) bool {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Head(strings.TrimRight(url, "/") + "/index/modules.json.gz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
