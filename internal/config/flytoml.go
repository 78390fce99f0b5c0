package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// flyUnused lists the fly.toml keys flyctl writes (current and older
// forms) that edgeproxy accepts without acting on them, with the reason
// validate gives, once per key. A key is matched by its path without
// array indices; an entry also covers every key below it.
var flyUnused = []struct{ key, why string }{
	{"build", "it builds the image, and edgeproxy runs machines it is given"},
	{"deploy", "it shapes deploys, and edgeproxy deploys nothing"},
	{"env", "it sets the machines' environment, which their driver owns"},
	{"processes", "it names the commands of process groups, which machines' drivers run"},
	{"vm", "it sizes machines, which their driver creates"},
	{"mounts", "it attaches volumes, which machines' drivers own"},
	{"statics", "it serves files from the image, and edgeproxy reaches only machines"},
	{"metrics", "it tells the platform's Prometheus where to scrape machines"},
	{"experimental", "experimental platform settings have no edgeproxy counterpart"},
	{"restart", "it is the machines' restart policy, which their driver applies"},
	{"files", "it writes files into machines, which their driver creates"},
	{"console_command", "it is what fly ssh console runs"},
	{"swap_size_mb", "it sizes machines' swap, which their driver owns"},
	{"host_dedication_id", "it places machines on dedicated hosts"},
	{"kernel_args", "it is passed to machines' kernels"},
	{"services.script_checks", "script checks run inside machines, which edgeproxy cannot enter"},
	{"services.machine_checks", "machine checks start a container before a deploy, and edgeproxy deploys nothing"},
	{"http_service.machine_checks", "machine checks start a container before a deploy, and edgeproxy deploys nothing"},
	{"services.tcp_checks.restart_limit", "restarting machines on failed checks is their driver's job; edgeproxy takes them out of routing"},
	{"services.http_checks.restart_limit", "restarting machines on failed checks is their driver's job; edgeproxy takes them out of routing"},
	{"checks.*.restart_limit", "restarting machines on failed checks is their driver's job; edgeproxy takes them out of routing"},
	{"services.tcp_checks.type", "the table already says which kind of check it is"},
	{"services.http_checks.type", "the table already says which kind of check it is"},
	{"http_service.checks.type", "the table already says which kind of check it is"},
}

// flyUnusedReason is the reason a fly.toml key is accepted without
// effect, and the entry that matched; ok is false for keys flyctl never
// wrote (typos, keys of another tool).
func flyUnusedReason(plain string) (entry, why string, ok bool) {
	plain = flyPattern(plain)
	for _, u := range flyUnused {
		if plain == u.key || strings.HasPrefix(plain, u.key+".") {
			return u.key, u.why, true
		}
	}
	return "", "", false
}

// suggest returns the known key closest to key among candidates, if it
// is close enough to be a likely typo.
func suggest(key string, candidates []string) (string, bool) {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		if d := editDistance(key, c); d < bestD {
			best, bestD = c, d
		}
	}
	// A typo changes a few letters, not half the word.
	limit := 2
	if len(key) > 10 {
		limit = 3
	}
	return best, best != "" && bestD > 0 && bestD <= limit
}

// editDistance is the Damerau–Levenshtein distance (with adjacent
// transpositions, the commonest typo) between a and b.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// knownKeys are the keys a table at parent (a plain path, "" for the
// top) may hold: those the schema decodes and, in a fly.toml, those
// accepted without effect.
func knownKeys(parent string, schema map[string][]string, fly bool) []string {
	keys := slices.Clone(schema[parent])
	if fly {
		for _, u := range flyUnused {
			p, name := "", u.key
			if i := strings.LastIndexByte(u.key, '.'); i >= 0 {
				p, name = u.key[:i], u.key[i+1:]
			}
			if p == parent {
				keys = append(keys, name)
			}
		}
	}
	return keys
}

// unknownKeyMsg says a key is unknown, and which known key it may be a
// typo of.
func unknownKeyMsg(plain string, schema map[string][]string, fly bool) string {
	if fly {
		plain = flyPattern(plain)
	}
	parent, name := "", plain
	if i := strings.LastIndexByte(plain, '.'); i >= 0 {
		parent, name = plain[:i], plain[i+1:]
	}
	if s, ok := suggest(name, knownKeys(parent, schema, fly)); ok {
		return fmt.Sprintf("unknown key; did you mean %q?", s)
	}
	return "unknown key"
}

// schemaOf lists, for each table of t (by plain path, "" for the top),
// the keys it decodes, from the toml tags.
func schemaOf(t reflect.Type) map[string][]string {
	out := map[string][]string{}
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() == reflect.Map && t.Elem().Kind() == reflect.Struct {
			walk(t.Elem(), path+".*") // tables named by the user: [checks.NAME]
			return
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Anonymous {
				walk(f.Type, path)
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "" || name == "-" {
				continue
			}
			out[path] = append(out[path], name)
			child := name
			if path != "" {
				child = path + "." + name
			}
			walk(f.Type, child)
		}
	}
	walk(t, "")
	return out
}

var (
	configSchema = schemaOf(reflect.TypeOf(Config{}))
	flySchema    = schemaOf(reflect.TypeOf(flyToml{}))
)

// flyPattern replaces the user's name in a [checks.NAME] key with "*".
func flyPattern(plain string) string {
	if rest, ok := strings.CutPrefix(plain, "checks."); ok {
		if _, after, ok := strings.Cut(rest, "."); ok {
			return "checks.*." + after
		}
		return "checks.*"
	}
	return plain
}

// attachChecks runs each top-level [checks.NAME] against the service
// whose internal_port is its port, as the platform does.
func (c *checker) attachChecks(src *source, ft *flyToml) {
	names := make([]string, 0, len(ft.Checks))
	for n := range ft.Checks {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		chk := ft.Checks[name]
		key := "checks." + name
		typ := strings.ToLower(chk.Type)
		if typ != "tcp" && typ != "http" {
			c.at(src, key+".type", "%q is not a check type: tcp or http", chk.Type)
			continue
		}
		if chk.Port == 0 {
			c.at(src, key+".port", "required: the internal port of the service to check")
			continue
		}
		found := false
		for i := range ft.Services {
			s := &ft.Services[i]
			if s.InternalPort != chk.Port {
				continue
			}
			found = true
			if typ == "tcp" {
				s.TCPChecks = append(s.TCPChecks, chk.TCPCheck)
			} else {
				s.HTTPChecks = append(s.HTTPChecks, chk.HTTPCheck)
			}
		}
		if h := ft.HTTPService; h != nil && h.InternalPort == chk.Port {
			found = true
			if typ == "tcp" {
				h.TCPChecks = append(h.TCPChecks, chk.TCPCheck)
			} else {
				h.Checks = append(h.Checks, chk.HTTPCheck)
			}
		}
		if !found {
			c.note(src, key+".port", "port %d is no service's internal_port: the check is not run", chk.Port)
		}
	}
}
