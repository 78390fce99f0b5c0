package sniff

import (
	"bytes"
	"errors"
	"net/netip"
)

// Extension types ClientHello reads; every other extension is only framed.
const (
	extServerName        = 0  // RFC 6066 section 3
	extALPN              = 16 // RFC 7301 section 3.1
	extSupportedVersions = 43 // RFC 8446 section 4.2.1
)

// maxHostName is the longest DNS name in text form without the trailing dot.
const maxHostName = 253

// errShort means the parse reached the end of the bytes received so far with
// every declared length still consistent: the answer is NeedMore. It never
// leaves the package.
var errShort = errors.New("sniff: short")

// cursor reads one TLS vector whose declared length may run past the bytes
// received so far. Every read checks the declared bounds before the received
// ones, so an overrun is reported as malformed however little has arrived,
// and a parse stopped by errShort has validated everything before the point
// where the bytes ran out.
type cursor struct {
	buf []byte // the part of the vector received so far
	n   int    // the vector's declared length; n >= len(buf)
	off int    // read position; may pass len(buf) after a vector is skipped
}

func (c *cursor) empty() bool { return c.off == c.n }

func (c *cursor) take(k int, field string) ([]byte, error) {
	if k > c.n-c.off {
		return nil, malformed("%s overruns its vector", field)
	}
	if c.off+k > len(c.buf) {
		return nil, errShort
	}
	p := c.buf[c.off : c.off+k]
	c.off += k
	return p, nil
}

// uint reads a big-endian unsigned integer of size bytes (at most 3).
func (c *cursor) uint(size int, field string) (int, error) {
	p, err := c.take(size, field)
	if err != nil {
		return 0, err
	}
	v := 0
	for _, x := range p {
		v = v<<8 | int(x)
	}
	return v, nil
}

// vec reads a vector with a size-byte length prefix whose length must lie in
// [lo, hi], and returns a cursor over its contents, which need not have
// arrived yet.
func (c *cursor) vec(size, lo, hi int, field string) (cursor, error) {
	n, err := c.uint(size, field)
	if err != nil {
		return cursor{}, err
	}
	if n < lo || n > hi {
		return cursor{}, malformed("%s length %d, want %d to %d", field, n, lo, hi)
	}
	if n > c.n-c.off {
		return cursor{}, malformed("%s length %d overruns the %d bytes left", field, n, c.n-c.off)
	}
	start, end := min(c.off, len(c.buf)), min(c.off+n, len(c.buf))
	c.off += n
	return cursor{buf: c.buf[start:end], n: n}, nil
}

// all returns the whole vector once every declared byte has arrived.
func (c *cursor) all() ([]byte, error) {
	if len(c.buf) < c.n {
		return nil, errShort
	}
	return c.buf, nil
}

// end reports bytes left over inside a vector whose grammar is complete.
func (c *cursor) end(field string) error {
	if !c.empty() {
		return malformed("%d bytes after %s", c.n-c.off, field)
	}
	return nil
}

// hello collects the raw, validated fields routing needs. They stay slices of
// the input until the message is complete, so a NeedMore answer allocates
// nothing however often peek asks.
type hello struct {
	legacy   uint16
	host     []byte // host_name, validated
	alpn     []byte // ProtocolNameList contents, validated
	versions []byte // supported_versions contents, validated
}

// parse reads a ClientHello body (RFC 8446 section 4.1.2, which also frames
// TLS 1.0 to 1.2 hellos, whose extensions block may be absent).
func (h *hello) parse(c cursor) error {
	v, err := c.uint(2, "legacy_version")
	if err != nil {
		return err
	}
	if v>>8 != 3 || v&0xff > 4 {
		return malformed("legacy_version %#04x, want 0x0300 to 0x0304", v)
	}
	h.legacy = uint16(v)
	if _, err := c.take(32, "random"); err != nil {
		return err
	}
	if _, err := c.vec(1, 0, 32, "session_id"); err != nil {
		return err
	}
	suites, err := c.vec(2, 2, 1<<16-2, "cipher_suites")
	if err != nil {
		return err
	}
	if suites.n%2 != 0 {
		return malformed("cipher_suites length %d is odd", suites.n)
	}
	comp, err := c.vec(1, 1, 255, "compression_methods")
	if err != nil {
		return err
	}
	methods, err := comp.all()
	if err != nil {
		return err
	}
	if bytes.IndexByte(methods, 0) < 0 {
		return malformed("compression_methods lacks null")
	}
	if !c.empty() {
		exts, err := c.vec(2, 0, 1<<16-1, "extensions")
		if err != nil {
			return err
		}
		if err := c.end("extensions"); err != nil {
			return err
		}
		if err := h.parseExtensions(exts); err != nil {
			return err
		}
	}
	// The grammar skips the contents of extensions it does not read, so it
	// can be satisfied before the last of them has arrived.
	_, err = c.all()
	return err
}

func (h *hello) parseExtensions(exts cursor) error {
	// One bit per extension type: 8 KiB on the stack, and duplicate detection
	// that stays linear however many extensions a hostile hello carries.
	var seen [1 << 16 / 64]uint64
	for !exts.empty() {
		typ, err := exts.uint(2, "extension type")
		if err != nil {
			return err
		}
		data, err := exts.vec(2, 0, 1<<16-1, "extension data")
		if err != nil {
			return err
		}
		if seen[typ/64]&(1<<(typ%64)) != 0 {
			// RFC 8446 section 4.2; crypto/tls refuses such hellos too.
			return malformed("duplicate extension %d", typ)
		}
		seen[typ/64] |= 1 << (typ % 64)
		switch typ {
		case extServerName:
			err = h.parseServerName(data)
		case extALPN:
			err = h.parseALPN(data)
		case extSupportedVersions:
			err = h.parseVersions(data)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *hello) parseServerName(data cursor) error {
	list, err := data.vec(2, 1, 1<<16-1, "server_name list")
	if err != nil {
		return err
	}
	if err := data.end("server_name list"); err != nil {
		return err
	}
	for !list.empty() {
		typ, err := list.uint(1, "server_name type")
		if err != nil {
			return err
		}
		name, err := list.vec(2, 1, 1<<16-1, "server_name")
		if err != nil {
			return err
		}
		if typ != 0 {
			// Only host_name (0) is defined; like crypto/tls, frame and skip
			// the rest rather than refuse a future name type.
			continue
		}
		if h.host != nil {
			return malformed("more than one host_name")
		}
		if name.n > maxHostName {
			return malformed("host_name of %d bytes exceeds %d", name.n, maxHostName)
		}
		if err := checkHostName(name.buf, false); err != nil && !ipv6Prefix(name.buf) {
			return err
		}
		host, err := name.all()
		if err != nil {
			return err
		}
		if err := checkHostName(host, true); err != nil && !isIPLiteral(host) {
			return err
		}
		h.host = host
	}
	return nil
}

// checkHostName accepts DNS-style names: labels of 1 to 63 letters, digits,
// hyphens or underscores joined by single dots, with no trailing dot (RFC
// 6066 section 3). Underscores are not legal in host names but appear in real
// ones, and refusing the TLS handshake over them helps nobody. A name that is
// still arriving (complete false) is checked as far as it goes.
func checkHostName(name []byte, complete bool) error {
	label := 0
	for i, ch := range name {
		switch {
		case ch == '.':
			if label == 0 {
				return malformed("host_name has an empty label at byte %d", i)
			}
			label = 0
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9', ch == '-', ch == '_':
			label++
			if label > 63 {
				return malformed("host_name has a label longer than 63 bytes")
			}
		default:
			return malformed("host_name has byte %#02x at %d", ch, i)
		}
	}
	if complete && label == 0 {
		return malformed("host_name ends with a dot")
	}
	return nil
}

// isIPLiteral reports an IPv4 or IPv6 address without zone. RFC 6066 forbids
// one as host_name, but clients that dial an address send it (wrk, some
// OpenSSL-based tools) and crypto/tls accepts it; routing reads it as no
// name at all. IPv4 literals already pass checkHostName.
func isIPLiteral(name []byte) bool {
	a, err := netip.ParseAddr(string(name))
	return err == nil && a.Zone() == ""
}

// ipv6Prefix reports bytes that may still grow into an IPv6 literal (hex
// digits, colons, and dots for an embedded IPv4 part), so that a name still
// arriving is refused early only when it can be neither a DNS name nor an
// address.
func ipv6Prefix(b []byte) bool {
	for _, ch := range b {
		switch {
		case '0' <= ch && ch <= '9', 'a' <= ch && ch <= 'f', 'A' <= ch && ch <= 'F', ch == ':', ch == '.':
		default:
			return false
		}
	}
	return true
}

func (h *hello) parseALPN(data cursor) error {
	list, err := data.vec(2, 2, 1<<16-1, "ALPN list")
	if err != nil {
		return err
	}
	if err := data.end("ALPN list"); err != nil {
		return err
	}
	for !list.empty() {
		if _, err := list.vec(1, 1, 255, "ALPN protocol"); err != nil {
			return err
		}
	}
	raw, err := list.all()
	if err != nil {
		return err
	}
	h.alpn = raw
	return nil
}

func (h *hello) parseVersions(data cursor) error {
	list, err := data.vec(1, 2, 254, "supported_versions")
	if err != nil {
		return err
	}
	if list.n%2 != 0 {
		return malformed("supported_versions length %d is odd", list.n)
	}
	if err := data.end("supported_versions"); err != nil {
		return err
	}
	raw, err := list.all()
	if err != nil {
		return err
	}
	offered := 0
	for i := 0; i < len(raw); i += 2 {
		if !isGREASE(uint16(raw[i])<<8 | uint16(raw[i+1])) {
			offered++
		}
	}
	if offered == 0 {
		return malformed("supported_versions offers only GREASE values")
	}
	h.versions = raw
	return nil
}

// isGREASE reports the reserved values of RFC 8701 (0x0a0a, 0x1a1a, ...,
// 0xfafa), which clients sprinkle into lists to keep servers tolerant and
// which mean nothing to routing.
func isGREASE(v uint16) bool {
	return v&0x0f0f == 0x0a0a && v>>8 == v&0xff
}

// info converts the validated fields once the hello is complete.
func (h *hello) info(n int) HelloInfo {
	in := HelloInfo{Len: n, ServerName: string(h.host)}
	for raw := h.alpn; len(raw) > 0; {
		l := int(raw[0])
		in.ALPN = append(in.ALPN, string(raw[1:1+l]))
		raw = raw[1+l:]
	}
	if h.versions == nil {
		in.Versions = []uint16{h.legacy}
		return in
	}
	for i := 0; i < len(h.versions); i += 2 {
		if v := uint16(h.versions[i])<<8 | uint16(h.versions[i+1]); !isGREASE(v) {
			in.Versions = append(in.Versions, v)
		}
	}
	return in
}
