package route_test

import (
	"net"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/route"
)

// checkNormalized states what NormalizeHost promises about its output: ""
// or a lowercase plausible name with neither a port nor a trailing dot,
// unchanged by normalizing again.
func checkNormalized(in, out string) []string {
	if out == "" {
		return nil
	}
	var bad []string
	if len(out) > 253 {
		bad = append(bad, "longer than 253 bytes")
	}
	if out != strings.ToLower(out) {
		bad = append(bad, "not lowercase")
	}
	for i := 0; i < len(out); i++ {
		c := out[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-._:", c) >= 0) {
			bad = append(bad, "has byte "+string(rune(c)))
			break
		}
	}
	if strings.HasSuffix(out, ".") {
		bad = append(bad, "ends with a dot")
	}
	if _, _, err := net.SplitHostPort(out); err == nil {
		bad = append(bad, "still reads as host:port")
	}
	if again := route.NormalizeHost(out); again != out {
		bad = append(bad, "not idempotent: normalizes again to "+again)
	}
	return bad
}

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{
		"", "example.com", "Example.COM.", "example.com:443", "[::1]:443", "[::1]",
		"a.b.c.d.e", "*.example.com", "exa mple", "\xff", ":", "::", ".", strings.Repeat("a", 254),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := route.NormalizeHost(in)
		if bad := checkNormalized(in, out); len(bad) > 0 {
			t.Fatalf("NormalizeHost(%q) = %q: %s", in, out, strings.Join(bad, "; "))
		}
	})
}

// TestNormalizeHostKnownBugs keeps inputs that once broke the contract
// (extra trailing dots, brackets around names with colons).
func TestNormalizeHostKnownBugs(t *testing.T) {
	var broken []string
	for _, in := range []string{
		"a..",                  // -> "a.": only one trailing dot is dropped
		"example.com..:443",    // -> "example.com."
		"..",                   // -> "."
		"[a:b]:80",             // -> "a:b", which normalizes again to "a"
		"[example.com:443]:80", // -> "example.com:443", a host with a port
	} {
		out := route.NormalizeHost(in)
		if bad := checkNormalized(in, out); len(bad) > 0 {
			broken = append(broken, in+" -> "+out+": "+strings.Join(bad, "; "))
		}
	}
	if len(broken) > 0 {
		t.Errorf("NormalizeHost breaks its contract:\n%s", strings.Join(broken, "\n"))
	}
}
