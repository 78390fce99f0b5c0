//go:build linux

package lifecycle_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/demo"
	"github.com/edgeproxy/edgeproxy/internal/machines/fakeapi"
)

const apiToken = "fake-api-s3cret"

// apiFake is a fake Machines API in the test process whose machines are
// demo machines it runs in the test process too: a start boots one on
// the machine's port, a stop or suspend takes it down.
type apiFake struct {
	t     *testing.T
	fake  *fakeapi.Server
	url   string
	mu    sync.Mutex
	ports map[string]int
	stops map[string]func()
}

func newAPIFake(t *testing.T) *apiFake {
	f := &apiFake{t: t, fake: fakeapi.New(apiToken), ports: map[string]int{}, stops: map[string]func(){}}
	f.fake.MaxWait = 500 * time.Millisecond
	f.fake.Boot = f.boot
	f.fake.Halt = f.halt
	srv := httptest.NewServer(f.fake)
	f.url = srv.URL
	t.Cleanup(func() {
		srv.Close()
		f.fake.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for id, stop := range f.stops {
			stop()
			delete(f.stops, id)
		}
	})
	return f
}

// add registers the env's machines with the fake, in their written state.
func (f *apiFake) add(a app, ports map[string]int) {
	f.mu.Lock()
	for id, p := range ports {
		f.ports[id] = p
	}
	f.mu.Unlock()
	for _, id := range a.machines {
		state := "stopped"
		if slices.Contains(a.started, id) {
			state = "started"
			if err := f.boot("web", id); err != nil {
				f.t.Fatal(err)
			}
		}
		f.fake.Add("web", id, state)
	}
}

func (f *apiFake) boot(_, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stops[id] != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	_, done, err := demo.Listen(ctx, fmt.Sprintf("127.0.0.1:%d", f.ports[id]), id, nil)
	if err != nil {
		cancel()
		return err
	}
	f.stops[id] = func() { cancel(); <-done }
	return nil
}

func (f *apiFake) halt(_, id string) {
	f.mu.Lock()
	stop := f.stops[id]
	delete(f.stops, id)
	f.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// TestMachinesAPIScenarios runs the lifecycle scenarios with the
// machines-api driver against the fake API, then the API's own failures:
// rate limits, server errors, timeouts and conflicts.
func TestMachinesAPIScenarios(t *testing.T) {
	t.Run("first request starts one machine", func(t *testing.T) {
		api := newAPIFake(t)
		e := start(t, app{machines: []string{"m1", "m2", "m3"}, soft: 20, hard: 25, api: api})
		r := e.get(nil, "/")
		if r.status != 200 || r.machine == "" {
			t.Fatalf("first request: %+v", r)
		}
		if n := api.fake.Calls("start"); n != 1 {
			t.Errorf("%d starts asked of the API, want 1", n)
		}
	})
	t.Run("200 concurrent first requests", func(t *testing.T) {
		api := newAPIFake(t)
		e := start(t, app{machines: []string{"m1", "m2", "m3"}, soft: 250, hard: 300, api: api})
		failed := 0
		for _, r := range burst(e, 200, "/sleep?d=200ms") {
			if r.status != 200 {
				failed++
			}
		}
		if failed > 0 || api.fake.Calls("start") != 1 {
			t.Errorf("%d failed, %d starts asked; want 0 and 1", failed, api.fake.Calls("start"))
		}
	})
	t.Run("idle machines stop to min_machines_running", func(t *testing.T) {
		api := newAPIFake(t)
		ids := []string{"m1", "m2", "m3"}
		e := start(t, app{machines: ids, started: ids, autostop: "stop", minRunning: 1, interval: "500ms", soft: 5, hard: 10, api: api})
		if !waitFor(20*time.Second, func() bool { return len(e.started()) == 1 }) {
			t.Fatalf("idle machines not stopped to 1: %v", e.machines())
		}
		time.Sleep(time.Second)
		if s := e.started(); len(s) != 1 {
			t.Errorf("started after more intervals: %v, want 1", s)
		}
		if n := api.fake.Calls("stop"); n != 2 {
			t.Errorf("%d stops asked of the API, want 2", n)
		}
		st, _ := api.fake.LastStop("web", "m1")
		t.Logf("stops asked: %d; a stop request: %+v", api.fake.Calls("stop"), st)
	})
	t.Run("suspend then resume", func(t *testing.T) {
		api := newAPIFake(t)
		e := start(t, app{machines: []string{"m1"}, started: []string{"m1"}, autostop: "suspend", interval: "500ms", soft: 5, hard: 10, api: api})
		if !waitFor(20*time.Second, func() bool { return api.fake.State("web", "m1") == "suspended" }) {
			t.Fatalf("not suspended: %s", api.fake.State("web", "m1"))
		}
		if r := e.get(nil, "/"); r.status != 200 || r.machine != "m1" {
			t.Fatalf("request to a suspended machine: %+v", r)
		}
	})
	t.Run("a refused start, then another machine", func(t *testing.T) {
		api := newAPIFake(t)
		e := start(t, app{machines: []string{"m1", "m2"}, soft: 5, hard: 10, api: api})
		api.fake.FailNext("start", http.StatusUnprocessableEntity, 1)
		r := e.get(nil, "/")
		if r.status != 503 || r.code != "PM01" {
			t.Fatalf("a start the API refused: %+v, want 503 PM01", r)
		}
		r2 := e.get(nil, "/")
		if r2.status != 200 || r2.machine == "" {
			t.Fatalf("next request: %+v", r2)
		}
		t.Logf("API refused the start: 503 %s; next request served by %s", r.code, r2.machine)
	})
	t.Run("429 and 5xx are retried", func(t *testing.T) {
		api := newAPIFake(t)
		e := start(t, app{machines: []string{"m1"}, soft: 5, hard: 10, api: api})
		api.fake.FailNext("start", http.StatusTooManyRequests, 1)
		api.fake.FailNext("start", http.StatusServiceUnavailable, 1)
		if r := e.get(nil, "/"); r.status != 200 {
			t.Fatalf("start after a 429 and a 503: %+v", r)
		}
		if n := api.fake.Calls("start"); n != 3 {
			t.Errorf("start asked %d times, want 3", n)
		}
	})
	t.Run("an API that does not answer", func(t *testing.T) {
		api := newAPIFake(t)
		e := start(t, app{machines: []string{"m1"}, soft: 5, hard: 10, api: api})
		api.fake.Delay("start", 10*time.Second)
		r := e.get(nil, "/")
		if r.status != 503 || r.code != "PM03" {
			t.Fatalf("start against an API that hangs: %+v, want 503 PM03", r)
		}
		api.fake.Delay("start", 0)
		if r := e.get(nil, "/"); r.status != 200 {
			t.Fatalf("once the API answers again: %+v", r)
		}
		t.Logf("an API that hangs: 503 %s; once it answers again, 200", r.code)
	})
	t.Run("409 on start is looked into", func(t *testing.T) {
		api := newAPIFake(t)
		e := start(t, app{machines: []string{"m1"}, soft: 5, hard: 10, api: api})
		api.fake.FailNext("start", http.StatusConflict, 1)
		if r := e.get(nil, "/"); r.status != 200 || !strings.Contains(r.machine, "m1") {
			t.Fatalf("start after a 409: %+v", r)
		}
	})
}
