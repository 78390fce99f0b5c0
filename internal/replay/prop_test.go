package replay

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

const (
	nameChars     = "abcdefghijklmnopqrstuvwxyz0123456789-"
	instanceChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
)

// stateChars is every byte checkState accepts.
var stateChars = func() string {
	var b strings.Builder
	for c := byte('!'); c <= '~'; c++ {
		if c != ';' {
			b.WriteByte(c)
		}
	}
	return b.String()
}()

func stringOf(chars string, n, m int) *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		idx := rapid.SliceOfN(rapid.IntRange(0, len(chars)-1), n, m).Draw(t, "idx")
		b := make([]byte, len(idx))
		for i, x := range idx {
			b[i] = chars[x]
		}
		return string(b)
	})
}

// genInstruction draws valid instructions only, biased towards the
// corners: full region lists, long names, every fallback.
func genInstruction() *rapid.Generator[Instruction] {
	return rapid.Custom(func(t *rapid.T) Instruction {
		var in Instruction
		if rapid.Bool().Draw(t, "pin") {
			in.Instance = stringOf(instanceChars, 1, maxInstanceLen).Draw(t, "instance")
		} else {
			regions := rapid.SliceOfNDistinct(stringOf(nameChars, 1, maxRegionLen), 0, MaxRegions, rapid.ID[string]).Draw(t, "regions")
			if len(regions) > 0 {
				in.Regions = regions
			}
			if rapid.Bool().Draw(t, "prefer") {
				in.PreferInstance = stringOf(instanceChars, 1, maxInstanceLen).Draw(t, "prefer_instance")
			}
			in.Elsewhere = rapid.Bool().Draw(t, "elsewhere")
		}
		if rapid.Bool().Draw(t, "cross-app") {
			in.App = stringOf(nameChars, 1, maxAppLen).Draw(t, "app")
		}
		if rapid.Bool().Draw(t, "stateful") {
			in.State = stringOf(stateChars, 1, MaxStateLen).Draw(t, "state")
		}
		in.Timeout = time.Duration(rapid.Int64Range(0, int64(MaxTimeout)).Draw(t, "timeout"))
		in.Fallback = Fallback(rapid.IntRange(0, int(FallbackForceSelf)).Draw(t, "fallback"))
		if in.Validate() != nil {
			// Only ErrNoTarget can fire: give it the cheapest target.
			in.Elsewhere = true
		}
		return in
	})
}

func TestPropHeaderRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInstruction().Draw(t, "instruction")
		if err := in.Validate(); err != nil {
			t.Fatalf("generator drew an invalid instruction %#v: %v", in, err)
		}
		s := in.String()
		if len(s) > MaxHeaderLen {
			t.Fatalf("canonical form is %d bytes, over the header limit", len(s))
		}
		got, err := ParseHeader(s)
		if err != nil {
			t.Fatalf("ParseHeader(%q): %v", s, err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Fatalf("ParseHeader(%q) = %#v, want %#v", s, got, in)
		}
	})
}

// TestPropHeaderSpelling: the header's tolerated variations (key case,
// blanks, stray semicolons, key order) never change the instruction.
func TestPropHeaderSpelling(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInstruction().Draw(t, "instruction")
		items := strings.Split(in.String(), ";")
		items = rapid.Permutation(items).Draw(t, "order")
		for i, item := range items {
			k, v, _ := strings.Cut(item, "=")
			if rapid.Bool().Draw(t, "upper") {
				k = strings.ToUpper(k)
			}
			ws := rapid.SampledFrom([]string{"", " ", "\t", " \t "}).Draw(t, "ws")
			items[i] = ws + k + ws + "=" + ws + v + ws
		}
		sep := rapid.SampledFrom([]string{";", " ; ", ";;"}).Draw(t, "sep")
		s := strings.Join(items, sep)
		if len(s) > MaxHeaderLen {
			t.Skip("spelled-out form over the header limit")
		}
		got, err := ParseHeader(s)
		if err != nil {
			t.Fatalf("ParseHeader(%q): %v", s, err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Fatalf("ParseHeader(%q) = %#v, want %#v", s, got, in)
		}
	})
}

func TestPropSrcRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var s Src
		if rapid.Bool().Draw(t, "has instance") {
			s.Instance = stringOf(instanceChars, 1, maxInstanceLen).Draw(t, "instance")
		}
		if rapid.Bool().Draw(t, "has region") {
			s.Region = stringOf(nameChars, 1, maxRegionLen).Draw(t, "region")
		}
		if rapid.Bool().Draw(t, "has state") {
			s.State = stringOf(stateChars, 1, MaxStateLen).Draw(t, "state")
		}
		if rapid.Bool().Draw(t, "has t") {
			s.T = time.UnixMicro(rapid.Int64Min(0).Draw(t, "t")).UTC()
		}
		got, err := ParseSrc(s.String())
		if err != nil {
			t.Fatalf("ParseSrc(%q): %v", s.String(), err)
		}
		if !srcEqual(got, s) {
			t.Fatalf("ParseSrc(%q) = %#v, want %#v", s.String(), got, s)
		}
	})
}
