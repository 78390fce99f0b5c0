package replay

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseHeader(t *testing.T) {
	long := "app=" + strings.Repeat("a", MaxHeaderLen-len("app=")) // at the length limit, but app too long
	tests := []struct {
		name string
		in   string
		want Instruction
		err  error
	}{
		{"one region", "region=iad", Instruction{Regions: []string{"iad"}}, nil},
		{"region list keeps order", "region=ord,iad,sin", Instruction{Regions: []string{"ord", "iad", "sin"}}, nil},
		{"region repeats dropped", "region=iad,ord,iad", Instruction{Regions: []string{"iad", "ord"}}, nil},
		{"region blanks", "region= iad , ord\t", Instruction{Regions: []string{"iad", "ord"}}, nil},
		{"region empty item", "region=iad,,ord", Instruction{}, ErrEmptyValue},
		{"region trailing comma", "region=iad,", Instruction{}, ErrEmptyValue},
		{"region uppercase", "region=IAD", Instruction{}, ErrInvalidValue},
		{"region underscore", "region=i_d", Instruction{}, ErrInvalidValue},
		{"region too long", "region=" + strings.Repeat("a", 33), Instruction{}, ErrInvalidValue},
		{"region 16", "region=" + regionList(16), Instruction{Regions: strings.Split(regionList(16), ",")}, nil},
		{"region 17", "region=" + regionList(17), Instruction{}, ErrTooManyRegion},
		{"instance", "instance=3d8d9e1b2c4e58", Instruction{Instance: "3d8d9e1b2c4e58"}, nil},
		{"instance mixed case", "instance=Ab_c-9", Instruction{Instance: "Ab_c-9"}, nil},
		{"instance bad byte", "instance=ab.c", Instruction{}, ErrInvalidValue},
		{"instance too long", "instance=" + strings.Repeat("a", 65), Instruction{}, ErrInvalidValue},
		{"prefer_instance", "prefer_instance=abc", Instruction{PreferInstance: "abc"}, nil},
		{"prefer_instance bad", "prefer_instance=a/b", Instruction{}, ErrInvalidValue},
		{"app", "app=billing-api", Instruction{App: "billing-api"}, nil},
		{"app uppercase", "app=Billing", Instruction{}, ErrInvalidValue},
		{"app too long", long, Instruction{}, ErrInvalidValue},
		{"state", "region=iad;state=a=b,c{\"x\":1}", Instruction{Regions: []string{"iad"}, State: `a=b,c{"x":1}`}, nil},
		{"state 1KiB", "app=a;state=" + strings.Repeat("s", MaxStateLen), Instruction{App: "a", State: strings.Repeat("s", MaxStateLen)}, nil},
		{"state too long", "app=a;state=" + strings.Repeat("s", MaxStateLen+1), Instruction{}, ErrTooLong},
		{"state inner space", "app=a;state=a b", Instruction{}, ErrInvalidValue},
		{"elsewhere", "elsewhere=true", Instruction{Elsewhere: true}, nil},
		{"elsewhere case", "elsewhere=TRUE", Instruction{Elsewhere: true}, nil},
		{"elsewhere false", "app=a;elsewhere=false", Instruction{App: "a"}, nil},
		{"elsewhere yes", "elsewhere=yes", Instruction{}, ErrInvalidValue},
		{"timeout", "region=iad;timeout=5s", Instruction{Regions: []string{"iad"}, Timeout: 5 * time.Second}, nil},
		{"timeout ms", "region=iad;timeout=250ms", Instruction{Regions: []string{"iad"}, Timeout: 250 * time.Millisecond}, nil},
		{"timeout max", "region=iad;timeout=1m", Instruction{Regions: []string{"iad"}, Timeout: MaxTimeout}, nil},
		{"timeout over max", "region=iad;timeout=61s", Instruction{}, ErrInvalidValue},
		{"timeout zero", "region=iad;timeout=0s", Instruction{}, ErrInvalidValue},
		{"timeout negative", "region=iad;timeout=-1s", Instruction{}, ErrInvalidValue},
		{"timeout bare number", "region=iad;timeout=5", Instruction{}, ErrInvalidValue},
		{"fallback prefer", "region=iad;fallback=prefer_self", Instruction{Regions: []string{"iad"}, Fallback: FallbackPreferSelf}, nil},
		{"fallback force", "region=iad;fallback=Force_Self", Instruction{Regions: []string{"iad"}, Fallback: FallbackForceSelf}, nil},
		{"fallback other", "region=iad;fallback=retry", Instruction{}, ErrInvalidValue},
		{"keys fold case", "Region=iad;APP=a", Instruction{Regions: []string{"iad"}, App: "a"}, nil},
		{"whitespace", " \tregion = iad ; app\t=\ta ", Instruction{Regions: []string{"iad"}, App: "a"}, nil},
		{"empty items skipped", ";region=iad;;app=a;", Instruction{Regions: []string{"iad"}, App: "a"}, nil},
		{"unknown keys reported", "region=iad;future=1;Later_Key=x", Instruction{Regions: []string{"iad"}, Unknown: []string{"future", "later_key"}}, nil},
		{"duplicate key", "region=iad;region=ord", Instruction{}, ErrDuplicateKey},
		{"duplicate key across case", "app=a;APP=a", Instruction{}, ErrDuplicateKey},
		{"duplicate unknown key", "app=a;x=1;x=2", Instruction{}, ErrDuplicateKey},
		{"empty value", "region=", Instruction{}, ErrEmptyValue},
		{"empty value unknown", "app=a;x= ", Instruction{}, ErrEmptyValue},
		{"no equals", "region", Instruction{}, ErrSyntax},
		{"empty key", "=iad", Instruction{}, ErrSyntax},
		{"bad key", "re gion=iad", Instruction{}, ErrSyntax},
		{"control byte", "region=iad\x01", Instruction{}, ErrSyntax},
		{"non-ascii", "region=iad;state=é", Instruction{}, ErrSyntax},
		{"too long", "app=a;x=" + strings.Repeat("x", MaxHeaderLen), Instruction{}, ErrTooLong},
		{"empty", "", Instruction{}, ErrNoTarget},
		{"state only", "state=abc", Instruction{}, ErrNoTarget},
		{"timeout only", "timeout=5s", Instruction{}, ErrNoTarget},
		{"instance and prefer", "instance=a;prefer_instance=b", Instruction{}, ErrConflict},
		{"instance and elsewhere", "instance=a;elsewhere=true", Instruction{}, ErrConflict},
		{"instance and region", "instance=a;region=iad", Instruction{}, ErrConflict},
		{"instance with app", "instance=a;app=b", Instruction{Instance: "a", App: "b"}, nil},
		{"prefer with region", "prefer_instance=a;region=iad", Instruction{PreferInstance: "a", Regions: []string{"iad"}}, nil},
		{"everything", "region=iad,ord;prefer_instance=m1;app=web;elsewhere=true;timeout=2s;fallback=prefer_self;state=s1",
			Instruction{Regions: []string{"iad", "ord"}, PreferInstance: "m1", App: "web", Elsewhere: true, Timeout: 2 * time.Second, Fallback: FallbackPreferSelf, State: "s1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHeader(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseHeader(%q) error = %v, want %v", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseHeader(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseHeader(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func regionList(n int) string {
	var r []string
	for i := range n {
		r = append(r, "r"+string(rune('a'+i)))
	}
	return strings.Join(r, ",")
}

// TestValidateCallerBuilt covers what only a caller, not a parser, can
// produce: the parsers never hand back these values.
func TestValidateCallerBuilt(t *testing.T) {
	tests := []struct {
		name string
		in   Instruction
		err  error
	}{
		{"ok", Instruction{App: "a"}, nil},
		{"repeat region", Instruction{Regions: []string{"iad", "iad"}}, ErrInvalidValue},
		{"too many regions", Instruction{Regions: strings.Split(regionList(17), ",")}, ErrTooManyRegion},
		{"negative timeout", Instruction{App: "a", Timeout: -time.Second}, ErrInvalidValue},
		{"huge timeout", Instruction{App: "a", Timeout: time.Hour}, ErrInvalidValue},
		{"unknown fallback", Instruction{App: "a", Fallback: 7}, ErrInvalidValue},
		{"state with semicolon", Instruction{App: "a", State: "a;b"}, ErrInvalidValue},
		{"unknown ignored", Instruction{App: "a", Unknown: []string{"?? not a key"}}, nil},
	}
	for _, tt := range tests {
		if err := tt.in.Validate(); !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("%s: Validate() = %v, want %v", tt.name, err, tt.err)
		}
	}
}

func TestString(t *testing.T) {
	in := Instruction{
		State: "s", Fallback: FallbackForceSelf, Timeout: 1500 * time.Millisecond, Elsewhere: true,
		App: "web", PreferInstance: "m1", Regions: []string{"ord", "iad"}, Unknown: []string{"x"},
	}
	want := "region=ord,iad;prefer_instance=m1;app=web;elsewhere=true;timeout=1.5s;fallback=force_self;state=s"
	if got := in.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got := (Instruction{Instance: "m2"}).String(); got != "instance=m2" {
		t.Fatalf("String() = %q", got)
	}
}

func TestFallbackString(t *testing.T) {
	for f, want := range map[Fallback]string{FallbackNone: "", FallbackPreferSelf: "prefer_self", FallbackForceSelf: "force_self", 9: "Fallback(9)"} {
		if got := f.String(); got != want {
			t.Errorf("Fallback(%d).String() = %q, want %q", f, got, want)
		}
	}
}

func TestCheckBudget(t *testing.T) {
	tests := []struct {
		done int
		body int64
		err  error
	}{
		{0, 0, nil},
		{MaxReplays - 1, MaxBufferedBody, nil},
		{MaxReplays, 0, ErrTooManyReplays},
		{0, MaxBufferedBody + 1, ErrBodyTooLarge},
		{MaxReplays, MaxBufferedBody + 1, ErrBodyTooLarge},
	}
	for _, tt := range tests {
		if err := CheckBudget(tt.done, tt.body); !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("CheckBudget(%d, %d) = %v, want %v", tt.done, tt.body, err, tt.err)
		}
	}
}
