package storm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config describes one storm. Zero values of the fields marked so take the
// documented default; Idle and the target-observation fields are off when zero.
type Config struct {
	// Target is HOST:PORT of the port under test.
	Target string
	// SNI is the TLS server name and the HTTP Host header. Empty means the
	// host part of Target.
	SNI string
	// Plain skips TLS, for plain HTTP ports. close_notify then becomes a
	// TCP FIN, and the junk-after-close_notify step is skipped because TCP
	// cannot carry bytes after a FIN.
	Plain bool

	// Count is the number of connections to make (default 1000).
	Count int
	// Concurrency is how many connections are in flight at once (default 100).
	Concurrency int
	// Duration caps the storm: no connection starts after it has passed
	// (default 60s). Connections already started finish, bounded by Timeout.
	Duration time.Duration
	// Shapes and their weights; empty means every shape with weight 1.
	Shapes []ShapeWeight

	// Path is the request path (default "/").
	Path string
	// Hold is how long cn-junk-hold keeps its connection open (default 2s).
	Hold time.Duration
	// Timeout bounds each connection from dial to close (default 10s).
	Timeout time.Duration
	// RequestsPerConn is how many requests a keepalive connection makes
	// (default 10).
	RequestsPerConn int
	// BodySize is the Content-Length that fin-mid-body announces before
	// sending half of it (default 4096).
	BodySize int

	// PID, when non-zero, is the target's process id: its CPU time and open
	// descriptors are read from /proc around the storm.
	PID int
	// MetricsURL, when set, is the target's Prometheus text exposition,
	// scraped before the storm, after it and after the idle window.
	MetricsURL string
	// Counters are the metric families whose deltas the report carries
	// (summed over labels); empty means DefaultCounters().
	Counters []string
	// Idle is the quiet window after the storm during which the target's CPU
	// is measured again: a healthy target is near zero there, a spinning
	// one is not. Zero skips it.
	Idle time.Duration

	// AllowRemote permits targets that are not loopback addresses.
	AllowRemote bool
	// ProgressInterval is the time between progress lines when the progress
	// writer is not a terminal (default 5s); a terminal is redrawn at most
	// ten times a second regardless.
	ProgressInterval time.Duration
}

// DefaultCounters returns the spurious-wakeup and spin metrics of
// docs/incident.md, plus the CPU counter that stands in for /proc when no PID is
// given. The names are spelled out rather than imported from telemetry so
// the storm can point at any build of the proxy, old ones included.
func DefaultCounters() []string {
	return []string{
		cpuCounter,
		"edgeproxy_guard_zero_progress_reads_total",
		"edgeproxy_guard_reads_after_eof_total",
		"edgeproxy_spin_kills_total",
	}
}

// cpuCounter is the family the report reads CPU time from when no PID is set.
const cpuCounter = "process_cpu_seconds_total"

// withDefaults returns a copy of c with defaults filled in, and checks what
// can be checked without touching the network.
func (c Config) withDefaults() (Config, error) {
	if c.Target == "" {
		return c, errors.New("storm: a target (HOST:PORT) is required")
	}
	host, port, err := net.SplitHostPort(c.Target)
	if err != nil {
		return c, fmt.Errorf("storm: target %q: %w", c.Target, err)
	}
	if host == "" {
		// Dialing ":port" reaches some local address chosen by the kernel;
		// make the operator say which.
		return c, fmt.Errorf("storm: target %q has no host", c.Target)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return c, fmt.Errorf("storm: target %q: bad port", c.Target)
	}
	if c.SNI == "" {
		c.SNI = host
	}
	setDefault(&c.Count, 1000)
	setDefault(&c.Concurrency, 100)
	setDefault(&c.RequestsPerConn, 10)
	setDefault(&c.BodySize, 4096)
	setDefault(&c.Duration, 60*time.Second)
	setDefault(&c.Hold, 2*time.Second)
	setDefault(&c.Timeout, 10*time.Second)
	setDefault(&c.ProgressInterval, 5*time.Second)
	if c.Path == "" {
		c.Path = "/"
	}
	if !strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, " \r\n") {
		return c, fmt.Errorf("storm: path %q must start with / and hold no spaces or line breaks", c.Path)
	}
	if strings.ContainsAny(c.SNI, " \r\n") {
		return c, fmt.Errorf("storm: SNI %q holds spaces or line breaks", c.SNI)
	}
	if c.Count < 0 || c.Concurrency < 0 || c.RequestsPerConn < 0 || c.BodySize < 0 ||
		c.Duration < 0 || c.Hold < 0 || c.Timeout < 0 || c.Idle < 0 || c.PID < 0 {
		return c, errors.New("storm: counts and durations must not be negative")
	}
	if c.BodySize < 2 {
		// Half of a one-byte body is no body at all, which is another shape.
		return c, errors.New("storm: body size must be at least 2")
	}
	if c.Concurrency > c.Count {
		c.Concurrency = c.Count
	}
	if len(c.Shapes) == 0 {
		c.Shapes = allShapes(1)
	}
	if _, err := newShapeCycle(c.Shapes); err != nil {
		return c, err
	}
	if len(c.Counters) == 0 {
		c.Counters = DefaultCounters()
	}
	return c, nil
}

func setDefault[T int | time.Duration](v *T, d T) {
	if *v == 0 {
		*v = d
	}
}

// resolveTarget returns the addresses to dial. Unless remote targets are
// allowed, every address the host resolves to must be loopback, and the
// resolved addresses (not the name) are dialed, so the name cannot resolve
// somewhere else halfway through the storm.
func resolveTarget(ctx context.Context, target string, allowRemote bool) ([]string, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return nil, fmt.Errorf("storm: target %q: %w", target, err)
	}
	if allowRemote {
		return []string{target}, nil
	}
	ips, err := lookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	addrs := make([]string, 0, len(ips))
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return nil, fmt.Errorf("storm: %s resolves to %s, which is not loopback; pass -allow-remote to storm it anyway", host, ip)
		}
		addrs = append(addrs, net.JoinHostPort(ip.String(), port))
	}
	return addrs, nil
}

// checkURL applies the loopback rule to the metrics URL as well: scraping is
// light, but an operator who did not allow remote targets did not mean to
// reach out anywhere.
func checkURL(ctx context.Context, raw string, allowRemote bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("storm: metrics URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("storm: metrics URL %q must be http or https", raw)
	}
	if allowRemote {
		return nil
	}
	ips, err := lookupHost(ctx, u.Hostname())
	if err != nil {
		return err
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("storm: metrics host %s resolves to %s, which is not loopback; pass -allow-remote", u.Hostname(), ip)
		}
	}
	return nil
}

func lookupHost(ctx context.Context, host string) ([]net.IP, error) {
	if host == "" {
		return nil, errors.New("storm: empty host")
	}
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	ipas, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("storm: resolve %s: %w", host, err)
	}
	if len(ipas) == 0 {
		return nil, fmt.Errorf("storm: %s resolves to no address", host)
	}
	ips := make([]net.IP, len(ipas))
	for i, a := range ipas {
		ips[i] = a.IP
	}
	return ips, nil
}
