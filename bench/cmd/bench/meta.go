package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// runMeta is what the doc needs about a run besides its rows; it is
// written next to the CSV so that -regen can rewrite the doc later (after
// a change to its wording) from the recorded figures alone.
type runMeta struct {
	Started     time.Time         `json:"started"`
	Elapsed     time.Duration     `json:"elapsed_ns"`
	Invocation  string            `json:"invocation"`
	Runs        int               `json:"runs"`
	Duration    time.Duration     `json:"duration_ns"`
	Warmup      time.Duration     `json:"warmup_ns"`
	Settle      time.Duration     `json:"settle_ns"`
	Wait        time.Duration     `json:"wait_ns"`
	Forced      bool              `json:"forced"`
	BusyAtStart float64           `json:"busy_at_start_cores"`
	IdleConns   int               `json:"idle_conns"`
	HSRate      int               `json:"handshake_rate"`
	IdleNote    string            `json:"idle_note,omitempty"`
	Ports       ports             `json:"ports"`
	GenCore     int               `json:"generator_core"`
	ProxyCore   int               `json:"proxy_core"`
	Proxies     []string          `json:"proxies"`
	Scenarios   []string          `json:"scenarios"`
	Configs     map[string]string `json:"configs"`
	Machine     machineInfo       `json:"machine"`
}

func metaPath(csvPath string) string {
	return strings.TrimSuffix(csvPath, ".csv") + "-meta.json"
}

func (e *env) writeMeta() error {
	m := runMeta{
		Started: e.started, Elapsed: e.elapsed, Invocation: e.invocation, Runs: e.runs,
		Duration: e.duration, Warmup: e.warmup, Settle: e.settle, Wait: e.wait, Forced: e.forced,
		BusyAtStart: e.busyAtStart, IdleConns: e.idleConns, HSRate: e.hsRate, IdleNote: e.idleNote, Ports: e.ports,
		GenCore: e.genCore, ProxyCore: e.proxyCore, Configs: map[string]string{}, Machine: e.mi,
	}
	for _, p := range e.proxies {
		m.Proxies = append(m.Proxies, p.Name)
		m.Configs[p.Name] = p.Config
	}
	for _, s := range e.scenarios {
		m.Scenarios = append(m.Scenarios, s.Name)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(metaPath(filepath.Join(e.outDir, e.csvName)), append(b, '\n'), 0o644)
}

// regenerate rewrites the doc and the chart from a CSV and its meta file.
func regenerate(csvPath string) error {
	b, err := os.ReadFile(metaPath(csvPath))
	if err != nil {
		return err
	}
	var m runMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%s: %w", metaPath(csvPath), err)
	}
	root, err := findRoot()
	if err != nil {
		return err
	}
	e := &env{
		root: root, started: m.Started, elapsed: m.Elapsed, invocation: m.Invocation, runs: m.Runs,
		duration: m.Duration, warmup: m.Warmup, settle: m.Settle, wait: m.Wait, forced: m.Forced,
		busyAtStart: m.BusyAtStart, idleConns: m.IdleConns, hsRate: m.HSRate, idleNote: m.IdleNote, ports: m.Ports,
		genCore: m.GenCore, proxyCore: m.ProxyCore, mi: m.Machine,
		clientBin: "client", edgeproxyBin: "edgeproxy",
		docPath: filepath.Join(root, "docs", "performance.md"),
		svgPath: filepath.Join(root, "docs", "performance.svg"),
	}
	for _, name := range m.Proxies {
		for _, p := range proxyDefs() {
			if p.Name == name {
				p.Config = m.Configs[name]
				e.proxies = append(e.proxies, p)
			}
		}
	}
	for _, name := range m.Scenarios {
		for _, s := range scenarios() {
			if s.Name == name {
				e.scenarios = append(e.scenarios, s)
			}
		}
	}
	rows, err := readRows(csvPath)
	if err != nil {
		return err
	}
	if err := e.writeDocs(e.results(rows)); err != nil {
		return err
	}
	fmt.Printf("bench: rewrote %s and %s from %s\n", rel(root, e.docPath), rel(root, e.svgPath), csvPath)
	return nil
}

// readRows reads the per-run CSV written by writeCSV.
func readRows(path string) ([]*row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) < 2 {
		return nil, fmt.Errorf("%s: no rows", path)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	var rows []*row
	for _, rec := range recs[1:] {
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(rec) {
				return rec[i]
			}
			return ""
		}
		fl := func(name string) float64 {
			v, err := strconv.ParseFloat(get(name), 64)
			if err != nil {
				return nan
			}
			return v
		}
		in := func(name string) int64 {
			v, _ := strconv.ParseInt(get(name), 10, 64)
			return v
		}
		run, _ := strconv.Atoi(get("run"))
		rows = append(rows, &row{
			Scenario: get("scenario"), Proxy: get("proxy"), Run: run,
			Ops: in("ops"), Bytes: in("bytes"), Seconds: fl("seconds"), Rate: fl("ops_per_sec"),
			BytesPerSec: fl("bytes_per_sec"), P50ms: fl("p50_ms"), P99ms: fl("p99_ms"), Errors: in("errors"),
			ProxyCPU: fl("proxy_cpu_s"), CPUPerUnit: fl("cpu_per_unit"), PeakRSSKiB: in("peak_rss_kib"),
			BaseRSSKiB: in("base_rss_kib"), IdleRSSKiB: in("idle_rss_kib"), RSSPerConnKiB: fl("rss_per_conn_kib"),
			Conns: in("conns"), GenCPU: fl("generator_cpu_s"), OriginCPU: fl("origin_cpu_s"),
			GenCorePct: fl("generator_core_busy_pct"), ProxyCorePct: fl("proxy_core_busy_pct"),
			OtherCPUPct: fl("other_cpu_pct"), Bottleneck: get("bottleneck"),
			Forced: get("forced") == "true", Failed: get("failed") == "true", Note: get("note"),
		})
	}
	return rows, nil
}
