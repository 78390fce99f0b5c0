//go:build linux

package shapes_test

// The harness: TestMain builds the real binary once, and the tests run it
// as subprocesses (a demo machine and the proxy) that never outlive them.
// The proxy under test is therefore an ordinary non-race build, fast enough
// to storm, while this package runs under -race in CI like every other.

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// readyTimeout bounds waiting for a subprocess to say it listens.
const readyTimeout = 15 * time.Second

// bin is the binary TestMain built.
var bin proctest.Bin

func TestMain(m *testing.M) {
	// Subprocess waiters, storm workers and slowloris connections are all
	// bounded and joined; anything still running is a leak.
	os.Exit(bin.Main(m, "shapes", true))
}

// startProc runs the binary with args until the test ends; cleanup stops
// it with SIGTERM, fails the test unless it then exits 0, and on failure
// logs a summary of its output.
func startProc(t *testing.T, name string, args ...string) *proctest.Proc {
	t.Helper()
	const skip = "the connection-shape suite builds the proxy and storms it for a minute or more; skipped in -short mode"
	lim := proctest.Limits{
		// Every subprocess dies on its own even if a crashed test fails
		// to stop it (Pdeathsig covers a killed test binary).
		Lifetime: 10 * time.Minute,
		// How long a subprocess gets to exit after SIGTERM before it is
		// killed.
		Grace:   15 * time.Second,
		Summary: summarize,
	}
	return proctest.Run(t, lim, name, bin.Path(t, skip), args...)
}

// summarize picks from a subprocess's output what explains a failure: the
// lines logged above INFO (request failures with their codes, spin kills),
// grouped by level, message and code with one example each, then the last
// lines. A storm logs thousands of access lines; they are left out.
func summarize(out string) string {
	const lastLines = 5
	type group struct {
		n       int
		example string
	}
	groups := map[string]*group{}
	var keys, all []string
	for line := range strings.Lines(out) {
		all = append(all, line)
		var r proctest.Record
		if json.Unmarshal([]byte(line), &r) != nil {
			r = proctest.Record{"level": "?", "msg": "(not JSON)"}
		}
		if r["level"] == "INFO" || r["level"] == "DEBUG" {
			continue
		}
		key := fmt.Sprintf("%v %q code=%v", r["level"], r["msg"], r["code"])
		g := groups[key]
		if g == nil {
			g = &group{example: line}
			groups[key] = g
			keys = append(keys, key)
		}
		g.n++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d lines; above INFO:\n", len(all))
	for _, k := range keys {
		fmt.Fprintf(&b, "  %d× %s, e.g. %s", groups[k].n, k, groups[k].example)
	}
	fmt.Fprintf(&b, "last %d lines:\n", min(lastLines, len(all)))
	for _, l := range all[max(0, len(all)-lastLines):] {
		b.WriteString(l)
	}
	return b.String()
}
