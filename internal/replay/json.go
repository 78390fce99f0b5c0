package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// ParseJSON reads the body of an application/vnd.fly.replay+json answer:
//
//	{"region": "iad,ord" | ["iad","ord"], "instance": "ID",
//	 "prefer_instance": "ID", "app": "NAME", "state": "opaque",
//	 "elsewhere": true, "timeout": "5s", "fallback": "prefer_self"}
//
// Every member is optional; null means absent. Each value is turned into
// its header text and goes through the same setter and Validate as the
// header form, so the two forms cannot drift apart.
func ParseJSON(b []byte) (Instruction, error) {
	if len(b) > MaxJSONLen {
		return Instruction{}, fmt.Errorf("%w: body is %d bytes, at most %d", ErrTooLong, len(b), MaxJSONLen)
	}
	// encoding/json silently keeps the last of two equal keys and folds
	// case when matching struct fields; reading tokens instead lets
	// duplicates be refused just as in the header form.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := expectDelim(dec, '{'); err != nil {
		return Instruction{}, err
	}
	var in Instruction
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Instruction{}, jsonErr(err)
		}
		key := strings.ToLower(tok.(string)) // inside an object, a token here is always a key
		if !isKey(key) {
			return Instruction{}, fmt.Errorf("%w: key %q", ErrSyntax, clip(key))
		}
		if seen[key] {
			return Instruction{}, fmt.Errorf("%w: %s", ErrDuplicateKey, key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return Instruction{}, jsonErr(err)
		}
		text, present, err := jsonText(key, raw)
		if err != nil {
			return Instruction{}, err
		}
		if !present {
			continue
		}
		if err := in.set(key, text); err != nil {
			return Instruction{}, err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return Instruction{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return Instruction{}, fmt.Errorf("%w: data after the object", ErrSyntax)
	}
	if err := in.Validate(); err != nil {
		return Instruction{}, err
	}
	return in, nil
}

// jsonText converts one member to the text the header form would carry.
// present is false for null. Unknown keys are reported, whatever their
// value, as long as it is well-formed JSON.
func jsonText(key string, raw json.RawMessage) (text string, present bool, err error) {
	if bytes.Equal(raw, []byte("null")) {
		return "", false, nil
	}
	switch key {
	case "elsewhere":
		var v bool
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", false, fmt.Errorf("%w: elsewhere: want true or false", ErrInvalidValue)
		}
		return fmt.Sprint(v), true, nil
	case "region":
		var list []string
		if json.Unmarshal(raw, &list) == nil {
			if len(list) == 0 {
				return "", false, fmt.Errorf("%w: region", ErrEmptyValue)
			}
			if len(list) > MaxRegions {
				return "", false, fmt.Errorf("%w: at most %d", ErrTooManyRegion, MaxRegions)
			}
			for _, r := range list {
				// A comma inside one array item would split it into two
				// regions once joined; say so rather than guess.
				if r == "" || strings.ContainsRune(r, ',') {
					return "", false, fmt.Errorf("%w: region item %q", ErrInvalidValue, clip(r))
				}
			}
			return strings.Join(list, ","), true, nil
		}
		fallthrough
	case "instance", "prefer_instance", "app", "state", "timeout", "fallback":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false, fmt.Errorf("%w: %s: want a string", ErrInvalidValue, key)
		}
		// JSON strings are exact: blanks around a value are not trimmed
		// as in the header form, so the validators refuse them. Region
		// items are the exception, trimmed in both forms by parseRegions.
		if s == "" {
			return "", false, fmt.Errorf("%w: %s", ErrEmptyValue, key)
		}
		return s, true, nil
	}
	return "unknown", true, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return jsonErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("%w: want %q, got %v", ErrSyntax, want, tok)
	}
	return nil
}

func jsonErr(err error) error {
	return fmt.Errorf("%w: %v", ErrSyntax, err)
}
