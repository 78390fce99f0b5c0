package fakeapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeproxy/edgeproxy/internal/machines/fakeapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "fake-token"

// env serves a fake on 127.0.0.1:0 with one machine, app1/m1, stopped.
func env(t *testing.T) (*fakeapi.Server, *httptest.Server) {
	t.Helper()
	f := fakeapi.New(token)
	f.Add("app1", "m1", "stopped")
	srv := httptest.NewServer(f)
	t.Cleanup(func() {
		srv.Close()
		f.Close()
	})
	return f, srv
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	list   []map[string]any
}

// call sends one request and decodes the answer; every test request is
// bounded so that a fake that never answers fails the test.
func call(t *testing.T, srv *httptest.Server, method, path, tok, body string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header}
	if strings.HasPrefix(strings.TrimSpace(string(raw)), "[") {
		err = json.Unmarshal(raw, &a.list)
	} else {
		err = json.Unmarshal(raw, &a.body)
	}
	if err != nil {
		t.Fatalf("%s %s: answer %q is not JSON: %v", method, path, raw, err)
	}
	return a
}

func want(t *testing.T, a answer, status int, errSub string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d (body %v)", a.status, status, a.body)
	}
	if errSub != "" {
		msg, _ := a.body["error"].(string)
		if !strings.Contains(msg, errSub) {
			t.Fatalf("error %q does not contain %q", msg, errSub)
		}
	}
}

const m1 = "/v1/apps/app1/machines/m1"

func TestAuth(t *testing.T) {
	f, srv := env(t)
	want(t, call(t, srv, "GET", m1, "", ""), 401, "unauthorized")
	want(t, call(t, srv, "GET", m1, "other", ""), 401, "unauthorized")
	want(t, call(t, srv, "POST", m1+"/start", "other", ""), 401, "unauthorized")
	if f.State("app1", "m1") != "stopped" {
		t.Error("an unauthorized start acted")
	}
	a := call(t, srv, "GET", m1, token, "")
	want(t, a, 200, "")
	if a.body["id"] != "m1" || a.body["state"] != "stopped" || a.body["instance_id"] == "" {
		t.Errorf("machine = %v", a.body)
	}
	if got := f.Calls("get"); got != 3 {
		t.Errorf("Calls(get) = %d, want 3: refused requests count", got)
	}
}

func TestNotFound(t *testing.T) {
	_, srv := env(t)
	want(t, call(t, srv, "GET", "/v1/apps/nope/machines", token, ""), 404, "app not found")
	want(t, call(t, srv, "GET", "/v1/apps/nope/machines/m1", token, ""), 404, "app not found")
	want(t, call(t, srv, "POST", "/v1/apps/app1/machines/nope/start", token, ""), 404, "machine not found")
	want(t, call(t, srv, "GET", "/v1/apps/app1/machines/nope/wait?state=started", token, ""), 404, "machine not found")
}

func TestTransitions(t *testing.T) {
	f, srv := env(t)
	var boots, halts atomic.Int32
	f.Boot = func(app, id string) error { boots.Add(1); return nil }
	f.Halt = func(app, id string) { halts.Add(1) }

	want(t, call(t, srv, "POST", m1+"/stop", token, ""), 409, "already stopped")
	want(t, call(t, srv, "POST", m1+"/suspend", token, ""), 409, "cannot be suspended")
	a := call(t, srv, "POST", m1+"/start", token, "")
	want(t, a, 200, "")
	if a.body["previous_state"] != "stopped" {
		t.Errorf("start answer = %v", a.body)
	}
	want(t, call(t, srv, "POST", m1+"/start", token, ""), 409, "already started")
	want(t, call(t, srv, "POST", m1+"/suspend", token, ""), 200, "")
	want(t, call(t, srv, "POST", m1+"/suspend", token, ""), 409, "already suspended")
	want(t, call(t, srv, "POST", m1+"/start", token, ""), 200, "")
	want(t, call(t, srv, "POST", m1+"/stop", token, `{"signal":"SIGTERM","timeout":"5s"}`), 200, "")
	if got, ok := f.LastStop("app1", "m1"); !ok || got != (fakeapi.StopRequest{Signal: "SIGTERM", Timeout: "5s"}) {
		t.Errorf("LastStop = %+v, %v", got, ok)
	}
	if boots.Load() != 2 || halts.Load() != 2 {
		t.Errorf("boots %d, halts %d; want 2 and 2", boots.Load(), halts.Load())
	}
	if f.State("app1", "m1") != "stopped" {
		t.Errorf("state %q", f.State("app1", "m1"))
	}

	f.Add("app1", "m1", "started")
	want(t, call(t, srv, "POST", m1+"/stop", token, `{"signal":"TERM"}`), 400, "invalid signal")
	want(t, call(t, srv, "POST", m1+"/stop", token, `{"timeout":"soon"}`), 400, "invalid timeout")
	want(t, call(t, srv, "POST", m1+"/stop", token, `{`), 400, "invalid stop request")

	f.Add("app1", "m1", "destroyed")
	want(t, call(t, srv, "POST", m1+"/start", token, ""), 409, "destroyed")
	if a := call(t, srv, "GET", "/v1/apps/app1/machines", token, ""); len(a.list) != 0 {
		t.Errorf("list shows a destroyed machine: %v", a.list)
	}
	if a := call(t, srv, "GET", "/v1/apps/app1/machines?include_deleted=true", token, ""); len(a.list) != 1 {
		t.Errorf("list with include_deleted = %v", a.list)
	}
}

func TestBootFailure(t *testing.T) {
	f, srv := env(t)
	f.Boot = func(app, id string) error { return errors.New("no such image") }
	want(t, call(t, srv, "POST", m1+"/start", token, ""), 200, "")
	if got := f.State("app1", "m1"); got != "failed" {
		t.Errorf("state %q, want failed", got)
	}
	// A failed machine may be started again.
	f.Boot = nil
	want(t, call(t, srv, "POST", m1+"/start", token, ""), 200, "")
	if got := f.State("app1", "m1"); got != "started" {
		t.Errorf("state %q, want started", got)
	}
}

func TestWait(t *testing.T) {
	f, srv := env(t)
	inst := f.InstanceID("app1", "m1")

	want(t, call(t, srv, "GET", m1+"/wait?state=running", token, ""), 400, "invalid state")
	want(t, call(t, srv, "GET", m1+"/wait?state=started&timeout=1.5", token, ""), 400, "invalid timeout")
	want(t, call(t, srv, "GET", m1+"/wait?state=stopped", token, ""), 400, "instance_id")
	want(t, call(t, srv, "GET", m1+"/wait?state=stopped&instance_id=other", token, ""), 400, "instance_id")
	want(t, call(t, srv, "GET", m1+"/wait?state=stopped&instance_id="+inst, token, ""), 200, "")
	// The default state is started; timeout=0 answers at once.
	want(t, call(t, srv, "GET", m1+"/wait?timeout=0", token, ""), 408, "started")
	// The wait's own timeout, in seconds.
	began := time.Now()
	want(t, call(t, srv, "GET", m1+"/wait?state=started&timeout=1", token, ""), 408, "")
	if took := time.Since(began); took < 900*time.Millisecond {
		t.Errorf("408 after %v, before the 1s timeout", took)
	}
	// MaxWait caps it.
	f.MaxWait = 10 * time.Millisecond
	want(t, call(t, srv, "GET", m1+"/wait?state=started&timeout=60", token, ""), 408, "")

	// A wait answers when another request moves the machine.
	f.MaxWait = 0
	before := f.Calls("wait")
	done := make(chan int, 1)
	go func() {
		// Not call: t.Fatal belongs to the test's goroutine.
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+m1+"/wait?state=started&timeout=30", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := srv.Client().Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	deadline := time.Now().Add(30 * time.Second)
	for f.Calls("wait") == before {
		if time.Now().After(deadline) {
			t.Fatal("the wait request never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	want(t, call(t, srv, "POST", m1+"/start", token, ""), 200, "")
	if got := <-done; got != 200 {
		t.Errorf("wait answered %d once the machine started, want 200", got)
	}
}

func TestBootDelay(t *testing.T) {
	f, srv := env(t)
	booted := make(chan struct{}, 1)
	f.Boot = func(app, id string) error { booted <- struct{}{}; return nil }
	f.BootDelay = 20 * time.Millisecond
	want(t, call(t, srv, "POST", m1+"/start", token, ""), 200, "")
	if got := f.State("app1", "m1"); got != "starting" && got != "started" {
		t.Errorf("state %q after start", got)
	}
	want(t, call(t, srv, "GET", m1+"/wait?state=started&timeout=30", token, ""), 200, "")
	<-booted
}

// Close cancels a boot still waiting out BootDelay: Boot never runs.
func TestCloseCancelsBoots(t *testing.T) {
	f, srv := env(t)
	var boots atomic.Int32
	f.Boot = func(app, id string) error { boots.Add(1); return nil }
	f.BootDelay = time.Hour
	want(t, call(t, srv, "POST", m1+"/start", token, ""), 200, "")
	f.Close()
	if boots.Load() != 0 || f.State("app1", "m1") != "starting" {
		t.Errorf("boots %d, state %q", boots.Load(), f.State("app1", "m1"))
	}
}

func TestFaults(t *testing.T) {
	f, srv := env(t)
	f.FailNext("get", 503, 1)
	f.FailNext("get", 429, 2)
	f.RetryAfter("get", "1")
	want(t, call(t, srv, "GET", m1, token, ""), 503, "injected 503")
	a := call(t, srv, "GET", m1, token, "")
	want(t, a, 429, "")
	if a.header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q", a.header.Get("Retry-After"))
	}
	f.RetryAfter("get", "")
	a = call(t, srv, "GET", m1, token, "")
	want(t, a, 429, "")
	if _, ok := a.header["Retry-After"]; ok {
		t.Error("Retry-After sent after RetryAfter(get, \"\")")
	}
	want(t, call(t, srv, "GET", m1, token, ""), 200, "")
	// Faults are per op.
	f.FailNext("start", 500, 1)
	want(t, call(t, srv, "GET", m1, token, ""), 200, "")
	want(t, call(t, srv, "POST", m1+"/start", token, ""), 500, "")
	if f.State("app1", "m1") != "stopped" {
		t.Error("a failed start acted")
	}
	if got := f.MachineCalls("get", "app1", "m1"); got != 5 {
		t.Errorf("MachineCalls(get) = %d, want 5", got)
	}
}

// A delayed request whose client gives up ends at once, without acting;
// TestMain's leak check fails if its handler lingers.
func TestDelayEndsWithRequest(t *testing.T) {
	f, srv := env(t)
	f.Delay("start", time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", srv.URL+m1+"/start", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a delayed request was answered")
	}
	f.Delay("start", 0)
	want(t, call(t, srv, "GET", m1, token, ""), 200, "")
	if f.State("app1", "m1") != "stopped" {
		t.Error("the abandoned start acted")
	}
}
