package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// loadStats is what one load generator run reports.
type loadStats struct {
	Ops     int64   // requests, handshakes or chunks completed
	Bytes   int64   // payload bytes received, where the scenario counts bytes
	Seconds float64 // measured duration as the generator saw it
	Rate    float64 // ops per second
	P50us   float64
	P99us   float64
	Errors  int64 // socket errors, non-2xx answers, failed streams
}

var (
	wrkReqRe     = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),\s+([\d.]+)([KMGT]?B) read`)
	wrkRateRe    = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	wrkPctRe     = regexp.MustCompile(`(?m)^\s+(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$`)
	wrkNon2xxRe  = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockErrRe = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)

	h2FinishedRe = regexp.MustCompile(`(?m)^finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req/s`)
	h2RequestsRe = regexp.MustCompile(`(?m)^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2StatusRe   = regexp.MustCompile(`(?m)^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

// durationUS converts a number with one of wrk's or h2load's time units
// into microseconds.
func durationUS(num, unit string) (float64, error) {
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, err
	}
	switch unit {
	case "us":
		return v, nil
	case "ms":
		return v * 1e3, nil
	case "s":
		return v * 1e6, nil
	case "m":
		return v * 60e6, nil
	case "h":
		return v * 3600e6, nil
	}
	return 0, fmt.Errorf("unknown time unit %q", unit)
}

// parseWrk reads the output of `wrk --latency`.
func parseWrk(out string) (loadStats, error) {
	var s loadStats
	m := wrkReqRe.FindStringSubmatch(out)
	if m == nil {
		return s, fmt.Errorf("wrk: no \"N requests in T\" line in output:\n%s", out)
	}
	s.Ops, _ = strconv.ParseInt(m[1], 10, 64)
	us, err := durationUS(m[2], m[3])
	if err != nil {
		return s, err
	}
	s.Seconds = us / 1e6
	if r := wrkRateRe.FindStringSubmatch(out); r != nil {
		s.Rate, _ = strconv.ParseFloat(r[1], 64)
	} else if s.Seconds > 0 {
		s.Rate = float64(s.Ops) / s.Seconds
	}
	// wrk counts every response as a request; only 2xx and 3xx count here.
	if e := wrkNon2xxRe.FindStringSubmatch(out); e != nil {
		n, _ := strconv.ParseInt(e[1], 10, 64)
		s.Errors += n
		s.Ops -= n
		if n > 0 && s.Seconds > 0 {
			s.Rate = float64(s.Ops) / s.Seconds
		}
	}
	if e := wrkSockErrRe.FindStringSubmatch(out); e != nil {
		for _, f := range e[1:] {
			n, _ := strconv.ParseInt(f, 10, 64)
			s.Errors += n
		}
	}
	if s.Ops <= 0 {
		return s, fmt.Errorf("wrk: no successful request:\n%s", out)
	}
	for _, p := range wrkPctRe.FindAllStringSubmatch(out, -1) {
		v, err := durationUS(p[2], p[3])
		if err != nil {
			return s, err
		}
		switch p[1] {
		case "50":
			s.P50us = v
		case "99":
			s.P99us = v
		}
	}
	if s.P50us == 0 || s.P99us == 0 {
		return s, fmt.Errorf("wrk: no latency distribution (was --latency given?):\n%s", out)
	}
	return s, nil
}

// parseH2load reads h2load's summary; the latency percentiles come from its
// --log-file (parseH2loadLog), since the summary has only min, max and mean.
func parseH2load(out string) (loadStats, error) {
	var s loadStats
	m := h2FinishedRe.FindStringSubmatch(out)
	if m == nil {
		return s, fmt.Errorf("h2load: no \"finished in\" line in output:\n%s", out)
	}
	us, err := durationUS(m[1], m[2])
	if err != nil {
		return s, err
	}
	s.Seconds = us / 1e6
	s.Rate, _ = strconv.ParseFloat(m[3], 64)
	r := h2RequestsRe.FindStringSubmatch(out)
	if r == nil {
		return s, fmt.Errorf("h2load: no \"requests:\" line in output:\n%s", out)
	}
	succeeded, _ := strconv.ParseInt(r[4], 10, 64)
	failed, _ := strconv.ParseInt(r[5], 10, 64)
	errored, _ := strconv.ParseInt(r[6], 10, 64)
	timeout, _ := strconv.ParseInt(r[7], 10, 64)
	s.Ops = succeeded
	s.Errors = failed + errored + timeout
	if st := h2StatusRe.FindStringSubmatch(out); st != nil {
		for _, f := range st[2:] { // 3xx, 4xx, 5xx
			n, _ := strconv.ParseInt(f, 10, 64)
			s.Errors += n
		}
	}
	return s, nil
}

// parseH2loadLog reads h2load --log-file lines (start µs, status, response
// µs) and returns the 50th and 99th percentile of the response time of
// successful streams.
func parseH2loadLog(r io.Reader) (p50, p99 float64, n int, err error) {
	var lat []float64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) < 3 {
			continue
		}
		status, err := strconv.Atoi(f[1])
		if err != nil || status < 200 || status > 299 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(f[2]), 64)
		if err != nil {
			continue
		}
		lat = append(lat, v)
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, err
	}
	if len(lat) == 0 {
		return 0, 0, 0, fmt.Errorf("h2load log: no successful requests")
	}
	slices.Sort(lat)
	return percentileSorted(lat, 0.50), percentileSorted(lat, 0.99), len(lat), nil
}

// percentileSorted is the nearest-rank percentile of sorted values.
func percentileSorted(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	i := int(p*float64(len(v))+0.5) - 1
	i = max(0, min(i, len(v)-1))
	return v[i]
}

// procStatFields returns the fields of /proc/PID/stat after the command
// name (which may contain spaces and parentheses): index 0 is the state,
// 1 the ppid, 11 utime and 12 stime, in clock ticks.
func procStatFields(stat string) ([]string, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed stat %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return nil, fmt.Errorf("short stat %q", stat)
	}
	return f, nil
}

// parseStatusKiB returns VmRSS and VmHWM (KiB) from /proc/PID/status.
func parseStatusKiB(status string) (rss, hwm int64) {
	for _, line := range strings.Split(status, "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// coreTimes is one line of /proc/stat in clock ticks.
type coreTimes struct {
	Busy, Total uint64
}

// parseProcStat returns the aggregate "cpu" line and the per-core lines.
func parseProcStat(s string) (all coreTimes, cores map[int]coreTimes, err error) {
	cores = map[int]coreTimes{}
	found := false
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		var v [8]uint64
		for i := range v {
			v[i], err = strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return all, nil, fmt.Errorf("/proc/stat: %q: %v", line, err)
			}
		}
		// user nice system idle iowait irq softirq steal
		idle := v[3] + v[4]
		busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
		ct := coreTimes{Busy: busy, Total: busy + idle}
		if f[0] == "cpu" {
			all, found = ct, true
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(f[0], "cpu"))
		if err != nil {
			continue
		}
		cores[n] = ct
	}
	if !found {
		return all, nil, fmt.Errorf("/proc/stat: no cpu line")
	}
	return all, cores, nil
}

// busyPct is the share of the interval one core (or all, as a share of
// all) spent busy, in percent.
func busyPct(a, b coreTimes) float64 {
	if b.Total <= a.Total {
		return 0
	}
	return 100 * float64(b.Busy-a.Busy) / float64(b.Total-a.Total)
}

// bottleneck names the saturated core from the busy shares of the load
// generator's core and the proxy's core.
func bottleneck(genPct, proxyPct float64) string {
	const sat = 90
	switch {
	case genPct > sat && proxyPct > sat:
		return "both"
	case genPct > sat:
		return "generator"
	case proxyPct > sat:
		return "proxy"
	}
	return "neither"
}
