package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// govulncheckPkg is the govulncheck the routine runs, pinned.
const govulncheckPkg = "golang.org/x/vuln/cmd/govulncheck@v1.9.0"

// publicVulnDB is the Go vulnerability database govulncheck reads by
// default.
const publicVulnDB = "https://vuln.go.dev"

// vulndbModule is the Go vulnerability database's source repository; the
// module proxy serves it, and its data/osv holds every entry as OSV JSON.
const vulndbModule = "golang.org/x/vulndb"

// osvEntry is the part of an OSV entry the index needs.
type osvEntry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
	} `json:"affected"`
}

// DBInfo describes a local vulnerability database built by buildVulnDB.
type DBInfo struct {
	Entries  int
	Modules  int
	Modified time.Time // newest entry's modification time
}

// buildVulnDB writes, from a directory of OSV files named ID.json (the
// data/osv directory of golang.org/x/vulndb), a database in the layout
// govulncheck reads with -db file://DIR (https://go.dev/security/vuln/database#api):
//
//	index/db.json       {"modified": newest entry's modified}
//	index/modules.json  [{"path": MODULE, "vulns": [{"id", "modified"}]}] sorted by path, then id
//	ID/GO-YYYY-NNNN.json  each entry unchanged
//
// The index's optional "fixed" field is left out: govulncheck then reads
// every entry of a module it uses and decides from the entry's own ranges,
// which is slower by a few file reads but cannot skip an entry through a
// version comparison of ours.
//
// The entries in golang.org/x/vulndb carry zero "modified" times (they are
// stamped when the public database is published), so when no entry has a
// time, asOf (the vulndb commit's time) dates the database.
func buildVulnDB(osvDir, out string, asOf time.Time) (DBInfo, error) {
	files, err := filepath.Glob(filepath.Join(osvDir, "*.json"))
	if err != nil {
		return DBInfo{}, err
	}
	if len(files) == 0 {
		return DBInfo{}, fmt.Errorf("no OSV files (*.json) in %s", osvDir)
	}
	type vuln struct {
		ID       string    `json:"id"`
		Modified time.Time `json:"modified"`
	}
	type module struct {
		Path  string `json:"path"`
		Vulns []vuln `json:"vulns"`
	}
	tmp := out + ".partial"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Join(tmp, "ID"), 0o755); err != nil {
		return DBInfo{}, err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "index"), 0o755); err != nil {
		return DBInfo{}, err
	}
	mods := map[string]*module{}
	var info DBInfo
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return DBInfo{}, err
		}
		var e osvEntry
		if err := json.Unmarshal(b, &e); err != nil {
			return DBInfo{}, fmt.Errorf("%s: %w", f, err)
		}
		if e.ID == "" || filepath.Base(f) != e.ID+".json" {
			return DBInfo{}, fmt.Errorf("%s: entry id %q does not match the file name", f, e.ID)
		}
		if e.Modified.After(info.Modified) {
			info.Modified = e.Modified
		}
		seen := map[string]bool{}
		for _, a := range e.Affected {
			p := a.Package.Name
			if p == "" || seen[p] {
				continue
			}
			seen[p] = true
			m := mods[p]
			if m == nil {
				m = &module{Path: p}
				mods[p] = m
			}
			m.Vulns = append(m.Vulns, vuln{e.ID, e.Modified})
		}
		if err := os.WriteFile(filepath.Join(tmp, "ID", e.ID+".json"), b, 0o644); err != nil {
			return DBInfo{}, err
		}
		info.Entries++
	}
	if info.Modified.IsZero() {
		info.Modified = asOf
	}
	list := make([]*module, 0, len(mods))
	for _, m := range mods {
		sort.Slice(m.Vulns, func(i, j int) bool { return m.Vulns[i].ID < m.Vulns[j].ID })
		list = append(list, m)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Path < list[j].Path })
	info.Modules = len(list)
	mb, err := json.Marshal(list)
	if err != nil {
		return DBInfo{}, err
	}
	db, err := json.Marshal(struct {
		Modified time.Time `json:"modified"`
	}{info.Modified.UTC()})
	if err != nil {
		return DBInfo{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "index", "modules.json"), mb, 0o644); err != nil {
		return DBInfo{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "index", "db.json"), db, 0o644); err != nil {
		return DBInfo{}, err
	}
	os.RemoveAll(out)
	if err := os.Rename(tmp, out); err != nil {
		return DBInfo{}, err
	}
	return info, nil
}

// VulnFinding is one vulnerability govulncheck reported.
type VulnFinding struct {
	ID, Summary string
	Aliases     []string
	Module      string
	Version     string // the version in use
	Fixed       string // "" when no fix is known
	// Level is how close the code is: "called" (a vulnerable function is
	// reachable), "imported" (a vulnerable package is imported) or
	// "required" (only the module is in the build list).
	Level string
}

// VulnResult is a govulncheck run, read from -format json.
type VulnResult struct {
	DB             string
	DBLastModified time.Time
	GoVersion      string
	Findings       []VulnFinding // sorted: called first, then by id
}

// Called returns the findings whose vulnerable code is reachable.
func (r VulnResult) Called() []VulnFinding {
	var out []VulnFinding
	for _, f := range r.Findings {
		if f.Level == "called" {
			out = append(out, f)
		}
	}
	return out
}

var levelRank = map[string]int{"required": 0, "imported": 1, "called": 2}

// parseGovulncheckJSON reads govulncheck -format json: a stream of
// messages, each with one of config, progress, SBOM, osv or finding.
func parseGovulncheckJSON(b []byte) (VulnResult, error) {
	var res VulnResult
	type frame struct {
		Module, Version, Package, Function string
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	osvs := map[string]struct {
		Summary string
		Aliases []string
	}{}
	found := map[string]*VulnFinding{}
	for {
		var msg struct {
			Config *struct {
				DB             string     `json:"db"`
				DBLastModified *time.Time `json:"db_last_modified"`
				GoVersion      string     `json:"go_version"`
			} `json:"config"`
			OSV *struct {
				ID      string   `json:"id"`
				Summary string   `json:"summary"`
				Aliases []string `json:"aliases"`
			} `json:"osv"`
			Finding *struct {
				OSV          string  `json:"osv"`
				FixedVersion string  `json:"fixed_version"`
				Trace        []frame `json:"trace"`
			} `json:"finding"`
		}
		err := dec.Decode(&msg)
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return VulnResult{}, fmt.Errorf("govulncheck output: %w", err)
		}
		switch {
		case msg.Config != nil:
			res.DB, res.GoVersion = msg.Config.DB, msg.Config.GoVersion
			if msg.Config.DBLastModified != nil {
				res.DBLastModified = *msg.Config.DBLastModified
			}
		case msg.OSV != nil:
			osvs[msg.OSV.ID] = struct {
				Summary string
				Aliases []string
			}{msg.OSV.Summary, msg.OSV.Aliases}
		case msg.Finding != nil && len(msg.Finding.Trace) > 0:
			f := msg.Finding
			top := f.Trace[0]
			level := "required"
			switch {
			case top.Function != "":
				level = "called"
			case top.Package != "":
				level = "imported"
			}
			cur := found[f.OSV]
			if cur == nil {
				cur = &VulnFinding{ID: f.OSV, Module: top.Module, Version: top.Version, Fixed: f.FixedVersion, Level: level}
				found[f.OSV] = cur
			} else if levelRank[level] > levelRank[cur.Level] {
				cur.Level = level
			}
		}
	}
	for id, f := range found {
		if o, ok := osvs[id]; ok {
			f.Summary, f.Aliases = o.Summary, o.Aliases
		}
		res.Findings = append(res.Findings, *f)
	}
	sort.Slice(res.Findings, func(i, j int) bool {
		a, b := res.Findings[i], res.Findings[j]
		if levelRank[a.Level] != levelRank[b.Level] {
			return levelRank[a.Level] > levelRank[b.Level]
		}
		return a.ID < b.ID
	})
	return res, nil
}

// describeDB says in words which database a -db value is.
func describeDB(db string) string {
	switch {
	case db == "" || strings.TrimRight(db, "/") == publicVulnDB:
		return publicVulnDB + " (the public Go vulnerability database)"
	case strings.HasPrefix(db, "file://"):
		return "local mirror " + strings.TrimPrefix(db, "file://")
	}
	return db
}
