package sniff

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MaxHelloLen bounds the body of a ClientHello handshake message: 64 KiB,
// the largest handshake message crypto/tls accepts, so that the sniffer
// never passes a hello the TLS stack behind it would refuse. Most hellos are
// a few hundred bytes, about 1.8 KiB with a post-quantum key share, but
// several key shares, long ALPN lists and padding make bigger ones real,
// spread over several records. What is buffered to read one is bounded by
// the caller (peek's byte cap, proxy.sniff_max_bytes), not here.
const MaxHelloLen = 64 << 10

// TLS framing constants (RFC 8446 sections 4 and 5.1).
const (
	recordHeaderLen     = 5
	maxRecordLen        = 1 << 14 // a plaintext record carries at most 2^14 bytes
	handshakeHeaderLen  = 4
	recordTypeHandshake = 0x16
	typeClientHello     = 1
)

// ErrNotHandshake is returned, unwrapped, when the first byte is not a TLS
// handshake record. It is a plain value so that Detect, which asks every
// detector about every connection, allocates nothing for non-TLS traffic.
var ErrNotHandshake = errors.New("sniff: not a TLS handshake record")

// ErrMalformed is wrapped by every other error of ClientHello: the bytes start
// like TLS but break the framing or the ClientHello grammar.
var ErrMalformed = errors.New("sniff: malformed ClientHello")

// ErrHelloTooLarge is wrapped, with ErrMalformed, by the error for a hello
// longer than MaxHelloLen: no TLS stack behind the proxy would take it, and
// TLS servers answer that with internal_error rather than decode_error.
var ErrHelloTooLarge = errors.New("ClientHello over the size limit")

// HelloInfo is what routing needs from a ClientHello.
type HelloInfo struct {
	// ServerName is the SNI host_name, as sent (ASCII, not case-folded), or
	// "" when the client sent none. It may be an IP literal, which RFC 6066
	// forbids but wrk and some OpenSSL-based tools send: the address they
	// dialled, naming no host.
	ServerName string
	// ALPN lists the offered application protocols in the client's order,
	// or is nil when the client sent no ALPN extension.
	ALPN []string
	// Versions lists supported_versions in the client's order without GREASE
	// values, or holds just legacy_version when that extension is absent.
	Versions []uint16
	// Len is the number of bytes of TLS records the ClientHello occupied.
	Len int
}

// ClientHello parses a TLS record stream prefix holding a ClientHello,
// possibly split over several handshake records. It returns NeedMore while
// the bytes are a valid but incomplete prefix, NoMatch with an error when
// they are not a TLS handshake or are malformed, and Match with the info once
// the whole message has arrived. Bytes after the ClientHello are ignored.
//
// It is stricter than it needs to be for routing, because a lenient parse is
// how a proxy and the TLS stack behind it come to disagree about a hello:
// records are 1..2^14 bytes with version 3.x, no other record type may be
// interleaved, the message is at most MaxHelloLen and must end exactly at a
// record boundary, every vector length is checked against its enclosing
// vector, extensions are unique, and host_name must be a DNS-style name (or
// an IP literal, which crypto/tls accepts too).
func ClientHello(b []byte) (Result, HelloInfo, error) {
	var (
		off      int    // where the next record header starts in b
		declared int    // handshake bytes announced by record headers so far
		msg      []byte // handshake bytes received so far, records stripped
		owned    bool   // msg is our copy rather than an alias of b
		total    = -1   // message length with header, once known
	)
	for off < len(b) && (total < 0 || declared < total) {
		hdr := b[off:min(off+recordHeaderLen, len(b))]
		if err := checkRecordHeader(hdr, off == 0); err != nil {
			return NoMatch, HelloInfo{}, err
		}
		if len(hdr) < recordHeaderLen {
			break
		}
		n := int(binary.BigEndian.Uint16(hdr[3:]))
		declared += n
		frag := b[off+recordHeaderLen : min(off+recordHeaderLen+n, len(b))]
		off += recordHeaderLen + n
		switch {
		case msg == nil:
			msg = frag
		case !owned:
			// Only a hello split over records is copied, and only the bytes
			// that really arrived: never a declared length.
			msg = append(append(make([]byte, 0, len(msg)+len(frag)), msg...), frag...)
			owned = true
		default:
			msg = append(msg, frag...)
		}
		if total < 0 && len(msg) >= handshakeHeaderLen {
			if msg[0] != typeClientHello {
				return NoMatch, HelloInfo{}, malformed("handshake type %d, want ClientHello", msg[0])
			}
			bodyLen := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if bodyLen > MaxHelloLen {
				return NoMatch, HelloInfo{}, malformed("%w: %d bytes exceed %d", ErrHelloTooLarge, bodyLen, MaxHelloLen)
			}
			total = handshakeHeaderLen + bodyLen
		}
		if total >= 0 && declared > total {
			// RFC 8446 section 5.1: a handshake message before a key change
			// must end at a record boundary, and nothing may follow the
			// ClientHello before the server answers.
			return NoMatch, HelloInfo{}, malformed("record carries %d bytes past the ClientHello", declared-total)
		}
	}
	if total < 0 {
		if len(msg) > 0 && msg[0] != typeClientHello {
			return NoMatch, HelloInfo{}, malformed("handshake type %d, want ClientHello", msg[0])
		}
		return NeedMore, HelloInfo{}, nil
	}

	var h hello
	err := h.parse(cursor{buf: msg[handshakeHeaderLen:], n: total - handshakeHeaderLen})
	switch {
	case err == errShort:
		return NeedMore, HelloInfo{}, nil
	case err != nil:
		return NoMatch, HelloInfo{}, err
	case len(msg) != total:
		// Unreachable: parse reads every declared byte. Refusing beats
		// panicking on a connection if that ever stops being true.
		return NoMatch, HelloInfo{}, malformed("parsed %d of %d bytes", len(msg), total)
	}
	return Match, h.info(off), nil
}

// checkRecordHeader validates the part of a record header that has arrived,
// so that garbage is rejected on its first byte.
func checkRecordHeader(hdr []byte, first bool) error {
	if hdr[0] != recordTypeHandshake {
		if first {
			return ErrNotHandshake
		}
		return malformed("record type %d interleaved with the ClientHello", hdr[0])
	}
	if len(hdr) > 1 && hdr[1] != 3 {
		return malformed("record version major %d, want 3", hdr[1])
	}
	if len(hdr) > 2 && hdr[2] > 4 {
		return malformed("record version 3.%d, want 3.0 to 3.4", hdr[2])
	}
	if len(hdr) == recordHeaderLen {
		n := binary.BigEndian.Uint16(hdr[3:])
		if n == 0 || n > maxRecordLen {
			// RFC 8446 section 5.1 forbids empty handshake fragments.
			return malformed("record length %d, want 1 to %d", n, maxRecordLen)
		}
	}
	return nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}
