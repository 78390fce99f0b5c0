package tlsterm

import (
	"net/netip"
	"strings"
)

// Host name matching, kept apart from Store so it can be fuzzed as a pure
// function; Store.Lookup is an indexed form of the same rules and a fuzz test
// checks that the two agree.

// normalize puts a DNS name in the form used as a map key. Only ASCII is
// folded: DNS names on the wire are ASCII (IDNs travel as punycode), and
// Unicode case folding would let distinct byte strings, such as the Kelvin
// sign and "k", select the same certificate. Trailing dots are dropped
// because "example.com." is the same host written fully qualified.
func normalize(name string) string {
	name = strings.TrimRight(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return lowerASCII(name)
		}
	}
	return name
}

// lowerASCII works on bytes rather than runes so invalid UTF-8 survives
// unchanged instead of collapsing into U+FFFD, which would make different
// names equal.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// wildcardSuffix reports the part after "*." of a normalized wildcard
// pattern. Only a whole leftmost "*" label is a wildcard, as in RFC 6125 and
// crypto/x509; "f*.example.com" is matched literally.
func wildcardSuffix(pattern string) (string, bool) {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok && rest != "" {
		return rest, true
	}
	return "", false
}

// parentOf drops the leftmost label of a normalized name. A wildcard covers
// exactly one label, so a.b.example.com must not reach *.example.com and the
// bare example.com (no label to drop) must not either.
func parentOf(name string) (string, bool) {
	i := strings.IndexByte(name, '.')
	if i <= 0 {
		return "", false
	}
	return name[i+1:], true
}

// matchName reports whether a certificate name (possibly a wildcard) covers
// a requested host name. An empty name matches nothing: a client that sent
// no SNI has not asked for any certificate.
func matchName(pattern, name string) bool {
	p, n := normalize(pattern), normalize(name)
	if n == "" {
		return false
	}
	if p == n {
		return true
	}
	suffix, ok := wildcardSuffix(p)
	if !ok {
		return false
	}
	parent, ok := parentOf(n)
	return ok && parent == suffix
}

// SNIHost is the host a ClientHello's server name asks for, as routing and
// certificate selection read it: the name itself, or "" for an IP literal.
// RFC 6066 forbids sending an address, but wrk and some OpenSSL-based tools
// send the one they dialled, and a client that dialled an address asked for
// no host: it is served as if it had sent no SNI, not refused (PT05) for a
// name nobody has a certificate for.
func SNIHost(sni string) string {
	if _, err := netip.ParseAddr(sni); err == nil {
		return ""
	}
	return sni
}
