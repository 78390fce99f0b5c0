package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func modFixture(t *testing.T) *ModFile {
	t.Helper()
	m, err := parseModFile(read(t, "gomod-edit.json"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDirect(t *testing.T) {
	m := modFixture(t)
	d := m.Direct()
	if len(d) != 24 {
		t.Errorf("%d direct requirements, want 24: %v", len(d), d)
	}
	for _, p := range d {
		if p == "github.com/klauspost/compress" || p == "golang.org/x/text" {
			t.Errorf("indirect %s listed as direct", p)
		}
	}
	if d[0] != "github.com/BurntSushi/toml" || m.Toolchain != "go1.27.3" || m.Go != "1.26.0" {
		t.Errorf("first %s, toolchain %s, go %s", d[0], m.Toolchain, m.Go)
	}
}

func TestDirectUpdates(t *testing.T) {
	m := modFixture(t)
	listed, err := parseGoList(read(t, "golist-u.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 6 {
		t.Fatalf("parsed %d modules, want 6", len(listed))
	}
	// An indirect requirement with an update must not be offered.
	listed = append(listed, Module{Path: "golang.org/x/text", Version: "v0.43.0", Indirect: true, Update: &Module{Version: "v0.44.0"}})
	got := directUpdates(m, listed)
	var paths []string
	for _, u := range got {
		paths = append(paths, u.Path+" "+u.From+"→"+u.To)
	}
	want := []string{
		"github.com/pires/go-proxyproto v0.15.0→v0.16.0",
		"github.com/google/pprof v0.0.0-20261105003125-4bf881d7fb0b→" + got[1].To,
		"golang.org/x/net v0.62.0→v0.63.0",
		"google.golang.org/grpc v1.83.2→v1.85.0",
	}
	if len(got) != 4 || got[1].Path != "github.com/google/pprof" {
		// pprof's update depends on the recording; check the rest exactly.
		want = []string{"github.com/pires/go-proxyproto v0.15.0→v0.16.0", "golang.org/x/net v0.62.0→v0.63.0", "google.golang.org/grpc v1.83.2→v1.85.0"}
	}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("updates\n got %v\nwant %v", paths, want)
	}
	if got[0].Time != "2026-10-19T19:11:49Z" {
		t.Errorf("release time %q", got[0].Time)
	}
}

func TestParseGoListBad(t *testing.T) {
	if _, err := parseGoList([]byte(`{"Path": "a"} {"Path":`)); err == nil {
		t.Error("truncated stream parsed")
	}
}

func TestDiffModFiles(t *testing.T) {
	old := modFixture(t)
	var new ModFile
	b, _ := json.Marshal(old)
	json.Unmarshal(b, &new)
	new.Toolchain = "go1.27.4"
	for i := range new.Require {
		switch new.Require[i].Path {
		case "golang.org/x/net":
			new.Require[i].Version = "v0.63.0"
		case "golang.org/x/text":
			new.Require[i].Version = "v0.44.0"
		}
	}
	new.Require = append(new.Require, Require{Path: "example.com/new", Version: "v1.0.0", Indirect: true})
	var got []string
	for _, c := range diffModFiles(old, &new) {
		got = append(got, c.String())
	}
	want := []string{
		"toolchain go1.27.3 → go1.27.4",
		"golang.org/x/net v0.62.0 → v0.63.0",
		"example.com/new (none) → v1.0.0",
		"golang.org/x/text v0.43.0 → v0.44.0",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("diff\n got %q\nwant %q", got, want)
	}
	if d := diffModFiles(old, old); len(d) != 0 {
		t.Errorf("diff of a file with itself: %v", d)
	}
}

func TestGoVersionOrder(t *testing.T) {
	order := []string{"go1.3.1", "go1.9beta2", "go1.9rc1", "go1.9", "go1.20", "go1.21rc2", "go1.21.0", "go1.27.3", "go1.27.4", "go1.27.10", "go1.28rc1", "go1.28.0"}
	for i := 1; i < len(order); i++ {
		a, err := parseGoVersion(order[i-1])
		if err != nil {
			t.Fatal(err)
		}
		b, err := parseGoVersion(order[i])
		if err != nil {
			t.Fatal(err)
		}
		if a.Compare(b) >= 0 || b.Compare(a) <= 0 {
			t.Errorf("%s should be older than %s", order[i-1], order[i])
		}
	}
	v, _ := parseGoVersion("1.27.4")
	if v.String() != "go1.27.4" || !v.Stable() {
		t.Errorf("1.27.4 reads as %s", v)
	}
	for _, bad := range []string{"go1", "go1.27.x", "1.27.4.linux-amd64", "gox"} {
		if _, err := parseGoVersion(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestToolchainUpdate(t *testing.T) {
	vs, err := parseToolchainVersions(read(t, "toolchain-versions.json"), "linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) < 100 || vs[0].String() != "go1.2.2" {
		t.Fatalf("%d versions, first %v", len(vs), vs[0])
	}
	cur, _ := parseGoVersion("go1.27.3")
	u := toolchainUpdate(cur, vs)
	if u.Target() == nil || u.Target().String() != "go1.27.4" || u.Patch.String() != "go1.27.4" {
		t.Errorf("update of go1.27.3: %+v", u)
	}
	// A newer line, and release candidates, which are never offered.
	rc, _ := parseGoVersion("go1.29rc1")
	next, _ := parseGoVersion("go1.28.1")
	u = toolchainUpdate(cur, append(vs, rc, next))
	if u.Target().String() != "go1.28.1" || u.Patch.String() != "go1.27.4" {
		t.Errorf("with go1.28.1: target %v, patch %v", u.Target(), u.Patch)
	}
	latest, _ := parseGoVersion("go1.27.4")
	if u := toolchainUpdate(latest, vs); u.Target() != nil {
		t.Errorf("go1.27.4 offered %v", u.Target())
	}
	other, _ := parseToolchainVersions(read(t, "toolchain-versions.json"), "darwin", "arm64")
	// The recording has darwin-arm64 builds from go1.25.0 on only.
	if len(other) == 0 || other[0].String() != "go1.25.0" || len(other) >= len(vs) {
		t.Errorf("darwin-arm64 versions mixed with others: %v", other)
	}
}

func TestToolchainPins(t *testing.T) {
	mk := "# comment\nexport GOTOOLCHAIN := go1.27.3\nGO ?= go\n\ttest: export GOTOOLCHAIN := go1.0.0 inside\n"
	if v := makefileToolchain(mk); v != "go1.27.3" {
		t.Errorf("Makefile pin %q", v)
	}
	out, err := setMakefileToolchain(mk, "go1.27.4")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(mk, "go1.27.3", "go1.27.4", 1); out != want {
		t.Errorf("Makefile\n%s\nwant\n%s", out, want)
	}
	ci := "#!/usr/bin/env bash\nset -e\nexport GOTOOLCHAIN=go1.27.3\nexport CI=true\necho GOTOOLCHAIN=go1.27.3\n"
	out, err = setCIToolchain(ci, "go1.28.0")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(ci, "export GOTOOLCHAIN=go1.27.3", "export GOTOOLCHAIN=go1.28.0", 1); out != want {
		t.Errorf(".ci/run\n%s\nwant\n%s", out, want)
	}
	quoted := "export GOTOOLCHAIN=\"go1.27.3\"\n"
	if out, _ := setCIToolchain(quoted, "go1.27.4"); out != "export GOTOOLCHAIN=\"go1.27.4\"\n" || ciToolchain(quoted) != "go1.27.3" {
		t.Errorf("quoted: %q", out)
	}
	if _, err := setCIToolchain("export GOTOOLCHAIN=go1\nexport GOTOOLCHAIN=go2\n", "go3"); err == nil {
		t.Error("two pins rewritten")
	}
	if _, err := setMakefileToolchain("GO ?= go\n", "go3"); err == nil {
		t.Error("missing pin not reported")
	}
}

func TestParseSelection(t *testing.T) {
	s, err := parseSelection("golang.org/x/net, github.com/nats-io/nats-server/v2@v2.15.4 go@go1.27.4")
	if err != nil {
		t.Fatal(err)
	}
	want := Selection{Modules: []Named{{"golang.org/x/net", ""}, {"github.com/nats-io/nats-server/v2", "v2.15.4"}}, Go: true, GoVersion: "go1.27.4"}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v\nwant %+v", s, want)
	}
	for _, spec := range []string{"", "none", "  "} {
		if s, err := parseSelection(spec); err != nil || !s.Empty() {
			t.Errorf("%q: %+v %v", spec, s, err)
		}
	}
	if s, _ := parseSelection("all"); !s.All || s.Go {
		t.Errorf("all: %+v", s)
	}
	for _, bad := range []string{"net", "golang.org/x/net@", "golang.org/x/net@0.63.0", "go@banana", "go go", "all@v1", "none go", "a.b/c a.b/c"} {
		if _, err := parseSelection(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestResolve(t *testing.T) {
	m := modFixture(t)
	updates := []Update{{Path: "golang.org/x/net", From: "v0.62.0", To: "v0.63.0"}, {Path: "google.golang.org/grpc", From: "v1.83.2", To: "v1.85.0"}}
	cur, _ := parseGoVersion("go1.27.3")
	next, _ := parseGoVersion("go1.27.4")
	tc := ToolchainUpdate{Current: cur, Patch: &next, Latest: &next}
	avail := []GoVersion{cur, next}

	p, err := resolve(Selection{All: true}, m, updates, tc, avail)
	if err != nil || len(p.Modules) != 2 || p.Toolchain == nil || p.Toolchain.String() != "go1.27.4" {
		t.Errorf("all: %+v %v", p, err)
	}
	if got := goGetArgs(p); !reflect.DeepEqual(got, []string{"get", "golang.org/x/net@v0.63.0", "google.golang.org/grpc@v1.85.0"}) {
		t.Errorf("go get %v", got)
	}

	sel, _ := parseSelection("golang.org/x/net")
	p, err = resolve(sel, m, updates, tc, avail)
	if err != nil || len(p.Modules) != 1 || p.Toolchain != nil {
		t.Errorf("one module: %+v %v", p, err)
	}

	sel, _ = parseSelection("github.com/BurntSushi/toml@v1.7.0 go")
	p, err = resolve(sel, m, updates, tc, avail)
	if err != nil || p.Modules[0].From != "v1.6.0" || p.Modules[0].To != "v1.7.0" || p.Toolchain.String() != "go1.27.4" {
		t.Errorf("explicit version: %+v %v", p, err)
	}

	for spec, why := range map[string]string{
		"golang.org/x/text":          "indirect",
		"example.com/nope":           "not required",
		"github.com/BurntSushi/toml": "no update",
		"go@go1.27.3":                "already",
		"go@go1.99.0":                "not offered",
		"golang.org/x/net@v0.62.0":   "already",
	} {
		sel, err := parseSelection(spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resolve(sel, m, updates, tc, avail); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%s: error %v, want one saying %q", spec, err, why)
		}
	}
	sel, _ = parseSelection("go")
	if _, err := resolve(sel, m, updates, ToolchainUpdate{Current: next}, avail); err == nil {
		t.Error("go applied with no newer toolchain")
	}
}

func TestBenchCompare(t *testing.T) {
	prev, err := parseBenchCSV(strings.NewReader(string(read(t, "bench-prev.csv"))))
	if err != nil {
		t.Fatal(err)
	}
	if len(prev) != 4 || prev[0].Scenario != "http1" || prev[0].CPUPerUnit != 0.30 {
		t.Fatalf("prev rows: %+v", prev)
	}
	if !prev[2].Idle() || prev[2].RSSPerConnKiB != 10 || !math.IsNaN(prev[2].CPUPerUnit) {
		t.Errorf("idle row: %+v", prev[2])
	}
	new, err := parseBenchCSV(strings.NewReader(string(read(t, "bench-new.csv"))))
	if err != nil {
		t.Fatal(err)
	}
	ds := compareBench(prev, new, 0.15)
	got := map[string]BenchDelta{}
	for _, d := range ds {
		got[d.Scenario] = d
	}
	if d := got["http1"]; math.Abs(d.CPU-1.1) > 1e-9 || len(d.Worse) != 0 || pct(d.CPU) != "+10.0%" {
		t.Errorf("http1: %+v", d)
	}
	if d := got["tcp-stream"]; pct(d.CPU) != "-20.0%" || !reflect.DeepEqual(d.Worse, []string{"throughput"}) {
		t.Errorf("tcp-stream: cpu %s throughput %s worse %v", pct(d.CPU), pct(d.Throughput), d.Worse)
	}
	if d := got["idle-tls"]; pct(d.Mem) != "+30.0%" || !reflect.DeepEqual(d.Worse, []string{"memory"}) || pct(d.CPU) != "n/a" {
		t.Errorf("idle-tls: %+v", d)
	}
	if d := got["h2"]; !reflect.DeepEqual(d.Worse, []string{"failed"}) {
		t.Errorf("h2 failed on the new build: %+v", d)
	}
	if _, err := parseBenchCSV(strings.NewReader("a,b\n1,2\n")); err == nil {
		t.Error("CSV without the bench's columns accepted")
	}
}

func TestGoTestText(t *testing.T) {
	r := parseGoTestText(read(t, "gotest.txt"))
	if !r.Ran || r.Status(shapesPkg) != "FAIL" || r.Status("github.com/edgeproxy/edgeproxy/test/ops") != "ok" ||
		r.Status("github.com/edgeproxy/edgeproxy/cmd/edgeproxy") != "FAIL" || r.Status("github.com/edgeproxy/edgeproxy/internal/empty") != "" {
		t.Errorf("%+v", r)
	}
	if !reflect.DeepEqual(r.FailedTests, []string{"TestShapes", "TestShapes/cn-junk-hold"}) {
		t.Errorf("failed tests %v", r.FailedTests)
	}
	if r := parseGoTestText([]byte("go vet ./...\nvet: internal/x.go:1: bad\nmake: *** [lint] Error 1\n")); r.Ran {
		t.Errorf("lint failure read as a test run: %+v", r)
	}
	j := parseTest2JSON(read(t, "shapes-fail.json"))
	if j.Status(shapesPkg) != "FAIL" || len(j.FailedTests) != 2 {
		t.Errorf("test2json: %+v", j)
	}
}

func TestJudgeStorm(t *testing.T) {
	v, err := judgeStorm(read(t, "storm-ok.json"), 0)
	if err != nil || !v.Pass || len(v.Problems) != 0 || !strings.Contains(v.Summary, "6/6 connections ok") {
		t.Errorf("ok storm: %+v %v", v, err)
	}
	v, err = judgeStorm(read(t, "storm-spin.json"), 3)
	if err != nil || v.Pass {
		t.Fatalf("spinning storm passed: %+v %v", v, err)
	}
	all := strings.Join(v.Problems, "\n")
	for _, want := range []string{"cn-junk-hold: 2 of 3 not ok (timeout 2)", "first other error: boom", "98.5% of a core", "3 client connections still open", "edgeproxy_guard_zero_progress_reads_total rose by 12000"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
	if v, _ := judgeStorm(read(t, "storm-ok.json"), 1); v.Pass {
		t.Error("a connection left open passed")
	}
	if _, err := judgeStorm([]byte("storm: nothing answers"), 0); err == nil {
		t.Error("non-JSON storm output judged")
	}
}

func TestBuildVulnDB(t *testing.T) {
	out := filepath.Join(t.TempDir(), "db")
	asOf := time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC)
	info, err := buildVulnDB(filepath.Join("testdata", "osv"), out, asOf)
	if err != nil {
		t.Fatal(err)
	}
	if info.Entries != 2 || info.Modules != 2 || !info.Modified.Equal(asOf) {
		t.Errorf("info %+v", info)
	}
	db, _ := os.ReadFile(filepath.Join(out, "index", "db.json"))
	if string(db) != `{"modified":"2026-11-05T23:49:57Z"}` {
		t.Errorf("db.json %s", db)
	}
	mods, _ := os.ReadFile(filepath.Join(out, "index", "modules.json"))
	want := `[{"path":"example.com/a","vulns":[{"id":"GO-2099-0001","modified":"0001-01-01T00:00:00Z"},{"id":"GO-2099-0002","modified":"0001-01-01T00:00:00Z"}]},` +
		`{"path":"example.com/b","vulns":[{"id":"GO-2099-0001","modified":"0001-01-01T00:00:00Z"}]}]`
	if string(mods) != want {
		t.Errorf("modules.json\n got %s\nwant %s", mods, want)
	}
	entry, _ := os.ReadFile(filepath.Join(out, "ID", "GO-2099-0001.json"))
	orig, _ := os.ReadFile(filepath.Join("testdata", "osv", "GO-2099-0001.json"))
	if string(entry) != string(orig) {
		t.Error("entry not copied unchanged")
	}
	if _, err := buildVulnDB(t.TempDir(), filepath.Join(t.TempDir(), "db"), asOf); err == nil {
		t.Error("empty directory made a database")
	}
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "GO-1.json"), []byte(`{"id":"GO-2"}`), 0o644)
	if _, err := buildVulnDB(bad, filepath.Join(t.TempDir(), "db"), asOf); err == nil {
		t.Error("entry under the wrong file name accepted")
	}
}

func TestGovulncheckJSON(t *testing.T) {
	r, err := parseGovulncheckJSON(read(t, "govulncheck.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) != 1 || r.Findings[0].ID != "GO-2026-5932" || r.Findings[0].Level != "required" || len(r.Called()) != 0 || r.GoVersion != "go1.27.3" {
		t.Errorf("recorded run: %+v", r)
	}
	r, err = parseGovulncheckJSON(read(t, "govulncheck-called.json"))
	if err != nil {
		t.Fatal(err)
	}
	c := r.Called()
	if len(c) != 1 || c[0].ID != "GO-2099-0001" || c[0].Fixed != "v0.63.0" || c[0].Summary != "x/net: a crash" || r.Findings[1].Level != "imported" {
		t.Errorf("called: %+v", r.Findings)
	}
	if !r.DBLastModified.Equal(time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC)) {
		t.Errorf("db date %v", r.DBLastModified)
	}
	if _, err := parseGovulncheckJSON([]byte("{not json")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestRenderReport(t *testing.T) {
	prev, _ := parseBenchCSV(strings.NewReader(string(read(t, "bench-prev.csv"))))
	new, _ := parseBenchCSV(strings.NewReader(string(read(t, "bench-new.csv"))))
	vr, _ := parseGovulncheckJSON(read(t, "govulncheck-called.json"))
	start := time.Date(2026, 12, 5, 7, 0, 0, 0, time.UTC)
	r := &Report{
		Started: start, Finished: start.Add(14 * time.Minute), Head: "f293d91",
		Applied: []Change{{Path: "golang.org/x/net", From: "v0.62.0", To: "v0.63.0"}, {Path: "golang.org/x/text", From: "v0.43.0", To: "v0.44.0", Indirect: true}},
		Checks: []CheckResult{
			{"build previous", "PASS", "HEAD f293d91"}, {"tests (make test)", "PASS", "40 packages ok"},
			{"shapes (test/shapes)", "PASS", ""}, {"storm (new build)", "PASS", "2000/2000 connections ok"},
		},
		Bench: compareBench(prev, new, 0.15), BenchOK: true, Tolerance: 0.15,
		Vuln: VulnSection{Ran: true, Result: vr, DBSource: "local mirror /db"},
	}
	out := r.render()
	for _, want := range []string{
		"report: PASS", "golang.org/x/net v0.62.0 → v0.63.0\n", "golang.org/x/text v0.43.0 → v0.44.0 (indirect)",
		"+10.0%", "13.0 KiB/conn", "+30.0%", "REVIEW: worse in tcp-stream (throughput); idle-tls (memory); h2 (failed)",
		"1 reachable from the code", "GO-2099-0001 golang.org/x/net@v0.62.0, fixed in v0.63.0", "newest entry 2026-11-05 23:49 UTC",
		"GO-2099-0002 stdlib@v1.27.3 (imported), no fix yet",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	r.Checks = append(r.Checks, CheckResult{"storm (new build)", "FAIL", "x"})
	if !r.Failed() || !strings.Contains(r.render(), "report: FAIL") {
		t.Error("a failed check does not fail the report")
	}
	none := VulnSection{Skipped: "no vulnerability database reachable"}
	if s := none.render(); !strings.Contains(s, "NOT CHECKED: no vulnerability database reachable") {
		t.Errorf("unchecked: %s", s)
	}
	l := &Listing{Updates: []Update{{Path: "golang.org/x/net", From: "v0.62.0", To: "v0.63.0", Time: "2026-11-17T18:09:36Z", Retracted: true}},
		Toolchain: ToolchainUpdate{Current: GoVersion{1, 27, kindRelease, 3}, Latest: &GoVersion{1, 28, kindRelease, 0}, Patch: &GoVersion{1, 27, kindRelease, 4}},
		Pinned:    map[string]string{"go.mod": "go1.27.3", "Makefile": "go1.27.3", ".ci/run": "go1.27.2"}, Vuln: none}
	s := l.render()
	for _, want := range []string{"golang.org/x/net  v0.62.0 → v0.63.0  released 2026-11-17; CURRENT VERSION RETRACTED", "go  go1.27.3 → go1.28.0", "APPLY=go@go1.27.4", "the pins disagree"} {
		if !strings.Contains(s, want) {
			t.Errorf("listing lacks %q:\n%s", want, s)
		}
	}
}

func TestCountOpenConns(t *testing.T) {
	ports := map[int]bool{0x4E20: true} // 20000
	got := countOpenConns(string(read(t, "proc-net-tcp.txt")), ports)
	// Of the five sockets on port 20000: the listener, one TIME_WAIT with
	// no owner and three owned (two ESTABLISHED, one CLOSE_WAIT).
	if got != 3 {
		t.Errorf("%d open, want 3", got)
	}
	if n := countOpenConns(string(read(t, "proc-net-tcp.txt")), map[int]bool{9: true}); n != 0 {
		t.Errorf("%d open on an unused port", n)
	}
}
