package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	pp "github.com/pires/go-proxyproto"
)

// The inbound side: a load balancer in front of edgeproxy that speaks the
// PROXY protocol tells it the real client address. The server peeks the
// first bytes, asks HeaderLen how long the header is, reads exactly that
// many bytes and hands them to Parse, so no byte of the client's own
// stream is ever consumed by the parser.

const (
	v1Sig = "PROXY "
	v2Sig = "\r\n\r\n\x00\r\nQUIT\n"
	// v1Max is the longest v1 header the spec allows, CRLF included.
	v1Max = 107
	// v2Max caps a v2 header (16 bytes plus TLVs) well below what a
	// hostile peer could declare (64 KiB).
	v2Max = 16 + 2048
)

// ErrNeedMore means b is a valid but incomplete header prefix.
var ErrNeedMore = errors.New("proxyproto: need more bytes")

// ErrNotProxy means b does not start with a PROXY header.
var ErrNotProxy = errors.New("proxyproto: not a PROXY protocol header")

// HeaderLen returns the length of the complete PROXY header at the start
// of b; ErrNeedMore if more bytes are needed; ErrNotProxy or another
// error if b cannot start a valid header.
func HeaderLen(b []byte) (int, error) {
	switch {
	case hasPrefix(b, v1Sig):
		if lf := bytes.IndexByte(b, '\n'); lf >= 0 && (lf == 0 || b[lf-1] != '\r') {
			return 0, errors.New("proxyproto: v1 header line must end in CRLF")
		}
		if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
			if i+2 > v1Max {
				return 0, fmt.Errorf("proxyproto: v1 header longer than %d bytes", v1Max)
			}
			return i + 2, nil
		}
		if len(b) >= v1Max {
			return 0, fmt.Errorf("proxyproto: v1 header longer than %d bytes", v1Max)
		}
		return 0, ErrNeedMore
	case hasPrefix(b, v2Sig):
		if len(b) < 16 {
			return 0, ErrNeedMore
		}
		n := 16 + int(binary.BigEndian.Uint16(b[14:16]))
		if n > v2Max {
			return 0, fmt.Errorf("proxyproto: v2 header of %d bytes exceeds %d", n, v2Max)
		}
		if len(b) < n {
			return 0, ErrNeedMore
		}
		return n, nil
	case len(b) < len(v1Sig) && (bytes.HasPrefix([]byte(v1Sig), b) || bytes.HasPrefix([]byte(v2Sig), b)):
		return 0, ErrNeedMore
	case len(b) < len(v2Sig) && bytes.HasPrefix([]byte(v2Sig), b):
		return 0, ErrNeedMore
	default:
		return 0, ErrNotProxy
	}
}

// hasPrefix reports whether b starts with all of sig.
func hasPrefix(b []byte, sig string) bool {
	return len(b) >= len(sig) && string(b[:len(sig)]) == sig
}

// Parsed is an inbound header's content.
type Parsed struct {
	Version  int
	Src, Dst netip.AddrPort
	// Local is a v2 LOCAL command (a health check from the balancer
	// itself) or v1 UNKNOWN: the socket's own addresses stand.
	Local bool
}

// Parse parses exactly one complete header, as measured by HeaderLen.
func Parse(hdr []byte) (Parsed, error) {
	h, err := pp.Read(bufio.NewReaderSize(bytes.NewReader(hdr), len(hdr)+16))
	if err != nil {
		return Parsed{}, fmt.Errorf("proxyproto: %w", err)
	}
	p := Parsed{Version: int(h.Version)}
	if h.Command.IsLocal() || h.TransportProtocol == pp.UNSPEC {
		p.Local = true
		return p, nil
	}
	src, ok1 := h.SourceAddr.(*net.TCPAddr)
	dst, ok2 := h.DestinationAddr.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return Parsed{}, fmt.Errorf("proxyproto: header for transport %#x is not TCP", byte(h.TransportProtocol))
	}
	p.Src = netip.AddrPortFrom(src.AddrPort().Addr().Unmap(), src.AddrPort().Port())
	p.Dst = netip.AddrPortFrom(dst.AddrPort().Addr().Unmap(), dst.AddrPort().Port())
	return p, nil
}

// Trusted reports whether addr may send PROXY headers.
func Trusted(trusted []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
