package deploy_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// rule is one rule of the rules file.
type rule struct {
	Alert, Record string
	Line          int
	Expr, For     string
	Labels        map[string]string
	Annotations   map[string]string
}

func (r rule) name() string {
	if r.Alert != "" {
		return "alert " + r.Alert
	}
	return "record " + r.Record
}

// readRules reads the rules file. The module has no YAML library, so this
// reads the subset of YAML a rules file is written in (block mappings and
// sequences, plain, quoted and block scalars); promtool parses it for real
// in TestPromtoolCheckRules, which also checks that both found as many
// rules.
func readRules(t *testing.T) []rule {
	t.Helper()
	rules, err := parseRules(readFile(t, rulesFile))
	if err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rules
}

func indentOf(line string) int { return len(line) - len(strings.TrimLeft(line, " ")) }

func parseRules(src string) ([]rule, error) {
	lines := strings.Split(src, "\n")
	var rules []rule
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		kind := ""
		switch {
		case strings.HasPrefix(trimmed, "- alert:"):
			kind = "alert"
		case strings.HasPrefix(trimmed, "- record:"):
			kind = "record"
		default:
			continue
		}
		dash := indentOf(line)
		keyIndent := dash + 2
		r := rule{Line: i + 1, Labels: map[string]string{}, Annotations: map[string]string{}}
		name, err := scalar(strings.TrimPrefix(trimmed, "- "+kind+":"))
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		if kind == "alert" {
			r.Alert = name
		} else {
			r.Record = name
		}
		// The rule's keys, until a line indented no deeper than its dash.
		j := i + 1
		for ; j < len(lines); j++ {
			l := lines[j]
			if strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			ind := indentOf(l)
			if ind <= dash {
				break
			}
			if ind != keyIndent {
				return nil, fmt.Errorf("line %d: unexpected indentation", j+1)
			}
			key, val, ok := strings.Cut(strings.TrimSpace(l), ":")
			if !ok {
				return nil, fmt.Errorf("line %d: not a key: value", j+1)
			}
			val = strings.TrimSpace(val)
			switch key {
			case "expr":
				if val == "|" || val == ">" || val == "|-" || val == ">-" {
					var body []string
					k := j + 1
					for ; k < len(lines); k++ {
						if strings.TrimSpace(lines[k]) != "" && indentOf(lines[k]) <= keyIndent {
							break
						}
						body = append(body, strings.TrimSpace(lines[k]))
					}
					sep := "\n"
					if val[0] == '>' {
						sep = " "
					}
					r.Expr = strings.TrimSpace(strings.Join(body, sep))
					j = k - 1
				} else {
					if r.Expr, err = scalar(val); err != nil {
						return nil, fmt.Errorf("line %d: %v", j+1, err)
					}
				}
			case "for", "keep_firing_for":
				if r.For, err = scalar(val); err != nil {
					return nil, fmt.Errorf("line %d: %v", j+1, err)
				}
			case "labels", "annotations":
				if val != "" {
					return nil, fmt.Errorf("line %d: %s must be a block mapping", j+1, key)
				}
				m := r.Labels
				if key == "annotations" {
					m = r.Annotations
				}
				k := j + 1
				for ; k < len(lines); k++ {
					l := lines[k]
					if strings.TrimSpace(l) == "" {
						continue
					}
					if indentOf(l) <= keyIndent {
						break
					}
					lk, lv, ok := strings.Cut(strings.TrimSpace(l), ":")
					if !ok {
						return nil, fmt.Errorf("line %d: not a key: value", k+1)
					}
					v, err := scalar(strings.TrimSpace(lv))
					if err != nil {
						return nil, fmt.Errorf("line %d: %v", k+1, err)
					}
					m[lk] = v
				}
				j = k - 1
			default:
				return nil, fmt.Errorf("line %d: key %q this reader does not know", j+1, key)
			}
		}
		rules = append(rules, r)
		i = j - 1
	}
	return rules, nil
}

// scalar reads a one-line YAML scalar: plain, 'single' or "double" quoted.
func scalar(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, `"`):
		return strconv.Unquote(s)
	case strings.HasPrefix(s, "'"):
		if len(s) < 2 || !strings.HasSuffix(s, "'") {
			return "", fmt.Errorf("unterminated string %s", s)
		}
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	case strings.ContainsAny(s, "|>") && len(s) <= 2:
		return "", fmt.Errorf("block scalar where a one-line value is expected")
	}
	if k := strings.Index(s, " #"); k >= 0 {
		s = strings.TrimSpace(s[:k])
	}
	return s, nil
}

// readRuleTestCases counts, per alert, the unit test cases of the rules'
// test file where it fires (exp_alerts with entries) and where it must not
// (exp_alerts: []).
func readRuleTestCases(t *testing.T) (fires, silent map[string]int) {
	t.Helper()
	fires, silent = map[string]int{}, map[string]int{}
	lines := strings.Split(readFile(t, rulesTestFile), "\n")
	current := ""
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if v, ok := strings.CutPrefix(trimmed, "alertname:"); ok {
			name, err := scalar(v)
			if err != nil {
				t.Fatalf("%s:%d: %v", rulesTestFile, i+1, err)
			}
			current = name
			continue
		}
		if v, ok := strings.CutPrefix(trimmed, "exp_alerts:"); ok {
			if current == "" {
				t.Fatalf("%s:%d: exp_alerts without an alertname before it", rulesTestFile, i+1)
			}
			switch strings.TrimSpace(v) {
			case "[]":
				silent[current]++
			case "":
				// Entries must follow, as a sequence.
				if i+1 >= len(lines) || !strings.HasPrefix(strings.TrimSpace(lines[i+1]), "- ") {
					t.Fatalf("%s:%d: exp_alerts: neither [] nor a list", rulesTestFile, i+1)
				}
				fires[current]++
			default:
				t.Fatalf("%s:%d: exp_alerts: write [] or a block list", rulesTestFile, i+1)
			}
			current = ""
		}
	}
	return fires, silent
}
