package main

import (
	"fmt"
	"strings"
)

// Selection is what -apply names: "all", module paths (optionally
// path@version) and "go" (optionally go@go1.27.4) for the toolchain.
type Selection struct {
	All       bool
	Modules   []Named
	Go        bool
	GoVersion string // "" means the offered update
}

// Named is one module named in -apply.
type Named struct {
	Path, Version string // Version "" means the offered update
}

// Empty says whether nothing is to be applied.
func (s Selection) Empty() bool { return !s.All && !s.Go && len(s.Modules) == 0 }

// parseSelection reads -apply: words separated by spaces or commas. "" and
// "none" select nothing; "all" every offered update; "go" or "toolchain"
// the toolchain.
func parseSelection(spec string) (Selection, error) {
	var s Selection
	words := strings.FieldsFunc(spec, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	for _, w := range words {
		name, version, hasVersion := strings.Cut(w, "@")
		if hasVersion && version == "" {
			return Selection{}, fmt.Errorf("-apply: %q: empty version after @", w)
		}
		switch name {
		case "none":
			if hasVersion || len(words) > 1 {
				return Selection{}, fmt.Errorf("-apply: %q goes alone", w)
			}
		case "all":
			if hasVersion {
				return Selection{}, fmt.Errorf("-apply: %q: all takes no version", w)
			}
			s.All = true
		case "go", "toolchain":
			if s.Go {
				return Selection{}, fmt.Errorf("-apply: the toolchain is named twice")
			}
			s.Go, s.GoVersion = true, version
			if hasVersion {
				if _, err := parseGoVersion(version); err != nil {
					return Selection{}, fmt.Errorf("-apply: %q: %v", w, err)
				}
			}
		default:
			if !strings.Contains(name, ".") && !strings.Contains(name, "/") {
				return Selection{}, fmt.Errorf("-apply: %q is neither all, go nor a module path", w)
			}
			for _, m := range s.Modules {
				if m.Path == name {
					return Selection{}, fmt.Errorf("-apply: %s is named twice", name)
				}
			}
			if hasVersion && !strings.HasPrefix(version, "v") {
				return Selection{}, fmt.Errorf("-apply: %q: module versions start with v", w)
			}
			s.Modules = append(s.Modules, Named{name, version})
		}
	}
	return s, nil
}

// Plan is what will be applied.
type Plan struct {
	Modules   []Update
	Toolchain *GoVersion // nil: the toolchain stays
	// FromToolchain is the toolchain before the update.
	FromToolchain GoVersion
}

// Empty says whether the plan changes nothing.
func (p Plan) Empty() bool { return len(p.Modules) == 0 && p.Toolchain == nil }

// resolve turns a selection into a plan, given the direct requirements of
// go.mod, the offered module updates and the toolchain's. A name that is
// not a direct dependency, or that has nothing to update to, is an error:
// the routine does not pretend to have applied it. available is the list
// of toolchains for go@VERSION to be checked against (nil: not checked).
func resolve(sel Selection, mod *ModFile, updates []Update, tc ToolchainUpdate, available []GoVersion) (Plan, error) {
	p := Plan{FromToolchain: tc.Current}
	offered := map[string]Update{}
	for _, u := range updates {
		offered[u.Path] = u
	}
	if sel.All {
		p.Modules = append(p.Modules, updates...)
		if t := tc.Target(); t != nil && !sel.Go {
			p.Toolchain = t
		}
	}
	direct := map[string]bool{}
	for _, d := range mod.Direct() {
		direct[d] = true
	}
	for _, n := range sel.Modules {
		if !direct[n.Path] {
			if v := mod.Version(n.Path); v != "" {
				return Plan{}, fmt.Errorf("%s is an indirect dependency (%s); this routine updates direct ones, and go mod tidy moves the rest", n.Path, v)
			}
			return Plan{}, fmt.Errorf("%s is not required by go.mod", n.Path)
		}
		u, ok := offered[n.Path]
		switch {
		case n.Version != "":
			cur := mod.Version(n.Path)
			if n.Version == cur {
				return Plan{}, fmt.Errorf("%s is already at %s", n.Path, cur)
			}
			u = Update{Path: n.Path, From: cur, To: n.Version}
		case !ok:
			return Plan{}, fmt.Errorf("%s has no update (it is at %s)", n.Path, mod.Version(n.Path))
		}
		p.Modules = replaceUpdate(p.Modules, u)
	}
	if sel.Go {
		switch {
		case sel.GoVersion != "":
			v, err := parseGoVersion(sel.GoVersion)
			if err != nil {
				return Plan{}, err
			}
			if v.Compare(tc.Current) == 0 {
				return Plan{}, fmt.Errorf("the toolchain is already %s", v)
			}
			if available != nil && !containsVersion(available, v) {
				return Plan{}, fmt.Errorf("toolchain %s is not offered by the module proxy for this platform", v)
			}
			p.Toolchain = &v
		case tc.Target() == nil:
			return Plan{}, fmt.Errorf("the toolchain %s is the newest release", tc.Current)
		default:
			p.Toolchain = tc.Target()
		}
	}
	return p, nil
}

func replaceUpdate(list []Update, u Update) []Update {
	for i := range list {
		if list[i].Path == u.Path {
			list[i] = u
			return list
		}
	}
	return append(list, u)
}

func containsVersion(list []GoVersion, v GoVersion) bool {
	for _, w := range list {
		if w.Compare(v) == 0 {
			return true
		}
	}
	return false
}

// goGetArgs is the argument list of the one `go get` that applies the
// module updates, so that the versions are resolved together.
func goGetArgs(p Plan) []string {
	if len(p.Modules) == 0 {
		return nil
	}
	args := []string{"get"}
	for _, u := range p.Modules {
		args = append(args, u.Path+"@"+u.To)
	}
	return args
}
