package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/balance"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/iox"
)

// The admin API's views of the server. Each is built on request from the
// current runtime and the live connections, and is plain JSON data.

// AppView is one app in /v1/apps.
type AppView struct {
	Name      string        `json:"name"`
	Hostnames []string      `json:"hostnames"`
	Services  []ServiceView `json:"services"`
	Machines  int           `json:"machines"`
	// Connections is the app's admitted client connections on this edge.
	Connections int64 `json:"connections"`
}

// ServiceView is a service of an app.
type ServiceView struct {
	InternalPort int      `json:"internal_port"`
	Ports        []string `json:"ports"`
	Concurrency  string   `json:"concurrency"`
	SoftLimit    int      `json:"soft_limit"`
	HardLimit    int      `json:"hard_limit"`
}

// MachineView is one machine in /v1/machines, with its live load per
// service.
type MachineView struct {
	App     string `json:"app"`
	ID      string `json:"id"`
	Region  string `json:"region"`
	Address string `json:"address"`
	State   string `json:"state"`
	// Cordoned machines take no new work.
	Cordoned bool `json:"cordoned,omitempty"`
	// RegionRTT is this edge's round-trip estimate to the machine's
	// region ("" when not known yet).
	RegionRTT string     `json:"region_rtt,omitempty"`
	Load      []LoadView `json:"load"`
	// For machines a driver starts and stops: when the state last changed
	// (RFC 3339), the last start that failed and why.
	LastTransition  string `json:"last_transition,omitempty"`
	LastStartFailed string `json:"last_start_failed,omitempty"`
	StartError      string `json:"start_error,omitempty"`
}

// LoadView is a machine's load for one service.
type LoadView struct {
	InternalPort int    `json:"internal_port"`
	Load         int64  `json:"load"`
	Band         string `json:"band"`
	Healthy      bool   `json:"healthy"`
	// Unhealthy says which check fails and how, when one does.
	Unhealthy string `json:"unhealthy,omitempty"`
	// ResponseTime is the smoothed time to response headers (HTTP) or to
	// connect (TCP), what p2c-latency weighs.
	ResponseTime string `json:"response_time,omitempty"`
}

// ConnView is one live client connection in /v1/connections.
type ConnView struct {
	ID       uint64            `json:"id"`
	Peer     string            `json:"peer"`
	Port     int               `json:"port"`
	App      string            `json:"app,omitempty"`
	Age      string            `json:"age"`
	AgeMS    int64             `json:"age_ms"`
	BytesIn  int64             `json:"bytes_in"`
	BytesOut int64             `json:"bytes_out"`
	Chain    string            `json:"chain"`
	Layers   []iox.LayerCounts `json:"layers"`
	started  time.Time
}

// Apps lists the apps of the current runtime.
func (s *Server) Apps() []AppView {
	rt := s.runtime()
	out := []AppView{}
	for _, a := range rt.Snap.Apps {
		v := AppView{Name: a.Name, Hostnames: a.Hostnames, Machines: len(a.Machines), Connections: s.permits.ActiveApp(a.Name)}
		for _, svc := range a.Services {
			sv := ServiceView{InternalPort: svc.InternalPort, Concurrency: svc.Unit.String(), SoftLimit: svc.Soft, HardLimit: svc.Hard}
			for _, p := range svc.Ports {
				port := strconv.Itoa(p.Lo)
				if p.Hi != p.Lo {
					port += "-" + strconv.Itoa(p.Hi)
				}
				sv.Ports = append(sv.Ports, port+" "+p.Handlers.String())
			}
			v.Services = append(v.Services, sv)
		}
		out = append(out, v)
	}
	return out
}

// Machines lists every machine with its live load and band per service.
func (s *Server) Machines() []MachineView {
	rt := s.runtime()
	out := []MachineView{}
	for _, a := range rt.Snap.Apps {
		for _, m := range a.Machines {
			v := MachineView{App: a.Name, ID: m.ID, Region: m.Region, Address: m.Addr.String(), State: m.State, Cordoned: m.Cordoned}
			if d, ok := rt.RTT.RTT(m.Region); ok {
				v.RegionRTT = d.String()
			}
			if st, ok := s.life.Status(a.Name, m.ID); ok {
				if !st.Changed.IsZero() {
					v.LastTransition = st.Changed.UTC().Format(time.RFC3339Nano)
				}
				if !st.Failed.IsZero() {
					v.LastStartFailed, v.StartError = st.Failed.UTC().Format(time.RFC3339Nano), st.Why
				}
			}
			for _, svc := range a.Services {
				l := svc.Load(m)
				load := l.Value()
				h := svc.Health(m)
				lv := LoadView{InternalPort: svc.InternalPort, Load: load,
					Band: balance.BandOf(load, svc.Soft, svc.Hard).String(), Healthy: h.Healthy(), Unhealthy: h.Reason()}
				if d := l.Latency(); d > 0 {
					lv.ResponseTime = d.Round(time.Microsecond).String()
				}
				v.Load = append(v.Load, lv)
			}
			out = append(out, v)
		}
	}
	return out
}

// Connections lists up to limit live connections, the oldest first or,
// with by == "busiest", those that moved the most bytes first.
func (s *Server) Connections(limit int, by string) []ConnView {
	return sortConns(s.connViews(), limit, by)
}

// connViews is a view of every live connection, in no order.
func (s *Server) connViews() []ConnView {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.active))
	for _, c := range s.active {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	views := make([]ConnView, 0, len(conns))
	now := time.Now()
	for _, c := range conns {
		views = append(views, c.view(now))
	}
	return views
}

// sortConns orders views (oldest first, or by == "busiest": most bytes
// first) and keeps limit of them (0: all).
func sortConns(views []ConnView, limit int, by string) []ConnView {
	if by == "busiest" {
		sort.Slice(views, func(i, j int) bool { return views[i].BytesIn+views[i].BytesOut > views[j].BytesIn+views[j].BytesOut })
	} else {
		sort.Slice(views, func(i, j int) bool { return views[i].started.Before(views[j].started) })
	}
	if limit > 0 && len(views) > limit {
		views = views[:limit]
	}
	return views
}

func (c *conn) view(now time.Time) ConnView {
	c.mu.Lock()
	app, m, g := c.app, c.meter, c.guard
	c.mu.Unlock()
	v := ConnView{ID: c.id, Peer: c.client.String(), Port: c.pr.Public, App: app, started: c.start,
		Age: now.Sub(c.start).Round(time.Millisecond).String(), AgeMS: now.Sub(c.start).Milliseconds()}
	if m != nil {
		v.BytesIn, v.BytesOut = m.Bytes()
	}
	if g != nil {
		v.Chain = g.Chain()
		v.Layers = g.Snapshot()
	} else {
		v.Chain = iox.Chain(c.raw)
	}
	return v
}

// EffectiveConfig is the running config, defaults applied, with secrets
// replaced (see redactedConfig).
func (s *Server) EffectiveConfig() json.RawMessage {
	b, err := json.Marshal(redactedConfig(s.runtime().Config))
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": err.Error()})
	}
	return b
}

// redactedValue replaces a secret value in /v1/config.
const redactedValue = "<redacted>"

// redactedConfig is a copy of cfg fit to show to whoever can read the
// admin API (with no token, anything on the host): the admin token,
// credentials in the tracing endpoint's URL and the values of health
// check headers (where an app's check credentials go, such as
// Authorization) are replaced. cfg is the running config, shared with
// every connection, so each slice and map on the way to a secret is
// copied before it is written, never cfg's own.
func redactedConfig(c *config.Config) config.Config {
	cfg := *c
	if cfg.Admin.Token != "" {
		cfg.Admin.Token = redactedValue
	}
	cfg.Tracing.Endpoint = cfg.Tracing.RedactedEndpoint()
	if cfg.Fleet != nil {
		// Credentials live in files; a URL may still carry some.
		f := *cfg.Fleet
		f.URLs = f.RedactedURLs()
		f.Routes = config.Fleet{URLs: f.Routes}.RedactedURLs()
		cfg.Fleet = &f
	}
	cfg.Apps = slices.Clone(cfg.Apps)
	for i := range cfg.Apps {
		a := &cfg.Apps[i]
		a.Services = slices.Clone(a.Services)
		for j := range a.Services {
			a.Services[j].HTTPChecks = redactedChecks(a.Services[j].HTTPChecks)
		}
		if a.HTTPService != nil {
			hs := *a.HTTPService
			hs.Checks = redactedChecks(hs.Checks)
			a.HTTPService = &hs
		}
	}
	return cfg
}

// redactedChecks copies checks with every header value replaced but those
// of headers that describe the request rather than authenticate it, which
// help to read a check. Values are replaced unless known harmless because
// a check's credentials can be in any header an app chooses (X-Api-Key,
// X-Health-Secret, ...), not only Authorization and Cookie.
func redactedChecks(checks []config.HTTPCheck) []config.HTTPCheck {
	out := slices.Clone(checks)
	for i := range out {
		if out[i].Headers == nil {
			continue
		}
		h := make(map[string]string, len(out[i].Headers))
		for name, v := range out[i].Headers {
			if !harmlessHeader(name) {
				v = redactedValue
			}
			h[name] = v
		}
		out[i].Headers = h
	}
	return out
}

// harmlessHeader reports whether a request header never carries a
// credential.
func harmlessHeader(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Content-Type",
		"Cache-Control", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port":
		return true
	}
	return false
}
