// Package sniff owns protocol detection on the first bytes of a connection:
// a TLS ClientHello (SNI, ALPN, offered versions), an HTTP/1.x request line,
// the HTTP/2 prior-knowledge preface and the PROXY protocol signatures.
//
// Every detector is a pure function of a byte slice: no I/O, no clocks, no
// package-level mutable state. The caller (internal/peek) feeds it a growing
// prefix of the stream and asks again after each read, so every detector
// answers in three ways:
//
//   - NeedMore: the bytes are a valid, incomplete prefix; read more.
//   - Match: the protocol is certain; details are returned where there are any.
//   - NoMatch: some byte already rules the protocol out.
//
// The answers are monotonic in the prefix: once a prefix gives Match or
// NoMatch, every longer prefix gives the same answer (and, for Match, the same
// details). The fuzz and property tests hold the detectors to that, because
// peek's decision must not depend on how the kernel happened to split reads.
//
// Work is linear in len(b) and allocation is bounded by len(b), never by a
// length the peer declared. While the answer is NeedMore nothing is
// allocated, except ClientHello's copy of the bytes of a hello split over
// several TLS records.
package sniff

import "bytes"

// Result is a detector's verdict on a prefix. The zero value is NeedMore, so a
// decide function that falls through keeps reading, and peek's byte cap and
// deadline still bound it.
type Result int

const (
	NeedMore Result = iota // valid prefix, undecided
	Match                  // the protocol is certain
	NoMatch                // a byte already rules the protocol out
)

func (r Result) String() string {
	switch r {
	case NeedMore:
		return "NeedMore"
	case Match:
		return "Match"
	case NoMatch:
		return "NoMatch"
	}
	return "Result(?)"
}

// Protocol is what Detect found the connection speaking.
type Protocol int

// The Protocol constants carry a Proto prefix because the detector functions
// already own the plain names (HTTP1).
const (
	ProtoUnknown Protocol = iota // undecided (with NeedMore) or none of the below (with NoMatch)
	ProtoTLS                     // a complete, well-formed TLS ClientHello
	ProtoHTTP1                   // an HTTP/1.x request line
	ProtoH2C                     // the HTTP/2 prior-knowledge connection preface
	ProtoPROXYv1                 // the text PROXY protocol header "PROXY "
	ProtoPROXYv2                 // the 12-byte binary PROXY protocol signature
)

func (p Protocol) String() string {
	switch p {
	case ProtoUnknown:
		return "unknown"
	case ProtoTLS:
		return "tls"
	case ProtoHTTP1:
		return "http1"
	case ProtoH2C:
		return "h2c"
	case ProtoPROXYv1:
		return "proxy-v1"
	case ProtoPROXYv2:
		return "proxy-v2"
	}
	return "protocol(?)"
}

// The PROXY protocol signatures. Only the signature is checked here; parsing
// the header and deciding whether the peer may send one is internal/proxyproto's
// job. The v1 signature includes the space so that an HTTP method or any
// other word starting with "PROXY" is not mistaken for it.
const (
	proxyV1Sig = "PROXY "
	proxyV2Sig = "\r\n\r\n\x00\r\nQUIT\n"
)

// Detect reports which protocol the first bytes of a connection speak. It
// returns (p, Match) once a detector matches, (ProtoUnknown, NoMatch) once
// every detector has ruled its protocol out, and (ProtoUnknown, NeedMore)
// otherwise.
//
// The detectors almost never both match ("PROXY / HTTP/1.1\r\n" is one input
// that does), so they are ranked: PROXY v2, PROXY v1, h2c, HTTP/1, TLS. A
// match counts only once every detector ranked above it has said NoMatch;
// while one of them still says NeedMore, so does Detect. That keeps Detect as
// monotonic as the detectors, whatever sizes the reads come in. TLS is
// reported only for a complete, well-formed ClientHello: a connection that
// merely starts with 0x16 is not trusted to be TLS.
func Detect(b []byte) (Protocol, Result) {
	http1, _ := HTTP1(b)
	tls, _, _ := ClientHello(b)
	verdicts := [...]struct {
		p Protocol
		r Result
	}{
		{ProtoPROXYv2, prefixOf(b, proxyV2Sig)},
		{ProtoPROXYv1, prefixOf(b, proxyV1Sig)},
		{ProtoH2C, H2Preface(b)},
		{ProtoHTTP1, http1},
		{ProtoTLS, tls},
	}
	undecided := false
	for _, v := range verdicts {
		switch v.r {
		case Match:
			if undecided {
				return ProtoUnknown, NeedMore
			}
			return v.p, Match
		case NeedMore:
			undecided = true
		}
	}
	if undecided {
		return ProtoUnknown, NeedMore
	}
	return ProtoUnknown, NoMatch
}

// prefixOf matches b against a fixed signature: NeedMore while b is a proper
// prefix of sig, Match once sig is complete, NoMatch at the first difference.
func prefixOf(b []byte, sig string) Result {
	if len(b) < len(sig) {
		if string(b) == sig[:len(b)] {
			return NeedMore
		}
		return NoMatch
	}
	if bytes.HasPrefix(b, []byte(sig)) {
		return Match
	}
	return NoMatch
}
