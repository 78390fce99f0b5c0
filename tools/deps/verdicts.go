package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// TestResults is what a `go test` run said per package.
type TestResults struct {
	Passed, Failed []string // package import paths
	FailedTests    []string // "pkg TestName" (from -json) or "TestName" (from text)
	// Ran says whether any package result was seen at all (a lint failure
	// in `make test` stops it before go test runs).
	Ran bool
}

// Status of one package: "ok", "FAIL" or "" when it did not run.
func (t TestResults) Status(pkg string) string {
	for _, p := range t.Failed {
		if p == pkg {
			return "FAIL"
		}
	}
	for _, p := range t.Passed {
		if p == pkg {
			return "ok"
		}
	}
	return ""
}

// parseGoTestText reads the text `go test` prints (what `make test`
// shows): "ok  \tPKG\t1.2s", "FAIL\tPKG\t3.4s", "FAIL\tPKG [build failed]"
// and "--- FAIL: TestName" lines.
func parseGoTestText(out []byte) TestResults {
	var t TestResults
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	seenFail := map[string]bool{}
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "ok":
			t.Passed = append(t.Passed, f[1])
			t.Ran = true
		case len(f) >= 2 && f[0] == "FAIL" && strings.Contains(f[1], "/") && !seenFail[f[1]]:
			seenFail[f[1]] = true
			t.Failed = append(t.Failed, f[1])
			t.Ran = true
		case strings.HasPrefix(strings.TrimSpace(line), "--- FAIL: "):
			name := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "--- FAIL: "))
			if len(name) > 0 {
				t.FailedTests = append(t.FailedTests, name[0])
			}
		}
	}
	return t
}

// parseTest2JSON reads `go test -json` output.
func parseTest2JSON(out []byte) TestResults {
	var t TestResults
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var ev struct {
			Action, Package, Test string
		}
		if err := dec.Decode(&ev); err != nil {
			// go test -json interleaves non-JSON lines only on build
			// failures, which also end in a "fail" for the package; stop
			// at the first line that is not an event.
			break
		}
		switch {
		case ev.Test == "" && ev.Action == "pass":
			t.Passed = append(t.Passed, ev.Package)
			t.Ran = true
		case ev.Test == "" && ev.Action == "fail":
			t.Failed = append(t.Failed, ev.Package)
			t.Ran = true
		case ev.Test != "" && ev.Action == "fail":
			t.FailedTests = append(t.FailedTests, ev.Package+" "+ev.Test)
		}
	}
	return t
}

// StormReport is the part of `edgeproxy storm -json` this tool judges.
type StormReport struct {
	Planned           int  `json:"planned"`
	Completed         int  `json:"completed"`
	Aborted           int  `json:"aborted"`
	StoppedByDuration bool `json:"stopped_by_duration"`
	Shapes            map[string]struct {
		Count      int            `json:"count"`
		Outcomes   map[string]int `json:"outcomes"`
		FirstOther string         `json:"first_other"`
	} `json:"shapes"`
	CPUSource       string             `json:"cpu_source"`
	StormCPUPercent float64            `json:"storm_cpu_percent"`
	IdleCPUPercent  float64            `json:"idle_cpu_percent"`
	IdleWindowNS    int64              `json:"idle_window_ns"`
	FDsBefore       int                `json:"fds_before"`
	FDsAfter        int                `json:"fds_after"`
	Counters        map[string]float64 `json:"counters"`
	Warnings        []string           `json:"warnings"`
}

// Storm thresholds, the same as test/shapes uses: a connection left
// spinning costs a whole core in the idle window after the storm.
const (
	maxIdleCPUPercent = 10
	// settleWait is how long after the storm the proxy gets to close every
	// client connection. Its descriptor count is no measure of that: it
	// keeps idle upstream connections pooled.
	settleWait = 15 * time.Second
)

// spuriousCounters are the metrics of docs/incident.md a correct proxy
// leaves at zero under every shape.
var spuriousCounters = []string{
	"edgeproxy_guard_zero_progress_reads_total",
	"edgeproxy_guard_reads_after_eof_total",
	"edgeproxy_spin_kills_total",
}

// StormVerdict is the storm's outcome in the report.
type StormVerdict struct {
	Pass     bool
	Summary  string
	Problems []string
}

// judgeStorm reads `edgeproxy storm -json` output and says whether the
// proxy got through: every connection completed and ended ok, the proxy
// went back to idle CPU, closed every client connection (openClientConns,
// counted by countOpenConns, is 0) and no spin counter rose.
func judgeStorm(b []byte, openClientConns int) (StormVerdict, error) {
	var r StormReport
	if err := json.Unmarshal(b, &r); err != nil {
		return StormVerdict{}, fmt.Errorf("storm report: %w", err)
	}
	var v StormVerdict
	ok := 0
	var shapes []string
	for name := range r.Shapes {
		shapes = append(shapes, name)
	}
	sort.Strings(shapes)
	for _, name := range shapes {
		sh := r.Shapes[name]
		ok += sh.Outcomes["ok"]
		if bad := sh.Count - sh.Outcomes["ok"]; bad > 0 {
			var parts []string
			var outs []string
			for o := range sh.Outcomes {
				outs = append(outs, o)
			}
			sort.Strings(outs)
			for _, o := range outs {
				if o != "ok" && sh.Outcomes[o] > 0 {
					parts = append(parts, fmt.Sprintf("%s %d", o, sh.Outcomes[o]))
				}
			}
			p := fmt.Sprintf("%s: %d of %d not ok (%s)", name, bad, sh.Count, strings.Join(parts, ", "))
			if sh.FirstOther != "" {
				p += "; first other error: " + sh.FirstOther
			}
			v.Problems = append(v.Problems, p)
		}
	}
	if r.Completed != r.Planned || r.Aborted != 0 || r.StoppedByDuration {
		v.Problems = append(v.Problems, fmt.Sprintf("completed %d of %d connections (%d aborted, stopped by the duration cap: %v)",
			r.Completed, r.Planned, r.Aborted, r.StoppedByDuration))
	}
	if r.CPUSource == "" || r.IdleWindowNS == 0 {
		v.Problems = append(v.Problems, "the proxy's idle CPU was not measured")
	} else if r.IdleCPUPercent >= maxIdleCPUPercent {
		v.Problems = append(v.Problems, fmt.Sprintf("the proxy used %.1f%% of a core after the storm, with no client left (limit %d%%): something is spinning",
			r.IdleCPUPercent, maxIdleCPUPercent))
	}
	if openClientConns > 0 {
		v.Problems = append(v.Problems, fmt.Sprintf("%d client connections still open at the proxy after the storm and %s more (ESTABLISHED or CLOSE_WAIT on its public ports): connections left open",
			openClientConns, settleWait))
	}
	if r.Counters == nil {
		v.Problems = append(v.Problems, "the proxy's metrics were not scraped")
	}
	for _, c := range spuriousCounters {
		if d := r.Counters[c]; d != 0 {
			v.Problems = append(v.Problems, fmt.Sprintf("%s rose by %g", c, d))
		}
	}
	for _, w := range r.Warnings {
		v.Problems = append(v.Problems, "warning: "+w)
	}
	v.Pass = len(v.Problems) == 0
	v.Summary = fmt.Sprintf("%d/%d connections ok over %d shapes, proxy CPU %.0f%% of a core during, %.1f%% idle after; fds %d before, %d after",
		ok, r.Planned, len(r.Shapes), r.StormCPUPercent, r.IdleCPUPercent, r.FDsBefore, r.FDsAfter)
	return v, nil
}

// countOpenConns counts, in the text of /proc/net/tcp or /proc/net/tcp6,
// the sockets whose local port is one of ports that are not listening and
// still belong to a process (a socket closed by its owner and waiting out
// TIME_WAIT or FIN_WAIT has inode 0).
func countOpenConns(procNetTCP string, ports map[int]bool) int {
	n := 0
	for _, line := range strings.Split(procNetTCP, "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[0] == "sl" {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || !ports[int(port)] {
			continue
		}
		const listen = "0A"
		if f[3] == listen || f[9] == "0" {
			continue
		}
		n++
	}
	return n
}
