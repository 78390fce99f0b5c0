package replay

import (
	"reflect"
	"testing"
)

// The fuzzers hold the parsers to three promises: no panic, every value
// that parses is valid, and it survives String and a second parse
// unchanged (Unknown aside, which String does not render by design).

func checkRoundTrip(t *testing.T, in Instruction) {
	t.Helper()
	if err := in.Validate(); err != nil {
		t.Fatalf("parsed an invalid instruction %#v: %v", in, err)
	}
	in.Unknown = nil
	s := in.String()
	again, err := ParseHeader(s)
	if err != nil {
		t.Fatalf("canonical form %q does not parse: %v", s, err)
	}
	if !reflect.DeepEqual(again, in) {
		t.Fatalf("round trip through %q: got %#v, want %#v", s, again, in)
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{
		"region=iad",
		"region=iad,ord,iad;state=abc",
		" Region = iad ; ;APP=web;",
		"instance=3d8d9e1b2c4e58;app=web;timeout=1.5s;fallback=force_self",
		"prefer_instance=m1;elsewhere=true;fallback=prefer_self;future=1",
		"instance=a;prefer_instance=b",
		"region=iad;timeout=1h",
		"region=;x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		in, err := ParseHeader(s)
		if err != nil {
			return
		}
		checkRoundTrip(t, in)
	})
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		`{"region":"iad,ord"}`,
		`{"region":["iad","ord"],"state":"s","timeout":"5s","fallback":"prefer_self"}`,
		`{"instance":"m1","app":"web","elsewhere":false,"x":{"y":[1,null]}}`,
		`{"prefer_instance":"m1","elsewhere":true,"instance":null}`,
		`{"app":"web","app":"web"}`,
		`{"app":"web"} x`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := ParseJSON(b)
		if err != nil {
			return
		}
		checkRoundTrip(t, in)
	})
}

func FuzzParseSrc(f *testing.F) {
	for _, s := range []string{
		"instance=m1;region=iad;t=1700000000123456;state=abc",
		" T=0 ;state=x=y",
		"hop=1;instance=m1",
		"t=9223372036854775807",
		"t=-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s, err := ParseSrc(v)
		if err != nil {
			return
		}
		again, err := ParseSrc(s.String())
		if err != nil {
			t.Fatalf("canonical form %q does not parse: %v", s.String(), err)
		}
		if !srcEqual(again, s) {
			t.Fatalf("round trip through %q: got %#v, want %#v", s.String(), again, s)
		}
	})
}
