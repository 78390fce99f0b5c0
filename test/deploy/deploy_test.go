package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The files checked, relative to the repository root.
const (
	rulesFile     = "deploy/prometheus/edgeproxy-rules.yml"
	rulesTestFile = "deploy/prometheus/edgeproxy-rules.test.yml"
	dashboardFile = "deploy/grafana/edgeproxy-dashboard.json"
	unitFile      = "deploy/systemd/edgeproxy.service"
	opsDoc        = "docs/operations.md"
	namesFile     = "internal/telemetry/names.go"
	metricsDoc    = "docs/metrics.md"
)

// root is the repository root: go test runs in this package's directory.
var root = filepath.Join("..", "..")

func path(rel string) string { return filepath.Join(root, filepath.FromSlash(rel)) }

func readFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(path(rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// promtool finds promtool. Without it the test is skipped, except in CI
// (CI set), which installs it and must not pass by skipping.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("promtool is not on PATH and CI is set: install it (Debian: apt-get install prometheus): %v", err)
		}
		t.Skipf("promtool is not on PATH (Debian: apt-get install prometheus); set CI to make this a failure")
	}
	return p
}

func run(t *testing.T, dir string, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPromtoolCheckRules runs "promtool check rules" on the rules, and
// checks that it found as many rules as this package reads from the file
// (so the other tests see every rule).
func TestPromtoolCheckRules(t *testing.T) {
	pt := promtool(t)
	out, err := run(t, root, time.Minute, pt, "check", "rules", filepath.FromSlash(rulesFile))
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
	m := regexp.MustCompile(`SUCCESS: (\d+) rules found`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("promtool check rules: no rule count in its output:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	if rules := readRules(t); n != len(rules) {
		t.Errorf("promtool found %d rules in %s, this test read %d: the reader in rules_test.go misses some", n, rulesFile, len(rules))
	}
}

// TestPromtoolTestRules runs the rules' unit tests.
func TestPromtoolTestRules(t *testing.T) {
	pt := promtool(t)
	out, err := run(t, root, 2*time.Minute, pt, "test", "rules", filepath.FromSlash(rulesTestFile))
	if err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", rulesTestFile, err, out)
	}
	t.Logf("promtool test rules: %s", strings.TrimSpace(out))
}

// TestRuleTestsCoverEveryAlert: each alert has at least one unit test case
// where it fires and one where it must not.
func TestRuleTestsCoverEveryAlert(t *testing.T) {
	fires, silent := readRuleTestCases(t)
	for _, name := range alertNames(readRules(t)) {
		if fires[name] == 0 {
			t.Errorf("%s: no test case where %s fires (exp_alerts with entries)", rulesTestFile, name)
		}
		if silent[name] == 0 {
			t.Errorf("%s: no test case where %s must not fire (exp_alerts: [])", rulesTestFile, name)
		}
	}
	rules := map[string]bool{}
	for _, name := range alertNames(readRules(t)) {
		rules[name] = true
	}
	for name := range fires {
		if !rules[name] {
			t.Errorf("%s tests alert %s, which %s does not define", rulesTestFile, name, rulesFile)
		}
	}
	for name := range silent {
		if !rules[name] {
			t.Errorf("%s tests alert %s, which %s does not define", rulesTestFile, name, rulesFile)
		}
	}
}

// TestRulesLabelsAndAnnotations: every alert has a severity the routing
// knows, a summary, a description and a runbook_url.
func TestRulesLabelsAndAnnotations(t *testing.T) {
	rules := readRules(t)
	if len(rules) == 0 {
		t.Fatalf("no rules read from %s", rulesFile)
	}
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		where := fmt.Sprintf("%s:%d: alert %s", rulesFile, r.Line, r.Alert)
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", where, s)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", where, a)
			}
		}
		if strings.TrimSpace(r.Expr) == "" {
			t.Errorf("%s: no expr", where)
		}
	}
}

// TestMetricNamesExist: every metric the rules and the dashboard use is
// one the proxy exports (internal/telemetry/names.go, or the Go client's
// process_* and go_* collectors, or Prometheus's up), histogram suffixes
// only on histograms, and every label they select or group by is one of
// those metrics' labels.
func TestMetricNamesExist(t *testing.T) {
	known := knownMetrics(t)
	var exprs []namedExpr
	for _, r := range readRules(t) {
		exprs = append(exprs, namedExpr{fmt.Sprintf("%s:%d: %s", rulesFile, r.Line, r.name()), r.Expr})
	}
	dash := readDashboard(t)
	for _, e := range dash.exprs {
		exprs = append(exprs, e)
	}
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions read from the rules and the dashboard", len(exprs))
	}
	for _, e := range exprs {
		checkExpr(t, known, e)
	}
	for _, v := range dash.labelValues {
		m, ok := known.resolve(v.metric)
		if !ok {
			t.Errorf("%s: label_values of %s, which edgeproxy does not export", v.where, v.metric)
			continue
		}
		if !m.labels[v.label] {
			t.Errorf("%s: label_values(%s, %s): %s has no label %s (it has %s)", v.where, v.metric, v.label, v.metric, v.label, m.labelList())
		}
	}
}

// TestDashboard: the dashboard is JSON Grafana can import, with the data
// source and instance variables, unique panel ids, panels that do not
// overlap, queries on the chosen data source and instances, and a panel
// for every metric the alerts watch.
func TestDashboard(t *testing.T) {
	dash := readDashboard(t)
	d := dash.raw
	if v, ok := d["schemaVersion"].(float64); !ok || v < 36 {
		t.Errorf("schemaVersion %v, want a number of at least 36", d["schemaVersion"])
	}
	if s, _ := d["uid"].(string); s == "" {
		t.Errorf("dashboard has no uid")
	}
	if s, _ := d["title"].(string); s == "" {
		t.Errorf("dashboard has no title")
	}

	vars := map[string]map[string]any{}
	if tpl, ok := d["templating"].(map[string]any); ok {
		list, _ := tpl["list"].([]any)
		for _, v := range list {
			m, _ := v.(map[string]any)
			name, _ := m["name"].(string)
			vars[name] = m
		}
	}
	if ds := vars["datasource"]; ds == nil || ds["type"] != "datasource" || ds["query"] != "prometheus" {
		t.Errorf("no variable datasource of type datasource with query prometheus: %v", ds)
	}
	if inst := vars["instance"]; inst == nil {
		t.Errorf("no variable instance")
	} else if dsUID(inst["datasource"]) != "${datasource}" {
		t.Errorf("variable instance does not query ${datasource}: %v", inst["datasource"])
	}

	ids := map[float64]string{}
	type rect struct {
		title      string
		x, y, w, h float64
	}
	var rects []rect
	for _, p := range dash.panels {
		title, _ := p["title"].(string)
		if title == "" {
			t.Errorf("panel id %v has no title", p["id"])
		}
		id, ok := p["id"].(float64)
		if !ok || id <= 0 || id != float64(int(id)) {
			t.Errorf("panel %q: id %v, want a positive integer", title, p["id"])
		} else if other, dup := ids[id]; dup {
			t.Errorf("panels %q and %q share id %v", other, title, id)
		} else {
			ids[id] = title
		}
		if g, ok := p["gridPos"].(map[string]any); ok {
			r := rect{title: title}
			r.x, _ = g["x"].(float64)
			r.y, _ = g["y"].(float64)
			r.w, _ = g["w"].(float64)
			r.h, _ = g["h"].(float64)
			if r.w <= 0 || r.h <= 0 || r.x < 0 || r.x+r.w > 24 {
				t.Errorf("panel %q: gridPos %v outside the 24-column grid", title, g)
			}
			if !p["nested"].(bool) {
				rects = append(rects, r)
			}
		} else {
			t.Errorf("panel %q has no gridPos", title)
		}
		if p["type"] == "row" {
			continue
		}
		if dsUID(p["datasource"]) != "${datasource}" {
			t.Errorf("panel %q: datasource %v, want uid ${datasource}", title, p["datasource"])
		}
		targets, _ := p["targets"].([]any)
		if len(targets) == 0 {
			t.Errorf("panel %q has no queries", title)
		}
		refIDs := map[string]bool{}
		for _, tg := range targets {
			m, _ := tg.(map[string]any)
			expr, _ := m["expr"].(string)
			ref, _ := m["refId"].(string)
			if refIDs[ref] {
				t.Errorf("panel %q: refId %q twice", title, ref)
			}
			refIDs[ref] = true
			if !strings.Contains(expr, `instance=~"$instance"`) {
				t.Errorf("panel %q: query %q does not select instance=~\"$instance\"", title, expr)
			}
			if ds, ok := m["datasource"]; ok && dsUID(ds) != "${datasource}" {
				t.Errorf("panel %q: query %s: datasource %v, want uid ${datasource}", title, ref, ds)
			}
		}
	}
	for i, a := range rects {
		for _, b := range rects[i+1:] {
			if a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h {
				t.Errorf("panels %q and %q overlap", a.title, b.title)
			}
		}
	}

	// A panel for every metric an alert watches (up aside: a down proxy
	// has nothing to draw), and for the metrics the dashboard is for.
	used := map[string]bool{}
	for _, e := range dash.exprs {
		for _, s := range mustScan(t, e).selectors {
			used[s.metric] = true
		}
	}
	want := []string{
		"edgeproxy_http_requests_total", "process_cpu_seconds_total", "go_goroutines",
		"edgeproxy_connections_active", "edgeproxy_connections_accepted_total",
		"edgeproxy_guard_zero_progress_reads_total", "edgeproxy_spin_kills_total", "edgeproxy_tripwire_trips_total",
		"edgeproxy_fleet_connected", "edgeproxy_fleet_catalog_age_seconds", "edgeproxy_certificate_expiry_seconds",
		"edgeproxy_machine_load", "edgeproxy_machine_band", "edgeproxy_upstream_connect_failures_total", "edgeproxy_udp_flows",
	}
	for _, r := range readRules(t) {
		for _, s := range mustScan(t, namedExpr{r.name(), r.Expr}).selectors {
			if s.metric != "up" {
				want = append(want, s.metric)
			}
		}
	}
	missing := map[string]bool{}
	for _, m := range want {
		if !used[m] {
			missing[m] = true
		}
	}
	for _, m := range sortedKeys(missing) {
		t.Errorf("no dashboard panel queries %s", m)
	}
}

// TestRunbooks: every alert's runbook_url is docs/operations.md#ANCHOR,
// ANCHOR is the heading "Alert: NAME" of that alert in the section "Alerts
// and runbooks", and every such heading belongs to an alert. Links inside
// operations.md to its own anchors, other docs and repository files must
// resolve too.
func TestRunbooks(t *testing.T) {
	doc := readFile(t, opsDoc)
	heads := headings(doc)
	anchors := map[string]bool{}
	for _, h := range heads {
		anchors[h.anchor] = true
	}
	inSection := false
	found := false
	runbooks := map[string]string{} // alert name -> anchor
	for _, h := range heads {
		if h.level <= 2 {
			inSection = h.text == "Alerts and runbooks"
			found = found || inSection
			continue
		}
		if inSection && h.level == 3 {
			if name, ok := strings.CutPrefix(h.text, "Alert: "); ok {
				if _, dup := runbooks[name]; dup {
					t.Errorf("%s: two runbooks for %s", opsDoc, name)
				}
				runbooks[name] = h.anchor
			}
		}
	}
	if !found {
		t.Fatalf("%s has no section \"## Alerts and runbooks\"", opsDoc)
	}

	rules := readRules(t)
	alerts := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		alerts[r.Alert] = true
		anchor, ok := runbooks[r.Alert]
		if !ok {
			t.Errorf("alert %s (%s:%d) has no runbook: add \"### Alert: %s\" under \"## Alerts and runbooks\" in %s", r.Alert, rulesFile, r.Line, r.Alert, opsDoc)
			continue
		}
		url := r.Annotations["runbook_url"]
		if want := opsDoc + "#" + anchor; url != want {
			t.Errorf("alert %s (%s:%d): runbook_url %q, want %q", r.Alert, rulesFile, r.Line, url, want)
		}
	}
	for _, name := range sortedKeys(runbooks) {
		if !alerts[name] {
			t.Errorf("%s has a runbook for %s, which %s does not define", opsDoc, name, rulesFile)
		}
	}

	// Links in operations.md.
	for _, l := range mdLinks(doc) {
		target, frag, _ := strings.Cut(l, "#")
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		if target == "" {
			if !anchors[frag] {
				t.Errorf("%s: link to #%s, which no heading there makes", opsDoc, frag)
			}
			continue
		}
		file := filepath.Join(filepath.Dir(path(opsDoc)), filepath.FromSlash(target))
		b, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("%s: link to %s: %v", opsDoc, l, err)
			continue
		}
		if frag != "" && strings.HasSuffix(target, ".md") {
			other := map[string]bool{}
			for _, h := range headings(string(b)) {
				other[h.anchor] = true
			}
			if !other[frag] {
				t.Errorf("%s: link to %s: %s has no heading with anchor %s", opsDoc, l, target, frag)
			}
		}
	}
}

type dashboard struct {
	raw         map[string]any
	panels      []map[string]any // rows and panels, nested ones too; "nested" says which
	exprs       []namedExpr
	labelValues []labelValuesQuery
}

type labelValuesQuery struct {
	where, metric, label string
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(path(dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var d dashboard
	if err := dec.Decode(&d.raw); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	if dec.More() {
		t.Fatalf("%s: more than one JSON value", dashboardFile)
	}
	var walk func(list []any, nested bool)
	walk = func(list []any, nested bool) {
		for _, p := range list {
			m, ok := p.(map[string]any)
			if !ok {
				t.Fatalf("%s: a panel that is not an object: %v", dashboardFile, p)
			}
			m["nested"] = nested
			d.panels = append(d.panels, m)
			title, _ := m["title"].(string)
			targets, _ := m["targets"].([]any)
			for _, tg := range targets {
				tm, _ := tg.(map[string]any)
				expr, _ := tm["expr"].(string)
				ref, _ := tm["refId"].(string)
				if strings.TrimSpace(expr) == "" {
					t.Errorf("%s: panel %q query %s has no expr", dashboardFile, title, ref)
					continue
				}
				d.exprs = append(d.exprs, namedExpr{fmt.Sprintf("%s: panel %q query %s", dashboardFile, title, ref), expr})
			}
			if sub, ok := m["panels"].([]any); ok {
				walk(sub, true)
			}
		}
	}
	panels, ok := d.raw["panels"].([]any)
	if !ok || len(panels) == 0 {
		t.Fatalf("%s has no panels", dashboardFile)
	}
	walk(panels, false)

	lv := regexp.MustCompile(`^\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
	if tpl, ok := d.raw["templating"].(map[string]any); ok {
		list, _ := tpl["list"].([]any)
		for _, v := range list {
			m, _ := v.(map[string]any)
			if m["type"] != "query" {
				continue
			}
			name, _ := m["name"].(string)
			q := m["query"]
			if qm, ok := q.(map[string]any); ok {
				q = qm["query"]
			}
			qs, _ := q.(string)
			where := fmt.Sprintf("%s: variable %s", dashboardFile, name)
			if sm := lv.FindStringSubmatch(qs); sm != nil {
				d.labelValues = append(d.labelValues, labelValuesQuery{where, sm[1], sm[2]})
			} else {
				t.Errorf("%s: query %q is not label_values(METRIC, LABEL), which this test can check", where, qs)
			}
		}
	}
	return d
}

func dsUID(v any) string {
	switch ds := v.(type) {
	case string:
		return ds
	case map[string]any:
		s, _ := ds["uid"].(string)
		return s
	}
	return ""
}

type heading struct {
	level  int
	text   string
	anchor string
}

// headings lists a Markdown file's headings (outside code fences) with the
// anchors GitHub gives them: lower case, punctuation dropped, spaces to
// hyphens, "-1", "-2"... on repeats.
func headings(doc string) []heading {
	var out []heading
	seen := map[string]int{}
	fence := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fence = !fence
			continue
		}
		if fence || !strings.HasPrefix(line, "#") {
			continue
		}
		level := len(line) - len(strings.TrimLeft(line, "#"))
		if level > 6 || len(line) == level || line[level] != ' ' {
			continue
		}
		text := strings.TrimSpace(line[level:])
		base := slug(text)
		anchor := base
		if n := seen[base]; n > 0 {
			anchor = fmt.Sprintf("%s-%d", base, n)
		}
		seen[base]++
		out = append(out, heading{level, text, anchor})
	}
	return out
}

func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		case r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mdLinks lists the targets of inline Markdown links outside code.
func mdLinks(doc string) []string {
	var out []string
	fence := false
	re := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	code := regexp.MustCompile("`[^`]*`")
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fence = !fence
			continue
		}
		if fence {
			continue
		}
		// A link's text may be code; what is inside backticks alone is not a link.
		line = code.ReplaceAllStringFunc(line, func(s string) string {
			return strings.Repeat("x", len(s))
		})
		for _, m := range re.FindAllStringSubmatch(line, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func alertNames(rules []rule) []string {
	var names []string
	for _, r := range rules {
		if r.Alert != "" && !slices.Contains(names, r.Alert) {
			names = append(names, r.Alert)
		}
	}
	return names
}
