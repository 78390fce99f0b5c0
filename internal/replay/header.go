package replay

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// pair is one key=value item of a header, key already lowercased.
type pair struct{ key, val string }

// splitPairs cuts a header value into pairs. Both fly-replay and
// fly-replay-src share this shape, so they share this one lexer: one place
// decides what whitespace, empty items and repeated keys mean.
func splitPairs(v string) ([]pair, error) {
	if len(v) > MaxHeaderLen {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLong, len(v), MaxHeaderLen)
	}
	for n := 0; n < len(v); n++ {
		// net/http already refuses CR, LF and NUL in field values, but
		// this package is also fed by tests, JSON and fuzzers; refusing
		// every control byte here keeps them out of logs and of state.
		if c := v[n]; (c < ' ' && c != '\t') || c > '~' {
			return nil, fmt.Errorf("%w: byte 0x%02x at offset %d", ErrSyntax, c, n)
		}
	}
	var pairs []pair
	seen := map[string]bool{}
	for item := range strings.SplitSeq(v, ";") {
		item = trimOWS(item)
		if item == "" {
			// Tolerated so "a=b;" and "a=b; ;c=d", which hand-written
			// headers produce, are not fatal.
			continue
		}
		k, val, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q is not key=value", ErrSyntax, clip(item))
		}
		k, val = strings.ToLower(trimOWS(k)), trimOWS(val)
		if !isKey(k) {
			return nil, fmt.Errorf("%w: key %q", ErrSyntax, clip(k))
		}
		if seen[k] {
			// Which of two values wins is exactly the kind of thing two
			// proxies (or a proxy and an app) would disagree on.
			return nil, fmt.Errorf("%w: %s", ErrDuplicateKey, k)
		}
		seen[k] = true
		if val == "" {
			return nil, fmt.Errorf("%w: %s", ErrEmptyValue, k)
		}
		pairs = append(pairs, pair{k, val})
	}
	return pairs, nil
}

// ParseHeader reads the fly-replay response header value.
func ParseHeader(v string) (Instruction, error) {
	pairs, err := splitPairs(v)
	if err != nil {
		return Instruction{}, err
	}
	var in Instruction
	for _, p := range pairs {
		if err := in.set(p.key, p.val); err != nil {
			return Instruction{}, err
		}
	}
	if err := in.Validate(); err != nil {
		return Instruction{}, err
	}
	return in, nil
}

// set applies one textual field. The JSON parser turns its values into the
// same text first so that both forms accept exactly the same values.
func (in *Instruction) set(k, v string) error {
	switch k {
	case "region":
		regions, err := parseRegions(v)
		if err != nil {
			return err
		}
		in.Regions = regions
	case "instance":
		in.Instance = v
	case "prefer_instance":
		in.PreferInstance = v
	case "app":
		in.App = v
	case "state":
		in.State = v
	case "elsewhere":
		switch strings.ToLower(v) {
		case "true":
			in.Elsewhere = true
		case "false":
			in.Elsewhere = false
		default:
			return fmt.Errorf("%w: elsewhere %q: want true or false", ErrInvalidValue, clip(v))
		}
	case "timeout":
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%w: timeout %q: want a positive duration such as 5s or 500ms", ErrInvalidValue, clip(v))
		}
		in.Timeout = d
	case "fallback":
		f, err := parseFallback(v)
		if err != nil {
			return err
		}
		in.Fallback = f
	default:
		in.Unknown = append(in.Unknown, k)
	}
	return nil
}

// parseRegions splits a preference list. Repeats are dropped, keeping the
// first, because "iad,ord,iad" has an obvious meaning and refusing it would
// turn a harmless slip into a failed request. The count limit applies to
// what was written, before dropping, so the work stays bounded.
func parseRegions(v string) ([]string, error) {
	var out []string
	n := 0
	for r := range strings.SplitSeq(v, ",") {
		if n++; n > MaxRegions {
			return nil, fmt.Errorf("%w: at most %d", ErrTooManyRegion, MaxRegions)
		}
		r = trimOWS(r)
		if r == "" {
			return nil, fmt.Errorf("%w: region list %q has an empty item", ErrEmptyValue, clip(v))
		}
		if err := checkRegion(r); err != nil {
			return nil, err
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

func trimOWS(s string) string { return strings.Trim(s, " \t") }

// isKey accepts the key alphabet after lowercasing.
func isKey(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for n := 0; n < len(k); n++ {
		c := k[n]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkRegion(r string) error { return checkName("region", r, maxRegionLen) }

// checkName accepts [a-z0-9-]{1,max}. Uppercase is refused rather than
// folded: region codes and app names are lowercase everywhere else in the
// platform, so an uppercase one is more likely a wrong field than a typo.
func checkName(field, s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("%w: %s %q: want 1 to %d of [a-z0-9-]", ErrInvalidValue, field, clip(s), max)
	}
	for n := 0; n < len(s); n++ {
		c := s[n]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: %s %q: want 1 to %d of [a-z0-9-]", ErrInvalidValue, field, clip(s), max)
		}
	}
	return nil
}

// checkInstance accepts [a-zA-Z0-9_-]{1,64}; ids are case-sensitive.
func checkInstance(field, s string) error {
	if s == "" || len(s) > maxInstanceLen {
		return fmt.Errorf("%w: %s %q: want 1 to %d of [a-zA-Z0-9_-]", ErrInvalidValue, field, clip(s), maxInstanceLen)
	}
	for n := 0; n < len(s); n++ {
		c := s[n]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %s %q: want 1 to %d of [a-zA-Z0-9_-]", ErrInvalidValue, field, clip(s), maxInstanceLen)
		}
	}
	return nil
}

// checkState accepts 1 KiB of visible ASCII except ';'. The state is
// copied into fly-replay-src, where ';' would end it early and spaces at
// either end would be trimmed away, so neither could survive the trip
// back to the app; refusing them is better than corrupting them.
func checkState(s string) error {
	if len(s) > MaxStateLen {
		return fmt.Errorf("%w: state is %d bytes, at most %d", ErrTooLong, len(s), MaxStateLen)
	}
	for n := 0; n < len(s); n++ {
		if c := s[n]; c <= ' ' || c > '~' || c == ';' {
			return fmt.Errorf("%w: state byte 0x%02x at offset %d: want visible ASCII except ';'", ErrInvalidValue, c, n)
		}
	}
	return nil
}

// clip shortens what an error quotes: errors end up in logs, and a 4 KiB
// header quoted whole would drown the line that matters.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
