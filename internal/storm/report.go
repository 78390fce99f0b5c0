package storm

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Report is what a storm saw and what it cost the target.
type Report struct {
	Target string `json:"target"`
	SNI    string `json:"sni,omitempty"`
	Plain  bool   `json:"plain"`

	// Planned is Config.Count; Started how many connections began before
	// the duration cap or cancellation; Completed how many finished and are
	// counted in Shapes; Aborted how many were cut by cancellation and are
	// not counted anywhere else.
	Planned           int  `json:"planned"`
	Started           int  `json:"started"`
	Completed         int  `json:"completed"`
	Aborted           int  `json:"aborted"`
	StoppedByDuration bool `json:"stopped_by_duration"`
	// Elapsed is the storm's wall time, first dial to last close; Rate is
	// Completed per second of it.
	Elapsed time.Duration `json:"elapsed_ns"`
	Rate    float64       `json:"connections_per_second"`

	// Shapes has an entry for each shape that completed a connection.
	Shapes map[Shape]*ShapeReport `json:"shapes"`

	// CPUSource says where the CPU fields come from: "proc" (/proc/PID/stat,
	// user and system split), "metrics" (process_cpu_seconds_total, total
	// only) or "" (not measured).
	CPUSource string   `json:"cpu_source,omitempty"`
	StormCPU  CPUTimes `json:"storm_cpu"`
	IdleCPU   CPUTimes `json:"idle_cpu"`
	// The percentages are of one core: 200 is two cores busy.
	StormCPUPercent float64       `json:"storm_cpu_percent"`
	IdleCPUPercent  float64       `json:"idle_cpu_percent"`
	IdleWindow      time.Duration `json:"idle_window_ns"`

	// Open descriptors of the target before the storm, right after it, and
	// after the idle window; -1 when not measured (no PID, or unreadable).
	FDsBefore     int `json:"fds_before"`
	FDsAfterStorm int `json:"fds_after_storm"`
	FDsAfter      int `json:"fds_after"`

	// Counters holds, for each of Config.Counters, the change from before
	// the storm to the end of the idle window, summed over labels. A family
	// absent from a scrape counts as zero there (a labelled counter has no
	// series until first incremented). Nil without a metrics URL.
	Counters map[string]float64 `json:"counters,omitempty"`

	// Warnings are measurements that failed after the storm had started.
	Warnings []string `json:"warnings,omitempty"`
}

// CPUTimes are CPU seconds. With CPUSource "metrics" only Total is known.
type CPUTimes struct {
	User   float64 `json:"user_seconds"`
	System float64 `json:"system_seconds"`
	Total  float64 `json:"total_seconds"`
}

// ShapeReport is the tally of one shape.
type ShapeReport struct {
	Count int `json:"count"`
	// Outcomes counts connections by outcome; outcomes that did not occur
	// are absent (reading one gives 0).
	Outcomes map[Outcome]int `json:"outcomes"`
	// Statuses counts responses by status code: a keepalive connection
	// contributes one per request, and a 502 to a half-closed client is
	// told apart from a 200 here, not in Outcomes.
	Statuses map[int]int `json:"statuses,omitempty"`
	// Latency is of connection completion, dial to close, over all
	// outcomes.
	Latency Latency `json:"latency"`
	// FirstOther is the error of the first connection whose outcome was
	// Other, so an unclassified failure can be diagnosed.
	FirstOther string `json:"first_other,omitempty"`

	latencies []time.Duration
}

// Latency holds nearest-rank percentiles.
type Latency struct {
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

func newReport(cfg Config) *Report {
	r := &Report{
		Target:        cfg.Target,
		Plain:         cfg.Plain,
		Planned:       cfg.Count,
		Shapes:        map[Shape]*ShapeReport{},
		FDsBefore:     -1,
		FDsAfterStorm: -1,
		FDsAfter:      -1,
	}
	if !cfg.Plain {
		r.SNI = cfg.SNI
	}
	return r
}

func newShapeReport() *ShapeReport {
	return &ShapeReport{Outcomes: map[Outcome]int{}, Statuses: map[int]int{}}
}

func (s *ShapeReport) add(res result) {
	s.Count++
	s.Outcomes[res.outcome]++
	for _, st := range res.statuses {
		s.Statuses[st]++
	}
	if res.outcome == Other && s.FirstOther == "" && res.err != nil {
		s.FirstOther = res.err.Error()
	}
	s.latencies = append(s.latencies, res.latency)
}

func (s *ShapeReport) finish() {
	s.Latency = Percentiles(s.latencies)
}

// Percentiles computes nearest-rank percentiles: the p-th percentile of n
// samples is the ceil(p/100*n)-th smallest, so it is always a sample that
// was observed, and p99 of fewer than 100 samples is the maximum. The input
// is not modified.
func Percentiles(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(i, 0)]
	}
	return Latency{P50: rank(50), P90: rank(90), P99: rank(99), Max: s[len(s)-1]}
}

func (r *Report) warn(when string, err error) {
	if err != nil {
		r.Warnings = append(r.Warnings, when+": "+err.Error())
	}
}

// WriteText prints the report for a person.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	mode := "TLS, SNI " + r.SNI
	if r.Plain {
		mode = "plain"
	}
	fmt.Fprintf(&b, "storm against %s (%s)\n", r.Target, mode)
	fmt.Fprintf(&b, "connections: %d completed of %d planned (%d started, %d aborted) in %s, %.0f/s",
		r.Completed, r.Planned, r.Started, r.Aborted, r.Elapsed.Round(time.Millisecond), r.Rate)
	if r.StoppedByDuration {
		b.WriteString(", stopped by -duration")
	}
	b.WriteString("\n\n")
	for _, sh := range Shapes() {
		sr := r.Shapes[sh]
		if sr == nil {
			continue
		}
		fmt.Fprintf(&b, "%-13s %6d conns  p50 %-8s p90 %-8s p99 %-8s max %s\n", sh, sr.Count,
			round(sr.Latency.P50), round(sr.Latency.P90), round(sr.Latency.P99), round(sr.Latency.Max))
		var parts []string
		for _, o := range Outcomes() {
			if n := sr.Outcomes[o]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", o, n))
			}
		}
		fmt.Fprintf(&b, "              outcomes: %s\n", strings.Join(parts, ", "))
		if len(sr.Statuses) > 0 {
			codes := make([]int, 0, len(sr.Statuses))
			for c := range sr.Statuses {
				codes = append(codes, c)
			}
			slices.Sort(codes)
			parts = parts[:0]
			for _, c := range codes {
				parts = append(parts, fmt.Sprintf("%d×%d", c, sr.Statuses[c]))
			}
			fmt.Fprintf(&b, "              statuses: %s\n", strings.Join(parts, ", "))
		}
		if sr.FirstOther != "" {
			fmt.Fprintf(&b, "              first other error: %s\n", sr.FirstOther)
		}
	}
	r.writeTarget(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Report) writeTarget(b *strings.Builder) {
	if r.CPUSource != "" {
		b.WriteString("\ntarget CPU (" + r.CPUSource + ")\n")
		cpuLine := func(name string, t CPUTimes, pct float64, d time.Duration) {
			fmt.Fprintf(b, "  %-6s %7.2fs", name, t.Total)
			if r.CPUSource == "proc" {
				fmt.Fprintf(b, " (user %.2fs, system %.2fs)", t.User, t.System)
			}
			fmt.Fprintf(b, " over %s = %.1f%% of a core\n", d.Round(time.Millisecond), pct)
		}
		cpuLine("storm", r.StormCPU, r.StormCPUPercent, r.Elapsed)
		if r.IdleWindow > 0 {
			cpuLine("idle", r.IdleCPU, r.IdleCPUPercent, r.IdleWindow)
		}
	}
	if r.FDsBefore >= 0 {
		fmt.Fprintf(b, "\ntarget open fds: %d before, %d after the storm, %d after idle\n",
			r.FDsBefore, r.FDsAfterStorm, r.FDsAfter)
	}
	if r.Counters != nil {
		names := make([]string, 0, len(r.Counters))
		for n := range r.Counters {
			names = append(names, n)
		}
		slices.Sort(names)
		b.WriteString("\ntarget counter deltas\n")
		for _, n := range names {
			fmt.Fprintf(b, "  %-45s %g\n", n, r.Counters[n])
		}
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(b, "warning: %s\n", w)
	}
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
