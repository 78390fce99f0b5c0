package deploy_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"sort"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/meter"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

type metric struct {
	name   string
	typ    string // counter, gauge, histogram, summary, untyped
	labels map[string]bool
}

func (m metric) labelList() string {
	if len(m.labels) == 0 {
		return "none"
	}
	return strings.Join(sortedKeys(m.labels), ", ")
}

type metrics map[string]metric

// resolve finds the metric a series name belongs to: the name itself, or
// a histogram's (or summary's) _bucket, _sum and _count series.
func (k metrics) resolve(name string) (metric, bool) {
	if m, ok := k[name]; ok {
		return m, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		m, ok := k[base]
		if !ok {
			return metric{}, false
		}
		switch {
		case m.typ == "histogram":
		case m.typ == "summary" && suffix != "_bucket":
		default:
			return metric{}, false
		}
		labels := map[string]bool{}
		for l := range m.labels {
			labels[l] = true
		}
		if suffix == "_bucket" {
			labels["le"] = true
		}
		delete(labels, "quantile")
		return metric{name: name, typ: "counter", labels: labels}, true
	}
	return metric{}, false
}

// knownMetrics is every series name the proxy exports, with its labels:
//   - the names declared in internal/telemetry/names.go (parsed, since Go
//     cannot list a package's constants), with type and labels from
//     docs/metrics.md, which TestMetricsDoc keeps generated from the
//     registry;
//   - the process_* and go_* metrics of the registry telemetry.NewMetrics
//     builds, as gathered;
//   - up, which Prometheus adds to every target.
//
// Every series also has the target's job and instance labels.
func knownMetrics(t *testing.T) metrics {
	t.Helper()
	known := metrics{}
	names := declaredNames(t)
	table := metricsTable(t)
	for _, n := range names {
		m, ok := table[n]
		if !ok {
			// Declared but not yet in the generated doc (TestMetricsDoc
			// fails for that): known, but with no type or labels to check
			// against, which checkExpr reports if it is used.
			m = metric{name: n, typ: "undocumented", labels: map[string]bool{}}
		}
		known[n] = m
	}
	if len(known) < 40 {
		t.Fatalf("only %d metric names read from %s", len(known), namesFile)
	}

	reg := telemetry.NewMetrics(&iox.Stats{}, &meter.Apps{}).Registry
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	std := 0
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, "process_") && !strings.HasPrefix(name, "go_") {
			continue
		}
		m := metric{name: name, typ: strings.ToLower(f.GetType().String()), labels: map[string]bool{}}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				m.labels[l.GetName()] = true
			}
		}
		if f.GetType() == dto.MetricType_SUMMARY {
			m.labels["quantile"] = true
		}
		known[name] = m
		std++
	}
	if _, ok := known["process_cpu_seconds_total"]; !ok {
		t.Fatalf("the registry exports no process_cpu_seconds_total (process collector missing?)")
	}
	if _, ok := known["go_goroutines"]; !ok {
		t.Fatalf("the registry exports no go_goroutines (Go collector missing?)")
	}
	known["up"] = metric{name: "up", typ: "gauge", labels: map[string]bool{}}
	for name, m := range known {
		m.labels["job"] = true
		m.labels["instance"] = true
		known[name] = m
	}
	return known
}

// declaredNames parses names.go for its string constants.
func declaredNames(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path(namesFile), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			for _, v := range spec.(*ast.ValueSpec).Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("%s: a constant that is not a string literal at %s", namesFile, fset.Position(v.Pos()))
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, s)
			}
		}
	}
	return names
}

// metricsTable reads docs/metrics.md's table: name, type and labels.
func metricsTable(t *testing.T) metrics {
	t.Helper()
	out := metrics{}
	for _, line := range strings.Split(readFile(t, metricsDoc), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, " | ")
		if len(cells) < 4 {
			continue
		}
		name := strings.Trim(strings.TrimPrefix(cells[0], "| "), "`")
		m := metric{name: name, typ: strings.TrimSpace(cells[1]), labels: map[string]bool{}}
		if ls := strings.TrimSpace(cells[2]); ls != "none" {
			for _, l := range strings.Split(ls, ",") {
				m.labels[strings.Trim(strings.TrimSpace(l), "`")] = true
			}
		}
		out[name] = m
	}
	return out
}

type namedExpr struct {
	where, expr string
}

// checkExpr checks that every metric an expression selects exists, that
// the labels its selectors name belong to that metric, and that the labels
// it groups or matches by belong to one of its metrics.
func checkExpr(t *testing.T, known metrics, e namedExpr) {
	t.Helper()
	sc, err := scanPromQL(e.expr)
	if err != nil {
		t.Errorf("%s: %v in %q", e.where, err, e.expr)
		return
	}
	if len(sc.selectors) == 0 {
		t.Errorf("%s: no metric in %q", e.where, e.expr)
	}
	all := map[string]bool{}
	for _, s := range sc.selectors {
		m, ok := known.resolve(s.metric)
		if !ok {
			t.Errorf("%s: %s is not a metric edgeproxy exports (%s, process_*, go_*, up; _bucket/_sum/_count only on histograms)", e.where, s.metric, namesFile)
			continue
		}
		if m.typ == "undocumented" {
			t.Errorf("%s: %s is declared in %s but not in %s, so its labels are unknown: regenerate it (go test ./internal/telemetry -run TestMetricsDoc -update)", e.where, s.metric, namesFile, metricsDoc)
			continue
		}
		for l := range m.labels {
			all[l] = true
		}
		for _, l := range s.labels {
			if !m.labels[l] {
				t.Errorf("%s: %s has no label %s (it has %s)", e.where, s.metric, l, m.labelList())
			}
		}
	}
	for _, l := range sc.grouping {
		if !all[l] && len(all) > 0 {
			t.Errorf("%s: groups or matches by %s, which none of its metrics has (%s)", e.where, l, strings.Join(sortedKeys(all), ", "))
		}
	}
}

func mustScan(t *testing.T, e namedExpr) scanned {
	t.Helper()
	sc, err := scanPromQL(e.expr)
	if err != nil {
		t.Fatalf("%s: %v in %q", e.where, err, e.expr)
	}
	return sc
}

type selector struct {
	metric string
	labels []string // label names in its matchers
}

type scanned struct {
	selectors []selector
	grouping  []string // labels of by, without, on, ignoring, group_left, group_right
}

var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "offset": true, "bool": true,
	"inf": true, "nan": true, "atan2": true,
}

var promqlModifiers = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

var promqlAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

var promqlFunctions = map[string]bool{
	"abs": true, "absent": true, "absent_over_time": true, "ceil": true, "changes": true,
	"clamp": true, "clamp_max": true, "clamp_min": true, "day_of_month": true, "day_of_week": true,
	"day_of_year": true, "days_in_month": true, "delta": true, "deriv": true, "exp": true,
	"floor": true, "histogram_quantile": true, "histogram_count": true, "histogram_sum": true,
	"histogram_fraction": true, "holt_winters": true, "hour": true, "idelta": true, "increase": true,
	"irate": true, "label_join": true, "label_replace": true, "ln": true, "log2": true, "log10": true,
	"minute": true, "month": true, "predict_linear": true, "rate": true, "resets": true, "round": true,
	"scalar": true, "sgn": true, "sort": true, "sort_desc": true, "sqrt": true, "time": true,
	"timestamp": true, "vector": true, "year": true, "avg_over_time": true, "min_over_time": true,
	"max_over_time": true, "sum_over_time": true, "count_over_time": true, "quantile_over_time": true,
	"stddev_over_time": true, "stdvar_over_time": true, "last_over_time": true, "present_over_time": true,
	"start": true, "end": true,
}

// scanPromQL lists the metric selectors and grouping labels of a PromQL
// expression. The module has no PromQL parser, so this is a tokenizer that
// knows the language's keywords and functions: any other identifier is a
// metric name. Grafana's $variables are skipped.
func scanPromQL(expr string) (scanned, error) {
	var out scanned
	s := expr
	i := 0
	lastMetric := -1 // index in out.selectors of the metric just read, while a {...} may follow
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])) {
			i++
		}
	}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	readString := func() error {
		q := s[i]
		i++
		for i < len(s) && s[i] != q {
			if s[i] == '\\' && q != '`' {
				i++
			}
			i++
		}
		if i >= len(s) {
			return fmt.Errorf("unterminated string")
		}
		i++
		return nil
	}
	readLabelList := func() ([]string, error) {
		// At "(": label names separated by commas, up to ")".
		i++
		var labels []string
		for {
			skipSpace()
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated label list")
			}
			if s[i] == ')' {
				i++
				return labels, nil
			}
			if s[i] == ',' {
				i++
				continue
			}
			if !isIdentStart(s[i]) {
				return nil, fmt.Errorf("unexpected %q in a label list", s[i])
			}
			j := i
			for i < len(s) && isIdent(s[i]) {
				i++
			}
			labels = append(labels, s[j:i])
		}
	}
	for {
		skipSpace()
		if i >= len(s) {
			break
		}
		c := s[i]
		switch {
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			if err := readString(); err != nil {
				return out, err
			}
			lastMetric = -1
		case c == '$':
			// Grafana variable: $name or ${name...}.
			i++
			if i < len(s) && s[i] == '{' {
				for i < len(s) && s[i] != '}' {
					i++
				}
				i++
			} else {
				for i < len(s) && isIdent(s[i]) {
					i++
				}
			}
		case c == '[':
			for i < len(s) && s[i] != ']' {
				i++
			}
			i++
			lastMetric = -1
		case c == '{':
			// Label matchers: NAME OP "value", ...
			i++
			var labels []string
			for {
				skipSpace()
				if i >= len(s) {
					return out, fmt.Errorf("unterminated {")
				}
				if s[i] == '}' {
					i++
					break
				}
				switch {
				case s[i] == ',':
					i++
				case s[i] == '"' || s[i] == '\'' || s[i] == '`':
					if err := readString(); err != nil {
						return out, err
					}
				case isIdentStart(s[i]):
					j := i
					for i < len(s) && isIdent(s[i]) {
						i++
					}
					labels = append(labels, s[j:i])
				case strings.ContainsRune("=!~", rune(s[i])):
					i++
				default:
					return out, fmt.Errorf("unexpected %q in label matchers", s[i])
				}
			}
			if lastMetric < 0 {
				return out, fmt.Errorf("label matchers without a metric name: this test cannot check them")
			}
			out.selectors[lastMetric].labels = append(out.selectors[lastMetric].labels, labels...)
			lastMetric = -1
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			// A number or a duration (5m, 1h30m, 1e3, 0x1f).
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
			lastMetric = -1
		case isIdentStart(c):
			j := i
			for i < len(s) && isIdent(s[i]) {
				i++
			}
			word := s[j:i]
			lower := strings.ToLower(word)
			k := i
			for k < len(s) && strings.ContainsRune(" \t\r\n", rune(s[k])) {
				k++
			}
			call := k < len(s) && s[k] == '('
			switch {
			case promqlModifiers[lower]:
				if call {
					i = k
					labels, err := readLabelList()
					if err != nil {
						return out, err
					}
					out.grouping = append(out.grouping, labels...)
				} else if lower != "group_left" && lower != "group_right" {
					return out, fmt.Errorf("%s without a label list", word)
				}
				lastMetric = -1
			case promqlKeywords[lower]:
				lastMetric = -1
			case promqlAggregations[word]:
				lastMetric = -1
			case call:
				if !promqlFunctions[word] {
					return out, fmt.Errorf("unknown function %s", word)
				}
				lastMetric = -1
			default:
				out.selectors = append(out.selectors, selector{metric: word})
				lastMetric = len(out.selectors) - 1
			}
		default:
			i++
			lastMetric = -1
		}
	}
	sort.SliceStable(out.selectors, func(a, b int) bool { return out.selectors[a].metric < out.selectors[b].metric })
	return out, nil
}

// TestScanPromQL pins the tokenizer the metric checks rely on.
func TestScanPromQL(t *testing.T) {
	sc, err := scanPromQL(`sum by (instance, layer) (increase(edgeproxy_spin_kills_total{instance=~"$instance", reason!="a,b{c}"}[$__rate_interval] offset 5m)) > 0
	or on (job) group_left (name) (x_total > 1e3 unless up offset 1h == bool 1)`)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(sc.selectors, sc.grouping)
	want := `[{edgeproxy_spin_kills_total [instance reason]} {up []} {x_total []}] [instance layer job name]`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	for _, bad := range []string{`rat(x[5m])`, `{__name__="x"}`, `sum by x (y)`, `x{a="b}`} {
		if _, err := scanPromQL(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
