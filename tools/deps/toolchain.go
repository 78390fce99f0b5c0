package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// GoVersion is a Go release name such as go1.27.4, go1.28rc1 or go1.9beta2.
type GoVersion struct {
	Major, Minor int
	// Kind orders pre-releases before the release: 0 beta, 1 rc, 2 release.
	Kind int
	// N is the patch number of a release, or the beta/rc number.
	N int
}

const (
	kindBeta = iota
	kindRC
	kindRelease
)

var goVersionRE = regexp.MustCompile(`^go(\d+)\.(\d+)(?:\.(\d+)|(rc|beta)(\d+))?$`)

// parseGoVersion reads "go1.27.4" (the "go" prefix is optional). Before
// Go 1.21 the first release of a line had no patch number (go1.20), which
// reads as patch 0.
func parseGoVersion(s string) (GoVersion, error) {
	if !strings.HasPrefix(s, "go") {
		s = "go" + s
	}
	m := goVersionRE.FindStringSubmatch(s)
	if m == nil {
		return GoVersion{}, fmt.Errorf("not a Go version: %q", s)
	}
	v := GoVersion{Kind: kindRelease}
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	switch {
	case m[3] != "":
		v.N, _ = strconv.Atoi(m[3])
	case m[4] == "rc":
		v.Kind = kindRC
		v.N, _ = strconv.Atoi(m[5])
	case m[4] == "beta":
		v.Kind = kindBeta
		v.N, _ = strconv.Atoi(m[5])
	}
	return v, nil
}

func (v GoVersion) String() string {
	switch v.Kind {
	case kindBeta:
		return fmt.Sprintf("go%d.%dbeta%d", v.Major, v.Minor, v.N)
	case kindRC:
		return fmt.Sprintf("go%d.%drc%d", v.Major, v.Minor, v.N)
	}
	return fmt.Sprintf("go%d.%d.%d", v.Major, v.Minor, v.N)
}

// Stable says whether v is a release, not a beta or release candidate.
func (v GoVersion) Stable() bool { return v.Kind == kindRelease }

// Compare returns -1, 0 or 1 as v is older than, the same as or newer
// than w.
func (v GoVersion) Compare(w GoVersion) int {
	for _, d := range [][2]int{{v.Major, w.Major}, {v.Minor, w.Minor}, {v.Kind, w.Kind}, {v.N, w.N}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// parseToolchainVersions reads `go list -m -versions -json
// golang.org/toolchain` and returns the Go versions built for goos/goarch,
// oldest first. The module's versions look like
// v0.0.1-go1.27.4.linux-amd64.
func parseToolchainVersions(b []byte, goos, goarch string) ([]GoVersion, error) {
	var m struct{ Versions []string }
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("toolchain versions: %w", err)
	}
	suffix := "." + goos + "-" + goarch
	seen := map[GoVersion]bool{}
	var out []GoVersion
	for _, s := range m.Versions {
		if !strings.HasSuffix(s, suffix) {
			continue
		}
		_, name, ok := strings.Cut(strings.TrimSuffix(s, suffix), "-")
		if !ok {
			continue
		}
		v, err := parseGoVersion(name)
		if err != nil || seen[v] {
			continue
		}
		seen[v] = true
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Compare(out[j]) < 0 })
	return out, nil
}

// ToolchainUpdate is what the listing offers for the toolchain.
type ToolchainUpdate struct {
	Current GoVersion
	// Patch is the newest release of the current line (go1.27.x) if newer
	// than Current; Latest the newest stable release of any line, if newer.
	Patch, Latest *GoVersion
}

// Target is the version `go` in the apply list moves to: the newest stable
// release.
func (u ToolchainUpdate) Target() *GoVersion {
	if u.Latest != nil {
		return u.Latest
	}
	return u.Patch
}

// toolchainUpdate picks, of the available versions, the updates of current.
// Betas and release candidates are never offered.
func toolchainUpdate(current GoVersion, available []GoVersion) ToolchainUpdate {
	u := ToolchainUpdate{Current: current}
	for _, v := range available {
		if !v.Stable() || v.Compare(current) <= 0 {
			continue
		}
		v := v
		if v.Major == current.Major && v.Minor == current.Minor && (u.Patch == nil || v.Compare(*u.Patch) > 0) {
			u.Patch = &v
		}
		if u.Latest == nil || v.Compare(*u.Latest) > 0 {
			u.Latest = &v
		}
	}
	return u
}

var (
	makefileToolchainRE = regexp.MustCompile(`(?m)^(export[ \t]+GOTOOLCHAIN[ \t]*:?=[ \t]*)(go[0-9A-Za-z.]+)([ \t]*)$`)
	ciToolchainRE       = regexp.MustCompile(`(?m)^(export GOTOOLCHAIN=)("?)(go[0-9A-Za-z.]+)("?)([ \t]*)$`)
)

// makefileToolchain returns the version the Makefile exports as
// GOTOOLCHAIN, or "".
func makefileToolchain(content string) string {
	if m := makefileToolchainRE.FindStringSubmatch(content); m != nil {
		return m[2]
	}
	return ""
}

// ciToolchain returns the version .ci/run exports as GOTOOLCHAIN, or "".
func ciToolchain(content string) string {
	if m := ciToolchainRE.FindStringSubmatch(content); m != nil {
		return m[3]
	}
	return ""
}

// setMakefileToolchain rewrites the Makefile's one `export GOTOOLCHAIN :=`
// line to version and leaves every other byte alone.
func setMakefileToolchain(content, version string) (string, error) {
	return replaceOne(makefileToolchainRE, content, "Makefile", "export GOTOOLCHAIN := goX", func(m []string) string {
		return m[1] + version + m[3]
	})
}

// setCIToolchain rewrites .ci/run's one `export GOTOOLCHAIN=` line (keeping
// quotes if it had them) and leaves every other byte alone.
func setCIToolchain(content, version string) (string, error) {
	return replaceOne(ciToolchainRE, content, ".ci/run", "export GOTOOLCHAIN=goX", func(m []string) string {
		return m[1] + m[2] + version + m[4] + m[5]
	})
}

func replaceOne(re *regexp.Regexp, content, file, want string, repl func([]string) string) (string, error) {
	locs := re.FindAllStringSubmatchIndex(content, -1)
	switch len(locs) {
	case 0:
		return "", fmt.Errorf("%s: no line of the form %q", file, want)
	case 1:
	default:
		return "", fmt.Errorf("%s: %d lines of the form %q, want exactly one", file, len(locs), want)
	}
	loc := locs[0]
	m := make([]string, len(loc)/2)
	for i := range m {
		if loc[2*i] >= 0 {
			m[i] = content[loc[2*i]:loc[2*i+1]]
		}
	}
	return content[:loc[0]] + repl(m) + content[loc[1]:], nil
}
