package replay

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseJSON(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Instruction
		err  error
	}{
		{"region string", `{"region":"iad,ord"}`, Instruction{Regions: []string{"iad", "ord"}}, nil},
		{"region array", `{"region":["iad","ord","iad"]}`, Instruction{Regions: []string{"iad", "ord"}}, nil},
		{"region empty array", `{"region":[]}`, Instruction{}, ErrEmptyValue},
		{"region empty string", `{"region":""}`, Instruction{}, ErrEmptyValue},
		{"region item with comma", `{"region":["iad,ord"]}`, Instruction{}, ErrInvalidValue},
		{"region empty item", `{"region":["iad",""]}`, Instruction{}, ErrInvalidValue},
		{"region 17", `{"region":"` + regionList(17) + `"}`, Instruction{}, ErrTooManyRegion},
		{"region 17 array", `{"region":["` + strings.ReplaceAll(regionList(17), ",", `","`) + `"]}`, Instruction{}, ErrTooManyRegion},
		{"region number", `{"region":5}`, Instruction{}, ErrInvalidValue},
		{"all fields", `{"region":["iad"],"prefer_instance":"m1","app":"web","state":"s","elsewhere":true,"timeout":"5s","fallback":"prefer_self"}`,
			Instruction{Regions: []string{"iad"}, PreferInstance: "m1", App: "web", State: "s", Elsewhere: true, Timeout: 5 * time.Second, Fallback: FallbackPreferSelf}, nil},
		{"instance", ` { "instance" : "m1" } `, Instruction{Instance: "m1"}, nil},
		{"keys fold case", `{"App":"web"}`, Instruction{App: "web"}, nil},
		{"null is absent", `{"app":"web","instance":null,"state":null}`, Instruction{App: "web"}, nil},
		{"elsewhere false", `{"app":"web","elsewhere":false}`, Instruction{App: "web"}, nil},
		{"elsewhere string", `{"elsewhere":"true"}`, Instruction{}, ErrInvalidValue},
		{"timeout number", `{"app":"web","timeout":5}`, Instruction{}, ErrInvalidValue},
		{"timeout bad", `{"app":"web","timeout":"soon"}`, Instruction{}, ErrInvalidValue},
		{"fallback bad", `{"app":"web","fallback":"self"}`, Instruction{}, ErrInvalidValue},
		{"blank not trimmed", `{"app":" web"}`, Instruction{}, ErrInvalidValue},
		{"empty string", `{"app":""}`, Instruction{}, ErrEmptyValue},
		{"unknown reported", `{"app":"web","future":{"a":[1,2]},"Other":null}`, Instruction{App: "web", Unknown: []string{"future"}}, nil},
		{"bad key", `{"app":"web","a b":1}`, Instruction{}, ErrSyntax},
		{"duplicate", `{"app":"web","app":"api"}`, Instruction{}, ErrDuplicateKey},
		{"duplicate across case", `{"app":"web","APP":"api"}`, Instruction{}, ErrDuplicateKey},
		{"conflict", `{"instance":"a","prefer_instance":"b"}`, Instruction{}, ErrConflict},
		{"no target", `{}`, Instruction{}, ErrNoTarget},
		{"state semicolon", `{"app":"web","state":"a;b"}`, Instruction{}, ErrInvalidValue},
		{"state unicode", `{"app":"web","state":"\u00e9"}`, Instruction{}, ErrInvalidValue},
		{"not an object", `["app"]`, Instruction{}, ErrSyntax},
		{"empty body", ``, Instruction{}, ErrSyntax},
		{"truncated", `{"app":"web"`, Instruction{}, ErrSyntax},
		{"trailing data", `{"app":"web"} {}`, Instruction{}, ErrSyntax},
		{"trailing garbage", `{"app":"web"}x`, Instruction{}, ErrSyntax},
		{"too long", `{"app":"web","pad":"` + strings.Repeat("x", MaxJSONLen) + `"}`, Instruction{}, ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseJSON([]byte(tt.in))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseJSON(%s) error = %v, want %v", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseJSON(%s): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseJSON(%s) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

// TestJSONMatchesHeader: the two forms of one instruction must agree, or
// an app switching form would change where its requests go.
func TestJSONMatchesHeader(t *testing.T) {
	h, err := ParseHeader("region=iad,ord;app=web;timeout=1s;fallback=force_self;state=x")
	if err != nil {
		t.Fatal(err)
	}
	j, err := ParseJSON([]byte(`{"region":["iad","ord"],"app":"web","timeout":"1s","fallback":"force_self","state":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(h, j) {
		t.Fatalf("header %#v != json %#v", h, j)
	}
}
