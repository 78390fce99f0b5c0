package storm

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if _, _, err := parseProcStat(data); err != nil {
		t.Errorf("own /proc/self/stat: %v", err)
	}

	// A command name may hold spaces and parentheses; fields count from
	// the last ')'. utime is 1234 and stime 567 here.
	weird := "4242 (we(ird) ) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 1 0 100 1000 10\n"
	u, s, err := parseProcStat([]byte(weird))
	if err != nil || u != 1234 || s != 567 {
		t.Errorf("parseProcStat(weird) = %d, %d, %v; want 1234, 567", u, s, err)
	}
	for _, bad := range []string{"", "4242 no parens S 1", "1 (x) S 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 5 0"} {
		if _, _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q): no error", bad)
		}
	}
}

func TestProcOfOwnProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	cpu, err := readProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if cpu.User < 0 || cpu.System < 0 || math.Abs(cpu.Total-(cpu.User+cpu.System)) > 1e-9 {
		t.Errorf("CPU %+v: want non-negative parts adding up to the total", cpu)
	}
	n, err := countFDs(os.Getpid())
	if err != nil || n < 3 {
		t.Errorf("countFDs(self) = %d, %v; want at least stdin, stdout, stderr", n, err)
	}
	if _, err := readProcCPU(1 << 30); err == nil {
		t.Error("readProcCPU of a pid that cannot exist: no error")
	}
}

const exposition = `# HELP edgeproxy_spin_kills_total Connections killed by the spin detector.
# TYPE edgeproxy_spin_kills_total counter
edgeproxy_spin_kills_total{layer="tls",reason="zero_progress"} %d
edgeproxy_spin_kills_total{layer="tcp",reason="after_eof"} %d
# TYPE edgeproxy_guard_zero_progress_reads_total counter
edgeproxy_guard_zero_progress_reads_total{layer="tls"} %d
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total %g
# TYPE edgeproxy_request_duration_seconds histogram
edgeproxy_request_duration_seconds_bucket{le="+Inf"} 3
edgeproxy_request_duration_seconds_sum 0.5
edgeproxy_request_duration_seconds_count 3
`

func TestSumFamilies(t *testing.T) {
	text := fmt.Sprintf(exposition, 2, 3, 40, 1.5)
	names := append(DefaultCounters(), "edgeproxy_request_duration_seconds")
	got, err := sumFamilies(strings.NewReader(text), names)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"edgeproxy_spin_kills_total":                5,
		"edgeproxy_guard_zero_progress_reads_total": 40,
		"process_cpu_seconds_total":                 1.5,
		"edgeproxy_request_duration_seconds":        0, // a histogram has no one value
	}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v (absent families absent)", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %g, want %g", k, got[k], v)
		}
	}
	if _, err := sumFamilies(strings.NewReader("not an exposition {{{\n"), names); err == nil {
		t.Error("malformed exposition: no error")
	}
}

// metricsServer serves the canned exposition with every counter one step
// further at each scrape, so deltas are predictable.
func metricsServer(t *testing.T) (string, *atomic.Int64) {
	var scrapes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		n := scrapes.Add(1)
		fmt.Fprintf(w, exposition, n, 2*n, 10*n, 1.5*float64(n))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics", &scrapes
}

func TestTargetObservation(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	target := newTLSServer(t, echoHandler)
	url, scrapes := metricsServer(t)
	cfg := small(target, KeepAlive)
	cfg.PID, cfg.MetricsURL, cfg.Idle = os.Getpid(), url, 100*time.Millisecond
	rep := run(t, cfg)

	if n := scrapes.Load(); n != 3 {
		t.Errorf("%d scrapes, want before, after the storm and after idle", n)
	}
	// Two steps between the first and last scrape.
	want := map[string]float64{
		"edgeproxy_spin_kills_total":                6,
		"edgeproxy_guard_zero_progress_reads_total": 20,
		"edgeproxy_guard_reads_after_eof_total":     0,
		"process_cpu_seconds_total":                 3,
	}
	if len(rep.Counters) != len(want) {
		t.Errorf("counters %v, want %v", rep.Counters, want)
	}
	for k, v := range want {
		if got, ok := rep.Counters[k]; !ok || got != v {
			t.Errorf("counter %s delta = %g (present %v), want %g", k, got, ok, v)
		}
	}
	if rep.CPUSource != "proc" || rep.IdleWindow < cfg.Idle {
		t.Errorf("CPU source %q, idle window %s; want proc over at least %s", rep.CPUSource, rep.IdleWindow, cfg.Idle)
	}
	if rep.StormCPU.Total < 0 || rep.IdleCPU.Total < 0 || rep.IdleCPUPercent < 0 {
		t.Errorf("negative CPU: storm %+v, idle %+v, %g%%", rep.StormCPU, rep.IdleCPU, rep.IdleCPUPercent)
	}
	if rep.FDsBefore < 3 || rep.FDsAfterStorm < 3 || rep.FDsAfter < 3 {
		t.Errorf("fds %d, %d, %d; want this process's", rep.FDsBefore, rep.FDsAfterStorm, rep.FDsAfter)
	}
}

// Without a PID, CPU comes from process_cpu_seconds_total.
func TestCPUFromMetrics(t *testing.T) {
	target := newTLSServer(t, echoHandler)
	url, _ := metricsServer(t)
	cfg := small(target, KeepAlive)
	cfg.MetricsURL, cfg.Idle = url, 100*time.Millisecond
	rep := run(t, cfg)
	if rep.CPUSource != "metrics" || rep.StormCPU.Total != 1.5 || rep.IdleCPU.Total != 1.5 {
		t.Fatalf("CPU %q storm %+v idle %+v; want 1.5s each from metrics", rep.CPUSource, rep.StormCPU, rep.IdleCPU)
	}
	want := 100 * 1.5 / rep.IdleWindow.Seconds()
	if math.Abs(rep.IdleCPUPercent-want) > 1e-9 {
		t.Errorf("idle CPU %g%%, want %g%% (1.5s over %s)", rep.IdleCPUPercent, want, rep.IdleWindow)
	}
	if rep.FDsBefore != -1 || rep.FDsAfter != -1 {
		t.Errorf("fds %d, %d without a PID; want -1", rep.FDsBefore, rep.FDsAfter)
	}
}

func TestMetricsFailures(t *testing.T) {
	target := newTLSServer(t, echoHandler)
	url, _ := metricsServer(t)
	cfg := small(target, KeepAlive)
	cfg.MetricsURL = strings.TrimSuffix(url, "/metrics") + "/nope"
	if _, err := Run(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("metrics URL answering 404: %v, want an error before the storm", err)
	}
	cfg.MetricsURL = "ftp://127.0.0.1/metrics"
	if _, err := Run(context.Background(), cfg, nil); err == nil {
		t.Error("ftp metrics URL: no error")
	}
}
