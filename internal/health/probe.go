package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
)

// maxBody is how much of a check response is read: enough for any status
// page, little enough that a machine streaming forever costs nothing.
const maxBody = 64 << 10

// userAgent lets apps tell checks from users in their logs.
const userAgent = "edgeproxy-health-check"

// target is where a prober's verdicts go: the services (usually one) whose
// check it runs, and the machine. Reconcile swaps it on reload.
type target struct {
	svcs []*catalog.Service
	m    *catalog.Machine
}

// prober runs one check against one machine until its context ends.
type prober struct {
	c      *Checker
	key    key
	check  catalog.Check
	target atomic.Pointer[target]
	// label starts every failure reason: "tcp check", "http check GET /".
	label             string
	interval, timeout time.Duration
	pass, fail        prometheus.Counter // nil without metrics

	// HTTP checks only.
	client *http.Client
	url    string
	urlErr error
	host   string
	header http.Header

	cancel context.CancelFunc
	done   chan struct{}

	// Consecutive results, owned by the run goroutine and capped at the
	// thresholds.
	fails, passes int
}

func (c *Checker) newProber(k key, t *target) *prober {
	chk := t.svcs[0].Checks[k.index]
	p := &prober{c: c, key: k, check: chk, done: make(chan struct{}),
		interval: chk.Interval.D(), timeout: chk.Timeout.D()}
	p.target.Store(t)
	// Config applies defaults and validates; these guard a catalog built
	// some other way from a zero interval (rand.N panics on it).
	if p.interval <= 0 {
		p.interval = config.DefaultCheckInterval
	}
	if p.timeout <= 0 {
		p.timeout = config.DefaultCheckTimeout
	}
	kind := "tcp"
	p.label = "tcp check"
	if chk.HTTP {
		kind = "http"
		p.label = "http check " + chk.Method + " " + chk.Path
		p.setupHTTP()
	}
	if c.metrics != nil {
		p.pass = c.metrics.HealthChecks.WithLabelValues(k.app, kind, "pass")
		p.fail = c.metrics.HealthChecks.WithLabelValues(k.app, kind, "fail")
	}
	return p
}

// setupHTTP builds the prober's own client: no connection is reused
// (each check must prove a fresh connect works) and every connect goes to
// the machine, whatever host the URL names.
func (p *prober) setupHTTP() {
	chk := p.check
	addr := p.key.addr.String()
	p.header = http.Header{"User-Agent": {userAgent}}
	p.host = addr
	for name, v := range chk.Headers {
		if http.CanonicalHeaderKey(name) == "Host" {
			p.host = v
			continue
		}
		p.header.Set(name, v)
	}
	scheme := "http"
	tr := &http.Transport{
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxBody,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := p.dial(ctx, addr)
			if err != nil {
				return nil, dialError{err}
			}
			return conn, nil
		},
	}
	if chk.Protocol == "https" {
		scheme = "https"
		tr.TLSClientConfig = &tls.Config{
			// The operator asked for it: machines often serve self-signed
			// certificates on their internal port.
			InsecureSkipVerify: chk.TLSSkipVerify,
			ServerName:         chk.TLSServerName,
		}
	}
	p.client = &http.Client{
		Transport: tr,
		// A redirect fails the check: following it would test some other
		// URL, possibly on another host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	u, err := url.Parse(scheme + "://" + p.host + chk.Path)
	if err != nil {
		p.urlErr = fmt.Errorf("bad URL: %w", err)
		return
	}
	p.url = u.String()
}

// run probes at a random point of the first interval, so the checks of
// many machines spread out, then once per interval.
func (p *prober) run(ctx context.Context) {
	defer close(p.done)
	if p.client != nil {
		defer p.client.CloseIdleConnections()
	}
	started := time.Now()
	first := time.NewTimer(rand.N(p.interval))
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		p.round(ctx, started)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// round runs one probe and counts its result toward a verdict.
func (p *prober) round(ctx context.Context, started time.Time) {
	at := time.Now()
	reason := p.probe(ctx)
	if ctx.Err() != nil {
		// Stopped mid-probe: the failure is ours, not the machine's.
		return
	}
	if reason == "" {
		inc(p.pass)
		p.fails = 0
		if p.passes < p.check.HealthyAfter {
			p.passes++
		}
		if p.passes >= p.check.HealthyAfter {
			p.verdict("")
		}
		return
	}
	inc(p.fail)
	if at.Sub(started) < p.check.Grace() {
		// The machine may still be booting.
		return
	}
	p.passes = 0
	if p.fails < p.check.UnhealthyAfter {
		p.fails++
	}
	if p.fails >= p.check.UnhealthyAfter {
		p.verdict(reason)
	}
}

// verdict records the check's state. It is set again on every result past
// the threshold, not only on the crossing: that keeps the reason current
// and reaches a Health the catalog built afresh on reload.
func (p *prober) verdict(reason string) {
	t := p.target.Load()
	for _, svc := range t.svcs {
		if h := svc.Health(t.m); h != nil && h.Set(p.key.index, reason) {
			p.c.changed(svc, t.m, p.check.Name(), reason == "", reason)
		}
	}
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

// probe runs the check once and returns why it failed, "" if it passed.
func (p *prober) probe(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var err error
	if p.client == nil {
		err = p.tcp(ctx)
	} else {
		err = p.http(ctx)
	}
	if err == nil {
		return ""
	}
	var se statusError
	if !errors.As(err, &se) && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return p.label + ": timeout after " + p.timeout.String()
	}
	return p.label + ": " + err.Error()
}

// dial connects to the machine, timing the connect for Connected.
func (p *prober) dial(ctx context.Context, addr string) (net.Conn, error) {
	if p.c.connected == nil {
		return p.c.dial(ctx, "tcp", addr)
	}
	start := time.Now()
	conn, err := p.c.dial(ctx, "tcp", addr)
	if err == nil {
		p.c.connected(p.target.Load().m.Region, time.Since(start))
	}
	return conn, err
}

func (p *prober) tcp(ctx context.Context) error {
	conn, err := p.dial(ctx, p.key.addr.String())
	if err != nil {
		return dialError{err}
	}
	return conn.Close()
}

func (p *prober) http(ctx context.Context) error {
	if p.urlErr != nil {
		return p.urlErr
	}
	req, err := http.NewRequestWithContext(ctx, p.check.Method, p.url, nil)
	if err != nil {
		return err
	}
	req.Header = p.header.Clone()
	resp, err := p.client.Do(req)
	if err != nil {
		// Drop url.Error's "Get "http://...":" prefix: the label already
		// names the request.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return statusError(resp.StatusCode)
	}
	if rerr != nil {
		return fmt.Errorf("reading body: %w", rerr)
	}
	return nil
}

// statusError is a response outside 2xx.
type statusError int

func (e statusError) Error() string {
	s := "status " + strconv.Itoa(int(e))
	if e >= 300 && e < 400 {
		s += " (redirects are not followed)"
	}
	return s
}

// dialError is a failed connect, worded as "connect: connection refused"
// whichever layer it came through.
type dialError struct{ err error }

func (e dialError) Error() string {
	var errno syscall.Errno
	if errors.As(e.err, &errno) {
		return "connect: " + errno.Error()
	}
	return "connect: " + e.err.Error()
}

func (e dialError) Unwrap() error { return e.err }
