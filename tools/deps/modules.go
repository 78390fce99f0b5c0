package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
)

// ModFile is the part of `go mod edit -json` this tool reads.
type ModFile struct {
	Module struct {
		Path string
	}
	Go        string
	Toolchain string
	Require   []Require
}

// Require is one require line of go.mod.
type Require struct {
	Path     string
	Version  string
	Indirect bool
}

// parseModFile reads the output of `go mod edit -json`.
func parseModFile(b []byte) (*ModFile, error) {
	var m ModFile
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("go mod edit -json: %w", err)
	}
	if m.Module.Path == "" {
		return nil, errors.New("go mod edit -json: no module path")
	}
	return &m, nil
}

// Direct returns the paths of the modules go.mod requires directly (no
// "// indirect" comment), in go.mod's order.
func (m *ModFile) Direct() []string {
	var out []string
	for _, r := range m.Require {
		if !r.Indirect {
			out = append(out, r.Path)
		}
	}
	return out
}

// Version returns the required version of path, or "".
func (m *ModFile) Version(path string) string {
	for _, r := range m.Require {
		if r.Path == path {
			return r.Version
		}
	}
	return ""
}

// Module is one entry of `go list -m -u -json`.
type Module struct {
	Path       string
	Version    string
	Time       string
	Indirect   bool
	Main       bool
	Update     *Module
	Deprecated string
	Retracted  []string
	Error      *struct{ Err string }
}

// parseGoList reads the stream of JSON objects `go list -m -json` prints
// (one object after another, not an array).
func parseGoList(b []byte) ([]Module, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var out []Module
	for {
		var m Module
		err := dec.Decode(&m)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("go list -m -json: %w", err)
		}
		out = append(out, m)
	}
}

// Update is an available update of one direct dependency.
type Update struct {
	Path       string
	From, To   string
	Time       string // release time of To, RFC 3339
	Deprecated string
	Retracted  bool // the current version is retracted
}

// directUpdates keeps, of the listed modules, the direct requirements of
// mod that have an update, in go.mod's order. Modules that are not direct
// requirements (the main module, indirect ones) are ignored.
func directUpdates(mod *ModFile, listed []Module) []Update {
	byPath := map[string]Module{}
	for _, m := range listed {
		byPath[m.Path] = m
	}
	var out []Update
	for _, p := range mod.Direct() {
		m, ok := byPath[p]
		if !ok || m.Main || m.Update == nil || m.Update.Version == "" || m.Update.Version == m.Version {
			continue
		}
		out = append(out, Update{
			Path: p, From: m.Version, To: m.Update.Version, Time: m.Update.Time,
			Deprecated: m.Deprecated, Retracted: len(m.Retracted) > 0,
		})
	}
	return out
}

// Change is one difference between two go.mod files.
type Change struct {
	Path     string // module path, or "go" / "toolchain" for those lines
	From, To string // "" when added or removed
	Indirect bool
}

func (c Change) String() string {
	from, to := c.From, c.To
	if from == "" {
		from = "(none)"
	}
	if to == "" {
		to = "(removed)"
	}
	return fmt.Sprintf("%s %s → %s", c.Path, from, to)
}

// diffModFiles lists what changed from old to new: the go and toolchain
// lines first, then direct requirements, then indirect ones, each sorted
// by path.
func diffModFiles(old, new *ModFile) []Change {
	var out []Change
	if old.Go != new.Go {
		out = append(out, Change{Path: "go", From: old.Go, To: new.Go})
	}
	if old.Toolchain != new.Toolchain {
		out = append(out, Change{Path: "toolchain", From: old.Toolchain, To: new.Toolchain})
	}
	type req struct {
		version  string
		indirect bool
	}
	index := func(m *ModFile) map[string]req {
		r := map[string]req{}
		for _, q := range m.Require {
			r[q.Path] = req{q.Version, q.Indirect}
		}
		return r
	}
	o, n := index(old), index(new)
	var reqs []Change
	for p, nr := range n {
		if or, ok := o[p]; !ok || or.version != nr.version {
			reqs = append(reqs, Change{Path: p, From: o[p].version, To: nr.version, Indirect: nr.indirect})
		}
	}
	for p, or := range o {
		if _, ok := n[p]; !ok {
			reqs = append(reqs, Change{Path: p, From: or.version, Indirect: or.indirect})
		}
	}
	sort.Slice(reqs, func(i, j int) bool {
		if reqs[i].Indirect != reqs[j].Indirect {
			return !reqs[i].Indirect
		}
		return reqs[i].Path < reqs[j].Path
	})
	return append(out, reqs...)
}
