package main

import (
	"fmt"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Listing is what `make deps` without APPLY prints.
type Listing struct {
	Updates []Update
	// UpdatesErr is set when the module updates could not be listed.
	UpdatesErr   string
	Toolchain    ToolchainUpdate
	ToolchainErr string
	// Pinned says where the toolchain is pinned and to what: go.mod,
	// Makefile, .ci/run.
	Pinned map[string]string
	Vuln   VulnSection
}

// VulnSection is govulncheck's part of a report.
type VulnSection struct {
	Ran    bool
	Result VulnResult
	// DBSource says which database was used and how it was chosen.
	DBSource string
	// Skipped says why govulncheck did not run (no database reachable,
	// -vulndb off, an error).
	Skipped string
}

// CheckResult is one line of the checks table.
type CheckResult struct {
	Name   string
	Status string // "PASS", "FAIL", "SKIP", "WARN"
	Detail string
}

// Report is the one report of an apply (or -check) run.
type Report struct {
	Started, Finished time.Time
	Head              string // HEAD commit, short
	Applied           []Change
	// Preexisting are go.mod changes that were already uncommitted before
	// the run; Dirty other uncommitted files: both are in the new build.
	Preexisting []Change
	Dirty       []string
	// Stale lists tracked files that still name the old toolchain.
	Stale   []string
	Checks  []CheckResult
	Storm   []string // the storm's problems, if any
	Bench   []BenchDelta
	BenchOK bool // whether the bench ran at all
	// Tolerance is the bench change called worse (0.15 = 15%).
	Tolerance float64
	Vuln      VulnSection
	WorkDir   string
}

// Failed says whether a check that gates the update failed.
func (r *Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == "FAIL" {
			return true
		}
	}
	return false
}

func (l *Listing) render() string {
	var b strings.Builder
	b.WriteString("Direct dependencies with updates (go.mod, not indirect):\n")
	switch {
	case l.UpdatesErr != "":
		fmt.Fprintf(&b, "  could not list: %s\n", l.UpdatesErr)
	case len(l.Updates) == 0:
		b.WriteString("  none: every direct dependency is at its newest version\n")
	default:
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, u := range l.Updates {
			note := ""
			if u.Time != "" {
				note = "released " + strings.SplitN(u.Time, "T", 2)[0]
			}
			if u.Retracted {
				note += "; CURRENT VERSION RETRACTED"
			}
			if u.Deprecated != "" {
				note += "; deprecated: " + u.Deprecated
			}
			fmt.Fprintf(tw, "  %s\t%s → %s\t%s\n", u.Path, u.From, u.To, note)
		}
		tw.Flush()
	}
	b.WriteString("\nGo toolchain:\n")
	pins := []string{"go.mod", "Makefile", ".ci/run"}
	var pinParts []string
	mismatch := false
	for _, p := range pins {
		v := l.Pinned[p]
		if v == "" {
			v = "(not pinned)"
		}
		if v != l.Pinned["go.mod"] {
			mismatch = true
		}
		pinParts = append(pinParts, p+" "+v)
	}
	fmt.Fprintf(&b, "  pinned: %s\n", strings.Join(pinParts, ", "))
	if mismatch {
		b.WriteString("  WARNING: the pins disagree; applying `go` sets all three\n")
	}
	switch {
	case l.ToolchainErr != "":
		fmt.Fprintf(&b, "  could not list toolchains: %s\n", l.ToolchainErr)
	case l.Toolchain.Target() == nil:
		fmt.Fprintf(&b, "  %s is the newest release\n", l.Toolchain.Current)
	default:
		fmt.Fprintf(&b, "  go  %s → %s\n", l.Toolchain.Current, l.Toolchain.Target())
		if p := l.Toolchain.Patch; p != nil && p.Compare(*l.Toolchain.Target()) != 0 {
			fmt.Fprintf(&b, "      (the newest of the current line is %s: APPLY=go@%s)\n", p, p)
		}
	}
	b.WriteString("\n")
	b.WriteString(l.Vuln.render())
	return b.String()
}

func (v VulnSection) render() string {
	var b strings.Builder
	b.WriteString("Vulnerabilities (govulncheck v1.9.0):\n")
	if !v.Ran {
		fmt.Fprintf(&b, "  NOT CHECKED: %s\n", v.Skipped)
		return b.String()
	}
	date := "unknown date"
	if !v.Result.DBLastModified.IsZero() {
		date = "newest entry " + v.Result.DBLastModified.UTC().Format("2006-01-02 15:04 UTC")
	}
	fmt.Fprintf(&b, "  database: %s, %s\n", v.DBSource, date)
	called := v.Result.Called()
	if len(called) == 0 {
		b.WriteString("  no vulnerability reachable from the code\n")
	} else {
		fmt.Fprintf(&b, "  %d reachable from the code (update promptly):\n", len(called))
		for _, f := range called {
			fix := "no fix yet"
			if f.Fixed != "" {
				fix = "fixed in " + f.Fixed
			}
			fmt.Fprintf(&b, "    %s %s@%s, %s: %s\n", f.ID, f.Module, f.Version, fix, f.Summary)
		}
	}
	if n := len(v.Result.Findings) - len(called); n > 0 {
		fmt.Fprintf(&b, "  %d more in modules or packages the build has, in code it does not call:\n", n)
		for _, f := range v.Result.Findings {
			if f.Level != "called" {
				fix := "no fix yet"
				if f.Fixed != "" {
					fix = "fixed in " + f.Fixed
				}
				fmt.Fprintf(&b, "    %s %s@%s (%s), %s\n", f.ID, f.Module, f.Version, f.Level, fix)
			}
		}
	}
	return b.String()
}

func (r *Report) render() string {
	var b strings.Builder
	verdict := "PASS"
	if r.Failed() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "==== edgeproxy dependency update report: %s ====\n", verdict)
	fmt.Fprintf(&b, "%s, %s; previous build = HEAD %s, new build = the working tree\n",
		r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Finished.Sub(r.Started).Round(time.Second), r.Head)

	b.WriteString("\nWhat changed (go.mod):\n")
	if len(r.Applied) == 0 {
		b.WriteString("  nothing\n")
	}
	for _, c := range r.Applied {
		tag := ""
		if c.Indirect {
			tag = " (indirect)"
		}
		fmt.Fprintf(&b, "  %s%s\n", c, tag)
	}
	if len(r.Preexisting) > 0 {
		b.WriteString("  already uncommitted before this run (also in the new build):\n")
		for _, c := range r.Preexisting {
			fmt.Fprintf(&b, "    %s\n", c)
		}
	}
	if len(r.Dirty) > 0 {
		fmt.Fprintf(&b, "  NOTE: other uncommitted files are in the new build too: %s\n", strings.Join(r.Dirty, ", "))
	}
	if len(r.Stale) > 0 {
		fmt.Fprintf(&b, "  NOTE: still naming the old toolchain (not edited by this routine): %s\n", strings.Join(r.Stale, ", "))
	}

	b.WriteString("\nChecks:\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", c.Name, c.Status, c.Detail)
	}
	tw.Flush()
	for _, p := range r.Storm {
		fmt.Fprintf(&b, "    storm: %s\n", p)
	}

	fmt.Fprintf(&b, "\nBenchmark, new vs previous (quick mode, 1 run each; change beyond ±%.0f%% is flagged):\n", r.Tolerance*100)
	if !r.BenchOK {
		b.WriteString("  not run\n")
	} else {
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "  scenario\tunit\tCPU prev\tCPU new\tCPU Δ\tmemory prev\tmemory new\tmemory Δ\tthroughput Δ\t\n")
		for _, d := range r.Bench {
			memUnit := "KiB peak"
			if (d.New != nil && d.New.Idle()) || (d.Prev != nil && d.Prev.Idle()) {
				memUnit = "KiB/conn"
			}
			cell := func(row *BenchRow, cpu bool) string {
				if row == nil || row.Failed {
					return "failed"
				}
				if cpu {
					return num(row.CPUPerUnit, 3)
				}
				if row.Idle() {
					return num(row.RSSPerConnKiB, 1) + " " + memUnit
				}
				return num(row.PeakRSSKiB, 0) + " " + memUnit
			}
			unit := d.Unit
			if strings.Contains(unit, "idle conn") {
				unit = "CPU s"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", d.Scenario, unit,
				cell(d.Prev, true), cell(d.New, true), pct(d.CPU),
				cell(d.Prev, false), cell(d.New, false), pct(d.Mem), pct(d.Throughput))
		}
		tw.Flush()
		for _, d := range r.Bench {
			if (d.Prev != nil && d.Prev.Forced) || (d.New != nil && d.New.Forced) {
				b.WriteString("  NOTE: run on a busy machine (-bench-force): the figures are less reliable\n")
				break
			}
		}
		var worse []string
		for _, d := range r.Bench {
			if len(d.Worse) > 0 {
				worse = append(worse, d.Scenario+" ("+strings.Join(d.Worse, ", ")+")")
			}
		}
		if len(worse) > 0 {
			fmt.Fprintf(&b, "  REVIEW: worse in %s; quick runs are noisy, so run `make bench` on both builds before believing it (docs/dependencies.md)\n",
				strings.Join(worse, "; "))
		} else {
			b.WriteString("  no scenario worse beyond the tolerance\n")
		}
	}
	b.WriteString("\n")
	b.WriteString(r.Vuln.render())
	if r.WorkDir != "" {
		fmt.Fprintf(&b, "\nLogs, binaries and raw results: %s\n", r.WorkDir)
	}
	return b.String()
}

func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, v)
}
