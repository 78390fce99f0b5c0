package config

import (
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
)

// validateLimits checks [limits], [proxy_protocol], [guard] and [admin].
func (c *checker) validateLimits(cfg *Config, s *source) {
	l := &cfg.Limits
	for _, f := range []struct {
		key string
		v   *int
	}{
		{"limits.max_connections", &l.MaxConnections},
		{"limits.max_connections_per_app", &l.MaxConnectionsPerApp},
		{"limits.max_connections_per_port", &l.MaxConnectionsPerPort},
		{"limits.max_connections_per_ip", &l.MaxConnectionsPerIP},
		{"limits.ip_accept_burst", &l.IPAcceptBurst},
	} {
		switch {
		case *f.v == -1:
			*f.v = 0 // written -1: explicitly unlimited
		case *f.v < 0:
			c.at(s, f.key, "must be a positive number, or -1 for unlimited")
		}
	}
	if l.IPAcceptRate < 0 {
		c.at(s, "limits.ip_accept_rate", "must not be negative")
	}
	if l.IPAcceptRate > 0 && l.IPAcceptBurst == 0 {
		l.IPAcceptBurst = max(1, int(l.IPAcceptRate))
	}

	p := &cfg.Proxy
	if p.LingeringMaxBytes < 0 {
		c.at(s, "proxy.lingering_max_bytes", "must not be negative")
	}
	if p.BodyMinBytes < 1 {
		c.at(s, "proxy.body_min_bytes", "must be at least 1, got %d", p.BodyMinBytes)
	}
	if p.CompressMinSize < 0 {
		c.at(s, "proxy.compress_min_size", "must not be negative, got %d", p.CompressMinSize)
	}
	if p.H2MaxConcurrentStreams < 1 || p.H2MaxConcurrentStreams > 1000 {
		c.at(s, "proxy.h2_max_concurrent_streams", "must be between 1 and 1000, got %d", p.H2MaxConcurrentStreams)
	}
	if p.SniffMaxBytes < 1024 || p.SniffMaxBytes > 1<<20 {
		c.at(s, "proxy.sniff_max_bytes", "must be between 1024 and 1048576, got %d", p.SniffMaxBytes)
	}

	pp := &cfg.ProxyProtocol
	switch pp.Mode {
	case "off", "optional", "required":
	default:
		c.at(s, "proxy_protocol.mode", "must be off, optional or required, got %q", pp.Mode)
	}
	for _, cidr := range pp.Trusted {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			if _, err2 := netip.ParseAddr(cidr); err2 != nil {
				c.at(s, "proxy_protocol.trusted", "%q is not a CIDR or IP address", cidr)
			}
		}
	}
	if pp.Mode != "off" && len(pp.Trusted) == 0 {
		c.at(s, "proxy_protocol.trusted", "PROXY protocol mode %q needs at least one trusted CIDR", pp.Mode)
	}

	g := &cfg.Guard
	for _, f := range []struct {
		key string
		v   int
		min int
	}{{"guard.zero_progress_reads", g.ZeroProgressReads, 2}, {"guard.reads_after_eof", g.ReadsAfterEOF, 2}, {"guard.max_calls_per_second", g.MaxCallsPerSecond, 1000}} {
		if f.v < f.min {
			c.at(s, f.key, "must be at least %d, got %d", f.min, f.v)
		}
	}

	a := &cfg.Admin
	if a.Listen != "off" {
		host, _, err := net.SplitHostPort(a.Listen)
		ip, ipErr := netip.ParseAddr(host)
		switch {
		case err != nil || (ipErr != nil && host != "localhost"):
			c.at(s, "admin.listen", "%q is not IP:PORT (or \"off\")", a.Listen)
		case a.Token == "" && a.TokenFile == "" && host != "localhost" && !ip.IsLoopback():
			c.at(s, "admin.listen", "the admin API on a non-loopback address needs token or token_file")
		}
	}
	if a.Token != "" && a.TokenFile != "" {
		c.at(s, "admin.token", "set token or token_file, not both")
	}
	if a.TokenFile != "" {
		if b, err := os.ReadFile(cfg.resolve(a.TokenFile)); err != nil {
			c.at(s, "admin.token_file", "cannot read token_file: %v", err)
		} else if strings.TrimSpace(string(b)) == "" {
			c.at(s, "admin.token_file", "token_file is empty")
		}
	}
}

// validateTelemetry checks [log], [tracing] and [tripwire].
func (c *checker) validateTelemetry(cfg *Config, s *source) {
	if al := cfg.Log.AccessLog; al == "" {
		c.at(s, "log.access_log", "must be stdout, stderr, off or a file path")
	}
	tr := cfg.Tracing
	if tr.SampleRatio < 0 || tr.SampleRatio > 1 {
		c.at(s, "tracing.sample_ratio", "must be between 0 and 1, got %v", tr.SampleRatio)
	}
	if tr.Enabled {
		u, err := url.Parse(tr.Endpoint)
		if tr.Endpoint == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.at(s, "tracing.endpoint", "tracing needs an OTLP/HTTP endpoint URL such as http://127.0.0.1:4318, got %q", tr.RedactedEndpoint())
		}
	}
	tw := cfg.Tripwire
	if tw.Threshold <= 0 || tw.Threshold > 1 {
		c.at(s, "tripwire.threshold", "must be above 0 and at most 1 (a share of GOMAXPROCS), got %v", tw.Threshold)
	}
	if tw.Samples < 1 || tw.Samples > 600 {
		c.at(s, "tripwire.samples", "must be between 1 and 600, got %d", tw.Samples)
	}
	if d := tw.ProfileDuration.D(); d < time.Second || d > 5*time.Minute {
		c.at(s, "tripwire.profile_duration", "must be between 1s and 5m, got %s", d)
	}
	if tw.MaxFiles < 1 {
		c.at(s, "tripwire.max_files", "must be at least 1, got %d", tw.MaxFiles)
	}
}

// Prefixes returns the trusted PROXY protocol sources as prefixes (single
// addresses become /32 or /128).
func (pp *ProxyProtocol) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, cidr := range pp.Trusted {
		if p, err := netip.ParsePrefix(cidr); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(cidr); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return out
}

// AdminToken returns the admin bearer token from token or token_file.
func (c *Config) AdminToken() string {
	if c.Admin.Token != "" {
		return c.Admin.Token
	}
	if c.Admin.TokenFile != "" {
		b, err := os.ReadFile(c.resolve(c.Admin.TokenFile))
		if err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// redacted replaces a secret inside a URL shown to the user (the admin
// API's /v1/config, problems found in the file). Unlike the admin API's
// "<redacted>" for whole values it has no angle brackets, which a URL
// would show escaped.
const redacted = "REDACTED"

// RedactedEndpoint is the tracing endpoint as it may be shown: collectors
// take credentials in the URL's userinfo or in query parameters
// (api_key=, token=, signatures), so the userinfo and every query value
// become REDACTED; the scheme, host, port, path and parameter names stay,
// which is what tells where spans go. Every value is replaced rather
// than those whose names look secret, because no list of names is
// complete. A string that is not a URL with a host (tracing off, or a
// typo validation reports) keeps only what cannot be a credential: what
// follows the last '@', up to a '?' or '#'.
func (t Tracing) RedactedEndpoint() string { return redactURL(t.Endpoint) }

// RedactedURLs are the fleet's NATS URLs with any credentials in them
// replaced, fit for logs and /v1/config.
func (f Fleet) RedactedURLs() []string {
	out := make([]string, len(f.URLs))
	for i, u := range f.URLs {
		out[i] = redactURL(u)
	}
	return out
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		// "user:pass@host:4318" parses as scheme "user" with opaque data.
		if i := strings.LastIndexByte(raw, '@'); i >= 0 {
			raw = redacted + raw[i:]
		}
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			raw = raw[:i+1] + redacted
		}
		return raw
	}
	if u.User != nil {
		u.User = url.User(redacted)
	}
	if u.RawQuery != "" {
		u.RawQuery = redactQuery(u.RawQuery)
	}
	if u.Fragment != "" {
		u.Fragment, u.RawFragment = redacted, ""
	}
	return u.String()
}

// redactQuery replaces every value of a raw query, keeping the names; a
// part without '=' may be a bare key, so it is replaced whole.
func redactQuery(q string) string {
	parts := strings.Split(q, "&")
	for i, p := range parts {
		if p == "" {
			continue
		}
		if name, _, ok := strings.Cut(p, "="); ok {
			parts[i] = name + "=" + redacted
		} else {
			parts[i] = redacted
		}
	}
	return strings.Join(parts, "&")
}
