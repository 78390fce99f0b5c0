package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

// Range returns the public ports a [[services.ports]] entry covers.
func (p Port) Range() (lo, hi int) {
	if p.Port != nil {
		return *p.Port, *p.Port
	}
	if p.StartPort != nil && p.EndPort != nil {
		return *p.StartPort, *p.EndPort
	}
	return 0, -1
}

// Has reports whether the port runs handler h.
func (p Port) Has(h string) bool { return contains(p.Handlers, h) }

// AllServices returns the app's services with [http_service] written out
// as the two ports it stands for: 80 with http (force_https as given) and
// 443 with tls and http.
func (a *App) AllServices() []Service {
	out := append([]Service(nil), a.Services...)
	if h := a.HTTPService; h != nil {
		p80, p443 := 80, 443
		out = append(out, Service{
			InternalPort: h.InternalPort,
			Protocol:     "tcp",
			Concurrency:  h.Concurrency,
			Balance:      h.Balance,
			HTTPChecks:   h.Checks,
			TCPChecks:    h.TCPChecks,
			Processes:    h.Processes,
			// The lifecycle keys: machines start and stop by them.
			AutoStopMachines:   h.AutoStopMachines,
			AutoStartMachines:  h.AutoStartMachines,
			MinMachinesRunning: h.MinMachinesRunning,
			Ports: []Port{
				{Port: &p80, Handlers: []string{"http"}, ForceHTTPS: h.ForceHTTPS, HTTPOptions: h.HTTPOptions},
				{Port: &p443, Handlers: []string{"tls", "http"}, HTTPOptions: h.HTTPOptions, TLSOptions: h.TLSOptions},
			},
		})
	}
	return out
}

// FromFlyToml is the fly.toml an app's services were read from, if any.
func (a *App) FromFlyToml() string { return a.fromFlyToml }

// LocalPort maps a public port through proxy.port_map.
func (p *Proxy) LocalPort(public int) int {
	if v, ok := p.PortMap[fmt.Sprint(public)]; ok {
		return v
	}
	return public
}

func (c *checker) validatePort(p *Port, key string, src *source) {
	switch {
	case p.Port != nil && (p.StartPort != nil || p.EndPort != nil):
		c.at(src, key, "set either port or start_port/end_port, not both")
	case p.Port != nil:
		if *p.Port < 1 || *p.Port > 65535 {
			c.at(src, key+".port", "must be between 1 and 65535, got %d", *p.Port)
		}
	case p.StartPort != nil && p.EndPort != nil:
		lo, hi := *p.StartPort, *p.EndPort
		if lo < 1 || hi > 65535 || lo > hi {
			c.at(src, key+".start_port", "range %d-%d is not a valid port range", lo, hi)
		}
	default:
		c.at(src, key, "needs port, or start_port and end_port")
	}
	for _, h := range p.Handlers {
		if !contains(knownHandlers, h) {
			c.at(src, key+".handlers", "unknown handler %q (known: %s)", h, strings.Join(knownHandlers, ", "))
		}
	}
	if p.Has("pg_tls") && (p.Has("tls") || p.Has("http")) {
		c.at(src, key+".handlers", "pg_tls terminates TLS itself and cannot be combined with tls or http")
	}
	if p.ForceHTTPS && (!p.Has("http") || p.Has("tls")) {
		c.at(src, key+".force_https", "force_https needs the http handler on a port without tls")
	}
	if p.TLSOptions != nil && !p.Has("tls") && !p.Has("pg_tls") {
		c.at(src, key+".tls_options", "tls_options needs the tls or pg_tls handler")
	}
	c.tlsOptions(src, key+".tls_options", p.TLSOptions)
	if p.HTTPOptions != nil && !p.Has("http") {
		c.at(src, key+".http_options", "http_options needs the http handler")
	}
	c.httpOptions(src, key+".http_options", p.HTTPOptions)
	if p.ProxyProtoOptions != nil {
		if !p.Has("proxy_proto") {
			c.at(src, key+".proxy_proto_options", "proxy_proto_options needs the proxy_proto handler")
		}
		switch p.ProxyProtoOptions.Version {
		case "", "v1", "v2":
		default:
			c.at(src, key+".proxy_proto_options.version", "must be v1 or v2, got %q", p.ProxyProtoOptions.Version)
		}
	}
}

func (c *checker) tlsOptions(src *source, key string, o *TLSOptions) {
	if o == nil {
		return
	}
	if _, _, err := tlsterm.Versions(o.Versions); err != nil {
		c.at(src, key+".versions", "%v", err)
	}
	for _, a := range o.ALPN {
		if a == "" || len(a) > 255 {
			c.at(src, key+".alpn", "ALPN protocol %q must be 1 to 255 bytes", a)
		}
	}
}

func (c *checker) httpOptions(src *source, key string, o *HTTPOptions) {
	if o == nil {
		return
	}
	if o.Response == nil {
		return
	}
	for name, v := range o.Response.Headers {
		if _, _, err := HeaderValue(v); err != nil {
			c.at(src, key+".response.headers."+name, "%v", err)
		}
	}
}

// HeaderValue interprets a response.headers value: a string or a list of
// strings adds values; false removes the header.
func HeaderValue(v any) (values []string, remove bool, err error) {
	switch x := v.(type) {
	case string:
		return []string{x}, false, nil
	case bool:
		if !x {
			return nil, true, nil
		}
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, false, fmt.Errorf("header values must be strings")
			}
			values = append(values, s)
		}
		return values, false, nil
	}
	return nil, false, fmt.Errorf("a header value is a string, a list of strings, or false to remove it")
}

// binding is one app's service port on one local port, for clash checks.
type binding struct {
	app      int
	key      string
	src      *source
	handlers string
}

func (c *checker) validatePorts(cfg *Config, srcs map[int]*source) {
	byPort := map[int][]binding{}
	udp := map[int]string{} // UDP port → the service that has it
	for i := range cfg.Apps {
		a := &cfg.Apps[i]
		for j, s := range a.AllServices() {
			skey := fmt.Sprintf("apps[%d].services[%d]", i, j)
			if j >= len(a.Services) {
				skey = fmt.Sprintf("apps[%d].http_service", i)
			}
			if s.Protocol == "udp" {
				// UDP ports are their own namespace, and a datagram names
				// no host: one service per port.
				for k, p := range s.Ports {
					lo, hi := p.Range()
					for port := lo; port <= hi; port++ {
						if other, ok := udp[port]; ok {
							c.at(srcs[i], fmt.Sprintf("%s.ports[%d]", skey, k), "UDP port %d is also %s's: datagrams carry no name to tell services apart", port, other)
							break
						}
						udp[port] = skey
					}
				}
				continue
			}
			for k, p := range s.Ports {
				lo, hi := p.Range()
				hs := append([]string(nil), p.Handlers...)
				sort.Strings(hs)
				b := binding{app: i, key: fmt.Sprintf("%s.ports[%d]", skey, k), src: srcs[i], handlers: strings.Join(hs, "+")}
				if j >= len(a.Services) {
					b.key = skey
				}
				for port := lo; port <= hi; port++ {
					// Distinct ports count: apps sharing 80 and 443 open
					// them once.
					if _, ok := byPort[port]; !ok && len(byPort) >= MaxListeners {
						c.at(srcs[i], skey, "more than %d public ports in the config", MaxListeners)
						return
					}
					byPort[port] = append(byPort[port], b)
				}
			}
		}
	}
	c.portMapClash(cfg, srcs[-1], byPort)
	ports := make([]int, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	for _, port := range ports {
		c.portClash(cfg, port, byPort[port])
	}
}

// portClash checks that bindings sharing a port can be told apart: by SNI
// when the port terminates TLS, by Host when it speaks HTTP.
func (c *checker) portClash(cfg *Config, port int, bs []binding) {
	if len(bs) < 2 {
		return
	}
	first := bs[0]
	hosts := map[string]int{}
	seenApp := map[int]bool{}
	for _, b := range bs {
		other := cfg.Apps[first.app].Name
		if b.app == first.app {
			other = cfg.Apps[bs[1].app].Name
		}
		switch {
		case b.handlers != first.handlers:
			c.at(b.src, b.key, "port %d is also used by app %q with handlers [%s]; apps share a port only with the same handlers", port, other, first.handlers)
			continue
		case !strings.Contains(b.handlers, "tls") && !strings.Contains(b.handlers, "http"):
			c.at(b.src, b.key, "port %d is also used by app %q; a port without tls or http handlers cannot be shared", port, other)
			continue
		case seenApp[b.app]:
			c.at(b.src, b.key, "app %q uses port %d twice", cfg.Apps[b.app].Name, port)
			continue
		}
		seenApp[b.app] = true
		a := &cfg.Apps[b.app]
		if len(a.Hostnames) == 0 {
			c.at(b.src, b.key, "port %d is shared with other apps, so app %q needs hostnames to be routed by SNI or Host", port, a.Name)
		}
		for _, h := range a.Hostnames {
			h = strings.ToLower(h)
			if prev, ok := hosts[h]; ok && prev != b.app {
				c.at(b.src, b.key, "hostname %q on port %d is claimed by apps %q and %q", h, port, cfg.Apps[prev].Name, a.Name)
			}
			hosts[h] = b.app
		}
	}
}

// portMapClash refuses two used public ports mapped onto one local port;
// local port 0 (any free port) never clashes.
func (c *checker) portMapClash(cfg *Config, s *source, used map[int][]binding) {
	locals := map[int]int{}
	pubs := make([]int, 0, len(used))
	for p := range used {
		pubs = append(pubs, p)
	}
	sort.Ints(pubs)
	for _, pub := range pubs {
		local := cfg.Proxy.LocalPort(pub)
		if local == 0 {
			continue
		}
		if other, ok := locals[local]; ok {
			c.at(s, "proxy.port_map", "public ports %d and %d both listen on local port %d", other, pub, local)
		}
		locals[local] = pub
	}
}
