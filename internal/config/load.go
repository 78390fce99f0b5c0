package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Problem is one thing wrong (or worth noting) in a config file.
type Problem struct {
	File string
	Line int // 0 when unknown
	Key  string
	Msg  string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	if p.Key != "" {
		b.WriteString(": " + p.Key)
	}
	b.WriteString(": " + p.Msg)
	return b.String()
}

// Error is returned by Load when the config has problems; it lists all of
// them, not just the first, so one validate run shows everything to fix.
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("%d problem(s) in config:\n  %s", len(e.Problems), strings.Join(lines, "\n  "))
}

// source is one file taking part in the config, with its line index.
type source struct {
	file string
	pos  *positions
	// prefix maps keys of this file to keys of the config: a fly.toml's
	// "services[0]" is the config's "apps[2].services[0]".
	prefix string
}

// checker accumulates problems while loading and validating.
type checker struct {
	problems []Problem
	notices  []Problem
}

func (c *checker) at(s *source, key, format string, args ...any) {
	c.problems = append(c.problems, s.problem(key, fmt.Sprintf(format, args...)))
}

func (c *checker) note(s *source, key, format string, args ...any) {
	c.notices = append(c.notices, s.problem(key, fmt.Sprintf(format, args...)))
}

func (s *source) problem(key, msg string) Problem {
	if s.prefix != "" {
		// Keys of an app read from fly.toml are shown as that file spells them.
		key = strings.TrimPrefix(strings.TrimPrefix(key, s.prefix), ".")
	}
	return Problem{File: s.file, Line: s.pos.line(key), Key: key, Msg: msg}
}

// Load reads, defaults and validates the config file at path. On success
// it returns the config and any notices (accepted keys that have no effect
// yet, ignored fly.toml sections); on failure an *Error listing every
// problem found.
func Load(path string) (*Config, []Problem, error) {
	c := &checker{}
	cfg, srcs := c.decode(path)
	// Unknown keys do not stop validation: one run shows every problem.
	if cfg != nil {
		applyDefaults(cfg)
		c.validate(cfg, srcs)
	}
	if len(c.problems) > 0 {
		return nil, c.notices, &Error{Problems: c.problems}
	}
	return cfg, c.notices, nil
}

func (c *checker) decode(path string) (*Config, map[int]*source) {
	main := &source{file: path, pos: &positions{lines: map[string]int{}}}
	raw, err := os.ReadFile(path)
	if err != nil {
		c.problems = append(c.problems, Problem{File: path, Msg: fmt.Sprintf("cannot read config: %v", err)})
		return nil, nil
	}
	main.pos = scanPositions(string(raw))
	var cfg *Config
	md, ok := c.decodeAll(path, string(raw), main.pos, func() any {
		cfg = &Config{File: path, pos: main.pos}
		return cfg
	})
	if !ok {
		return nil, nil
	}
	for _, k := range md.Undecoded() {
		c.unknownKey(main, k.String(), unknownKeyMsg(k.String(), configSchema, false))
	}
	// srcs maps app index to the source its services came from.
	srcs := map[int]*source{}
	for i := range cfg.Apps {
		srcs[i] = main
		app := &cfg.Apps[i]
		if app.FlyToml == "" {
			continue
		}
		key := fmt.Sprintf("apps[%d].fly_toml", i)
		if len(app.Services) > 0 || app.HTTPService != nil {
			c.at(main, key, "an app reads its services either from fly_toml or from this file, not both")
			continue
		}
		if s := c.readFlyToml(main, key, cfg.resolve(app.FlyToml), app, fmt.Sprintf("apps[%d]", i)); s != nil {
			srcs[i] = s
		} else {
			// Already reported; do not also complain that it has no services.
			app.flyTomlFailed = true
		}
	}
	srcs[-1] = main
	return cfg, srcs
}

// flyToml is the part of a real fly.toml edgeproxy reads.
type flyToml struct {
	App           string       `toml:"app"`
	PrimaryRegion string       `toml:"primary_region"`
	KillSignal    string       `toml:"kill_signal"`
	KillTimeout   Duration     `toml:"kill_timeout"`
	Services      []Service    `toml:"services"`
	HTTPService   *HTTPService `toml:"http_service"`
	// Checks are the top-level [checks.NAME] tables: each runs against
	// the service whose internal_port is its port.
	Checks map[string]flyCheck `toml:"checks"`
}

// flyCheck is one top-level [checks.NAME] of a fly.toml.
type flyCheck struct {
	HTTPCheck
	Type string `toml:"type"`
	Port int    `toml:"port"`
}

func (c *checker) readFlyToml(main *source, key, path string, app *App, prefix string) *source {
	raw, err := os.ReadFile(path)
	if err != nil {
		c.at(main, key, "cannot read fly.toml: %v", err)
		return nil
	}
	src := &source{file: path, pos: scanPositions(string(raw)), prefix: prefix}
	var ft flyToml
	md, ok := c.decodeAll(path, string(raw), src.pos, func() any {
		ft = flyToml{}
		return &ft
	})
	if !ok {
		return nil
	}
	// Keys flyctl writes that edgeproxy does not act on are noted once
	// each, with why; anything else is a typo or another tool's key.
	noted := map[string]bool{}
	for _, k := range md.Undecoded() {
		plain := k.String()
		if entry, why, ok := flyUnusedReason(plain); ok {
			if !noted[entry] {
				noted[entry] = true
				at := entry
				if paths := src.pos.byPlain[entry]; len(paths) > 0 {
					at = paths[0] // with its index: vm[0], for the line
				}
				c.note(src, at, "accepted, not used by edgeproxy: %s", why)
			}
			continue
		}
		c.unknownKey(src, plain, unknownKeyMsg(plain, flySchema, true))
	}
	if app.Name == "" {
		app.Name = ft.App
	} else if ft.App != "" && ft.App != app.Name {
		c.note(src, "app", "app name %q in fly.toml differs from the config's %q; using %q", ft.App, app.Name, app.Name)
	}
	c.attachChecks(src, &ft)
	app.Services = ft.Services
	app.HTTPService = ft.HTTPService
	// The config file's own values win: it is where an operator adapts
	// an app to this edge.
	if app.PrimaryRegion == "" {
		app.PrimaryRegion = ft.PrimaryRegion
	}
	if app.KillSignal == "" {
		app.KillSignal = ft.KillSignal
	}
	if app.KillTimeout == 0 {
		app.KillTimeout = ft.KillTimeout
	}
	app.fromFlyToml = path
	return src
}

func (c *checker) unknownKey(s *source, plainKey, msg string) {
	paths := s.pos.byPlain[plainKey]
	if len(paths) == 0 {
		c.at(s, plainKey, "%s", msg)
		return
	}
	for _, p := range paths {
		c.at(s, p, "%s", msg)
	}
}

// decodeAll decodes raw into the value fresh returns. A value of the
// wrong type does not stop the check at the first one: its line is
// reported and blanked (keeping the line numbers), and the file decoded
// again, so every such problem of the file is listed at once. ok is
// false when anything was wrong.
func (c *checker) decodeAll(file, raw string, pos *positions, fresh func() any) (toml.MetaData, bool) {
	// Syntax first: a file that does not parse is reported as it is.
	if _, err := toml.Decode(raw, &map[string]any{}); err != nil {
		c.problems = append(c.problems, decodeProblem(file, err))
		return toml.MetaData{}, false
	}
	lines := strings.Split(raw, "\n")
	reported := 0
	for range 100 {
		md, err := toml.Decode(strings.Join(lines, "\n"), fresh())
		if err == nil {
			return md, reported == 0
		}
		p := decodeProblem(file, err)
		if p.Line < 1 || p.Line > len(lines) || lines[p.Line-1] == "" {
			if reported == 0 {
				c.problems = append(c.problems, p)
			}
			// Blanking a line broke the file (a value over several
			// lines): what was found so far is reported.
			return md, false
		}
		if k := pos.keyAt(p.Line); k != "" {
			p.Key = k
		}
		p.Msg = plainTypeError(p.Msg)
		c.problems = append(c.problems, p)
		reported++
		lines[p.Line-1] = ""
	}
	return toml.MetaData{}, false
}

var typeMismatchRE = regexp.MustCompile(`incompatible types: TOML value has type ([\w.\[\]{}]+); destination has type ([\w.\[\]{}*]+)`)

// plainTypeError says what a value of the wrong type should have been.
func plainTypeError(msg string) string {
	m := typeMismatchRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	words := func(t string) string {
		switch {
		case strings.Contains(t, "int"):
			return "a whole number"
		case strings.Contains(t, "float"):
			return "a number"
		case strings.Contains(t, "string"):
			return "a string in quotes"
		case strings.Contains(t, "bool"):
			return "true or false"
		case strings.HasPrefix(t, "[]") || strings.Contains(t, "slice") || strings.Contains(t, "array"):
			return "a list [...]"
		case strings.Contains(t, "map") || strings.Contains(t, "struct") || strings.Contains(t, "{"):
			return "a table"
		}
		return t
	}
	return fmt.Sprintf("must be %s, not %s", words(m[2]), words(m[1]))
}

var typeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

func decodeProblem(file string, err error) Problem {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		line := pe.Position.Line
		if line == 0 {
			line = pe.Line // type errors carry only the older field
		}
		msg := pe.Message
		if msg == "" {
			msg = pe.Error()
		}
		return Problem{File: file, Line: line, Msg: msg}
	}
	// Type mismatches come as plain errors that spell out line and key.
	if m := typeErrRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{File: file, Line: line, Key: m[2], Msg: m[3]}
	}
	return Problem{File: file, Msg: err.Error()}
}

// resolve makes a path from the config relative to the config's directory.
func (c *Config) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// Resolve is resolve for other packages: certificate paths are relative
// to the config file.
func (c *Config) Resolve(p string) string { return c.resolve(p) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
