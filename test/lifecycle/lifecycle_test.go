//go:build linux

package lifecycle_test

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestFirstRequestStartsOneMachine: an app whose machines are all stopped
// answers its first request with 200 from a machine started for it, and
// starts exactly one.
func TestFirstRequestStartsOneMachine(t *testing.T) {
	e := start(t, app{machines: []string{"m1", "m2", "m3"}, soft: 20, hard: 25})
	if s := e.started(); len(s) != 0 {
		t.Fatalf("machines started before any request: %v", s)
	}
	began := time.Now()
	r := e.get(nil, "/")
	took := time.Since(began)
	if r.err != nil || r.status != 200 || r.machine == "" {
		t.Fatalf("first request: %+v", r)
	}
	t.Logf("first request to a stopped app: 200 from %s after %v (a demo machine process started for it)", r.machine, took.Round(time.Millisecond))
	if s := e.started(); !slices.Equal(s, []string{r.machine}) {
		t.Errorf("started machines %v, want only %s", s, r.machine)
	}
	if n := e.metric(`edgeproxy_machine_starts_total{app="web",result="ok"}`); n != 1 {
		t.Errorf("%v starts counted, want 1", n)
	}
	if !strings.Contains(e.proc.Output(), `"start_wait_ms"`) {
		t.Error("the access log does not say the request waited for a start")
	}
	if !strings.HasPrefix(r.route, "started "+r.machine+" (waited ") {
		t.Errorf("routing header %q does not say which machine was started for the request", r.route)
	}
	// The next request goes to the started machine, without a start.
	if r2 := e.get(nil, "/"); r2.status != 200 || r2.machine != r.machine {
		t.Errorf("second request: %+v", r2)
	}
	if n := e.metric(`edgeproxy_machine_starts_total{app="web",result="ok"}`); n != 1 {
		t.Errorf("%v starts after the second request, want 1", n)
	}
}

// burst sends n concurrent requests, each on its own connection, and
// returns the results.
func burst(e *env, n int, path string) []result {
	out := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i] = e.get(nil, path) })
	}
	wg.Wait()
	return out
}

// TestConcurrentFirstRequests: 200 concurrent first requests share one
// start when the soft limit lets one machine take them all, and start
// more only when they exceed it.
func TestConcurrentFirstRequests(t *testing.T) {
	t.Run("within soft_limit", func(t *testing.T) {
		e := start(t, app{machines: []string{"m1", "m2", "m3"}, soft: 250, hard: 300})
		rs := burst(e, 200, "/sleep?d=200ms")
		failed := 0
		for _, r := range rs {
			if r.status != 200 {
				failed++
			}
		}
		starts := e.metric(`edgeproxy_machine_starts_total{app="web",result="ok"}`)
		t.Logf("200 concurrent first requests, soft_limit 250: %d failed, %v machine(s) started", failed, starts)
		if failed > 0 || starts != 1 {
			t.Errorf("%d failed, %v started; want 0 and 1", failed, starts)
		}
	})
	t.Run("beyond soft_limit", func(t *testing.T) {
		e := start(t, app{machines: []string{"m1", "m2", "m3"}, soft: 20, hard: 100})
		rs := burst(e, 200, "/sleep?d=500ms")
		failed := 0
		by := map[string]int{}
		for _, r := range rs {
			if r.status != 200 {
				failed++
				continue
			}
			by[r.machine]++
		}
		starts := e.metric(`edgeproxy_machine_starts_total{app="web",result="ok"}`)
		t.Logf("200 concurrent first requests, soft_limit 20, hard_limit 100: %d failed, %v machines started, served by %v", failed, starts, by)
		if failed > 0 {
			t.Errorf("%d requests failed", failed)
		}
		if starts < 2 {
			t.Errorf("%v machines started for load over one machine's soft limit, want more than 1", starts)
		}
	})
}

// TestAutostopOnePerIntervalPerRegion: idle machines stop one per
// interval per region, down to min_machines_running in the primary
// region; a region's lone machine stops at zero load.
func TestAutostopOnePerIntervalPerRegion(t *testing.T) {
	ids := []string{"i1", "i2", "i3", "o1", "o2"}
	e := start(t, app{machines: ids, started: ids, regions: map[string]string{"o1": "ord", "o2": "ord"},
		autostop: "stop", minRunning: 1, soft: 5, hard: 10, interval: "1s"})
	if !waitFor(20*time.Second, func() bool { return len(e.started()) == 5 }) {
		t.Fatalf("machines written started did not start: %v", e.machines())
	}
	type count struct {
		at       time.Duration
		iad, ord int
	}
	var seen []count
	began := time.Now()
	for time.Since(began) < 6*time.Second {
		c := count{at: time.Since(began).Round(time.Millisecond)}
		for _, m := range e.machines() {
			if m.State != "started" {
				continue
			}
			if m.Region == "iad" {
				c.iad++
			} else {
				c.ord++
			}
		}
		if len(seen) == 0 || seen[len(seen)-1].iad != c.iad || seen[len(seen)-1].ord != c.ord {
			seen = append(seen, c)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("started machines (iad, ord) as they changed: %+v", seen)
	last := seen[len(seen)-1]
	if last.iad != 1 || last.ord != 0 {
		t.Errorf("after idle: %d started in iad (min_machines_running 1), %d in ord; want 1 and 0", last.iad, last.ord)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i-1].iad-seen[i].iad > 1 || seen[i-1].ord-seen[i].ord > 1 {
			t.Errorf("more than one machine of a region stopped at once: %+v then %+v", seen[i-1], seen[i])
		}
	}
	// Their processes are gone.
	for _, id := range ids {
		if m := e.machines()[id]; m.State != "started" && e.listening(id) {
			t.Errorf("machine %s is %s but its process still listens", id, m.State)
		}
	}
	if n := e.metric(`edgeproxy_machine_stops_total{action="stop",app="web",reason="idle",result="ok"}`); n != 4 {
		t.Errorf("%v idle stops counted, want 4", n)
	}
}

// TestSuspendThenResume: an idle machine is suspended (its process
// frozen), and the next request resumes it.
func TestSuspendThenResume(t *testing.T) {
	e := start(t, app{machines: []string{"m1"}, started: []string{"m1"}, autostop: "suspend", interval: "500ms", soft: 5, hard: 10})
	if !waitFor(20*time.Second, func() bool { return e.machines()["m1"].State == "suspended" }) {
		t.Fatalf("an idle lone machine was not suspended: %+v", e.machines()["m1"])
	}
	r := e.get(nil, "/")
	if r.status != 200 || r.machine != "m1" {
		t.Fatalf("request to a suspended machine: %+v", r)
	}
	if n := e.metric(`edgeproxy_machine_stops_total{action="suspend",app="web",reason="idle",result="ok"}`); n < 1 {
		t.Errorf("%v suspends counted", n)
	}
	t.Logf("suspended, then resumed by a request: 200 from m1; machine %+v", e.machines()["m1"])
}

// TestStartFailureTriesAnotherMachine: a machine that cannot start gives
// a clear code, and the next request goes to another machine.
func TestStartFailureTriesAnotherMachine(t *testing.T) {
	e := start(t, app{machines: []string{"a-bad", "b-good"}, bad: "a-bad", soft: 5, hard: 10})
	r := e.get(nil, "/")
	if r.status != 503 || r.code != "PM01" {
		t.Fatalf("request whose machine failed to start: %+v, want 503 PM01", r)
	}
	m := e.machines()["a-bad"]
	if m.StartError == "" || !strings.Contains(m.StartError, "exit status 3") {
		t.Errorf("/v1/machines does not say why a-bad failed: %+v", m)
	}
	r = e.get(nil, "/")
	if r.status != 200 || r.machine != "b-good" {
		t.Fatalf("next request: %+v, want 200 from b-good", r)
	}
	t.Logf("a machine whose command exits: 503 PM01 (%s); the next request: 200 from %s", m.StartError, r.machine)
}

// TestStopLeavesNoMachines: SIGTERM to edgeproxy stops every machine
// process it started.
func TestStopLeavesNoMachines(t *testing.T) {
	e := start(t, app{machines: []string{"m1", "m2"}, started: []string{"m1", "m2"}, soft: 5, hard: 10})
	if !waitFor(20*time.Second, func() bool { return len(e.started()) == 2 }) {
		t.Fatalf("machines did not start: %v", e.machines())
	}
	pids := e.machinePIDs()
	if len(pids) != 2 {
		t.Fatalf("machine processes in the log: %v", pids)
	}
	if err := e.proc.Stop(20 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for id, pid := range pids {
		if !waitFor(5*time.Second, func() bool { return !alive(pid) }) {
			t.Errorf("machine %s (pid %d) outlived edgeproxy", id, pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// TestSlowBoot: a machine that boots for longer than start_timeout fails
// the request that waited with PM02; one that boots in 20 s, within the
// (documented, settable) start_timeout, serves the request that started
// it, where the platform's cold starts give up after about 8 s.
func TestSlowBoot(t *testing.T) {
	t.Run("beyond start_timeout", func(t *testing.T) {
		e := start(t, app{machines: []string{"m1"}, bootDelay: "5", startTimeout: "1s", soft: 5, hard: 10})
		r := e.get(nil, "/")
		if r.status != 503 || r.code != "PM02" {
			t.Fatalf("start beyond start_timeout: %+v, want 503 PM02", r)
		}
	})
	t.Run("20 s boot", func(t *testing.T) {
		e := start(t, app{machines: []string{"m1"}, bootDelay: "20", startTimeout: "60s", soft: 5, hard: 10})
		c := &http.Client{Timeout: 90 * time.Second}
		began := time.Now()
		r := e.get(c, "/")
		if r.status != 200 || r.machine != "m1" {
			t.Fatalf("a 20 s boot: %+v", r)
		}
		t.Logf("a machine booting for 20 s served the request that started it, after %v", time.Since(began).Round(time.Millisecond))
	})
}
