package machines_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeproxy/edgeproxy/internal/machines"
	"github.com/edgeproxy/edgeproxy/internal/machines/fakeapi"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// apiTestToken is distinctive so that a leak into an error string cannot
// be missed.
const apiTestToken = "fo1_apitest-SECRET-7f3c9e"

// apiTestBound bounds every test: none needs more than a few seconds, and a
// driver that hangs must fail the test, not stall the run.
const apiTestBound = 30 * time.Second

var apiM1 = machines.Machine{App: "app1", ID: "m1"}

// apiEnv starts a fake API on 127.0.0.1:0 and a driver on it. cfg may
// change the driver's config. Everything is closed when the test ends, and
// the test fails if goroutines are left behind.
func apiEnv(t *testing.T, cfg func(*machines.APIConfig)) (*fakeapi.Server, *machines.APIDriver) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	fake := fakeapi.New(apiTestToken)
	srv := httptest.NewServer(fake)
	c := machines.APIConfig{
		URL:            srv.URL,
		Token:          apiTestToken,
		App:            "app1",
		RequestTimeout: 5 * time.Second,
		Backoff:        time.Millisecond,
	}
	if cfg != nil {
		cfg(&c)
	}
	d, err := machines.NewAPIDriver(c)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Close()
		srv.Close()
		fake.Close()
	})
	return fake, d
}

func apiCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), apiTestBound)
	t.Cleanup(cancel)
	return ctx
}

// apiWantErr checks err carries code and never the token, and returns the
// *perr.Error for further checks.
func apiWantErr(t *testing.T, err error, code perr.Code) *perr.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if strings.Contains(err.Error(), apiTestToken) {
		t.Fatalf("error contains the token: %v", err)
	}
	pe, ok := perr.As(err)
	if !ok {
		t.Fatalf("error has no perr code: %v", err)
	}
	if pe.Code != code {
		t.Fatalf("code %s, want %s: %v", pe.Code, code, err)
	}
	return pe
}

func apiNoErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		if strings.Contains(err.Error(), apiTestToken) {
			t.Errorf("error contains the token")
		}
		t.Fatalf("%s: %v", what, err)
	}
}

// apiUntil polls cond until it holds, failing the test if it does not
// within apiTestBound.
func apiUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(apiTestBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func apiWantState(t *testing.T, fake *fakeapi.Server, want string) {
	t.Helper()
	if got := fake.State("app1", "m1"); got != want {
		t.Fatalf("fake says machine is %q, want %q", got, want)
	}
}

func TestAPILifecycle(t *testing.T) {
	fake, d := apiEnv(t, nil)
	var boots, halts atomic.Int32
	fake.Boot = func(app, id string) error {
		if app != "app1" || id != "m1" {
			t.Errorf("Boot(%q, %q)", app, id)
		}
		boots.Add(1)
		return nil
	}
	fake.Halt = func(app, id string) { halts.Add(1) }
	fake.Add("app1", "m1", "stopped")
	ctx := apiCtx(t)

	apiNoErr(t, "Start", d.Start(ctx, apiM1))
	apiWantState(t, fake, "started")
	if s, err := d.State(ctx, apiM1); err != nil || s != machines.Started {
		t.Fatalf("State = %q, %v; want started", s, err)
	}

	apiNoErr(t, "Suspend", d.Suspend(ctx, apiM1))
	apiWantState(t, fake, "suspended")
	if s, err := d.State(ctx, apiM1); err != nil || s != machines.Suspended {
		t.Fatalf("State = %q, %v; want suspended", s, err)
	}

	// Start resumes a suspended machine.
	apiNoErr(t, "resume", d.Start(ctx, apiM1))
	apiWantState(t, fake, "started")

	apiNoErr(t, "Stop", d.Stop(ctx, apiM1, syscall.SIGTERM, 5*time.Second))
	apiWantState(t, fake, "stopped")
	if got, _ := fake.LastStop("app1", "m1"); got != (fakeapi.StopRequest{Signal: "SIGTERM", Timeout: "5s"}) {
		t.Errorf("stop body %+v, want SIGTERM and 5s", got)
	}
	apiNoErr(t, "Wait stopped", d.Wait(ctx, apiM1, machines.Stopped))
	if s, err := d.State(ctx, apiM1); err != nil || s != machines.Stopped {
		t.Fatalf("State = %q, %v; want stopped", s, err)
	}
	if boots.Load() != 2 || halts.Load() != 2 {
		t.Errorf("boots %d, halts %d; want 2 and 2", boots.Load(), halts.Load())
	}
}

// Start must not return before the API reports the machine started, even
// when the API answers the start request first.
func TestAPIStartWaitsForStarted(t *testing.T) {
	fake, d := apiEnv(t, nil)
	fake.BootDelay = 50 * time.Millisecond
	fake.Add("app1", "m1", "stopped")
	apiNoErr(t, "Start", d.Start(apiCtx(t), apiM1))
	apiWantState(t, fake, "started")
	if fake.Calls("wait") == 0 {
		t.Error("Start did not use the wait endpoint")
	}
}

// Two starts at once: the second is refused with 409 while the machine is
// starting, and must wait for it rather than fail or return early.
func TestAPIConcurrentStarts(t *testing.T) {
	fake, d := apiEnv(t, nil)
	fake.BootDelay = 50 * time.Millisecond
	fake.Add("app1", "m1", "stopped")
	ctx := apiCtx(t)
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- d.Start(ctx, apiM1) }()
	}
	for range 2 {
		apiNoErr(t, "Start", <-errs)
	}
	apiWantState(t, fake, "started")
}

func TestAPIStateMapping(t *testing.T) {
	fake, d := apiEnv(t, nil)
	ctx := apiCtx(t)
	for api, want := range map[string]machines.State{
		"started":       machines.Started,
		"stopped":       machines.Stopped,
		"created":       machines.Stopped,
		"suspended":     machines.Suspended,
		"starting":      machines.Starting,
		"restarting":    machines.Starting,
		"replacing":     machines.Starting,
		"updating":      machines.Starting,
		"stopping":      machines.Stopping,
		"suspending":    machines.Stopping,
		"destroying":    machines.Stopping,
		"failed":        machines.Failed,
		"launch_failed": machines.Failed,
		"destroyed":     machines.Failed,
	} {
		fake.Add("app1", "m1", api)
		got, err := d.State(ctx, apiM1)
		if err != nil || got != want {
			t.Errorf("API state %q: State = %q, %v; want %q", api, got, err, want)
		}
	}
	fake.Add("app1", "m1", "teleporting")
	_, err := d.State(ctx, apiM1)
	apiWantErr(t, err, perr.MachineDriverFailed)
	if !strings.Contains(err.Error(), "teleporting") {
		t.Errorf("error does not name the unknown state: %v", err)
	}
}

func TestAPIWait(t *testing.T) {
	fake, d := apiEnv(t, nil)
	fake.Add("app1", "m1", "stopped")
	ctx := apiCtx(t)

	// Wait returns when another party starts the machine.
	done := make(chan error, 1)
	go func() { done <- d.Wait(ctx, apiM1, machines.Started) }()
	apiUntil(t, "the driver waits", func() bool { return fake.Calls("wait") >= 1 })
	fake.Add("app1", "m1", "started")
	apiNoErr(t, "Wait started", <-done)

	// States the wait endpoint does not offer are polled.
	fake.Add("app1", "m1", "stopping")
	apiNoErr(t, "Wait stopping", d.Wait(ctx, apiM1, machines.Stopping))
	fake.Add("app1", "m1", "failed")
	apiNoErr(t, "Wait failed", d.Wait(ctx, apiM1, machines.Failed))

	// Wait for stopped sends the instance_id the API requires (the fake
	// answers 400 without it) and takes created as stopped.
	fake.Add("app1", "m1", "started")
	go func() { done <- d.Wait(ctx, apiM1, machines.Stopped) }()
	apiUntil(t, "the driver waits again", func() bool { return fake.Calls("wait") >= 2 })
	fake.Add("app1", "m1", "stopped")
	apiNoErr(t, "Wait stopped", <-done)
	fake.Add("app1", "m1", "created")
	apiNoErr(t, "Wait stopped on created", d.Wait(ctx, apiM1, machines.Stopped))
}

// A wait that times out (408) is asked again until ctx ends; then the
// error is the driver's and says the context ended.
func TestAPIWaitRepeatsUntilContextEnds(t *testing.T) {
	fake, d := apiEnv(t, nil)
	fake.MaxWait = 5 * time.Millisecond
	fake.Add("app1", "m1", "stopped")
	ctx, cancel := context.WithTimeout(apiCtx(t), 300*time.Millisecond)
	defer cancel()
	err := d.Wait(ctx, apiM1, machines.Started)
	apiWantErr(t, err, perr.MachineDriverFailed)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error does not wrap the deadline: %v", err)
	}
	if n := fake.Calls("wait"); n < 2 {
		t.Errorf("wait asked %d times; want it asked again after a 408", n)
	}
}

// A machine that fails to boot makes Start fail with PM01, and a wait for
// started on it stops at the first 408 rather than at the deadline.
func TestAPIBootFailure(t *testing.T) {
	fake, d := apiEnv(t, nil)
	fake.MaxWait = 5 * time.Millisecond
	fake.Boot = func(app, id string) error { return errors.New("exec format error") }
	fake.Add("app1", "m1", "stopped")
	err := d.Start(apiCtx(t), apiM1)
	apiWantErr(t, err, perr.MachineStartFailed)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start waited for the deadline: %v", err)
	}
	apiWantState(t, fake, "failed")
}

func TestAPIConflictsAreSuccess(t *testing.T) {
	fake, d := apiEnv(t, nil)
	var boots atomic.Int32
	fake.Boot = func(app, id string) error { boots.Add(1); return nil }
	ctx := apiCtx(t)

	fake.Add("app1", "m1", "started")
	apiNoErr(t, "Start of a started machine", d.Start(ctx, apiM1))
	if n := fake.Calls("start"); n != 1 {
		t.Errorf("start sent %d times, want 1 (answered 409)", n)
	}
	if boots.Load() != 0 {
		t.Error("a started machine was booted again")
	}

	fake.Add("app1", "m1", "stopped")
	apiNoErr(t, "Stop of a stopped machine", d.Stop(ctx, apiM1, syscall.SIGINT, time.Second))
	if n := fake.Calls("stop"); n != 1 {
		t.Errorf("stop sent %d times, want 1 (answered 409)", n)
	}
	apiWantState(t, fake, "stopped")

	fake.Add("app1", "m1", "suspended")
	apiNoErr(t, "Suspend of a suspended machine", d.Suspend(ctx, apiM1))
	if n := fake.Calls("suspend"); n != 1 {
		t.Errorf("suspend sent %d times, want 1 (answered 409)", n)
	}
}

// A 409 because the machine is on its way down is not "already stopped":
// Stop waits for it to be down; Start waits, then starts it again.
func TestAPIConflictInTransition(t *testing.T) {
	fake, d := apiEnv(t, nil)
	ctx := apiCtx(t)

	fake.Add("app1", "m1", "stopping")
	done := make(chan error, 1)
	go func() { done <- d.Stop(ctx, apiM1, syscall.SIGINT, time.Second) }()
	apiUntil(t, "the driver waits", func() bool { return fake.Calls("wait") >= 1 })
	fake.Add("app1", "m1", "stopped")
	apiNoErr(t, "Stop of a stopping machine", <-done)

	fake.Add("app1", "m1", "stopping")
	go func() { done <- d.Start(ctx, apiM1) }()
	apiUntil(t, "the driver waits again", func() bool { return fake.Calls("wait") >= 2 })
	fake.Add("app1", "m1", "stopped")
	apiNoErr(t, "Start of a stopping machine", <-done)
	apiWantState(t, fake, "started")
	if n := fake.Calls("start"); n != 2 {
		t.Errorf("start sent %d times; want 2: refused, then asked again once stopped", n)
	}
}

func TestAPISuspendStoppedIsAnError(t *testing.T) {
	fake, d := apiEnv(t, nil)
	fake.Add("app1", "m1", "stopped")
	err := d.Suspend(apiCtx(t), apiM1)
	apiWantErr(t, err, perr.MachineDriverFailed)
	if !strings.Contains(err.Error(), "409") {
		t.Errorf("error does not give the API's status: %v", err)
	}
}

func TestAPIStartRefused(t *testing.T) {
	fake, d := apiEnv(t, nil)
	ctx := apiCtx(t)

	// Unknown machine: the API says it cannot start.
	fake.Add("app1", "m1", "stopped")
	err := d.Start(ctx, machines.Machine{App: "app1", ID: "nope"})
	apiWantErr(t, err, perr.MachineStartFailed)
	if !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "machine not found") {
		t.Errorf("error does not give the API's status and message: %v", err)
	}

	// Another 4xx is not retried.
	fake.FailNext("start", http.StatusBadRequest, 1)
	err = d.Start(ctx, apiM1)
	apiWantErr(t, err, perr.MachineStartFailed)
	if n := fake.MachineCalls("start", "app1", "m1"); n != 1 {
		t.Errorf("start sent %d times after a 400; want 1", n)
	}
}

func TestAPIRetries429(t *testing.T) {
	// A backoff of an hour: only Retry-After: 0 lets the retries happen
	// before the test's deadline.
	fake, d := apiEnv(t, func(c *machines.APIConfig) { c.Backoff = time.Hour })
	fake.Add("app1", "m1", "stopped")
	fake.FailNext("start", http.StatusTooManyRequests, 2)
	apiNoErr(t, "Start", d.Start(apiCtx(t), apiM1))
	if n := fake.Calls("start"); n != 3 {
		t.Errorf("start sent %d times, want 3", n)
	}
	apiWantState(t, fake, "started")
}

func TestAPIRetryAfterHonoured(t *testing.T) {
	fake, d := apiEnv(t, func(c *machines.APIConfig) { c.Backoff = time.Hour })
	fake.Add("app1", "m1", "started")
	fake.RetryAfter("get", "1")
	fake.FailNext("get", http.StatusTooManyRequests, 1)
	began := time.Now()
	s, err := d.State(apiCtx(t), apiM1)
	apiNoErr(t, "State", err)
	if s != machines.Started {
		t.Errorf("State = %q", s)
	}
	if n := fake.Calls("get"); n != 2 {
		t.Errorf("get sent %d times, want 2", n)
	}
	// A lower bound only: the retry must not come before Retry-After.
	if took := time.Since(began); took < 900*time.Millisecond {
		t.Errorf("retried after %v, before Retry-After's 1s", took)
	}
}

// A Retry-After past the deadline fails at once rather than sleeping into
// the deadline.
func TestAPIRetryAfterBeyondDeadline(t *testing.T) {
	fake, d := apiEnv(t, nil)
	fake.Add("app1", "m1", "started")
	fake.RetryAfter("get", "30")
	fake.FailNext("get", http.StatusTooManyRequests, 1)
	ctx, cancel := context.WithTimeout(apiCtx(t), 5*time.Second)
	defer cancel()
	_, err := d.State(ctx, apiM1)
	apiWantErr(t, err, perr.MachineDriverFailed)
	if ctx.Err() != nil {
		t.Errorf("State slept until the deadline: %v", err)
	}
	if !strings.Contains(err.Error(), "429") {
		t.Errorf("error does not give the status: %v", err)
	}
}

func TestAPIRetries5xx(t *testing.T) {
	fake, d := apiEnv(t, nil)
	fake.Add("app1", "m1", "started")
	fake.FailNext("get", http.StatusServiceUnavailable, 1)
	fake.FailNext("get", http.StatusInternalServerError, 1)
	s, err := d.State(apiCtx(t), apiM1)
	apiNoErr(t, "State", err)
	if s != machines.Started {
		t.Errorf("State = %q", s)
	}
	if n := fake.Calls("get"); n != 3 {
		t.Errorf("get sent %d times, want 3", n)
	}
}

func TestAPI5xxBeyondRetries(t *testing.T) {
	fake, d := apiEnv(t, func(c *machines.APIConfig) { c.Retries = 2 })
	fake.Add("app1", "m1", "stopped")
	fake.FailNext("start", http.StatusServiceUnavailable, 10)
	err := d.Start(apiCtx(t), apiM1)
	pe := apiWantErr(t, err, perr.MachineDriverFailed)
	if pe.Retryable {
		// The driver has already retried; another machine would ask the
		// same API.
		t.Error("PM03 is retryable on another machine")
	}
	if n := fake.Calls("start"); n != 3 {
		t.Errorf("start sent %d times; want 3 (1 + 2 retries)", n)
	}
	msg := err.Error()
	for _, want := range []string{"POST", "/v1/apps/app1/machines/m1/start", "503", "injected 503 for start", "3 attempts"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	var ae *machines.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Attempts != 3 {
		t.Errorf("APIError = %+v", ae)
	}
}

func TestAPIUnauthorized(t *testing.T) {
	const wrong = "fo1_WRONG-token-4b1d"
	fake, d := apiEnv(t, func(c *machines.APIConfig) { c.Token = wrong })
	fake.Add("app1", "m1", "stopped")
	ctx := apiCtx(t)

	_, err := d.State(ctx, apiM1)
	apiWantErr(t, err, perr.MachineDriverFailed)
	// A refused token is the driver's failure even on start: the machine
	// was never asked.
	err2 := d.Start(ctx, apiM1)
	apiWantErr(t, err2, perr.MachineDriverFailed)
	for _, e := range []error{err, err2} {
		if !strings.Contains(e.Error(), "401") {
			t.Errorf("error does not give the status: %v", e)
		}
		if strings.Contains(e.Error(), wrong) {
			t.Errorf("error contains the token: %v", e)
		}
	}
	if g, s := fake.Calls("get"), fake.Calls("start"); g != 1 || s != 1 {
		t.Errorf("get sent %d times, start %d times; a 401 must not be retried", g, s)
	}
	apiWantState(t, fake, "stopped")
}

func TestAPIRequestTimeout(t *testing.T) {
	fake, d := apiEnv(t, func(c *machines.APIConfig) {
		c.RequestTimeout = 50 * time.Millisecond
		c.Retries = 1
	})
	fake.Add("app1", "m1", "started")
	fake.Delay("get", time.Hour)
	_, err := d.State(apiCtx(t), apiM1)
	apiWantErr(t, err, perr.MachineDriverFailed)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error does not say the request timed out: %v", err)
	}
	if n := fake.Calls("get"); n != 2 {
		t.Errorf("get sent %d times, want 2 (a timeout is retried)", n)
	}
}

// Cancelling ctx while the driver sleeps between attempts ends the call
// without waiting out the pause.
func TestAPICancelMidRetry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*fakeapi.Server)
	}{
		{"backoff", func(f *fakeapi.Server) { f.FailNext("get", http.StatusBadGateway, 5) }},
		{"retry-after", func(f *fakeapi.Server) {
			f.RetryAfter("get", "60")
			f.FailNext("get", http.StatusTooManyRequests, 5)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, d := apiEnv(t, func(c *machines.APIConfig) { c.Backoff = time.Hour })
			fake.Add("app1", "m1", "started")
			tc.setup(fake)
			// No deadline: only the cancel can end the pause.
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := d.State(ctx, apiM1)
				done <- err
			}()
			apiUntil(t, "the first attempt", func() bool { return fake.Calls("get") >= 1 })
			cancel()
			select {
			case err := <-done:
				apiWantErr(t, err, perr.MachineDriverFailed)
				if !errors.Is(err, context.Canceled) {
					t.Errorf("error does not say ctx was cancelled: %v", err)
				}
			case <-time.After(apiTestBound):
				t.Fatal("State did not return after ctx was cancelled")
			}
			if n := fake.Calls("get"); n != 1 {
				t.Errorf("get sent %d times after the cancel, want 1", n)
			}
		})
	}
}

func TestAPIStopBody(t *testing.T) {
	fake, d := apiEnv(t, nil)
	ctx := apiCtx(t)
	for _, tc := range []struct {
		sig     syscall.Signal
		timeout time.Duration
		want    fakeapi.StopRequest
	}{
		{syscall.SIGINT, 5 * time.Second, fakeapi.StopRequest{Signal: "SIGINT", Timeout: "5s"}},
		{syscall.SIGKILL, 1500 * time.Millisecond, fakeapi.StopRequest{Signal: "SIGKILL", Timeout: "2s"}},
		{0, 0, fakeapi.StopRequest{}},
	} {
		fake.Add("app1", "m1", "started")
		apiNoErr(t, "Stop", d.Stop(ctx, apiM1, tc.sig, tc.timeout))
		if got, _ := fake.LastStop("app1", "m1"); got != tc.want {
			t.Errorf("Stop(%v, %v) sent %+v, want %+v", tc.sig, tc.timeout, got, tc.want)
		}
	}
	before := fake.Calls("stop")
	fake.Add("app1", "m1", "started")
	err := d.Stop(ctx, apiM1, syscall.Signal(77), time.Second)
	apiWantErr(t, err, perr.MachineDriverFailed)
	if fake.Calls("stop") != before {
		t.Error("a stop with an unnamed signal was sent")
	}
}

// The token stays out of errors even when the API echoes it back.
func TestAPITokenNeverInErrors(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"bad request with ` + r.Header.Get("Authorization") + `"}`))
	}))
	defer echo.Close()
	d, err := machines.NewAPIDriver(machines.APIConfig{URL: echo.URL, Token: apiTestToken, App: "app1"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := apiCtx(t)
	_, err = d.State(ctx, apiM1)
	apiWantErr(t, err, perr.MachineDriverFailed)
	if !strings.Contains(err.Error(), "bad request with Bearer [token]") {
		t.Errorf("the API's message is lost: %v", err)
	}
	apiWantErr(t, d.Start(ctx, apiM1), perr.MachineStartFailed)
	apiWantErr(t, d.Stop(ctx, apiM1, syscall.SIGINT, time.Second), perr.MachineDriverFailed)
	apiWantErr(t, d.Suspend(ctx, apiM1), perr.MachineDriverFailed)
	apiWantErr(t, d.Wait(ctx, apiM1, machines.Started), perr.MachineDriverFailed)

	// An API that cannot be reached.
	echo.Close()
	d2, err := machines.NewAPIDriver(machines.APIConfig{URL: echo.URL, Token: apiTestToken, App: "app1", Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	apiWantErr(t, d2.Start(ctx, apiM1), perr.MachineDriverFailed)
}

func TestNewAPIDriverChecksConfig(t *testing.T) {
	for _, c := range []machines.APIConfig{
		{URL: "", Token: apiTestToken},
		{URL: "ftp://api.example", Token: apiTestToken},
		{URL: "http://", Token: apiTestToken},
		{URL: "http://user:" + apiTestToken + "@api.example", Token: apiTestToken},
		{URL: "http://api.example/?x=1", Token: apiTestToken},
		{URL: "http://api.example\x7f" + apiTestToken, Token: apiTestToken},
		{URL: "http://api.example"},
		{URL: "http://api.example", Token: apiTestToken + " more"},
		{URL: "http://api.example", Token: apiTestToken + "\n"},
		{URL: "http://api.example", Token: apiTestToken, RequestTimeout: -time.Second},
		{URL: "http://api.example", Token: apiTestToken, Backoff: -time.Second},
	} {
		_, err := machines.NewAPIDriver(c)
		if err == nil {
			t.Errorf("NewAPIDriver accepted URL %q", c.URL)
			continue
		}
		if strings.Contains(err.Error(), apiTestToken) {
			t.Errorf("error contains the token: %v", err)
		}
	}
	d, err := machines.NewAPIDriver(machines.APIConfig{URL: "http://127.0.0.1:4280/", Token: apiTestToken})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
}

// Without App in the config, each Machine's App names the app.
func TestAPIAppFromMachine(t *testing.T) {
	fake, d := apiEnv(t, func(c *machines.APIConfig) { c.App = "" })
	fake.Add("other", "m9", "started")
	s, err := d.State(apiCtx(t), machines.Machine{App: "other", ID: "m9"})
	apiNoErr(t, "State", err)
	if s != machines.Started {
		t.Errorf("State = %q", s)
	}
	_, err = d.State(apiCtx(t), machines.Machine{ID: "m9"})
	apiWantErr(t, err, perr.MachineDriverFailed)
}
