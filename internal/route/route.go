// Package route owns the immutable routing table: which app service
// answers on each local port, and, on ports several apps share, which one
// a TLS server name or HTTP Host selects. Lookups are pure functions of
// the table and a name, so they are fuzzed and table-tested.
package route

import (
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
)

// Table maps public ports to their routes. A public port may listen on
// another local port through proxy.port_map; routing never sees that.
type Table struct {
	ports map[int]*Port
}

// Port is everything served on one public port.
type Port struct {
	Public   int
	Handlers catalog.Handlers
	entries  []*catalog.Port
	exact    map[string]*catalog.Port
	wildcard map[string]*catalog.Port // keyed by the suffix after "*."
}

// Build makes the table for a snapshot. Config validation has already
// refused clashing ports.
func Build(snap *catalog.Snapshot) *Table {
	t := &Table{ports: map[int]*Port{}}
	for _, app := range snap.Apps {
		for _, svc := range app.Services {
			if svc.UDP {
				continue // datagrams: UDPPorts
			}
			for _, cp := range svc.Ports {
				for pub := cp.Lo; pub <= cp.Hi; pub++ {
					t.add(pub, cp)
				}
			}
		}
	}
	return t
}

// UDPPorts maps each public UDP port of snap to its service.
func UDPPorts(snap *catalog.Snapshot) map[int]*catalog.Service {
	out := map[int]*catalog.Service{}
	for _, app := range snap.Apps {
		for _, svc := range app.Services {
			if !svc.UDP {
				continue
			}
			for _, cp := range svc.Ports {
				for pub := cp.Lo; pub <= cp.Hi; pub++ {
					out[pub] = svc
				}
			}
		}
	}
	return out
}

// Rebuild is Build for snap when it differs from the snapshot prev was
// built for only in the machines of the apps in changed (nil: anything).
// Their ports and hostnames are as before, so only the ports they serve
// on are copied, with their entries pointed at the new snapshot; the rest
// of the table is prev's, shared.
func Rebuild(prev *Table, snap *catalog.Snapshot, changed map[string]bool) *Table {
	if prev == nil || changed == nil {
		return Build(snap)
	}
	t := &Table{ports: maps.Clone(prev.ports)}
	touched := map[int]bool{}
	for name := range changed {
		app := snap.App(name)
		if app == nil {
			return Build(snap) // not a machine change after all
		}
		for _, svc := range app.Services {
			if svc.UDP {
				continue
			}
			for _, cp := range svc.Ports {
				for pub := cp.Lo; pub <= cp.Hi; pub++ {
					touched[pub] = true
				}
			}
		}
	}
	for pub := range touched {
		old := prev.ports[pub]
		if old == nil {
			return Build(snap)
		}
		p := &Port{Public: pub, Handlers: old.Handlers, entries: slices.Clone(old.entries),
			exact: old.exact, wildcard: old.wildcard}
		copied := false
		for i, e := range p.entries {
			if !changed[e.Service.App.Name] {
				continue
			}
			cp := samePort(snap.App(e.Service.App.Name), e)
			if cp == nil {
				return Build(snap)
			}
			p.entries[i] = cp
			if !copied {
				p.exact, p.wildcard = maps.Clone(old.exact), maps.Clone(old.wildcard)
				copied = true
			}
			p.name(cp)
		}
		t.ports[pub] = p
	}
	return t
}

// samePort is app's port that continues e: the same service and range.
func samePort(app *catalog.App, e *catalog.Port) *catalog.Port {
	if app == nil || e.Service.Index >= len(app.Services) {
		return nil
	}
	for _, cp := range app.Services[e.Service.Index].Ports {
		if cp.Lo == e.Lo && cp.Hi == e.Hi {
			return cp
		}
	}
	return nil
}

func (t *Table) add(public int, cp *catalog.Port) {
	p := t.ports[public]
	if p == nil {
		p = &Port{Public: public, Handlers: cp.Handlers,
			exact: map[string]*catalog.Port{}, wildcard: map[string]*catalog.Port{}}
		t.ports[public] = p
	}
	p.entries = append(p.entries, cp)
	p.name(cp)
}

// name routes cp's app's hostnames on p to cp.
func (p *Port) name(cp *catalog.Port) {
	for _, h := range cp.Service.App.Hostnames {
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			p.wildcard[suffix] = cp
		} else {
			p.exact[h] = cp
		}
	}
}

// Port returns the routes of a public port, or nil.
func (t *Table) Port(public int) *Port { return t.ports[public] }

// Ports lists the public ports in ascending order.
func (t *Table) Ports() []int {
	out := make([]int, 0, len(t.ports))
	for p := range t.ports {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// Shared reports whether more than one app answers on the port, so that a
// name is needed to route.
func (p *Port) Shared() bool { return len(p.entries) > 1 }

// Entries lists the app services on the port.
func (p *Port) Entries() []*catalog.Port { return p.entries }

// Lookup finds the app service for a server name or Host header value:
// the only one on an unshared port whatever the name, else an exact
// hostname, else a wildcard one label deep. nil means no app serves it.
func (p *Port) Lookup(name string) *catalog.Port {
	if len(p.entries) == 1 {
		return p.entries[0]
	}
	name = NormalizeHost(name)
	if name == "" {
		return nil
	}
	if cp, ok := p.exact[name]; ok {
		return cp
	}
	if dot := strings.IndexByte(name, '.'); dot > 0 {
		if cp, ok := p.wildcard[name[dot+1:]]; ok {
			return cp
		}
	}
	return nil
}

// NormalizeHost lowercases a name, drops a numeric port, the brackets of
// an IPv6 literal and one trailing dot, and returns "" for anything that
// is not a plausible host name. Its output normalizes to itself.
func NormalizeHost(h string) string {
	if strings.HasPrefix(h, "[") {
		// An IPv6 literal, with or without a port.
		end := strings.IndexByte(h, ']')
		if end < 0 || (end+1 < len(h) && !isPort(h[end+1:])) {
			return ""
		}
		a, err := netip.ParseAddr(h[1:end])
		if err != nil || !a.Is6() {
			return ""
		}
		return a.String()
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		if strings.Count(h, ":") > 1 {
			// A bare IPv6 address (an h2 :authority never has one, but a
			// Host header might).
			if a, err := netip.ParseAddr(h); err == nil && a.Is6() {
				return a.String()
			}
			return ""
		}
		if !isPort(h[i:]) {
			return ""
		}
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 || h[0] == '.' || h[len(h)-1] == '.' || strings.Contains(h, "..") {
		return ""
	}
	upper := false
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_':
		case 'A' <= c && c <= 'Z':
			upper = true
		default:
			return ""
		}
	}
	if upper {
		return strings.ToLower(h)
	}
	return h
}

// isPort reports whether s is ":" followed by up to 5 digits (RFC 3986
// allows an empty port).
func isPort(s string) bool {
	if len(s) < 1 || len(s) > 6 || s[0] != ':' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
