//go:build linux

package shapes_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/storm"
)

// Storm sizes, measured on two cores with this package under -race (the
// storm client is race-instrumented; the proxy is not): each single-shape
// storm takes a few seconds, and the whole test about a minute.
const (
	// shapeConns is the connections of each single-shape storm on the TLS
	// port; six shapes make 9,000 in all.
	shapeConns = 1500
	// mixedConns is the connections of the mixed storm on the plain port,
	// a multiple of the six shapes so each gets the same share.
	mixedConns = 1200
	// stormConcurrency is the connections in flight at once.
	stormConcurrency = 150
	// requestsPerConn is what each keepalive connection makes.
	requestsPerConn = 10
	// connTimeout bounds each storm connection, dial to close. A correct
	// proxy ends every shape within a second or two even under load; a
	// connection that reaches this is one the proxy never closed.
	connTimeout = 8 * time.Second
	// stormCap stops a storm from starting connections after this long, so
	// a proxy that hangs every connection still fails in bounded time.
	stormCap = 45 * time.Second
	// idleWindow is the quiet time after each storm in which the proxy's
	// CPU is measured: a connection left spinning costs a whole core there.
	idleWindow = 3 * time.Second
	// maxIdleCPUPercent is the most CPU, in percent of one core, that the
	// proxy may use during idleWindow.
	maxIdleCPUPercent = 10
)

// spuriousCounters are the metrics of docs/incident.md that a correct proxy
// leaves at zero under every shape.
var spuriousCounters = []string{
	"edgeproxy_guard_zero_progress_reads_total",
	"edgeproxy_guard_reads_after_eof_total",
	"edgeproxy_guard_zero_byte_writes_total",
	"edgeproxy_spin_kills_total",
}

// okMeans says, per shape, what a correct proxy gives the client: the
// outcome storm calls "ok" (see internal/storm/shapes_run.go).
var okMeans = map[storm.Shape]string{
	storm.CNJunkHold: "the response to the complete request arrives whole while the client holds " +
		"the connection with junk queued behind close_notify",
	storm.CNJunkFIN: "the response arrives whole and the proxy then closes the connection after the " +
		"client's FIN (crypto/tls stops reading the socket after close_notify, so a FIN there " +
		"is only noticed by a lingering close or a deadline)",
	storm.CNJunkRST: "the client delivers the whole shape up to its RST (nothing reset it earlier)",
	storm.FINMidBody: "the proxy reacts to a body cut short by close_notify and FIN with a complete " +
		"error response or a clean close, not a reset, a cut response, or silence until the client gives up",
	storm.CompleteCN: "the response to a complete request arrives whole although the client " +
		"half-closed right after sending it",
	storm.KeepAlive: "every request of the connection gets a whole response",
}

// answered are the shapes whose every connection sent complete requests
// that a correct proxy answers with the machine's 200.
var answered = []storm.Shape{storm.CNJunkHold, storm.CNJunkFIN, storm.CompleteCN, storm.KeepAlive}

// TestShapes storms one proxy with each shape of docs/incident.md on the TLS
// port, then with all of them mixed on the plain HTTP port, and checks
// after each storm that the proxy is idle, holds no connection it should
// have closed, counted no spurious wakeup, and answered whatever was
// complete.
func TestShapes(t *testing.T) {
	env := startProxy(t)
	for _, sh := range storm.Shapes() {
		t.Run(string(sh), func(t *testing.T) {
			cfg := env.stormConfig(false, shapeConns, []storm.ShapeWeight{{Shape: sh, Weight: 1}})
			rep := env.runStorm(t, cfg)
			checkShape(t, rep, sh, shapeConns)
		})
	}
	t.Run("mixed-plain", func(t *testing.T) {
		cfg := env.stormConfig(true, mixedConns, nil) // nil: every shape, weight 1
		rep := env.runStorm(t, cfg)
		for _, sh := range storm.Shapes() {
			checkShape(t, rep, sh, mixedConns/len(storm.Shapes()))
		}
	})
}

func (e *proxyEnv) stormConfig(plain bool, count int, shapes []storm.ShapeWeight) storm.Config {
	target := e.tlsAddr
	if plain {
		target = e.plainAddr
	}
	return storm.Config{
		Target:          target,
		SNI:             serverName,
		Plain:           plain,
		Count:           count,
		Concurrency:     stormConcurrency,
		Duration:        stormCap,
		Shapes:          shapes,
		Path:            "/", // the demo machine's JSON report, with Content-Length
		Hold:            2 * time.Second,
		Timeout:         connTimeout,
		RequestsPerConn: requestsPerConn,
		PID:             e.pid,
		MetricsURL:      e.metricsURL,
		Counters:        append([]string{"process_cpu_seconds_total"}, spuriousCounters...),
		Idle:            idleWindow,
	}
}

// runStorm runs one storm, logs its report, waits for the proxy's
// descriptors to settle and checks what every storm must leave behind.
func (e *proxyEnv) runStorm(t *testing.T, cfg storm.Config) *storm.Report {
	t.Helper()
	base := e.census(t)
	ctx, cancel := context.WithTimeout(t.Context(), cfg.Duration+cfg.Timeout+cfg.Idle+30*time.Second)
	defer cancel()
	rep, err := storm.Run(ctx, cfg, nil)
	if rep != nil {
		var b strings.Builder
		rep.WriteText(&b)
		t.Logf("storm report:\n%s", b.String())
	}
	if err != nil {
		t.Fatalf("storm: %v", err)
	}
	after, took := e.waitSettled(t, base)
	checkTarget(t, rep, cfg)
	checkSettled(t, base, after, took)
	if after.Client > base.Client || rep.IdleCPUPercent >= maxIdleCPUPercent {
		e.logGoroutines(t)
	}
	return rep
}

// checkTarget asserts what the proxy must show after any storm.
func checkTarget(t *testing.T, rep *storm.Report, cfg storm.Config) {
	t.Helper()
	if rep.Completed != cfg.Count || rep.Aborted != 0 || rep.StoppedByDuration {
		t.Errorf("storm completed %d of %d connections (%d aborted, stopped by duration cap %v): "+
			"the proxy did not get through the storm in %s", rep.Completed, cfg.Count, rep.Aborted,
			rep.StoppedByDuration, cfg.Duration)
	}
	for _, w := range rep.Warnings {
		t.Errorf("storm could not observe the proxy: %s", w)
	}
	switch {
	case rep.CPUSource != "proc" || rep.IdleWindow < cfg.Idle:
		t.Errorf("idle CPU not measured (source %q, idle window %s)", rep.CPUSource, rep.IdleWindow)
	case rep.IdleCPUPercent >= maxIdleCPUPercent:
		t.Errorf("proxy used %.1f%% of a core (user %.2fs, system %.2fs) in the %s after the storm, want under %d%%: "+
			"something kept running with no client left (a spinning connection costs 100%%)",
			rep.IdleCPUPercent, rep.IdleCPU.User, rep.IdleCPU.System, rep.IdleWindow.Round(time.Millisecond), maxIdleCPUPercent)
	}
	if rep.Counters == nil {
		t.Errorf("no counter deltas: metrics at %s not scraped", cfg.MetricsURL)
		return
	}
	for _, name := range spuriousCounters {
		if d := rep.Counters[name]; d != 0 {
			t.Errorf("%s rose by %g during the storm, want 0", name, d)
		}
	}
}

// checkShape asserts the outcomes of one shape's want connections.
func checkShape(t *testing.T, rep *storm.Report, sh storm.Shape, want int) {
	t.Helper()
	sr := rep.Shapes[sh]
	if sr == nil {
		t.Errorf("%s: no connection completed", sh)
		return
	}
	if sr.Count != want {
		t.Errorf("%s: %d connections completed, want %d", sh, sr.Count, want)
	}
	if bad := sr.Count - sr.Outcomes[storm.OK]; bad > 0 {
		t.Errorf("%s: %d of %d connections did not end ok (%s); ok means %s", sh, bad, sr.Count, outcomes(sr), okMeans[sh])
		if n := sr.Outcomes[storm.Timeout]; n > 0 {
			t.Errorf("%s: %d connections reached the client's %s timeout: the proxy never answered or closed them",
				sh, n, connTimeout)
		}
	}
	if slices.Contains(answered, sh) {
		responses := sr.Count
		if sh == storm.KeepAlive {
			responses *= requestsPerConn
		}
		if sr.Statuses[200] != responses || len(sr.Statuses) != 1 {
			t.Errorf("%s: statuses %v, want 200×%d: every request was complete and the machine answers 200",
				sh, sr.Statuses, responses)
		}
	}
}

func outcomes(sr *storm.ShapeReport) string {
	var parts []string
	for _, o := range storm.Outcomes() {
		if n := sr.Outcomes[o]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", o, n))
		}
	}
	if sr.FirstOther != "" {
		parts = append(parts, "first other error: "+sr.FirstOther)
	}
	return strings.Join(parts, ", ")
}
