package config

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

// Defaults, documented in docs/config.md.
const (
	DefaultRegion                = "local"
	DefaultBind                  = "0.0.0.0"
	DefaultConnectTimeout        = 5 * time.Second
	DefaultConnectAttempts       = 3
	DefaultQueueTimeout          = 2 * time.Second
	DefaultHandshakeTimeout      = 10 * time.Second
	DefaultUDPIdleTimeout        = 30 * time.Second
	DefaultMaxUDPFlows           = 10000
	DefaultMaxCompressed         = 512
	DefaultTicketRotation        = time.Hour
	DefaultTicketLifetime        = 24 * time.Hour
	DefaultIdleTimeout           = 60 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultMaxHeaderBytes        = 64 << 10
	DefaultSoftLimit             = 20
	DefaultHalfClosedTimeout     = 60 * time.Second
	DefaultLingeringTimeout      = 5 * time.Second
	DefaultLingeringMaxBytes     = 256 << 10
	DefaultMaxConnectionAge      = 24 * time.Hour
	DefaultSniffMaxBytes         = 24 << 10 // the largest ClientHello, 16 KiB of body, plus its record headers
	DefaultBodyTimeout           = 30 * time.Second
	DefaultBodyMinBytes          = 1024
	DefaultCompressMinSize       = 1024
	DefaultH2MaxStreams          = 100
	DefaultH2MaxResets           = 100
	DefaultH2MaxSettings         = 20
	DefaultH2MaxPings            = 20
	DefaultMaxConnections        = 100000
	DefaultMaxConnectionsPerApp  = 2048
	DefaultProxyProtocolTimeout  = 5 * time.Second
	DefaultGuardZeroProgress     = 100
	DefaultGuardReadsAfterEOF    = 100
	DefaultGuardCallsPerSecond   = 100000
	DefaultAdminListen           = "127.0.0.1:9901"
	DefaultDrainTimeout          = 30 * time.Second
	DefaultAccessLog             = "stdout"
	DefaultTracingSampleRatio    = 0.1
	DefaultTracingServiceName    = "edgeproxy"
	DefaultTripwireThreshold     = 0.8
	DefaultTripwireSamples       = 3
	DefaultTripwireProfile       = 10 * time.Second
	DefaultTripwireDir           = "edgeproxy-profiles" // under the system temp dir
	DefaultTripwireMaxFiles      = 20
	DefaultTripwireCooldown      = 10 * time.Minute
	DefaultCheckInterval         = 15 * time.Second
	DefaultCheckTimeout          = 2 * time.Second
	DefaultCheckGracePeriod      = time.Second
	DefaultCheckUnhealthyAfter   = 2
	DefaultCheckHealthyAfter     = 1
	DefaultCheckMethod           = "GET"
	DefaultCheckPath             = "/"
	DefaultCheckProtocol         = "http"
	DefaultBalance               = "least-loaded"
	DefaultAutostopInterval      = 5 * time.Minute
	DefaultKillSignal            = "SIGINT"
	DefaultProcessGroup          = "app"
	DefaultKillTimeout           = 5 * time.Second
	DefaultStartTimeout          = 60 * time.Second
	DefaultDriverLogDir          = "machine-logs" // next to the config file
	DefaultAPIRequestTimeout     = 10 * time.Second
	DefaultAPIRetries            = 3
	// MaxListeners caps how many public ports one config may open, so a
	// typo in a port range cannot exhaust file descriptors.
	MaxListeners = 4096
)

var (
	nameRE        = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	hostnameRE    = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	knownHandlers = []string{"tls", "http", "proxy_proto", "pg_tls"}
	methodRE      = regexp.MustCompile(`^[A-Z]{1,16}$`)
	tokenRE       = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
)

func applyDefaults(c *Config) {
	p := &c.Proxy
	setStr(&p.Region, DefaultRegion)
	setStr(&p.Bind, DefaultBind)
	setStr(&p.LogLevel, "info")
	setDur(&p.ConnectTimeout, DefaultConnectTimeout)
	setDur(&p.QueueTimeout, DefaultQueueTimeout)
	setDur(&p.AutostopInterval, DefaultAutostopInterval)
	setDur(&p.HandshakeTimeout, DefaultHandshakeTimeout)
	setDur(&p.UDPIdleTimeout, DefaultUDPIdleTimeout)
	setDur(&p.SessionTicketRotation, DefaultTicketRotation)
	setDur(&p.SessionTicketLifetime, DefaultTicketLifetime)
	setDur(&p.IdleTimeout, DefaultIdleTimeout)
	setDur(&p.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	if p.ConnectAttempts == 0 {
		p.ConnectAttempts = DefaultConnectAttempts
	}
	if p.MaxHeaderBytes == 0 {
		p.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	setDur(&p.HalfClosedTimeout, DefaultHalfClosedTimeout)
	setDur(&p.LingeringTimeout, DefaultLingeringTimeout)
	setDur(&p.MaxConnectionAge, DefaultMaxConnectionAge)
	setDur(&p.DrainTimeout, DefaultDrainTimeout)
	setInt(&p.LingeringMaxBytes, DefaultLingeringMaxBytes)
	setInt(&p.SniffMaxBytes, DefaultSniffMaxBytes)
	setDur(&p.BodyTimeout, DefaultBodyTimeout)
	setInt(&p.BodyMinBytes, DefaultBodyMinBytes)
	setInt(&p.CompressMinSize, DefaultCompressMinSize)
	setInt(&p.H2MaxConcurrentStreams, DefaultH2MaxStreams)
	setInt(&p.H2MaxResetsPerSecond, DefaultH2MaxResets)
	setInt(&p.H2MaxSettingsPerSecond, DefaultH2MaxSettings)
	setInt(&p.H2MaxPingsPerSecond, DefaultH2MaxPings)
	l := &c.Limits
	setInt(&l.MaxConnections, DefaultMaxConnections)
	setInt(&l.MaxUDPFlows, DefaultMaxUDPFlows)
	setInt(&l.MaxCompressedResponses, DefaultMaxCompressed)
	setInt(&l.MaxConnectionsPerApp, DefaultMaxConnectionsPerApp)
	pp := &c.ProxyProtocol
	setStr(&pp.Mode, "off")
	setDur(&pp.Timeout, DefaultProxyProtocolTimeout)
	g := &c.Guard
	setInt(&g.ZeroProgressReads, DefaultGuardZeroProgress)
	setInt(&g.ReadsAfterEOF, DefaultGuardReadsAfterEOF)
	setInt(&g.MaxCallsPerSecond, DefaultGuardCallsPerSecond)
	setStr(&c.Admin.Listen, DefaultAdminListen)
	setStr(&c.Log.AccessLog, DefaultAccessLog)
	tr := &c.Tracing
	if tr.SampleRatio == 0 {
		tr.SampleRatio = DefaultTracingSampleRatio
	}
	setStr(&tr.ServiceName, DefaultTracingServiceName)
	tw := &c.Tripwire
	if tw.Threshold == 0 {
		tw.Threshold = DefaultTripwireThreshold
	}
	setInt(&tw.Samples, DefaultTripwireSamples)
	setDur(&tw.ProfileDuration, DefaultTripwireProfile)
	setStr(&tw.Dir, filepath.Join(os.TempDir(), DefaultTripwireDir))
	setInt(&tw.MaxFiles, DefaultTripwireMaxFiles)
	setDur(&tw.Cooldown, DefaultTripwireCooldown)
	for i := range c.Apps {
		AppDefaults(&c.Apps[i], p.Region)
	}
	fleetDefaults(c.Fleet)
}

// AppDefaults fills an app's balance policies, health check settings and
// its machines' region (region) and state. It writes only what is unset,
// so applied once it changes nothing later.
func AppDefaults(a *App, region string) {
	for j := range a.Services {
		checkDefaults(&a.Services[j].Balance, a.Services[j].TCPChecks, a.Services[j].HTTPChecks)
	}
	if h := a.HTTPService; h != nil {
		checkDefaults(&h.Balance, h.TCPChecks, h.Checks)
	}
	for j := range a.Machines {
		setStr(&a.Machines[j].Region, region)
		setStr(&a.Machines[j].State, "started")
	}
	setStr(&a.KillSignal, DefaultKillSignal)
	setDur(&a.KillTimeout, DefaultKillTimeout)
	if d := a.Driver; d != nil {
		setDur(&d.StartTimeout, DefaultStartTimeout)
		setStr(&d.LogDir, DefaultDriverLogDir)
		setStr(&d.APIApp, a.Name)
		setDur(&d.RequestTimeout, DefaultAPIRequestTimeout)
		if d.Retries == nil {
			n := DefaultAPIRetries
			d.Retries = &n
		}
	}
}

// checkDefaults fills a service's balance policy and health checks.
func checkDefaults(balance *string, tcp []TCPCheck, http []HTTPCheck) {
	setStr(balance, DefaultBalance)
	tcpc := func(t *TCPCheck) {
		setDur((*Duration)(&t.Interval), DefaultCheckInterval)
		setDur((*Duration)(&t.Timeout), DefaultCheckTimeout)
		setInt(&t.UnhealthyAfter, DefaultCheckUnhealthyAfter)
		setInt(&t.HealthyAfter, DefaultCheckHealthyAfter)
	}
	for i := range tcp {
		tcpc(&tcp[i])
	}
	for i := range http {
		h := &http[i]
		tcpc(&h.TCPCheck)
		// The platform takes methods in any case ("get" in older files).
		h.Method = strings.ToUpper(h.Method)
		setStr(&h.Method, DefaultCheckMethod)
		setStr(&h.Path, DefaultCheckPath)
		setStr(&h.Protocol, DefaultCheckProtocol)
	}
}

func setStr(s *string, d string) {
	if *s == "" {
		*s = d
	}
}

// setInt defaults a zero int; a limit that should be unlimited is written
// as -1 by the user and normalised to 0 by validation.
func setInt(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}

func setDur(v *Duration, d time.Duration) {
	if *v == 0 {
		*v = Duration(d)
	}
}

func (c *checker) validate(cfg *Config, srcs map[int]*source) {
	main := srcs[-1]
	c.validateProxy(cfg, main)
	c.validateLimits(cfg, main)
	c.validateTelemetry(cfg, main)
	for i, cert := range cfg.Certificates {
		c.certificate(cfg, main, i, cert)
	}
	if len(cfg.Apps) == 0 && cfg.Fleet == nil {
		c.at(main, "apps", "no [[apps]] configured: edgeproxy would serve nothing")
	}
	c.validateFleet(cfg, main)
	c.validateACME(cfg, main)
	c.validateApps(cfg, srcs)
}

// validateApps checks the apps and the ports they share.
func (c *checker) validateApps(cfg *Config, srcs map[int]*source) {
	main := srcs[-1]
	names := map[string]bool{}
	for i := range cfg.Apps {
		a := &cfg.Apps[i]
		key := fmt.Sprintf("apps[%d]", i)
		switch {
		case a.Name == "":
			c.at(main, key+".name", "required")
		case !nameRE.MatchString(a.Name):
			c.at(main, key+".name", "%q is not a valid app name (lowercase letters, digits and '-')", a.Name)
		case names[a.Name]:
			c.at(main, key+".name", "app %q is defined twice", a.Name)
		}
		names[a.Name] = true
		c.hostnames(main, key+".hostnames", a.Hostnames)
		c.validateApp(a, key, srcs[i], main)
	}
	c.validatePorts(cfg, srcs)
	c.validateCoverage(cfg, srcs)
}

// certificate checks one [[certificates]] entry, contents included, so
// validate reports a bad PEM alongside every other problem.
func (c *checker) certificate(cfg *Config, s *source, i int, cert Certificate) {
	key := fmt.Sprintf("certificates[%d]", i)
	c.hostnames(s, key+".hostnames", cert.Hostnames)
	files := map[string]string{}
	for _, f := range []struct{ name, path string }{{"cert_file", cert.CertFile}, {"key_file", cert.KeyFile}} {
		if f.path == "" {
			c.at(s, key+"."+f.name, "required")
			return
		}
		if _, err := os.Stat(cfg.resolve(f.path)); err != nil {
			c.at(s, key+"."+f.name, "cannot read %s: %v", f.name, err)
			return
		}
		files[cfg.resolve(f.path)] = f.name
	}
	_, err := tlsterm.Load([]tlsterm.CertSpec{{CertFile: cfg.resolve(cert.CertFile), KeyFile: cfg.resolve(cert.KeyFile), Hostnames: cert.Hostnames}})
	for _, e := range unjoin(err) {
		k := key
		var ce *tlsterm.CertError
		if errors.As(e, &ce) {
			if name, ok := files[ce.File]; ok {
				k += "." + name
			}
			e = ce.Err
		}
		c.at(s, k, "%v", e)
	}
}

// unjoin splits an errors.Join result into its parts.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (c *checker) validateProxy(cfg *Config, s *source) {
	p := &cfg.Proxy
	if !nameRE.MatchString(p.Region) {
		c.at(s, "proxy.region", "%q is not a valid region code", p.Region)
	}
	if _, err := netip.ParseAddr(p.Bind); err != nil {
		c.at(s, "proxy.bind", "%q is not an IP address", p.Bind)
	}
	for k, v := range p.PortMap {
		if _, err := parsePort(k); err != nil {
			c.at(s, "proxy.port_map", "key %q: %v", k, err)
		}
		if v < 0 || v > 65535 {
			c.at(s, "proxy.port_map."+k, "port %d is out of range 0-65535 (0 picks any free port)", v)
		}
	}
	if p.UpstreamBind != "" {
		if _, err := netip.ParseAddr(p.UpstreamBind); err != nil {
			c.at(s, "proxy.upstream_bind", "%q is not an IP address", p.UpstreamBind)
		}
	}
	if p.ConnectAttempts < 1 || p.ConnectAttempts > 20 {
		c.at(s, "proxy.connect_attempts", "must be between 1 and 20, got %d", p.ConnectAttempts)
	}
	for _, t := range []struct {
		key string
		m   map[string]Duration
	}{{"proxy.region_rtt", p.RegionRTT}, {"proxy.region_rtt_fixed", p.RegionRTTFixed}} {
		for region, d := range t.m {
			if !nameRE.MatchString(region) {
				c.at(s, t.key, "%q is not a valid region code", region)
			}
			if d.D() > 10*time.Second {
				c.at(s, t.key+"."+region, "must be at most 10s, got %v", d.D())
			}
		}
	}
	if p.MaxHeaderBytes < 1024 || p.MaxHeaderBytes > 1<<20 {
		c.at(s, "proxy.max_header_bytes", "must be between 1024 and 1048576, got %d", p.MaxHeaderBytes)
	}
	switch p.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		c.at(s, "proxy.log_level", "must be debug, info, warn or error, got %q", p.LogLevel)
	}
}

func (c *checker) hostnames(s *source, key string, hs []string) {
	seen := map[string]bool{}
	for _, h := range hs {
		n := strings.ToLower(h)
		if !hostnameRE.MatchString(n) {
			c.at(s, key, "%q is not a valid hostname", h)
		} else if seen[n] {
			c.at(s, key, "%q is listed twice", h)
		}
		seen[n] = true
	}
}

func (c *checker) validateApp(a *App, key string, src, main *source) {
	if len(a.Services) == 0 && a.HTTPService == nil && !a.flyTomlFailed {
		c.at(src, key+".services", "app %q has no [[services]] and no [http_service]", a.Name)
	}
	for j := range a.Services {
		c.validateService(&a.Services[j], fmt.Sprintf("%s.services[%d]", key, j), src, a.Driver != nil)
	}
	if h := a.HTTPService; h != nil {
		k := key + ".http_service"
		c.internalPort(src, k+".internal_port", h.InternalPort)
		c.concurrency(src, k+".concurrency", h.Concurrency)
		c.tlsOptions(src, k+".tls_options", h.TLSOptions)
		c.httpOptions(src, k+".http_options", h.HTTPOptions)
		c.balance(src, k+".balance", h.Balance)
		for j := range h.Checks {
			c.httpCheck(src, fmt.Sprintf("%s.checks[%d]", k, j), &h.Checks[j])
		}
		for j := range h.TCPChecks {
			c.tcpCheck(src, fmt.Sprintf("%s.tcp_checks[%d]", k, j), &h.TCPChecks[j])
		}
		c.lifecycle(src, k, h.AutoStopMachines, h.AutoStartMachines, h.MinMachinesRunning, len(h.MachineChecks), a.Driver != nil)
	}
	c.machines(a, key, main)
	c.processes(a, key, src)
	if a.PrimaryRegion != "" && !nameRE.MatchString(a.PrimaryRegion) {
		c.at(src, key+".primary_region", "%q is not a valid region code", a.PrimaryRegion)
	}
	if _, ok := Signal(a.KillSignal); !ok && a.KillSignal != "" {
		c.at(src, key+".kill_signal", "%q is not a signal edgeproxy can send (SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2 or SIGKILL)", a.KillSignal)
	}
	c.driver(a, key+".driver", src)
}

// driver checks an app's [apps.driver].
func (c *checker) driver(a *App, key string, src *source) {
	d := a.Driver
	if d == nil {
		return
	}
	switch d.Type {
	case "exec":
		if len(d.Command) == 0 || d.Command[0] == "" {
			c.at(src, key+".command", "the exec driver needs a command to run each machine")
		}
		if d.URL != "" || d.TokenFile != "" {
			c.at(src, key, "url and token_file are for the machines-api driver, not exec")
		}
		for _, m := range a.Machines {
			if ip, err := netip.ParseAddr(m.Address); err == nil && !ip.IsLoopback() {
				c.at(src, key, "machine %q: the exec driver runs machines on this host, so their address must be loopback, got %s", m.ID, m.Address)
			}
		}
	case "machines-api":
		if u, err := url.Parse(d.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.at(src, key+".url", "must be an http or https URL, got %q", d.URL)
		}
		if d.TokenFile == "" {
			c.at(src, key+".token_file", "required: the machines-api driver sends a bearer token read from this file")
		}
		if len(d.Command) > 0 {
			c.at(src, key+".command", "command is for the exec driver, not machines-api")
		}
		if d.Retries != nil && (*d.Retries < 0 || *d.Retries > 10) {
			c.at(src, key+".retries", "must be between 0 and 10, got %d", *d.Retries)
		}
	default:
		c.at(src, key+".type", "must be exec or machines-api, got %q", d.Type)
	}
}

// signals are the names kill_signal may use, as a Machines API takes
// them too.
var signals = []struct {
	name string
	sig  syscall.Signal
}{
	{"SIGINT", syscall.SIGINT}, {"SIGTERM", syscall.SIGTERM}, {"SIGQUIT", syscall.SIGQUIT},
	{"SIGHUP", syscall.SIGHUP}, {"SIGUSR1", syscall.SIGUSR1}, {"SIGUSR2", syscall.SIGUSR2},
	{"SIGKILL", syscall.SIGKILL},
}

// Signal is the signal kill_signal names.
func Signal(name string) (syscall.Signal, bool) {
	for _, s := range signals {
		if s.name == name {
			return s.sig, true
		}
	}
	return 0, false
}

// SignalName is the name of a signal kill_signal may use.
func SignalName(sig syscall.Signal) (string, bool) {
	for _, s := range signals {
		if s.sig == sig {
			return s.name, true
		}
	}
	return "", false
}

// machines checks an app's machines: each on its own, and their ids
// unique within the app. Nothing here looks at other apps, which is what
// lets a fleet edge apply a machine change by checking one app.
func (c *checker) machines(a *App, key string, main *source) {
	ids := map[string]bool{}
	internal := map[int]bool{} // the services' internal ports
	for _, s := range a.AllServices() {
		internal[s.InternalPort] = true
	}
	for j, m := range a.Machines {
		mk := fmt.Sprintf("%s.machines[%d]", key, j)
		if m.ID == "" {
			c.at(main, mk+".id", "required")
		} else if ids[m.ID] {
			c.at(main, mk+".id", "machine %q is listed twice", m.ID)
		}
		ids[m.ID] = true
		if !nameRE.MatchString(m.Region) {
			c.at(main, mk+".region", "%q is not a valid region code", m.Region)
		}
		if _, err := netip.ParseAddr(m.Address); err != nil {
			c.at(main, mk+".address", "%q is not an IP address", m.Address)
		}
		for k, v := range m.Ports {
			if n, err := parsePort(k); err != nil {
				c.at(main, mk+".ports", "key %q: %v", k, err)
			} else if len(internal) > 0 && !internal[n] {
				c.at(main, mk+".ports."+k, "%d is no service's internal_port: map the internal ports of the app's services", n)
			}
			if v < 1 || v > 65535 {
				c.at(main, mk+".ports."+k, "port %d is out of range 1-65535", v)
			}
		}
		switch m.State {
		case "started", "stopped", "suspended":
		default:
			c.at(main, mk+".state", "must be started, stopped or suspended, got %q", m.State)
		}
	}
}

func (c *checker) validateService(s *Service, key string, src *source, driver bool) {
	c.internalPort(src, key+".internal_port", s.InternalPort)
	switch s.Protocol {
	case "", "tcp":
	case "udp":
		// Datagrams: no handler applies, and checks speak TCP.
		for j, p := range s.Ports {
			if len(p.Handlers) > 0 || p.ForceHTTPS || p.TLSOptions != nil || p.HTTPOptions != nil || p.ProxyProtoOptions != nil {
				c.at(src, fmt.Sprintf("%s.ports[%d].handlers", key, j), "a udp service's ports take no handlers or their options: datagrams are forwarded as they are")
			}
		}
		if len(s.TCPChecks) > 0 || len(s.HTTPChecks) > 0 {
			c.at(src, key+".protocol", "a udp service cannot have tcp_checks or http_checks: they connect over TCP")
		}
	default:
		c.at(src, key+".protocol", "protocol %q is not supported (tcp or udp)", s.Protocol)
	}
	if len(s.Ports) == 0 {
		c.at(src, key+".ports", "a service needs at least one [[services.ports]]")
	}
	for j := range s.Ports {
		c.validatePort(&s.Ports[j], fmt.Sprintf("%s.ports[%d]", key, j), src)
	}
	c.concurrency(src, key+".concurrency", s.Concurrency)
	c.balance(src, key+".balance", s.Balance)
	for j := range s.TCPChecks {
		c.tcpCheck(src, fmt.Sprintf("%s.tcp_checks[%d]", key, j), &s.TCPChecks[j])
	}
	for j := range s.HTTPChecks {
		c.httpCheck(src, fmt.Sprintf("%s.http_checks[%d]", key, j), &s.HTTPChecks[j])
	}
	c.lifecycle(src, key, s.AutoStopMachines, s.AutoStartMachines, s.MinMachinesRunning, 0, driver)
}

func (c *checker) balance(src *source, key, v string) {
	if v != "least-loaded" && v != "p2c-latency" {
		c.at(src, key, "must be least-loaded or p2c-latency, got %q", v)
	}
}

// minCheckInterval keeps a typo ("1ms") from turning checks into a flood.
const minCheckInterval = 10 * time.Millisecond

func (c *checker) tcpCheck(src *source, key string, t *TCPCheck) {
	switch {
	case t.Interval.D() < minCheckInterval:
		c.at(src, key+".interval", "must be at least %v, got %v (integers count milliseconds, as on the platform: write \"15s\" for seconds)", minCheckInterval, t.Interval.D())
	case t.Interval.D() < time.Second:
		c.note(src, key+".interval", "a check every %v; integers count milliseconds, as on the platform (write \"15s\" for seconds)", t.Interval.D())
	}
	if t.Timeout.D() <= 0 || t.Timeout.D() > t.Interval.D() {
		c.at(src, key+".timeout", "must be above 0 and at most the interval (%v), got %v", t.Interval.D(), t.Timeout.D())
	}
	if t.UnhealthyAfter < 1 || t.UnhealthyAfter > 100 {
		c.at(src, key+".unhealthy_after", "must be between 1 and 100, got %d", t.UnhealthyAfter)
	}
	if t.HealthyAfter < 1 || t.HealthyAfter > 100 {
		c.at(src, key+".healthy_after", "must be between 1 and 100, got %d", t.HealthyAfter)
	}
}

func (c *checker) httpCheck(src *source, key string, h *HTTPCheck) {
	c.tcpCheck(src, key, &h.TCPCheck)
	if !methodRE.MatchString(h.Method) {
		c.at(src, key+".method", "%q is not an HTTP method", h.Method)
	}
	if !strings.HasPrefix(h.Path, "/") || strings.ContainsAny(h.Path, " \t\r\n#") {
		c.at(src, key+".path", "must start with / and contain no spaces or #, got %q", h.Path)
	}
	if h.Protocol != "http" && h.Protocol != "https" {
		c.at(src, key+".protocol", "must be http or https, got %q", h.Protocol)
	}
	for name, v := range h.Headers {
		if !tokenRE.MatchString(name) || strings.ContainsAny(v, "\r\n") {
			c.at(src, key+".headers", "header %q: invalid name or value", name)
		}
	}
}

// lifecycle checks the machine lifecycle keys of a service. Without a
// driver nothing can start or stop a machine, which a note says, so that
// a user is never surprised that a setting they wrote does nothing.
func (c *checker) lifecycle(src *source, key string, autoStop any, autoStart *bool, minRunning *int, checks int, driver bool) {
	switch v := autoStop.(type) {
	case nil, bool:
	case string:
		if v != "off" && v != "stop" && v != "suspend" {
			c.at(src, key+".auto_stop_machines", "must be off, stop, suspend or a boolean, got %q", v)
		}
	default:
		c.at(src, key+".auto_stop_machines", "must be off, stop, suspend or a boolean")
	}
	if minRunning != nil && *minRunning < 0 {
		c.at(src, key+".min_machines_running", "must be 0 or more, got %d", *minRunning)
	}
	if (autoStop != nil || autoStart != nil || minRunning != nil) && !driver {
		c.note(src, key, "auto_start_machines, auto_stop_machines and min_machines_running act only on the machines of an app with an [apps.driver]")
	}
	if checks > 0 {
		c.note(src, key, "machine_checks run at deploy time on the platform; edgeproxy does not run them")
	}
}

func (c *checker) internalPort(src *source, key string, p int) {
	if p < 1 || p > 65535 {
		c.at(src, key, "must be a port between 1 and 65535, got %d", p)
	}
}

func (c *checker) concurrency(src *source, key string, cc *Concurrency) {
	if cc == nil {
		return
	}
	if cc.Type != "" && cc.Type != "connections" && cc.Type != "requests" {
		c.at(src, key+".type", "must be connections or requests, got %q", cc.Type)
	}
	if cc.SoftLimit < 0 {
		c.at(src, key+".soft_limit", "must not be negative")
	}
	if cc.HardLimit < 0 {
		c.at(src, key+".hard_limit", "must not be negative")
	}
	if cc.HardLimit > 0 && cc.SoftLimit > cc.HardLimit {
		c.at(src, key+".soft_limit", "soft_limit %d is above hard_limit %d", cc.SoftLimit, cc.HardLimit)
	}
	if cc.HardLimit > 0 && cc.SoftLimit == 0 {
		// The catalog's rule: the default soft limit, or the hard one
		// when that is lower.
		c.note(src, key+".soft_limit", "hard_limit %d with no soft_limit: soft_limit is %d", cc.HardLimit, min(DefaultSoftLimit, cc.HardLimit))
	}
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port between 1 and 65535", s)
	}
	return n, nil
}

// processes notes a service whose process groups no machine of the app
// runs: it would have no machine to send anything to.
func (c *checker) processes(a *App, key string, src *source) {
	if len(a.Machines) == 0 {
		return // a driver's or the fleet's machines: not known here
	}
	groups := map[string]bool{}
	for _, m := range a.Machines {
		groups[cmp.Or(m.ProcessGroup, DefaultProcessGroup)] = true
	}
	check := func(k string, procs []string) {
		if len(procs) > 0 && !slices.ContainsFunc(procs, func(p string) bool { return groups[p] }) {
			c.note(src, k+".processes", "no machine of the app runs process group %s: the service has no machine (machines name theirs with process_group, default %q)",
				strings.Join(procs, " or "), DefaultProcessGroup)
		}
	}
	for j, s := range a.Services {
		check(fmt.Sprintf("%s.services[%d]", key, j), s.Processes)
	}
	if h := a.HTTPService; h != nil {
		check(key+".http_service", h.Processes)
	}
}
