package config

import (
	"strconv"
	"strings"
)

// positions maps indexed key paths ("apps[1].services[0].ports[0].port")
// to the line they are written on. The TOML decoder keeps positions only
// per un-indexed key, which cannot tell the second app's port from the
// first one's, so this small scanner follows table headers itself. It is
// only used to point at lines in error messages: anything it does not
// understand falls back to the nearest enclosing table.
type positions struct {
	lines map[string]int
	// byPlain lists the indexed paths of each un-indexed path, in file
	// order, to place the decoder's undecoded keys.
	byPlain map[string][]string
}

func scanPositions(src string) *positions {
	p := &positions{lines: map[string]int{}, byPlain: map[string][]string{}}
	arrays := map[string]int{} // indexed path of an array of tables -> count
	table := ""
	inMultiline := ""
	for i, raw := range strings.Split(src, "\n") {
		lineNo := i + 1
		line := strings.TrimSpace(raw)
		if inMultiline != "" {
			if strings.Count(line, inMultiline)%2 == 1 {
				inMultiline = ""
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "[[") {
			end := strings.Index(line, "]]")
			if end < 0 {
				continue
			}
			table = resolveHeader(arrays, splitKey(line[2:end]), true)
			p.add(table, lineNo)
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				continue
			}
			table = resolveHeader(arrays, splitKey(line[1:end]), false)
			p.add(table, lineNo)
			continue
		}
		eq := keyEnd(line)
		if eq < 0 {
			continue
		}
		key := strings.Join(splitKey(line[:eq]), ".")
		p.add(join(table, key), lineNo)
		rest := line[eq+1:]
		for _, q := range []string{`"""`, `'''`} {
			if strings.Count(rest, q)%2 == 1 {
				inMultiline = q
			}
		}
	}
	return p
}

func (p *positions) add(path string, line int) {
	if _, ok := p.lines[path]; !ok {
		p.byPlain[plain(path)] = append(p.byPlain[plain(path)], path)
	}
	p.lines[path] = line
}

// line finds the line of path or of its nearest written ancestor; 0 if
// nothing matches.
func (p *positions) line(path string) int {
	for path != "" {
		if l, ok := p.lines[path]; ok {
			return l
		}
		cut := strings.LastIndexAny(path, ".[")
		if cut < 0 {
			break
		}
		path = path[:cut]
	}
	return 0
}

func resolveHeader(arrays map[string]int, segs []string, isArray bool) string {
	prefix := ""
	for i, seg := range segs {
		cand := join(prefix, seg)
		last := i == len(segs)-1
		if last && isArray {
			n := arrays[cand]
			arrays[cand] = n + 1
			return cand + "[" + strconv.Itoa(n) + "]"
		}
		if n, ok := arrays[cand]; ok && n > 0 {
			cand += "[" + strconv.Itoa(n-1) + "]"
		}
		prefix = cand
	}
	return prefix
}

// keyEnd returns the index of the '=' that ends the key of a key/value
// line, skipping quoted key parts; -1 if the line has none.
func keyEnd(line string) int {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return i
		case c == ',' || c == '[' || c == '{' || c == ']' || c == '}':
			return -1
		}
	}
	return -1
}

func splitKey(k string) []string {
	var out []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		case c == ' ' || c == '\t':
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, strings.TrimSpace(cur.String()))
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// plain drops the array indexes of an indexed path.
func plain(path string) string {
	var b strings.Builder
	skip := false
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c == '[':
			skip = true
		case c == ']':
			skip = false
		case !skip:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// keyAt is the indexed path of the key set on line (the deepest path
// that starts there), or "".
func (p *positions) keyAt(line int) string {
	best := ""
	for path, l := range p.lines {
		if l == line && len(path) > len(best) {
			best = path
		}
	}
	return best
}
