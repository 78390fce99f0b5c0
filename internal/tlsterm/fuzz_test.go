package tlsterm

import (
	"crypto/tls"
	"testing"
)

func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}

// FuzzMatchName checks the matching rules as properties, and that the
// indexed Store.Lookup agrees with the plain matchName for any one pattern.
func FuzzMatchName(f *testing.F) {
	for _, seed := range [][2]string{
		{"*.example.com", "a.example.com"},
		{"*.example.com", "a.b.example.com"},
		{"*.example.com", "example.com"},
		{"Example.COM.", "example.com"},
		{"*.", "a."},
		{"*..", "a.."},
		{"f*.example.com", "foo.example.com"},
		{"", ""},
		{"\xff.\xfe", "\xff.\xfe"},
		{"K.example.com", "\u212a.example.com"}, // Kelvin sign must not fold to k
	} {
		f.Add(seed[0], seed[1])
	}
	dummy := &tls.Certificate{}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := matchName(pattern, name)
		p, n := normalize(pattern), normalize(name)

		if want := p != ""; matchName(pattern, pattern) != want {
			t.Errorf("matchName(%q, itself) = %v, want %v", pattern, !want, want)
		}
		if matchName(pattern, upperASCII(name)) != got || matchName(upperASCII(pattern), name) != got {
			t.Errorf("matchName(%q, %q) depends on ASCII case", pattern, name)
		}
		if matchName(pattern, name+".") != got {
			t.Errorf("matchName(%q, %q) depends on a trailing dot", pattern, name)
		}
		suffix, wild := wildcardSuffix(p)
		if !wild && got != (n != "" && p == n) {
			t.Errorf("matchName(%q, %q) = %v for a literal pattern", pattern, name, got)
		}
		if wild {
			if !matchName(pattern, "x."+suffix) {
				t.Errorf("%q should match one label deep", pattern)
			}
			if matchName(pattern, suffix) || matchName(pattern, "x.y."+suffix) {
				t.Errorf("%q should match only one label deep", pattern)
			}
		}
		if p != "" {
			s := &Store{exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
			s.add(p, dummy)
			if (s.Lookup(name) != nil) != got {
				t.Errorf("Store.Lookup(%q) disagrees with matchName(%q, %q) = %v", name, pattern, name, got)
			}
		}
	})
}
