package machines

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// The machines-api driver speaks the Machines API as Fly.io documents it
// (https://fly.io/docs/machines/api/machines-resource/): POST .../start,
// .../stop and .../suspend act, GET .../{id} reads the state, and GET
// .../wait?state= blocks until a state is reached or answers 408.

const (
	apiDefaultTimeout = 10 * time.Second
	apiDefaultRetries = 3
	apiDefaultBackoff = 200 * time.Millisecond
	// apiMaxBackoff caps the doubling so that a long outage is probed
	// every few seconds rather than every few minutes.
	apiMaxBackoff = 5 * time.Second
	// apiMaxRetryAfter bounds a Retry-After that would otherwise park a
	// caller without a deadline for hours.
	apiMaxRetryAfter = time.Minute
	// apiMaxWaitWindow is the wait endpoint's own default; asking for
	// more gains nothing and holds a connection longer.
	apiMaxWaitWindow = 60 * time.Second
	// apiPollMax bounds the pause between reads when waiting for a state
	// the wait endpoint does not offer. The API allows 5 reads per second
	// per machine, so this stays well inside it.
	apiPollMax = 2 * time.Second
	// apiConflictRounds bounds how often an action refused with 409 is
	// asked again after the transition in the way has ended: a machine
	// flapping between states must not hold a caller forever.
	apiConflictRounds = 3
	// apiMaxBody bounds what is read of an answer; machine objects are a
	// few kilobytes.
	apiMaxBody = 1 << 20
	// apiMaxMessage bounds how much of a non-JSON error body goes into an
	// error, which ends up in logs.
	apiMaxMessage = 200
)

// APIConfig configures a driver that acts on machines through a Machines
// API.
type APIConfig struct {
	// URL is the API's base, such as https://api.machines.dev or
	// http://_api.internal:4280; request paths (/v1/apps/...) go under it.
	URL string
	// Token is sent as "Authorization: Bearer <Token>". It is never logged
	// nor put in an error.
	Token string
	// App is the app's name in the API. Empty: each Machine's App.
	App string
	// RequestTimeout bounds each request (0: 10s). A wait request gets the
	// time it asks the API to wait on top of it.
	RequestTimeout time.Duration
	// Retries is how many more times a request is sent after a 429, a 5xx
	// or a transport error (0: 3; negative: none).
	Retries int
	// Backoff is the pause before the first retry (0: 200ms); it doubles
	// per retry, with jitter, up to 5s. A 429's Retry-After replaces it.
	Backoff time.Duration
	// HTTPClient sends the requests. Nil: a client of the driver's own,
	// which follows no redirect (an API that redirects is misconfigured,
	// and a redirect elsewhere would drop the token anyway).
	HTTPClient *http.Client
}

// APIDriver is the machines-api driver: it asks a Machines API to start,
// stop and suspend machines. It holds no per-machine state, so one driver
// serves concurrent calls for any number of machines.
type APIDriver struct {
	base    string // URL without a trailing slash
	token   string
	app     string
	timeout time.Duration
	retries int
	backoff time.Duration
	client  *http.Client
}

var _ Driver = (*APIDriver)(nil)

// NewAPIDriver checks c and returns a driver. Errors never quote the token.
func NewAPIDriver(c APIConfig) (*APIDriver, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		// url.Error repeats the URL; only its reason is kept, in case the
		// URL carries credentials it should not.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("machines-api: URL does not parse: %v", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("machines-api: URL must start with http:// or https://")
	case u.Host == "":
		return nil, errors.New("machines-api: URL has no host")
	case u.User != nil:
		return nil, errors.New("machines-api: URL must not carry credentials; the token goes in Token")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, errors.New("machines-api: URL must not have a query or a fragment")
	}
	if c.Token == "" {
		return nil, errors.New("machines-api: Token is empty")
	}
	for i := 0; i < len(c.Token); i++ {
		if b := c.Token[i]; b <= ' ' || b >= 0x7f {
			return nil, errors.New("machines-api: Token has a character an HTTP header cannot carry")
		}
	}
	if c.RequestTimeout < 0 || c.Backoff < 0 {
		return nil, errors.New("machines-api: RequestTimeout and Backoff must not be negative")
	}
	d := &APIDriver{
		base:    strings.TrimSuffix(u.String(), "/"),
		token:   c.Token,
		app:     c.App,
		timeout: c.RequestTimeout,
		retries: c.Retries,
		backoff: c.Backoff,
		client:  c.HTTPClient,
	}
	if d.timeout == 0 {
		d.timeout = apiDefaultTimeout
	}
	switch {
	case d.retries == 0:
		d.retries = apiDefaultRetries
	case d.retries < 0:
		d.retries = 0
	}
	if d.backoff == 0 {
		d.backoff = apiDefaultBackoff
	}
	if d.client == nil {
		// A transport of its own, so that Close drops this driver's idle
		// connections and nobody else's.
		t := http.DefaultTransport.(*http.Transport).Clone()
		d.client = &http.Client{
			Transport: t,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return d, nil
}

// APIError is a request the Machines API refused or did not answer. It
// names the request by method and path, which never hold the token, so it
// can be logged as is.
type APIError struct {
	Method, Path string
	// Status is the last answer's status; 0 when none came.
	Status int
	// Message is the API's "error" field, or the start of a body that is
	// not JSON.
	Message string
	// Attempts is how many times the request was sent.
	Attempts int
	// Err is the transport or context error, if any.
	Err error
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("machines-api: ")
	b.WriteString(e.Method)
	b.WriteByte(' ')
	b.WriteString(e.Path)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(strconv.Quote(e.Message))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (%d attempts)", e.Attempts)
	}
	return b.String()
}

func (e *APIError) Unwrap() error { return e.Err }

// apiCall is one request, sent again as retries allow.
type apiCall struct {
	method, path string
	query        url.Values
	body         []byte
	// wait is how long the API was asked to hold the answer; the request
	// timeout is extended by it.
	wait time.Duration
	// pass408 hands 408 to the caller: for the wait endpoint it means
	// "not yet", not a failure to retry.
	pass408 bool
}

// apiAnswer is an answer that ended the retries: a 2xx, or a status that
// retrying cannot change.
type apiAnswer struct {
	status   int
	msg      string
	body     []byte
	attempts int

	retryAfter    time.Duration
	hasRetryAfter bool
}

func (d *APIDriver) appOf(m Machine) string {
	if d.app != "" {
		return d.app
	}
	return m.App
}

func (d *APIDriver) machinePath(m Machine, suffix string) string {
	return "/v1/apps/" + url.PathEscape(d.appOf(m)) + "/machines/" + url.PathEscape(m.ID) + suffix
}

// checkMachine refuses a machine the path could not name, before any
// request goes out.
func (d *APIDriver) checkMachine(m Machine) error {
	if m.ID == "" || d.appOf(m) == "" {
		return perr.New(perr.MachineDriverFailed, errors.New("machines-api: machine has no ID or no app name"))
	}
	return nil
}

// scrub removes the token from text that came from elsewhere: a server
// echoing the Authorization header must not put the token in a log line.
func (d *APIDriver) scrub(s string) string {
	if d.token == "" || !strings.Contains(s, d.token) {
		return s
	}
	return strings.ReplaceAll(s, d.token, "[token]")
}

func (d *APIDriver) scrubErr(err error) error {
	if err == nil || d.token == "" || !strings.Contains(err.Error(), d.token) {
		return err
	}
	return errors.New(d.scrub(err.Error()))
}

// do sends c until it gets an answer retrying cannot change, the retries
// run out, or ctx ends. Only the last two are errors (PM03); statuses such
// as 404 or 409 are the caller's to interpret.
func (d *APIDriver) do(ctx context.Context, c apiCall) (apiAnswer, error) {
	var (
		last    apiAnswer
		lastErr error
	)
	for attempt := 1; ; attempt++ {
		a, err := d.once(ctx, c)
		if ctx.Err() != nil {
			cause := ctx.Err()
			if lastErr != nil {
				cause = fmt.Errorf("%w (last failure: %v)", cause, lastErr)
			}
			return apiAnswer{}, d.driverErr(c, last, attempt, cause)
		}
		var pause time.Duration
		switch {
		case err != nil:
			last, lastErr = apiAnswer{}, err
			pause = d.backoffFor(attempt)
		case a.status == http.StatusTooManyRequests:
			last, lastErr = a, nil
			pause = d.backoffFor(attempt)
			if a.hasRetryAfter {
				pause = a.retryAfter
			}
		case a.status >= 500, a.status == http.StatusRequestTimeout && !c.pass408:
			last, lastErr = a, nil
			pause = d.backoffFor(attempt)
		default:
			a.attempts = attempt
			return a, nil
		}
		if attempt > d.retries {
			return apiAnswer{}, d.driverErr(c, last, attempt, lastErr)
		}
		// Sleeping past the deadline only to fail then would hold the
		// caller for nothing; fail now, with the answer that made us wait.
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < pause {
			cause := fmt.Errorf("giving up: the next attempt, due in %v, would come after the deadline", pause.Round(time.Millisecond))
			if lastErr != nil {
				cause = fmt.Errorf("%v; %w", lastErr, cause)
			}
			return apiAnswer{}, d.driverErr(c, last, attempt, cause)
		}
		if !Sleep(ctx, pause) {
			cause := ctx.Err()
			if lastErr != nil {
				cause = fmt.Errorf("%w (last failure: %v)", cause, lastErr)
			}
			return apiAnswer{}, d.driverErr(c, last, attempt, cause)
		}
	}
}

func (d *APIDriver) driverErr(c apiCall, last apiAnswer, attempts int, cause error) error {
	return perr.New(perr.MachineDriverFailed, &APIError{
		Method: c.method, Path: c.path,
		Status: last.status, Message: last.msg,
		Attempts: attempts, Err: cause,
	})
}

// refused turns an answer the caller cannot accept into an error under
// code, except that a refused token is always the driver's failure (PM03):
// the machine was never asked.
func (d *APIDriver) refused(c apiCall, a apiAnswer, code perr.Code, note string) error {
	if a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
		code = perr.MachineDriverFailed
	}
	var cause error
	if note != "" {
		cause = errors.New(note)
	}
	return perr.New(code, &APIError{
		Method: c.method, Path: c.path,
		Status: a.status, Message: a.msg,
		Attempts: a.attempts, Err: cause,
	})
}

// once sends c one time, bounded by the request timeout.
func (d *APIDriver) once(parent context.Context, c apiCall) (apiAnswer, error) {
	limit := d.timeout + c.wait
	ctx, cancel := context.WithTimeout(parent, limit)
	defer cancel()
	target := d.base + c.path
	if len(c.query) > 0 {
		target += "?" + c.query.Encode()
	}
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, target, body)
	if err != nil {
		return apiAnswer{}, d.scrubErr(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	req.Header.Set("Accept", "application/json")
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return apiAnswer{}, d.transportErr(parent, ctx, limit, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, apiMaxBody))
	if err != nil {
		return apiAnswer{}, d.transportErr(parent, ctx, limit, fmt.Errorf("reading the answer: %w", err))
	}
	a := apiAnswer{status: resp.StatusCode, body: raw}
	if resp.StatusCode/100 != 2 {
		a.msg = d.scrub(apiMessage(raw))
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		a.retryAfter, a.hasRetryAfter = apiRetryAfter(resp.Header.Get("Retry-After"))
	}
	return a, nil
}

// transportErr says "no answer within" for the request's own timeout, which
// the client reports as a bare context error with the URL in front.
func (d *APIDriver) transportErr(parent, ctx context.Context, limit time.Duration, err error) error {
	if parent.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %v: %w", limit, context.DeadlineExceeded)
	}
	return d.scrubErr(err)
}

// apiMessage is the API's {"error": "..."}, or the start of a body that is
// not that (a proxy's HTML page, say).
func apiMessage(raw []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(raw), "?"))
	if len(s) > apiMaxMessage {
		s = s[:apiMaxMessage]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "..."
	}
	return s
}

// apiRetryAfter reads Retry-After as seconds or as an HTTP date.
func apiRetryAfter(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0, false
		}
		// Capped before multiplying, which a huge value would overflow.
		d = time.Duration(min(n, int(apiMaxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = max(time.Until(t), 0)
	} else {
		return 0, false
	}
	return min(d, apiMaxRetryAfter), true
}

// backoffFor is the pause after the attempt-th failure: Backoff doubled per
// attempt, capped, then jittered over its upper half so that drivers that
// failed together do not retry together.
func (d *APIDriver) backoffFor(attempt int) time.Duration {
	ceiling := max(apiMaxBackoff, d.backoff)
	b := d.backoff
	for i := 1; i < attempt && b < ceiling; i++ {
		b *= 2
	}
	b = min(b, ceiling)
	half := b / 2
	return half + rand.N(b-half+1)
}

// apiMachine is the part of the API's machine object the driver reads.
type apiMachine struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	InstanceID string `json:"instance_id"`
}

func (d *APIDriver) get(ctx context.Context, m Machine) (apiMachine, error) {
	c := apiCall{method: http.MethodGet, path: d.machinePath(m, "")}
	a, err := d.do(ctx, c)
	if err != nil {
		return apiMachine{}, err
	}
	if a.status/100 != 2 {
		return apiMachine{}, d.refused(c, a, perr.MachineDriverFailed, "")
	}
	var am apiMachine
	if err := json.Unmarshal(a.body, &am); err != nil || am.State == "" {
		return apiMachine{}, d.refused(c, a, perr.MachineDriverFailed, "the answer is not a machine with a state")
	}
	return am, nil
}

// apiState maps the API's states (https://fly.io/docs/machines/machine-states/)
// onto the driver's. created is a machine never booted, which starts like a
// stopped one. Transitions towards running are Starting, those away from it
// Stopping. Failed gathers what cannot serve until it is started again or
// replaced, destroyed included: starting it then fails with PM01, which is
// what a caller must expect of a failed machine.
func apiState(s string) (State, bool) {
	switch s {
	case "started":
		return Started, true
	case "stopped", "created":
		return Stopped, true
	case "suspended":
		return Suspended, true
	case "starting", "restarting", "creating", "updating", "replacing":
		return Starting, true
	case "stopping", "suspending", "destroying":
		return Stopping, true
	case "failed", "launch_failed", "destroyed", "replaced":
		return Failed, true
	}
	return "", false
}

// State reads the machine and maps its API state (see apiState). A state
// the driver does not know is an error rather than a guess.
func (d *APIDriver) State(ctx context.Context, m Machine) (State, error) {
	if err := d.checkMachine(m); err != nil {
		return "", err
	}
	am, err := d.get(ctx, m)
	if err != nil {
		return "", err
	}
	s, ok := apiState(am.State)
	if !ok {
		return "", perr.New(perr.MachineDriverFailed, fmt.Errorf("machines-api: machine %s: unknown state %q", m.ID, am.State))
	}
	return s, nil
}

// apiConflict reports an answer saying the action clashes with the
// machine's state: 409, or another 4xx whose message says the machine is
// already where the action would take it.
func apiConflict(a apiAnswer, phrases ...string) bool {
	if a.status == http.StatusConflict {
		return true
	}
	if a.status/100 != 4 || a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
		return false
	}
	msg := strings.ToLower(a.msg)
	for _, p := range phrases {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// act sends c until the API accepts it, and reports whether the action
// turned out done already. A conflict (409, or an answer saying
// "already ...") is looked into rather than trusted: resolve, given the
// machine's state, says the action is done (possibly after waiting), that
// a state in the way has passed so c is asked again, or why c is refused
// (with code). Any other refusal has the code refusal gives its status.
func (d *APIDriver) act(ctx context.Context, m Machine, c apiCall, already string, refusal func(status int) perr.Code,
	code perr.Code, resolve func(am apiMachine) (done bool, refuse string, err error)) (bool, error) {
	for round := 1; ; round++ {
		a, err := d.do(ctx, c)
		if err != nil {
			return false, err
		}
		if a.status/100 == 2 {
			return false, nil
		}
		if !apiConflict(a, already) {
			return false, d.refused(c, a, refusal(a.status), "")
		}
		am, err := d.get(ctx, m)
		if err != nil {
			return false, err
		}
		done, refuse, err := resolve(am)
		switch {
		case err != nil || done:
			return done, err
		case refuse != "":
			return false, d.refused(c, a, code, refuse)
		case round >= apiConflictRounds:
			return false, d.refused(c, a, code, fmt.Sprintf("refused %d times; the machine is %s", round, am.State))
		}
	}
}

// driverFault: a refusal of stop or suspend is the driver's trouble.
func driverFault(int) perr.Code { return perr.MachineDriverFailed }

// Start asks the API to start (or resume) m, then waits for the API to
// report it started. A 409 is looked into rather than trusted: the machine
// may be started already (done), on its way up (wait), or on its way down,
// in which case the start is asked again once it is down.
func (d *APIDriver) Start(ctx context.Context, m Machine) error {
	if err := d.checkMachine(m); err != nil {
		return err
	}
	c := apiCall{method: http.MethodPost, path: d.machinePath(m, "/start")}
	// A 4xx is the API's verdict on this machine; anything else (a
	// redirect, say) is the driver's trouble.
	refusal := func(status int) perr.Code {
		if status/100 == 4 {
			return perr.MachineStartFailed
		}
		return perr.MachineDriverFailed
	}
	done, err := d.act(ctx, m, c, "already started", refusal, perr.MachineStartFailed, func(am apiMachine) (bool, string, error) {
		switch am.State {
		case "started":
			return true, "", nil
		case "starting", "restarting", "creating", "updating", "replacing":
			return true, "", d.waitFor(ctx, m, "started", "")
		case "stopping":
			return false, "", d.waitFor(ctx, m, "stopped", am.InstanceID)
		case "suspending":
			return false, "", d.waitFor(ctx, m, "suspended", "")
		case "destroying", "destroyed":
			return false, "the machine is " + am.State, nil
		}
		return false, "", nil // the state in the way has passed: ask again
	})
	if done || err != nil {
		return err
	}
	return d.waitFor(ctx, m, "started", "")
}

// Stop asks the API to stop m with signal, SIGKILL after timeout, and waits
// until the API reports it stopped. Signal 0 leaves the signal to the API
// (SIGINT by default); timeout 0 leaves the grace to the API.
func (d *APIDriver) Stop(ctx context.Context, m Machine, signal syscall.Signal, timeout time.Duration) error {
	if err := d.checkMachine(m); err != nil {
		return err
	}
	var req struct {
		Signal  string `json:"signal,omitempty"`
		Timeout string `json:"timeout,omitempty"`
	}
	if signal != 0 {
		name, ok := config.SignalName(signal)
		if !ok {
			return perr.New(perr.MachineDriverFailed, fmt.Errorf("machines-api: signal %d has no name the API knows", int(signal)))
		}
		req.Signal = name
	}
	if timeout > 0 {
		// Whole seconds, rounded up: the API counts in seconds, and a
		// sub-second grace rounded down would be no grace at all.
		secs := (timeout + time.Second - 1) / time.Second
		req.Timeout = strconv.FormatInt(int64(secs), 10) + "s"
	}
	body, err := json.Marshal(req)
	if err != nil {
		return perr.New(perr.MachineDriverFailed, err)
	}
	c := apiCall{method: http.MethodPost, path: d.machinePath(m, "/stop"), body: body}
	done, err := d.act(ctx, m, c, "already stopped", driverFault, perr.MachineDriverFailed, func(am apiMachine) (bool, string, error) {
		switch am.State {
		case "stopped", "created", "suspended", "failed", "launch_failed", "destroying", "destroyed", "replaced":
			// Not running: what Stop is for.
			return true, "", nil
		case "stopping":
			return true, "", d.waitFor(ctx, m, "stopped", am.InstanceID)
		case "suspending":
			return true, "", d.waitFor(ctx, m, "suspended", "")
		case "starting", "restarting", "creating", "updating", "replacing":
			// A machine cannot be stopped halfway up; let it come up, then
			// stop it. One that fails to come up is down, which is enough.
			if err := d.waitFor(ctx, m, "started", ""); err != nil {
				if pe, ok := perr.As(err); ok && pe.Code == perr.MachineStartFailed {
					return true, "", nil
				}
				return false, "", err
			}
		}
		return false, "", nil
	})
	if done || err != nil {
		return err
	}
	return d.waitStopped(ctx, m)
}

// Suspend asks the API to suspend m and waits until it reports it
// suspended. Only a started machine can be: a stopped one is an error
// (PM03), as the API refuses it.
func (d *APIDriver) Suspend(ctx context.Context, m Machine) error {
	if err := d.checkMachine(m); err != nil {
		return err
	}
	c := apiCall{method: http.MethodPost, path: d.machinePath(m, "/suspend")}
	done, err := d.act(ctx, m, c, "already suspended", driverFault, perr.MachineDriverFailed, func(am apiMachine) (bool, string, error) {
		switch am.State {
		case "suspended":
			return true, "", nil
		case "suspending":
			return true, "", d.waitFor(ctx, m, "suspended", "")
		case "starting", "restarting", "creating", "updating", "replacing":
			return false, "", d.waitFor(ctx, m, "started", "")
		case "started":
			return false, "", nil // the conflict has passed: ask again
		}
		return false, "the machine is " + am.State + ", not started", nil
	})
	if done || err != nil {
		return err
	}
	return d.waitFor(ctx, m, "suspended", "")
}

// Wait returns once the API reports m in state s. Started, Stopped and
// Suspended use the API's wait endpoint; the transitions, which it does not
// offer, are polled. A machine that can no longer reach s (destroyed, or
// failed while s is Started) ends the wait with an error.
func (d *APIDriver) Wait(ctx context.Context, m Machine, s State) error {
	if err := d.checkMachine(m); err != nil {
		return err
	}
	switch s {
	case Started:
		return d.waitFor(ctx, m, "started", "")
	case Stopped:
		return d.waitStopped(ctx, m)
	case Suspended:
		return d.waitFor(ctx, m, "suspended", "")
	case Starting, Stopping, Failed:
		return d.poll(ctx, m, s)
	}
	return perr.New(perr.MachineDriverFailed, fmt.Errorf("machines-api: cannot wait for state %q", s))
}

// waitStopped reads the machine first: the API wants the instance_id to
// wait for stopped, and a machine that is already down needs no wait.
func (d *APIDriver) waitStopped(ctx context.Context, m Machine) error {
	am, err := d.get(ctx, m)
	if err != nil {
		return err
	}
	if done, err := d.waitVerdict(m, "stopped", am.State); done {
		return err
	}
	return d.waitFor(ctx, m, "stopped", am.InstanceID)
}

// waitFor asks the wait endpoint for want until it answers 200 or ctx ends.
// Each 408 is followed by a read of the machine, because the wait endpoint
// keeps waiting for a state the machine has no way to reach.
func (d *APIDriver) waitFor(ctx context.Context, m Machine, want, instanceID string) error {
	q := url.Values{"state": {want}}
	if instanceID != "" {
		q.Set("instance_id", instanceID)
	}
	for {
		window := apiMaxWaitWindow
		if dl, ok := ctx.Deadline(); ok {
			// Whole seconds, as the API takes them; never 0, which would
			// turn the wait into a poll.
			window = min(window, max(time.Until(dl).Truncate(time.Second), time.Second))
		}
		q.Set("timeout", strconv.Itoa(int(window/time.Second)))
		c := apiCall{
			method: http.MethodGet, path: d.machinePath(m, "/wait"),
			query: q, wait: window, pass408: true,
		}
		began := time.Now()
		a, err := d.do(ctx, c)
		if err != nil {
			return err
		}
		if a.status/100 == 2 {
			return nil
		}
		if a.status != http.StatusRequestTimeout {
			return d.refused(c, a, perr.MachineDriverFailed, "")
		}
		am, err := d.get(ctx, m)
		if err != nil {
			return err
		}
		if done, err := d.waitVerdict(m, want, am.State); done {
			return err
		}
		// A server that answers 408 at once must not turn this loop into
		// a flood.
		if time.Since(began) < d.backoff && !Sleep(ctx, d.backoff) {
			return perr.New(perr.MachineDriverFailed, fmt.Errorf("machines-api: machine %s: waiting for %s: %w", m.ID, want, ctx.Err()))
		}
	}
}

// waitVerdict says whether a machine in API state got ends a wait for
// want, and how: nil when it is there (or as good as there), an error when
// it can no longer get there.
func (d *APIDriver) waitVerdict(m Machine, want, got string) (bool, error) {
	if got == want {
		return true, nil
	}
	gs, _ := apiState(got)
	ws, _ := apiState(want)
	switch {
	case gs != "" && gs == ws && gs != Failed:
		// created for stopped: never booted is as stopped as it gets.
		return true, nil
	case got == "destroying" || got == "destroyed":
		code := perr.MachineDriverFailed
		if want == "started" {
			code = perr.MachineStartFailed
		}
		return true, perr.New(code, fmt.Errorf("machines-api: machine %s is %s; it will not be %s", m.ID, got, want))
	case gs == Failed && want == "stopped":
		// Down is what a stop wants.
		return true, nil
	case gs == Failed && want == "started":
		return true, perr.New(perr.MachineStartFailed, fmt.Errorf("machines-api: machine %s is %s: it could not start", m.ID, got))
	case gs == Failed:
		return true, perr.New(perr.MachineDriverFailed, fmt.Errorf("machines-api: machine %s is %s; it will not be %s", m.ID, got, want))
	}
	return false, nil
}

// poll reads the machine until it is in s: the wait endpoint offers only
// settled states.
func (d *APIDriver) poll(ctx context.Context, m Machine, s State) error {
	pause := d.backoff
	for {
		am, err := d.get(ctx, m)
		if err != nil {
			return err
		}
		if got, _ := apiState(am.State); got == s {
			return nil
		}
		if !Sleep(ctx, pause) {
			return perr.New(perr.MachineDriverFailed, fmt.Errorf("machines-api: machine %s: waiting for %s: %w", m.ID, s, ctx.Err()))
		}
		pause = min(2*pause, max(apiPollMax, d.backoff))
	}
}

// Close drops the driver's idle connections. Machines are left as they
// are: they belong to the API, not to this process.
func (d *APIDriver) Close() error {
	d.client.CloseIdleConnections()
	return nil
}
