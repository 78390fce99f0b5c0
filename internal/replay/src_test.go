package replay

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseSrc(t *testing.T) {
	ts := time.UnixMicro(1700000000123456).UTC()
	tests := []struct {
		name string
		in   string
		want Src
		err  error
	}{
		{"full", "instance=m1;region=iad;t=1700000000123456;state=abc", Src{Instance: "m1", Region: "iad", T: ts, State: "abc"}, nil},
		{"any order, blanks", " state=abc ; T=1700000000123456;REGION=iad", Src{Region: "iad", T: ts, State: "abc"}, nil},
		{"empty", "", Src{}, nil},
		{"epoch", "t=0", Src{T: time.UnixMicro(0).UTC()}, nil},
		{"unknown ignored", "instance=m1;hop=2", Src{Instance: "m1"}, nil},
		{"t signed", "t=+1", Src{}, ErrInvalidValue},
		{"t negative", "t=-1", Src{}, ErrInvalidValue},
		{"t hex", "t=0x10", Src{}, ErrInvalidValue},
		{"t overflow", "t=99999999999999999999", Src{}, ErrInvalidValue},
		{"bad instance", "instance=a.b", Src{}, ErrInvalidValue},
		{"bad region", "region=IAD", Src{}, ErrInvalidValue},
		{"bad state", "state=" + strings.Repeat("x", MaxStateLen+1), Src{}, ErrTooLong},
		{"duplicate", "t=1;t=2", Src{}, ErrDuplicateKey},
		{"empty value", "instance=", Src{}, ErrEmptyValue},
		{"no equals", "instance", Src{}, ErrSyntax},
		{"too long", "x=" + strings.Repeat("x", MaxHeaderLen), Src{}, ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSrc(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseSrc(%q) error = %v, want %v", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSrc(%q): %v", tt.in, err)
			}
			if !srcEqual(got, tt.want) {
				t.Fatalf("ParseSrc(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSrcString(t *testing.T) {
	s := Src{Instance: "m1", Region: "iad", State: "s", T: time.UnixMicro(42).Add(999)} // nanoseconds are dropped
	if got, want := s.String(), "instance=m1;region=iad;t=42;state=s"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got := (Src{}).String(); got != "" {
		t.Fatalf("zero Src renders %q", got)
	}
}

func TestParseFailure(t *testing.T) {
	for in, want := range map[string]Failure{"timeout": Timeout, " Retries_Exhausted": RetriesExhausted, "no_candidate": NoCandidate} {
		if got, err := ParseFailure(in); err != nil || got != want {
			t.Errorf("ParseFailure(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "error", "timeout;x"} {
		if _, err := ParseFailure(in); !errors.Is(err, ErrInvalidValue) {
			t.Errorf("ParseFailure(%q) error = %v", in, err)
		}
	}
}

// srcEqual compares times by instant: time.Time's location pointer and
// monotonic reading make == too strict.
func srcEqual(a, b Src) bool {
	return a.Instance == b.Instance && a.Region == b.Region && a.State == b.State &&
		a.T.Equal(b.T) && a.T.IsZero() == b.T.IsZero()
}
