package telemetry

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/meter"
)

var update = flag.Bool("update", false, "rewrite docs/metrics.md from the registry")

// metricsDocPath is relative to this package: go test runs in its directory.
var metricsDocPath = filepath.Join("..", "..", "docs", "metrics.md")

const regenerate = "go test ./internal/telemetry -run TestMetricsDoc -update"

// TestMetricsDoc keeps docs/metrics.md generated from the registry the
// server builds: a metric added, renamed or re-labelled without
// regenerating the doc fails here. It also fails when names.go declares a
// name that nothing registers.
func TestMetricsDoc(t *testing.T) {
	metrics := documentedMetrics(t)
	got := renderMetricsDoc(metrics)

	// Every name declared in names.go must be registered, and so be in
	// the rendered doc.
	for _, name := range declaredNames(t) {
		if !bytes.Contains(got, []byte("`"+name+"`")) {
			t.Errorf("names.go declares %s but nothing registers it (or the test does not touch it)", name)
		}
	}

	if *update {
		if err := os.WriteFile(metricsDocPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(metricsDocPath)
	if err != nil {
		t.Fatalf("%v (generate it with: %s)", err, regenerate)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale; regenerate it with: %s", metricsDocPath, regenerate)
	}
}

// metricDoc is one row of the table.
type metricDoc struct {
	name, typ, help string
	labels          []string
}

// documentedMetrics builds the registry as the server does and lists every
// edgeproxy_* metric in it. Names, help and label names come from the
// collectors' descriptions; the type comes from a gathered sample, so
// every metric is made to produce one.
func documentedMetrics(t *testing.T) []metricDoc {
	t.Helper()
	stats := &iox.Stats{}
	apps := &meter.Apps{}
	m := NewMetrics(stats, apps)
	// The guard, app and machine collectors emit samples only for layers,
	// apps and machines that exist.
	stats.Layer("tcp")
	apps.Totals("app")
	m.SetMachines(func() []MachineStat { return []MachineStat{{App: "app", Service: "0", Machine: "m1"}} })
	m.SetFleet(func() bool { return true }, func() time.Duration { return 0 })
	m.SetParked(func() int { return 0 })
	m.SetCompressing(func() int { return 0 })
	bh := m.NewBackhaul(func() []BackhaulStat { return []BackhaulStat{{Peer: "w1", Side: "edge", Conns: 1}} })
	m.SetUDP(func() []UDPStat { return []UDPStat{{App: "dns", Port: "53", Flows: 1}} })
	m.SetCertificates(func() []CertStat {
		return []CertStat{{Name: "a.example.com", Source: "acme", NotAfter: time.Now().Add(time.Hour)}}
	})
	bh.Streams.WithLabelValues("w1", "edge", "ok")
	bh.Requests.WithLabelValues("w1", "ok")

	descs := describe(t, m.Registry)
	touchVecs(t, m, descs)

	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, f := range families {
		// The family type is client_model's enum: COUNTER, GAUGE, ...
		types[f.GetName()] = strings.ToLower(f.GetType().String())
	}

	var out []metricDoc
	for _, d := range descs {
		if !strings.HasPrefix(d.name, "edgeproxy_") {
			continue
		}
		typ, ok := types[d.name]
		if !ok {
			t.Errorf("%s is registered but produced no sample, so its type is unknown: make documentedMetrics populate it", d.name)
			continue
		}
		d.typ = typ
		out = append(out, d)
	}
	if len(out) < 10 {
		t.Fatalf("found only %d edgeproxy_* metrics; is describe broken?", len(out))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// describe lists the descriptions of everything registered.
func describe(t *testing.T, c prometheus.Collector) []metricDoc {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	var out []metricDoc
	seen := map[string]bool{}
	for d := range ch {
		md, err := parseDesc(d)
		if err != nil {
			t.Fatal(err)
		}
		if !seen[md.name] {
			seen[md.name] = true
			out = append(out, md)
		}
	}
	return out
}

// descRE parses Desc.String(), the only public view of a description:
// Desc{fqName: "x", help: "y", unit: "", constLabels: {}, variableLabels: {a,b}}.
var descRE = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*"), (?:unit: "(?:[^"\\]|\\.)*", )?constLabels: \{[^}]*\}, variableLabels: \{([^}]*)\}\}$`)

func parseDesc(d *prometheus.Desc) (metricDoc, error) {
	s := d.String()
	m := descRE.FindStringSubmatch(s)
	if m == nil {
		return metricDoc{}, fmt.Errorf("cannot parse %s (did client_golang change Desc.String?)", s)
	}
	name, err := strconv.Unquote(m[1])
	if err != nil {
		return metricDoc{}, err
	}
	help, err := strconv.Unquote(m[2])
	if err != nil {
		return metricDoc{}, err
	}
	var labels []string
	for _, l := range strings.Split(m[3], ",") {
		if l = strings.TrimSpace(l); l != "" {
			// A constrained label prints as c(name).
			labels = append(labels, strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"))
		}
	}
	return metricDoc{name: name, help: help, labels: labels}, nil
}

// touchVecs creates one child of every metric vector of m, found by
// reflection so a vector added to Metrics is covered without editing this
// test: a vector with no child produces no sample.
func touchVecs(t *testing.T, m *Metrics, descs []metricDoc) {
	t.Helper()
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if f.Kind() != reflect.Pointer || f.IsNil() || !f.CanInterface() {
			continue
		}
		coll, ok := f.Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		get := f.MethodByName("GetMetricWithLabelValues")
		if !get.IsValid() {
			continue // not a vector
		}
		vd := describe(t, coll)
		if len(vd) != 1 {
			t.Fatalf("Metrics.%s describes %d metrics, want 1", v.Type().Field(i).Name, len(vd))
		}
		args := make([]reflect.Value, len(vd[0].labels))
		for j, l := range vd[0].labels {
			args[j] = reflect.ValueOf(l)
		}
		res := get.Call(args)
		if err, _ := res[len(res)-1].Interface().(error); err != nil {
			t.Fatalf("Metrics.%s: %v", v.Type().Field(i).Name, err)
		}
	}
}

// declaredNames lists the string constants of names.go that name metrics.
func declaredNames(t *testing.T) []string {
	t.Helper()
	af, err := parser.ParseFile(token.NewFileSet(), "names.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range af.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			for _, val := range s.(*ast.ValueSpec).Values {
				lit, ok := val.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				if name, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(name, "edgeproxy_") {
					out = append(out, name)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("names.go declares no edgeproxy_* names; did they move?")
	}
	return out
}

func renderMetricsDoc(metrics []metricDoc) []byte {
	var b bytes.Buffer
	b.WriteString(`# Metrics

<!-- Generated from internal/telemetry by "` + regenerate + `". Do not edit. -->

edgeproxy exports Prometheus metrics on the admin listener's ` + "`/metrics`" + `
(see ` + "`[admin]`" + ` in [config.md](config.md)).

- Every name starts with ` + "`edgeproxy_`" + ` and is declared once, in
  ` + "`internal/telemetry/names.go`" + `. Counters end in ` + "`_total`" + `;
  gauges (values that go down) do not.
- Label values are bounded: they come from code or from the config (a port,
  an app, a layer of the connection stack, a reason), never from what a
  client sends.
- The ` + "`edgeproxy_guard_*`" + ` counters and ` + "`edgeproxy_spin_kills_total`" + ` are the
  "spurious wakeup" metrics of the incident the proxy is built to survive
  ([incident.md](incident.md)): reads and writes that made no progress, reads made again
  after a terminal error, and connections the spin detector killed. They
  are expected to stay at zero (reads after a terminal error near zero);
  alert on any increase. ` + "`edgeproxy_guard_reads_total`" + ` is the baseline they
  are measured against.
- The standard ` + "`process_*`" + ` and ` + "`go_*`" + ` metrics of the Prometheus Go client
  (CPU, memory, file descriptors, goroutines, garbage collection) are
  exported too and are not listed here.

| name | type | labels | help |
|---|---|---|---|
`)
	for _, m := range metrics {
		labels := "none"
		if len(m.labels) > 0 {
			ls := make([]string, len(m.labels))
			for i, l := range m.labels {
				ls[i] = "`" + l + "`"
			}
			labels = strings.Join(ls, ", ")
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", m.name, m.typ, labels, mdCell(m.help))
	}
	return b.Bytes()
}

// mdCell escapes what would break a table row.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
