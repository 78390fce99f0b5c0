package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// BenchRow is edgeproxy's result in one scenario of a bench CSV
// (bench/results/quick.csv, written by bench/cmd/bench), the median over
// its runs.
type BenchRow struct {
	Scenario, Unit string
	CPUPerUnit     float64 // proxy CPU s per 10k ops or per GB; NaN if not measured
	PeakRSSKiB     float64
	RSSPerConnKiB  float64 // idle scenarios; NaN elsewhere
	OpsPerSec      float64
	BytesPerSec    float64
	P99ms          float64
	Runs           int
	Failed, Forced bool
	Note           string
}

// Idle says whether the scenario measures memory per idle connection.
func (r BenchRow) Idle() bool { return strings.Contains(r.Unit, "idle conn") }

// parseBenchCSV reads a bench CSV and returns edgeproxy's rows, one per
// scenario in the order they first appear, the median of each figure over
// the runs.
func parseBenchCSV(r io.Reader) ([]BenchRow, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	recs, err := cr.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("bench csv: %w", err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("bench csv: empty")
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	for _, need := range []string{"scenario", "proxy", "unit", "cpu_per_unit", "peak_rss_kib"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("bench csv: no %s column", need)
		}
	}
	get := func(rec []string, name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	num := func(rec []string, name string) float64 {
		v, err := strconv.ParseFloat(strings.TrimSpace(get(rec, name)), 64)
		if err != nil {
			return math.NaN()
		}
		return v
	}
	type acc struct {
		row                              BenchRow
		cpu, rss, perConn, ops, bps, p99 []float64
	}
	var order []string
	by := map[string]*acc{}
	for _, rec := range recs[1:] {
		if get(rec, "proxy") != "edgeproxy" {
			continue
		}
		sc := get(rec, "scenario")
		a := by[sc]
		if a == nil {
			a = &acc{row: BenchRow{Scenario: sc, Unit: get(rec, "unit")}}
			by[sc] = a
			order = append(order, sc)
		}
		a.row.Runs++
		a.row.Failed = a.row.Failed || get(rec, "failed") == "true"
		a.row.Forced = a.row.Forced || get(rec, "forced") == "true"
		if n := get(rec, "note"); n != "" && a.row.Note == "" {
			a.row.Note = n
		}
		if get(rec, "failed") == "true" {
			continue
		}
		a.cpu = append(a.cpu, num(rec, "cpu_per_unit"))
		a.rss = append(a.rss, num(rec, "peak_rss_kib"))
		a.perConn = append(a.perConn, num(rec, "rss_per_conn_kib"))
		a.ops = append(a.ops, num(rec, "ops_per_sec"))
		a.bps = append(a.bps, num(rec, "bytes_per_sec"))
		a.p99 = append(a.p99, num(rec, "p99_ms"))
	}
	out := make([]BenchRow, 0, len(order))
	for _, sc := range order {
		a := by[sc]
		r := a.row
		r.CPUPerUnit, r.PeakRSSKiB, r.RSSPerConnKiB = median(a.cpu), median(a.rss), median(a.perConn)
		r.OpsPerSec, r.BytesPerSec, r.P99ms = median(a.ops), median(a.bps), median(a.p99)
		if !r.Idle() {
			r.RSSPerConnKiB = math.NaN()
		}
		out = append(out, r)
	}
	return out, nil
}

// median of the values that are numbers; NaN if none is.
func median(vs []float64) float64 {
	var s []float64
	for _, v := range vs {
		if !math.IsNaN(v) {
			s = append(s, v)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchDelta compares one scenario between the previous and the new build.
type BenchDelta struct {
	Scenario, Unit string
	Prev, New      *BenchRow // nil when the scenario did not run on that build
	// CPU and Mem are new/prev ratios (1.10 is 10% more); NaN when either
	// side has no figure. Mem is KiB per idle connection in the idle
	// scenarios and peak RSS elsewhere.
	CPU, Mem, Throughput float64
	// Worse lists what got worse by more than the tolerance ("CPU",
	// "memory", "throughput"), or "failed" when a run failed.
	Worse []string
}

// compareBench pairs the scenarios of two runs. tolerance is the ratio
// change (0.15 = 15%) beyond which a figure is called worse.
func compareBench(prev, new []BenchRow, tolerance float64) []BenchDelta {
	idx := func(rows []BenchRow) map[string]*BenchRow {
		m := map[string]*BenchRow{}
		for i := range rows {
			m[rows[i].Scenario] = &rows[i]
		}
		return m
	}
	p, n := idx(prev), idx(new)
	var names []string
	seen := map[string]bool{}
	for _, rows := range [][]BenchRow{prev, new} {
		for _, r := range rows {
			if !seen[r.Scenario] {
				seen[r.Scenario] = true
				names = append(names, r.Scenario)
			}
		}
	}
	var out []BenchDelta
	for _, sc := range names {
		d := BenchDelta{Scenario: sc, Prev: p[sc], New: n[sc], CPU: math.NaN(), Mem: math.NaN(), Throughput: math.NaN()}
		switch {
		case d.Prev != nil:
			d.Unit = d.Prev.Unit
		case d.New != nil:
			d.Unit = d.New.Unit
		}
		if d.Prev == nil || d.New == nil || d.Prev.Failed || d.New.Failed {
			d.Worse = append(d.Worse, "failed")
			out = append(out, d)
			continue
		}
		d.CPU = ratio(d.New.CPUPerUnit, d.Prev.CPUPerUnit)
		if d.New.Idle() {
			d.Mem = ratio(d.New.RSSPerConnKiB, d.Prev.RSSPerConnKiB)
		} else {
			d.Mem = ratio(d.New.PeakRSSKiB, d.Prev.PeakRSSKiB)
			if strings.Contains(d.Unit, "GB") {
				d.Throughput = ratio(d.New.BytesPerSec, d.Prev.BytesPerSec)
			} else {
				d.Throughput = ratio(d.New.OpsPerSec, d.Prev.OpsPerSec)
			}
		}
		if d.CPU > 1+tolerance {
			d.Worse = append(d.Worse, "CPU")
		}
		if d.Mem > 1+tolerance {
			d.Worse = append(d.Worse, "memory")
		}
		if d.Throughput < 1-tolerance {
			d.Worse = append(d.Worse, "throughput")
		}
		out = append(out, d)
	}
	return out
}

func ratio(new, prev float64) float64 {
	if math.IsNaN(new) || math.IsNaN(prev) || prev <= 0 || new < 0 {
		return math.NaN()
	}
	return new / prev
}

// pct renders a ratio as a signed percentage change: 1.1 → "+10.0%".
func pct(r float64) string {
	if math.IsNaN(r) {
		return "n/a"
	}
	return fmt.Sprintf("%+.1f%%", (r-1)*100)
}
