package main

import (
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// cell is the summary of one scenario on one proxy over its repeats.
type cell struct {
	Headline, Rate, BytesPerSec, P50, P99, CPU     spread
	PeakRSS, RSSPerConn, GenCore, ProxyCore, Other spread
	Bottleneck                                     string
	Runs, Failed                                   int
	Notes                                          []string
}

type results struct {
	e     *env
	cells map[string]map[string]*cell // scenario → proxy
	// scenario → edgeproxy ÷ peer: the median of the ratios of runs with
	// the same repeat number (run close together in time, so slow drift of
	// the machine's speed cancels out), and their range.
	vsNginx, vsHAP     map[string]float64
	vsNginxSp, vsHAPSp map[string]spread
	rowsBy             map[string]map[string]map[int]*row // scenario → proxy → run

	scenario map[string]*scenario
}

func (e *env) results(rows []*row) *results {
	res := &results{e: e, cells: map[string]map[string]*cell{}, vsNginx: map[string]float64{},
		vsHAP: map[string]float64{}, vsNginxSp: map[string]spread{}, vsHAPSp: map[string]spread{},
		scenario: map[string]*scenario{}, rowsBy: map[string]map[string]map[int]*row{}}
	for _, r := range rows {
		if r.Failed {
			continue
		}
		if res.rowsBy[r.Scenario] == nil {
			res.rowsBy[r.Scenario] = map[string]map[int]*row{}
		}
		if res.rowsBy[r.Scenario][r.Proxy] == nil {
			res.rowsBy[r.Scenario][r.Proxy] = map[int]*row{}
		}
		res.rowsBy[r.Scenario][r.Proxy][r.Run] = r
	}
	for _, sc := range e.scenarios {
		res.scenario[sc.Name] = sc
		res.cells[sc.Name] = map[string]*cell{}
		for _, px := range e.proxies {
			var hl, rate, bps, p50, p99, cpu, peak, perConn, gen, prx, other []float64
			var bn []string
			c := &cell{}
			seenNote := map[string]bool{}
			for _, r := range rows {
				if r.Scenario != sc.Name || r.Proxy != px.Name {
					continue
				}
				c.Runs++
				if r.Note != "" && !seenNote[r.Note] {
					seenNote[r.Note] = true
					c.Notes = append(c.Notes, r.Note)
				}
				if r.Failed {
					c.Failed++
					continue
				}
				hl = append(hl, r.headline(sc))
				rate = append(rate, r.Rate)
				bps = append(bps, r.BytesPerSec)
				p50 = append(p50, r.P50ms)
				p99 = append(p99, r.P99ms)
				cpu = append(cpu, r.CPUPerUnit)
				peak = append(peak, float64(r.PeakRSSKiB))
				perConn = append(perConn, r.RSSPerConnKiB)
				gen = append(gen, r.GenCorePct)
				prx = append(prx, r.ProxyCorePct)
				other = append(other, r.OtherCPUPct)
				bn = append(bn, r.Bottleneck)
			}
			if c.Runs == 0 {
				continue
			}
			c.Headline, c.Rate, c.BytesPerSec = summarize(hl), summarize(rate), summarize(bps)
			c.P50, c.P99, c.CPU = summarize(p50), summarize(p99), summarize(cpu)
			c.PeakRSS, c.RSSPerConn = summarize(peak), summarize(perConn)
			c.GenCore, c.ProxyCore, c.Other = summarize(gen), summarize(prx), summarize(other)
			c.Bottleneck = mostCommon(bn)
			if n := countOf(bn, c.Bottleneck); n < len(bn) {
				c.Bottleneck = fmt.Sprintf("%s (%d of %d)", c.Bottleneck, n, len(bn))
			}
			res.cells[sc.Name][px.Name] = c
		}
	}
	for _, sc := range e.scenarios {
		edge := res.cells[sc.Name]["edgeproxy"]
		if edge == nil {
			continue
		}
		peers := sc.Name
		if sc.CompareTo != "" {
			peers = sc.CompareTo
		}
		res.vsNginxSp[sc.Name] = res.pairedRatio(sc, peers, "nginx")
		res.vsHAPSp[sc.Name] = res.pairedRatio(sc, peers, "haproxy")
		res.vsNginx[sc.Name] = res.vsNginxSp[sc.Name].Med
		res.vsHAP[sc.Name] = res.vsHAPSp[sc.Name].Med
	}
	return res
}

// pairedRatio is edgeproxy's headline over the peer's, repeat by repeat;
// without a single pair it falls back to the ratio of the medians.
func (res *results) pairedRatio(sc *scenario, peerScen, peer string) spread {
	var v []float64
	for run, er := range res.rowsBy[sc.Name]["edgeproxy"] {
		if pr := res.rowsBy[peerScen][peer][run]; pr != nil {
			v = append(v, ratio(er.headline(sc), pr.headline(res.scenario[peerScen])))
		}
	}
	if sp := summarize(v); sp.N > 0 {
		return sp
	}
	r := ratio(res.med(sc.Name, "edgeproxy"), res.med(peerScen, peer))
	if math.IsNaN(r) {
		return spread{Med: r, Min: r, Max: r}
	}
	return spread{Med: r, Min: r, Max: r, N: 1}
}

// fratioSp prints a ratio with its range over the repeats.
func fratioSp(s spread) string {
	if s.N == 0 || math.IsNaN(s.Med) {
		return "n/a"
	}
	if s.N == 1 || fmt.Sprintf("%.2f", s.Min) == fmt.Sprintf("%.2f", s.Max) {
		return fmt.Sprintf("%.2f×", s.Med)
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", s.Med, s.Min, s.Max)
}

func countOf(v []string, s string) int {
	n := 0
	for _, x := range v {
		if x == s {
			n++
		}
	}
	return n
}

func (res *results) med(scen, proxy string) float64 {
	if c := res.cells[scen][proxy]; c != nil {
		return c.Headline.Med
	}
	return nan
}

// --- number formatting ---

func fnum(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "n/a"
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 3, 64)
	case a == 0:
		return "0"
	default:
		// Three significant digits: 0.320, 0.0415.
		return strconv.FormatFloat(v, 'f', 2-int(math.Floor(math.Log10(a))), 64)
	}
}

// fpct prints a busy share in whole percent, with its range.
func fpct(s spread) string {
	if s.N == 0 {
		return "n/a"
	}
	if s.N == 1 || math.Round(s.Min) == math.Round(s.Max) {
		return fmt.Sprintf("%.0f", s.Med)
	}
	return fmt.Sprintf("%.0f (%.0f–%.0f)", s.Med, s.Min, s.Max)
}

// fspread prints "median (min–max)", or just the median for one run.
func fspread(s spread, scale float64) string {
	if s.N == 0 {
		return "n/a"
	}
	if s.N == 1 || s.Min == s.Max {
		return fnum(s.Med * scale)
	}
	return fmt.Sprintf("%s (%s–%s)", fnum(s.Med*scale), fnum(s.Min*scale), fnum(s.Max*scale))
}

func (res *results) throughput(sc *scenario, c *cell) string {
	switch {
	case sc.Idle:
		return fspread(c.Rate, 1) + " conns/s opened"
	case sc.ByteUnit:
		return fspread(c.BytesPerSec, 1e-6) + " MB/s"
	case strings.HasPrefix(sc.Name, "handshake"):
		return fspread(c.Rate, 1) + " hs/s"
	}
	return fspread(c.Rate, 1) + " req/s"
}

// textTable is printed at the end of a run.
func (res *results) textTable() string {
	var sb strings.Builder
	e := res.e
	fmt.Fprintf(&sb, "Results: median (min–max) of %d run(s) of %v each; the proxy on core %d, the load generator and origin on core %d\n\n",
		e.runs, e.duration, e.proxyCore, e.genCore)
	for _, sc := range e.scenarios {
		fmt.Fprintf(&sb, "%s — %s\n", sc.Name, sc.Title)
		for _, px := range e.proxies {
			c := res.cells[sc.Name][px.Name]
			if c == nil {
				continue
			}
			fmt.Fprintf(&sb, "  %-9s %s | p50 %s ms | p99 %s ms | %s %s | peak RSS %s MiB | core %d %s%% core %d %s%% | bottleneck: %s",
				px.Name, res.throughput(sc, c), fspread(c.P50, 1), fspread(c.P99, 1),
				fspread(c.Headline, 1), sc.Unit, fspread(c.PeakRSS, 1.0/1024),
				e.genCore, fpct(c.GenCore), e.proxyCore, fpct(c.ProxyCore), c.Bottleneck)
			if c.Failed > 0 {
				fmt.Fprintf(&sb, " | %d of %d runs FAILED", c.Failed, c.Runs)
			}
			sb.WriteString("\n")
		}
		if _, ok := res.vsNginx[sc.Name]; ok {
			fmt.Fprintf(&sb, "  edgeproxy ÷ nginx %s, ÷ HAProxy %s (%s, lower is better)\n",
				fratioSp(res.vsNginxSp[sc.Name]), fratioSp(res.vsHAPSp[sc.Name]), sc.Unit)
		}
		sb.WriteString("\n")
	}
	if e.forced {
		sb.WriteString("NOTE: run with -force on a busy machine\n")
	}
	return sb.String()
}

// --- CSV ---

func ff(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func (e *env) writeCSV(rows []*row, res *results) error {
	if err := os.MkdirAll(e.outDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(e.outDir, e.csvName)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"date", "scenario", "proxy", "run", "unit", "headline", "ops", "bytes", "seconds",
		"ops_per_sec", "bytes_per_sec", "p50_ms", "p99_ms", "errors", "proxy_cpu_s", "cpu_per_unit",
		"peak_rss_kib", "base_rss_kib", "idle_rss_kib", "rss_per_conn_kib", "conns",
		"generator_cpu_s", "origin_cpu_s", "generator_core_busy_pct", "proxy_core_busy_pct",
		"other_cpu_pct", "bottleneck", "forced", "failed", "note"})
	date := e.started.UTC().Format(time.RFC3339)
	for _, r := range rows {
		sc := res.scenario[r.Scenario]
		w.Write([]string{date, r.Scenario, r.Proxy, strconv.Itoa(r.Run), sc.Unit, ff(r.headline(sc)),
			strconv.FormatInt(r.Ops, 10), strconv.FormatInt(r.Bytes, 10), ff(r.Seconds),
			ff(r.Rate), ff(r.BytesPerSec), ff(r.P50ms), ff(r.P99ms), strconv.FormatInt(r.Errors, 10),
			ff(r.ProxyCPU), ff(r.CPUPerUnit), strconv.FormatInt(r.PeakRSSKiB, 10),
			strconv.FormatInt(r.BaseRSSKiB, 10), strconv.FormatInt(r.IdleRSSKiB, 10), ff(r.RSSPerConnKiB),
			strconv.FormatInt(r.Conns, 10), ff(r.GenCPU), ff(r.OriginCPU), ff(r.GenCorePct), ff(r.ProxyCorePct),
			ff(r.OtherCPUPct), r.Bottleneck, strconv.FormatBool(r.Forced), strconv.FormatBool(r.Failed), r.Note})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}

	spath := strings.TrimSuffix(path, ".csv") + "-summary.csv"
	f, err = os.Create(spath)
	if err != nil {
		return err
	}
	w = csv.NewWriter(f)
	w.Write([]string{"date", "scenario", "proxy", "unit", "headline_median", "headline_min", "headline_max",
		"ops_per_sec_median", "bytes_per_sec_median", "p50_ms_median", "p99_ms_median", "peak_rss_kib_median",
		"bottleneck", "runs", "failed", "edgeproxy_vs_nginx", "edgeproxy_vs_nginx_min", "edgeproxy_vs_nginx_max",
		"edgeproxy_vs_haproxy", "edgeproxy_vs_haproxy_min", "edgeproxy_vs_haproxy_max"})
	for _, sc := range e.scenarios {
		for _, px := range e.proxies {
			c := res.cells[sc.Name][px.Name]
			if c == nil {
				continue
			}
			vr := make([]string, 6)
			if px.Name == "edgeproxy" {
				n, h := res.vsNginxSp[sc.Name], res.vsHAPSp[sc.Name]
				vr = []string{ff(n.Med), ff(n.Min), ff(n.Max), ff(h.Med), ff(h.Min), ff(h.Max)}
			}
			w.Write([]string{date, sc.Name, px.Name, sc.Unit, ff(c.Headline.Med), ff(c.Headline.Min), ff(c.Headline.Max),
				ff(c.Rate.Med), ff(c.BytesPerSec.Med), ff(c.P50.Med), ff(c.P99.Med), ff(c.PeakRSS.Med),
				c.Bottleneck, strconv.Itoa(c.Runs), strconv.Itoa(c.Failed), vr[0], vr[1], vr[2], vr[3], vr[4], vr[5]})
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	fmt.Printf("bench: wrote %s and %s\n", rel(e.root, path), rel(e.root, spath))
	return f.Close()
}

// --- machine and versions ---

func cmdOut(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(firstLine(string(out)))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kib, _ := strconv.ParseFloat(f[1], 64)
				return fmt.Sprintf("%.0f GiB", kib/1024/1024)
			}
		}
	}
	return "unknown"
}

func (e *env) gitState() string {
	rev := cmdOut("git", "-C", e.root, "rev-parse", "--short", "HEAD")
	if rev == "" {
		return "unknown"
	}
	out, _ := exec.Command("git", "-C", e.root, "status", "--porcelain", "--", "cmd", "internal", "go.mod", "go.sum").Output()
	if n := len(strings.Fields(string(out))) / 2; len(strings.TrimSpace(string(out))) > 0 {
		return fmt.Sprintf("%s with uncommitted changes to %d file(s) under cmd/ and internal/", rev, max(1, n))
	}
	return rev
}

type machineInfo struct {
	CPU, Cores, Memory, Kernel, Go, Edgeproxy, OS string
	Versions                                      [][2]string
}

func (e *env) machine() machineInfo {
	osName := "Linux"
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	m := machineInfo{
		CPU: cpuModel(), Cores: strconv.Itoa(runtime.NumCPU()), Memory: memTotal(),
		Kernel: strings.TrimSpace(string(kernel)), Go: runtime.Version(), OS: osName,
		Edgeproxy: e.built,
	}
	pkg := func(p string) string {
		v := cmdOut("dpkg-query", "-W", "-f=${Version}", p)
		if v == "" || strings.Contains(v, "no packages") {
			return ""
		}
		return " (Debian " + v + ")"
	}
	m.Versions = [][2]string{
		{"edgeproxy", cmdOut(e.edgeproxyBin, "version") + ", built from " + m.Edgeproxy + " with " + m.Go},
		{"nginx", strings.TrimPrefix(cmdOut("nginx", "-v"), "nginx version: ") + pkg("nginx") + ", stream module" + pkg("libnginx-mod-stream")},
		{"HAProxy", strings.TrimPrefix(strings.Fields(cmdOut("haproxy", "-v") + " x x x")[2], "") + pkg("haproxy")},
		{"wrk", strings.Join(strings.Fields(cmdOut("wrk", "-v") + " x")[:2], " ") + pkg("wrk")},
		{"h2load", cmdOut("h2load", "--version") + pkg("nghttp2-client")},
		{"OpenSSL (nginx, HAProxy, wrk, h2load)", "libssl3" + pkg("libssl3")},
	}
	return m
}
