// Package fakeapi is a fake Machines API for tests: an http.Handler that
// answers the requests Fly.io documents for machines
// (https://fly.io/docs/machines/api/machines-resource/) with the documented
// answers, keeps each machine's state, and can be told to fail or stall.
// Serve it with httptest.NewServer.
//
// Endpoints, all under a bearer token (401 otherwise):
//
//	GET  /v1/apps/{app}/machines                 list ("list"); destroyed ones only with include_deleted=true
//	GET  /v1/apps/{app}/machines/{id}            the machine object ("get")
//	POST /v1/apps/{app}/machines/{id}/start      ("start") {"previous_state": ..., "migrated": false, "new_host": ""}
//	POST /v1/apps/{app}/machines/{id}/stop       ("stop") body {"signal": "SIGTERM", "timeout": "5s"}, both optional; {"ok": true}
//	POST /v1/apps/{app}/machines/{id}/suspend    ("suspend") {"ok": true}
//	GET  /v1/apps/{app}/machines/{id}/wait       ("wait") state=started|stopped|suspended|destroyed (default started),
//	                                             timeout=seconds (default 60), instance_id (required for stopped)
//
// An unknown app or machine is 404. Errors are {"error": "..."}.
//
// Transitions the fake refuses with 409, as the API refuses a transition
// the machine's state does not allow:
//
//	start    unless stopped, created, suspended or failed ("already started" when started)
//	stop     unless started or suspended ("already stopped" when stopped, created or failed)
//	suspend  unless started ("already suspended" when suspended)
//
// A destroyed machine refuses all three. A wait for a state the machine is
// in answers 200 at once; otherwise it answers 200 when the machine gets
// there and 408 when its timeout elapses first. A bad state or timeout, or
// a wait for stopped without instance_id (or with another machine version's),
// is 400.
//
// Transitions take no time unless BootDelay says so: start moves a machine
// to starting, runs Boot after BootDelay, then to started (failed if Boot
// returns an error); stop and suspend move it to stopping or suspending,
// run Halt (if it was running), then to stopped or suspended. The stop's
// signal and timeout are recorded (LastStop), not acted on.
package fakeapi

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is the fake API. Its methods are safe for concurrent use. Its
// fields are read while requests are served: set them while none is in
// flight, typically before the first.
type Server struct {
	// Boot, if set, is called when a machine starts or resumes, before it
	// is reported started; an error leaves it failed. Tests start a real
	// listener here.
	Boot func(app, id string) error
	// Halt, if set, is called when a started machine stops or suspends,
	// before it is reported stopped or suspended.
	Halt func(app, id string)
	// BootDelay is how long a machine stays starting before Boot runs.
	// With 0, Boot runs before the start request is answered; otherwise
	// the start is answered at once and the machine boots in the
	// background.
	BootDelay time.Duration
	// MaxWait, if positive, caps the wait endpoint's timeout, so that a
	// test can see 408s without waiting whole seconds.
	MaxWait time.Duration

	token string
	mux   *http.ServeMux

	mu         sync.Mutex
	apps       map[string]map[string]*machine
	calls      map[callKey]int
	faults     map[string][]fault
	retryAfter map[string]string
	delays     map[string]time.Duration
	// changed is closed and replaced at every state change: waits sleep
	// on it instead of polling.
	changed chan struct{}
	// boots are the background boots not yet run; Close cancels them.
	boots  map[*bootTimer]struct{}
	closed bool
	wg     sync.WaitGroup
	seq    int
}

type machine struct {
	id, state, instanceID string
	created, updated      time.Time
	// gen counts state changes, so that a transition that ran without the
	// lock can tell whether somebody else changed the machine meanwhile.
	gen      int
	lastStop *StopRequest
}

type callKey struct{ op, app, id string }

type fault struct {
	status, left int
}

type bootTimer struct{ t *time.Timer }

// StopRequest is a stop request's body as the fake received it.
type StopRequest struct {
	Signal  string `json:"signal"`
	Timeout string `json:"timeout"`
}

// The answers' machine object: the documented fields the fake can fill.
type machineJSON struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	State      string `json:"state"`
	Region     string `json:"region"`
	InstanceID string `json:"instance_id"`
	CreatedAt  string `json:"created_at"`
	UpdatedAt  string `json:"updated_at"`
}

// New returns a fake that accepts only "Authorization: Bearer <token>".
func New(token string) *Server {
	s := &Server{
		token:      token,
		mux:        http.NewServeMux(),
		apps:       make(map[string]map[string]*machine),
		calls:      make(map[callKey]int),
		faults:     make(map[string][]fault),
		retryAfter: make(map[string]string),
		delays:     make(map[string]time.Duration),
		changed:    make(chan struct{}),
		boots:      make(map[*bootTimer]struct{}),
	}
	s.route("GET /v1/apps/{app}/machines", "list", s.list)
	s.route("GET /v1/apps/{app}/machines/{id}", "get", s.get)
	s.route("POST /v1/apps/{app}/machines/{id}/start", "start", s.start)
	s.route("POST /v1/apps/{app}/machines/{id}/stop", "stop", s.stop)
	s.route("POST /v1/apps/{app}/machines/{id}/suspend", "suspend", s.suspend)
	s.route("GET /v1/apps/{app}/machines/{id}/wait", "wait", s.wait)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Add registers machine id of app in state (created if empty), or sets
// the state of one already there. It runs no hook.
func (s *Server) Add(app, id, state string) {
	if state == "" {
		state = "created"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := s.apps[app]
	if ms == nil {
		ms = make(map[string]*machine)
		s.apps[app] = ms
	}
	m := ms[id]
	if m == nil {
		s.seq++
		now := time.Now().UTC()
		m = &machine{id: id, instanceID: fmt.Sprintf("01FAKE%020d", s.seq), created: now}
		ms[id] = m
	}
	s.setState(m, state)
}

// State is the machine's state, "" for an unknown one.
func (s *Server) State(app, id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.apps[app][id]; m != nil {
		return m.state
	}
	return ""
}

// InstanceID is the machine's current version, which a wait for stopped
// must name.
func (s *Server) InstanceID(app, id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.apps[app][id]; m != nil {
		return m.instanceID
	}
	return ""
}

// LastStop is the body of the last stop request the machine accepted.
func (s *Server) LastStop(app, id string) (StopRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.apps[app][id]; m != nil && m.lastStop != nil {
		return *m.lastStop, true
	}
	return StopRequest{}, false
}

// Calls counts the requests received for op ("start", "stop", "suspend",
// "wait", "get", "list"), whatever they were answered: failed, refused and
// unauthorized ones included.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, c := range s.calls {
		if k.op == op {
			n += c
		}
	}
	return n
}

// MachineCalls counts the requests for op on one machine (id "" for
// "list").
func (s *Server) MachineCalls(op, app, id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[callKey{op, app, id}]
}

// FailNext answers the next n requests for op with status and an
// {"error": ...} body, before looking at the token or the machine.
// Failures queue: FailNext("get", 503, 1) then FailNext("get", 429, 1)
// answers 503, then 429. A 429 carries the Retry-After set by RetryAfter.
func (s *Server) FailNext(op string, status, n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[op] = append(s.faults[op], fault{status: status, left: n})
}

// RetryAfter sets the Retry-After header of the 429s FailNext injects for
// op: "0" unless set, none if v is "".
func (s *Server) RetryAfter(op, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retryAfter[op] = v
}

// Delay holds every request for op for d (0 ends it) before acting on it.
// A request whose client gives up meanwhile is dropped without effect.
func (s *Server) Delay(op string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delays[op] = d
}

// Close cancels the boots still waiting out BootDelay and waits for those
// running: no Boot runs once Close has returned. Requests are the http
// server's to end.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for b := range s.boots {
		if b.t.Stop() {
			s.wg.Done()
		}
		delete(s.boots, b)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// setState must be called with mu held.
func (s *Server) setState(m *machine, state string) {
	m.state = state
	m.updated = time.Now().UTC()
	m.gen++
	close(s.changed)
	s.changed = make(chan struct{})
}

// route wraps a handler with what every endpoint does first: count, hold,
// inject, authenticate.
func (s *Server) route(pattern, op string, h func(w http.ResponseWriter, r *http.Request, app, id string)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		app, id := r.PathValue("app"), r.PathValue("id")
		s.mu.Lock()
		s.calls[callKey{op, app, id}]++
		delay := s.delays[op]
		var inject int
		if q := s.faults[op]; len(q) > 0 {
			inject = q[0].status
			if q[0].left--; q[0].left == 0 {
				s.faults[op] = q[1:]
			}
		}
		retryAfter, set := s.retryAfter[op]
		s.mu.Unlock()

		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if inject != 0 {
			if inject == http.StatusTooManyRequests {
				if !set {
					retryAfter = "0"
				}
				if retryAfter != "" {
					w.Header().Set("Retry-After", retryAfter)
				}
			}
			writeError(w, inject, fmt.Sprintf("injected %d for %s", inject, op))
			return
		}
		if !s.authorized(r) {
			writeError(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		h(w, r, app, id)
	})
}

func (s *Server) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) == 1
}

// lookup must be called with mu held; on failure it says what to answer.
func (s *Server) lookup(app, id string) (*machine, int, string) {
	ms, ok := s.apps[app]
	if !ok {
		return nil, http.StatusNotFound, "app not found"
	}
	m, ok := ms[id]
	if !ok {
		return nil, http.StatusNotFound, "machine not found"
	}
	return m, 0, ""
}

func (m *machine) json() machineJSON {
	return machineJSON{
		ID: m.id, Name: m.id, State: m.state, Region: "local",
		InstanceID: m.instanceID,
		CreatedAt:  m.created.Format(time.RFC3339),
		UpdatedAt:  m.updated.Format(time.RFC3339),
	}
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, app, _ string) {
	withDeleted := r.URL.Query().Get("include_deleted") == "true"
	s.mu.Lock()
	ms, ok := s.apps[app]
	out := []machineJSON{}
	for _, m := range ms {
		if m.state != "destroyed" || withDeleted {
			out = append(out, m.json())
		}
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "app not found")
		return
	}
	slices.SortFunc(out, func(a, b machineJSON) int { return strings.Compare(a.ID, b.ID) })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) get(w http.ResponseWriter, _ *http.Request, app, id string) {
	s.mu.Lock()
	m, status, msg := s.lookup(app, id)
	var out machineJSON
	if m != nil {
		out = m.json()
	}
	s.mu.Unlock()
	if m == nil {
		writeError(w, status, msg)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) start(w http.ResponseWriter, _ *http.Request, app, id string) {
	s.mu.Lock()
	m, status, msg := s.lookup(app, id)
	if m == nil {
		s.mu.Unlock()
		writeError(w, status, msg)
		return
	}
	prev := m.state
	switch prev {
	case "stopped", "created", "suspended", "failed":
	case "started":
		s.mu.Unlock()
		writeError(w, http.StatusConflict, "machine already started")
		return
	default:
		s.mu.Unlock()
		writeError(w, http.StatusConflict, "machine is "+prev+"; it cannot be started")
		return
	}
	s.setState(m, "starting")
	gen := m.gen
	answer := map[string]any{"previous_state": prev, "migrated": false, "new_host": ""}
	if s.BootDelay > 0 && !s.closed {
		b := &bootTimer{}
		s.wg.Add(1)
		b.t = time.AfterFunc(s.BootDelay, func() {
			defer s.wg.Done()
			s.mu.Lock()
			_, pending := s.boots[b]
			delete(s.boots, b)
			s.mu.Unlock()
			if pending {
				s.boot(app, id, m, gen)
			}
		})
		s.boots[b] = struct{}{}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, answer)
		return
	}
	s.mu.Unlock()
	s.boot(app, id, m, gen)
	writeJSON(w, http.StatusOK, answer)
}

// boot runs Boot for a machine moved to starting at generation gen, and
// settles it unless somebody changed it meanwhile.
func (s *Server) boot(app, id string, m *machine, gen int) {
	var err error
	if s.Boot != nil {
		err = s.Boot(app, id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.gen != gen {
		return
	}
	if err != nil {
		s.setState(m, "failed")
		return
	}
	s.setState(m, "started")
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request, app, id string) {
	var req StopRequest
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "invalid stop request: "+err.Error())
		return
	}
	if req.Signal != "" && (!strings.HasPrefix(req.Signal, "SIG") || len(req.Signal) < 4) {
		writeError(w, http.StatusBadRequest, "invalid signal "+strconv.Quote(req.Signal))
		return
	}
	if req.Timeout != "" && !validTimeout(req.Timeout) {
		writeError(w, http.StatusBadRequest, "invalid timeout "+strconv.Quote(req.Timeout))
		return
	}
	s.transition(w, app, id, "stop", &req)
}

func validTimeout(v string) bool {
	if d, err := time.ParseDuration(v); err == nil {
		return d >= 0
	}
	n, err := strconv.Atoi(v)
	return err == nil && n >= 0
}

func (s *Server) suspend(w http.ResponseWriter, _ *http.Request, app, id string) {
	s.transition(w, app, id, "suspend", nil)
}

// transition runs a stop or a suspend.
func (s *Server) transition(w http.ResponseWriter, app, id, op string, req *StopRequest) {
	s.mu.Lock()
	m, status, msg := s.lookup(app, id)
	if m == nil {
		s.mu.Unlock()
		writeError(w, status, msg)
		return
	}
	running := m.state == "started"
	during, after := "stopping", "stopped"
	if op == "suspend" {
		during, after = "suspending", "suspended"
	}
	var refuse string
	switch {
	case op == "stop" && (m.state == "started" || m.state == "suspended"):
	case op == "suspend" && m.state == "started":
	case op == "stop" && (m.state == "stopped" || m.state == "created" || m.state == "failed"):
		refuse = "machine already stopped"
	case op == "suspend" && m.state == "suspended":
		refuse = "machine already suspended"
	default:
		refuse = "machine is " + m.state + "; it cannot be " + after
	}
	if refuse != "" {
		s.mu.Unlock()
		writeError(w, http.StatusConflict, refuse)
		return
	}
	if op == "stop" {
		m.lastStop = req
	}
	s.setState(m, during)
	gen := m.gen
	halt := s.Halt
	s.mu.Unlock()
	if running && halt != nil {
		halt(app, id)
	}
	s.mu.Lock()
	if m.gen == gen {
		s.setState(m, after)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) wait(w http.ResponseWriter, r *http.Request, app, id string) {
	q := r.URL.Query()
	want := q.Get("state")
	switch want {
	case "":
		want = "started"
	case "started", "stopped", "suspended", "destroyed":
	default:
		writeError(w, http.StatusBadRequest, "invalid state "+strconv.Quote(want)+": want started, stopped, suspended or destroyed")
		return
	}
	timeout := 60 * time.Second
	if v := q.Get("timeout"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "invalid timeout "+strconv.Quote(v)+": want whole seconds")
			return
		}
		timeout = time.Duration(n) * time.Second
	}
	if s.MaxWait > 0 && timeout > s.MaxWait {
		timeout = s.MaxWait
	}
	inst := q.Get("instance_id")

	s.mu.Lock()
	m, status, msg := s.lookup(app, id)
	switch {
	case m == nil:
	case want == "stopped" && inst == "":
		status, msg = http.StatusBadRequest, "instance_id is required to wait for stopped"
	case inst != "" && inst != m.instanceID:
		status, msg = http.StatusBadRequest, "instance_id "+strconv.Quote(inst)+" is not the machine's current version"
	}
	if status != 0 {
		s.mu.Unlock()
		writeError(w, status, msg)
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		if m.state == want {
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
			return
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
			s.mu.Lock()
		case <-t.C:
			writeError(w, http.StatusRequestTimeout, "timed out waiting for machine to be "+want)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
