package httpproxy

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"

	"github.com/edgeproxy/edgeproxy/internal/backhaul"
	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// The worker's side of the backhaul. An edge that picked a machine this
// node runs sends the request here, with the machine named in a field
// (HeaderTarget). The edge chose the machine, set the platform's fields
// and follows fly-replay; the worker checks the machine is its own,
// leases it by its own count and health, sends the request as the edge
// built it, and passes the answer back as the machine gave it.

// Relay marks a connection from an edge over the backhaul.
type Relay struct {
	// Self is this node, Peer the edge (from its fleet certificate).
	Self, Peer string
}

// Fields of a relayed request and of a worker's answer.
const (
	// HeaderTarget names the machine: "APP MACHINE PORT CLIENT" (see
	// backhaul.AppendTarget). The worker removes it.
	HeaderTarget = "Edgeproxy-Target"
	// HeaderRelayError carries a worker's failure as "CODE R MESSAGE"
	// (backhaul.AppendError), so the edge answers the client with its own
	// error, and may try another machine when R is 1.
	HeaderRelayError = "Edgeproxy-Relay-Error"
)

// relayRoute is the route phase of a relayed request: the machine the
// edge named, if it is this node's, and its service's port.
func (h *Handler) relayRoute(x *Exchange) error {
	v, ok := x.Req.Get(HeaderTarget)
	if !ok {
		return perr.New(perr.BackhaulProtocol, fmt.Errorf("relayed request from %s names no machine", x.Conn.Relay.Peer))
	}
	t, err := backhaul.ParseTarget(v)
	if err != nil {
		return perr.New(perr.BackhaulProtocol, err)
	}
	entry, m, err := OwnMachine(x.env.Catalog, x.Conn.Relay.Self, t)
	if err != nil {
		return err
	}
	x.target.entry = entry
	x.relayTo = m
	return nil
}

// OwnMachine finds t's machine and service port among this node's own
// (self) machines, or says why not: an edge may name only a machine its
// worker runs, on a port one of the app's services uses.
func OwnMachine(cat *catalog.Snapshot, self string, t backhaul.Target) (*catalog.Port, *catalog.Machine, error) {
	app := cat.App(t.App)
	if app == nil {
		return nil, nil, perr.New(perr.WorkerRefused, fmt.Errorf("no app %s on node %s", t.App, self))
	}
	m := app.Machine(t.Machine)
	switch {
	case m == nil:
		return nil, nil, perr.New(perr.WorkerRefused, fmt.Errorf("no machine %s of app %s on node %s", t.Machine, t.App, self))
	case m.Owner != "" && m.Owner != self:
		return nil, nil, perr.New(perr.WorkerRefused, fmt.Errorf("machine %s runs on node %s, not on %s", m.ID, m.Owner, self))
	}
	var entry *catalog.Port
	for _, svc := range app.Services {
		if svc.InternalPort != t.Port || len(svc.Ports) == 0 {
			continue
		}
		entry = svc.Ports[0]
		for _, p := range svc.Ports {
			if p.Handlers.HTTP {
				entry = p
				break
			}
		}
		break
	}
	if entry == nil {
		return nil, nil, perr.New(perr.WorkerRefused, fmt.Errorf("app %s has no service on port %d", t.App, t.Port))
	}
	return entry, m, nil
}

// relayForward is the pick, connect and forward phases of a relayed
// request: one attempt, on the machine named. Retries and replays are the
// edge's: it knows the client and the other machines.
func (h *Handler) relayForward(x *Exchange) (*upResponse, error) {
	entry := x.entry()
	l, err := upstream.Relay(entry.Service, x.relayTo)
	if err != nil {
		return nil, err
	}
	x.target.lease = l
	x.ownLease = true
	resp, err := h.attempt(x, x.env.Pools.client(x.Conn, entry), l, "")
	if err != nil {
		l.Release()
		x.ownLease = false
		return nil, err
	}
	return resp, nil
}

// relayHead is the machine's request head for a relayed request: as the
// edge built it, less hop-by-hop fields and the target, with the
// attempt's framing.
func (x *Exchange) relayHead(dst []byte) []byte {
	r := x.Req
	dst = append(dst, r.Bytes(r.Method)...)
	dst = append(dst, ' ')
	dst = append(dst, r.Bytes(r.Target)...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, r.Bytes(r.Host)...)
	dst = append(dst, "\r\n"...)
	trailers := false
	for _, f := range r.Fields {
		name := r.Bytes(f.Name)
		switch {
		case h1.EqualFold(name, HeaderTarget):
			continue
		case h1.EqualFold(name, "te"):
			trailers = trailers || h1.ListHas(r.Bytes(f.Value), "trailers")
			continue
		case roleOfResponse(name) == dropField, h1.EqualFold(name, "host"), h1.EqualFold(name, "expect"):
			// Hop-by-hop and framing: the same set as a response's.
			continue
		}
		dst = append(dst, name...)
		dst = append(dst, ": "...)
		dst = append(dst, r.Bytes(f.Value)...)
		dst = append(dst, "\r\n"...)
	}
	if trailers {
		dst = append(dst, "Te: trailers\r\n"...)
	}
	return x.appendFraming(dst)
}

// relayResponseFields are a relayed response's fields: the machine's,
// less hop-by-hop and framing, and less a relay error field of its own:
// only the worker may tell the edge it failed (a machine that could would
// make the edge retry a request it had already acted on). The edge adds
// the platform's fields.
func relayResponseFields(dst []byte, r *upResponse) []byte {
	return appendEndToEnd(dst, r.Head, HeaderRelayError)
}

// appendRelayError adds a worker's failure to its error response.
func appendRelayError(dst []byte, pe *perr.Error) []byte {
	dst = append(dst, HeaderRelayError+": "...)
	dst = backhaul.AppendError(dst, pe)
	return append(dst, "\r\n"...)
}

// The edge's side: a request for a machine another node runs goes to that
// worker over the backhaul's HTTP/2 connections, which every request to
// the worker's machines shares. Requests that switch protocols, and
// services that send a PROXY header, take a raw stream instead (the
// dialer's path), since they need a connection of their own.

// Relayer sends requests to workers (backhaul.Client).
type Relayer interface {
	RoundTrip(node string, req *http.Request) (*http.Response, error)
	// Request counts a relayed request's result.
	Request(node, result string)
}

// relayVia is the worker an attempt on lease l goes through as a relayed
// request, or "" for this node's own way (direct, or a raw stream).
func (x *Exchange) relayVia(entry *catalog.Port, l *upstream.Lease) string {
	b := x.env.Dialer.Backhaul
	if x.env.Relay == nil || b == nil || entry.ProxyProto != 0 || x.Req.Upgrade {
		return ""
	}
	return b.Worker(l.Machine)
}

// relayClient sends an attempt to worker node.
type relayClient struct {
	r    Relayer
	node string
}

func (relayClient) closeIdle() {}

func (c relayClient) roundTrip(x *Exchange, addr netip.AddrPort, out []byte, body io.Reader, length int64) (*upResponse, error) {
	req, err := h2Request(x, addr.String(), out, body, length)
	if err != nil {
		return nil, err
	}
	l := x.target.lease
	t := backhaul.Target{App: x.app(), Machine: l.Machine.ID, Port: l.Service().InternalPort, Client: x.Conn.Client}
	req.Header[HeaderTarget] = []string{string(backhaul.AppendTarget(nil, t))}
	resp, err := c.r.RoundTrip(c.node, req)
	if err != nil {
		return nil, attemptError(x, err)
	}
	if v := resp.Header.Get(HeaderRelayError); v != "" {
		resp.Body.Close()
		pe := backhaul.ParseError(v, c.node)
		c.r.Request(c.node, string(pe.Code))
		return nil, pe
	}
	c.r.Request(c.node, "ok")
	return h2cResponse(resp)
}
