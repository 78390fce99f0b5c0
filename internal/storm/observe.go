package storm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// observer measures the target from outside: /proc for a PID, a metrics
// scrape for a URL. It holds its own HTTP transport so Run can close its
// idle connections and leave no goroutine behind.
type observer struct {
	pid    int
	url    string
	names  []string
	tr     *http.Transport
	client *http.Client
}

func newObserver(cfg Config) *observer {
	o := &observer{pid: cfg.PID, url: cfg.MetricsURL, names: cfg.Counters}
	if o.url != "" {
		o.tr = &http.Transport{DisableKeepAlives: true}
		o.client = &http.Client{Transport: o.tr, Timeout: 5 * time.Second}
	}
	return o
}

func (o *observer) active() bool { return o.pid != 0 || o.url != "" }

func (o *observer) close() {
	if o.tr != nil {
		o.tr.CloseIdleConnections()
	}
}

// sample is the target at one moment; fields not measured stay at their
// markers (hasCPU false, fds -1, counters nil).
type sample struct {
	cpu      CPUTimes
	hasCPU   bool
	fds      int
	counters map[string]float64
}

// sample measures what is configured. It returns what it could measure
// along with the errors of what it could not.
func (o *observer) sample(ctx context.Context) (sample, error) {
	s := sample{fds: -1}
	var errs []error
	if o.pid != 0 {
		cpu, err := readProcCPU(o.pid)
		if err == nil {
			s.cpu, s.hasCPU = cpu, true
		}
		errs = append(errs, err)
		n, err := countFDs(o.pid)
		if err == nil {
			s.fds = n
		}
		errs = append(errs, err)
	}
	if o.url != "" {
		c, err := scrapeCounters(ctx, o.client, o.url, o.names)
		if err == nil {
			s.counters = c
		}
		errs = append(errs, err)
	}
	return s, errors.Join(errs...)
}

// observe fills the target fields of the report from the samples taken
// before the storm, right after it, and after the idle window (after is
// mid when there was no idle window). Every counter name gets an entry.
func (r *Report) observe(names []string, before, mid, after sample) {
	r.FDsBefore, r.FDsAfterStorm, r.FDsAfter = before.fds, mid.fds, after.fds
	if r.IdleWindow == 0 {
		r.FDsAfter = mid.fds
	}
	switch {
	case before.hasCPU:
		r.CPUSource = "proc"
		if mid.hasCPU {
			r.StormCPU = mid.cpu.sub(before.cpu)
		}
		if r.IdleWindow > 0 && mid.hasCPU && after.hasCPU {
			r.IdleCPU = after.cpu.sub(mid.cpu)
		}
	case before.counters != nil:
		cpu := func(s sample) (float64, bool) {
			v, ok := s.counters[cpuCounter]
			return v, ok
		}
		b, okB := cpu(before)
		m, okM := cpu(mid)
		if !okB || !okM {
			break
		}
		r.CPUSource = "metrics"
		r.StormCPU = CPUTimes{Total: m - b}
		if a, okA := cpu(after); okA && r.IdleWindow > 0 {
			r.IdleCPU = CPUTimes{Total: a - m}
		}
	}
	if r.Elapsed > 0 {
		r.StormCPUPercent = 100 * r.StormCPU.Total / r.Elapsed.Seconds()
	}
	if r.IdleWindow > 0 {
		r.IdleCPUPercent = 100 * r.IdleCPU.Total / r.IdleWindow.Seconds()
	}
	if before.counters == nil {
		return
	}
	last := after.counters
	if last == nil {
		last = mid.counters
	}
	if last == nil {
		return
	}
	r.Counters = map[string]float64{}
	for _, name := range names {
		r.Counters[name] = last[name] - before.counters[name]
	}
}

func (t CPUTimes) sub(u CPUTimes) CPUTimes {
	return CPUTimes{User: t.User - u.User, System: t.System - u.System, Total: t.Total - u.Total}
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports; reading it properly needs
// sysconf(_SC_CLK_TCK), which means cgo, for a constant that never varies.
const clockTicks = 100

// readProcCPU reads the user and system CPU time a process has used.
func readProcCPU(pid int) (CPUTimes, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return CPUTimes{}, fmt.Errorf("storm: target CPU: %w", err)
	}
	utime, stime, err := parseProcStat(data)
	if err != nil {
		return CPUTimes{}, fmt.Errorf("storm: target CPU of pid %d: %w", pid, err)
	}
	t := CPUTimes{User: float64(utime) / clockTicks, System: float64(stime) / clockTicks}
	t.Total = t.User + t.System
	return t, nil
}

// parseProcStat returns fields 14 and 15 (utime, stime) of a
// /proc/PID/stat line. Field 2, the command name, is in parentheses and may
// itself hold spaces and parentheses, so fields are counted from the last
// ')' rather than from the start.
func parseProcStat(data []byte) (utime, stime uint64, err error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, 0, fmt.Errorf("no command name in %q", truncate(data))
	}
	// After ")" come field 3 (state) onwards; utime is field 14.
	fields := bytes.Fields(data[end+1:])
	const utimeAt = 14 - 3
	if len(fields) <= utimeAt+1 {
		return 0, 0, fmt.Errorf("only %d fields after the command name", len(fields))
	}
	if utime, err = strconv.ParseUint(string(fields[utimeAt]), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("utime: %w", err)
	}
	if stime, err = strconv.ParseUint(string(fields[utimeAt+1]), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stime: %w", err)
	}
	return utime, stime, nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// countFDs counts a process's open descriptors. Reading another user's
// /proc/PID/fd needs the same rights as ptrace; the error says so.
func countFDs(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1, fmt.Errorf("storm: target fds: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return -1, fmt.Errorf("storm: target fds: %w", err)
	}
	return len(names), nil
}

// maxExposition bounds a scrape; a proxy's exposition is tens of kilobytes.
const maxExposition = 16 << 20

// scrapeCounters fetches a Prometheus text exposition and sums each named
// family over its labels. Families absent from the exposition are absent
// from the map.
func scrapeCounters(ctx context.Context, client *http.Client, url string, names []string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("storm: metrics: %w", err)
	}
	// Ask for the classic text format: the storm parses only that, and a
	// client_golang handler would otherwise be free to pick protobuf or
	// OpenMetrics.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("storm: metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("storm: metrics: %s answered %s", url, resp.Status)
	}
	sums, err := sumFamilies(io.LimitReader(resp.Body, maxExposition), names)
	if err != nil {
		return nil, fmt.Errorf("storm: metrics from %s: %w", url, err)
	}
	return sums, nil
}

// sumFamilies parses a text exposition and sums the named families over
// all their series. Counters, gauges and untyped values are summed;
// summaries and histograms have no single value and are skipped.
func sumFamilies(r io.Reader, names []string) (map[string]float64, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	sums := map[string]float64{}
	for _, name := range names {
		fam, ok := fams[name]
		if !ok {
			continue
		}
		var sum float64
		for _, m := range fam.GetMetric() {
			sum += metricValue(fam.GetType(), m)
		}
		sums[name] = sum
	}
	return sums, nil
}

func metricValue(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue()
	}
	return 0
}
