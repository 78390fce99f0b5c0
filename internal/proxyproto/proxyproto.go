// Package proxyproto owns the PROXY protocol (v1 text, v2 binary) in both
// directions of edgeproxy:
//
//   - out: the header the proxy_proto handler writes to a machine before any
//     client byte, so the app sees the real client address (Header,
//     ParseVersion);
//   - in: accepting PROXY headers on listeners from trusted load balancers
//     only, with the policy chosen by source CIDR.
//
// Encoding and decoding are delegated to github.com/pires/go-proxyproto;
// this package decides what goes in a header and which version fly.toml asks
// for, so callers never touch that library directly.
package proxyproto

import (
	"errors"
	"fmt"
	"net"

	pp "github.com/pires/go-proxyproto"
)

// Protocol versions as Header takes them.
const (
	V1 = 1
	V2 = 2
)

// ErrNotTCP reports addresses a TCP PROXY header cannot describe. Header
// refuses them rather than sending "PROXY UNKNOWN" / LOCAL, because an app
// that enabled proxy_proto relies on getting the client address and a silent
// UNKNOWN would hand it the proxy's own address instead.
var ErrNotTCP = errors.New("proxyproto: source and destination must both be TCP addresses with an IP")

// Header returns the PROXY header announcing a TCP connection from src (the
// client) to dst (the address the client connected to), in version 1 or 2.
//
// When both addresses are IPv4, including IPv4-mapped IPv6 addresses as a
// dual-stack listener reports them, the header is TCP over IPv4. Otherwise it
// is TCP over IPv6 and an IPv4 side is written IPv4-mapped, because one
// header cannot mix families. IPv6 zones are dropped: the format has no field
// for them.
func Header(version int, src, dst net.Addr) ([]byte, error) {
	if version != V1 && version != V2 {
		return nil, fmt.Errorf("proxyproto: unsupported version %d (want 1 or 2)", version)
	}
	s, ok1 := src.(*net.TCPAddr)
	d, ok2 := dst.(*net.TCPAddr)
	if !ok1 || !ok2 || s == nil || d == nil {
		return nil, fmt.Errorf("%w: got %T and %T", ErrNotTCP, src, dst)
	}
	h := pp.HeaderProxyFromAddrs(byte(version), s, d)
	if h.TransportProtocol != pp.TCPv4 && h.TransportProtocol != pp.TCPv6 {
		// HeaderProxyFromAddrs fell back to LOCAL/UNSPEC: an IP is missing.
		return nil, fmt.Errorf("%w: %v -> %v", ErrNotTCP, src, dst)
	}
	return h.Format()
}

// ParseVersion maps fly.toml's proxy_proto_options.version to a version for
// Header. An absent option ("") means v1, the platform's default. Matching is
// exact, like the rest of fly.toml's enumerations, so a typo is reported
// instead of silently picking a version the app does not parse.
func ParseVersion(s string) (int, error) {
	switch s {
	case "", "v1":
		return V1, nil
	case "v2":
		return V2, nil
	default:
		return 0, fmt.Errorf("proxyproto: proxy_proto_options.version %q: want \"v1\" or \"v2\"", s)
	}
}
