package rtt

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestOrderProperty: whatever the starting guesses, once every region has
// been observed at a steady round trip long enough, Distance ranks regions
// as their true round trips do; fixed regions never move meanwhile.
func TestOrderProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 12).Draw(t, "regions")
		// Distinct true round trips 10 µs apart or more, so the estimate's
		// last few nanoseconds of error cannot swap two regions.
		steps := rapid.SliceOfNDistinct(rapid.IntRange(1, 100_000), n, n, rapid.ID[int]).Draw(t, "rtt steps")
		truth := map[string]time.Duration{}
		start := map[string]time.Duration{}
		fixed := map[string]time.Duration{}
		var observed []string
		for i, s := range steps {
			r := fmt.Sprintf("r%d", i)
			truth[r] = time.Duration(s) * 10 * time.Microsecond
			switch rapid.IntRange(0, 3).Draw(t, "kind "+r) {
			case 0: // learned from scratch
				observed = append(observed, r)
			case 1, 2: // a starting guess, possibly far off
				start[r] = time.Duration(rapid.Int64Range(1, int64(MaxRTT)).Draw(t, "start "+r))
				observed = append(observed, r)
			case 3:
				fixed[r] = truth[r]
				if rapid.Bool().Draw(t, "start too "+r) {
					start[r] = time.Second // fixed wins over start
				}
			}
		}
		self := rapid.SampledFrom([]string{"self", "r0"}).Draw(t, "self")
		tb := New(self, start, fixed)

		fixedDist := func() map[string]int {
			m := map[string]int{}
			for r := range fixed {
				m[r] = tb.Distance(r)
			}
			return m
		}
		before := fixedDist()

		// (7/8)^160 of a 10 s error is under a nanosecond.
		const rounds = 160
		for range rounds {
			for _, r := range observed {
				tb.Observe(r, truth[r])
			}
			// Noise for the fixed ones too: it must be ignored.
			for r := range fixed {
				tb.Observe(r, time.Duration(rapid.Int64Range(1, int64(time.Second)).Draw(t, "noise")))
			}
		}
		if after := fixedDist(); !mapsEqual(before, after) {
			t.Fatalf("fixed regions moved: %v -> %v", before, after)
		}
		for r, d := range before {
			if r != self && d != max(int(fixed[r]/time.Microsecond), 1) {
				t.Fatalf("fixed %s at distance %d, configured %v", r, d, fixed[r])
			}
		}

		var regions []string
		for r := range truth {
			if r != self {
				regions = append(regions, r)
			}
		}
		slices.SortFunc(regions, func(a, b string) int { return int(truth[a] - truth[b]) })
		for i, r := range regions {
			want := int(truth[r] / time.Microsecond)
			if d := tb.Distance(r); d < want-1 || d > want {
				t.Fatalf("Distance(%s) = %d, true rtt %v", r, d, truth[r])
			}
			if i > 0 && tb.Distance(regions[i-1]) >= tb.Distance(r) {
				t.Fatalf("%s (rtt %v) at %d ranks no closer than %s (rtt %v) at %d",
					regions[i-1], truth[regions[i-1]], tb.Distance(regions[i-1]), r, truth[r], tb.Distance(r))
			}
		}
		if tb.Distance(self) != 0 {
			t.Fatalf("self at %d", tb.Distance(self))
		}
	})
}

// TestConsistencyProperty: under any sequence of observations and carries,
// Distance, RTT and Regions tell the same story.
func TestConsistencyProperty(t *testing.T) {
	names := []string{"iad", "ord", "lhr", "syd", "fra", "ams", ""}
	durGen := rapid.Map(rapid.Int64Range(-int64(time.Second), int64(2*MaxRTT)), func(v int64) time.Duration { return time.Duration(v) })
	mapGen := rapid.MapOfN(rapid.SampledFrom(names), durGen, 0, 4)
	rapid.Check(t, func(t *rapid.T) {
		self := rapid.SampledFrom(names).Draw(t, "self")
		tb := New(self, mapGen.Draw(t, "start"), mapGen.Draw(t, "fixed"))
		for range rapid.IntRange(0, 40).Draw(t, "ops") {
			if rapid.IntRange(0, 9).Draw(t, "carry?") == 0 {
				prev := New(rapid.SampledFrom(names).Draw(t, "prev self"), mapGen.Draw(t, "prev start"), nil)
				prev.Observe(rapid.SampledFrom(names).Draw(t, "prev region"), durGen.Draw(t, "prev d"))
				tb.Carry(prev)
				continue
			}
			tb.Observe(rapid.SampledFrom(names).Draw(t, "region"), durGen.Draw(t, "d"))
		}
		checkConsistent(t, tb, self, append(names, "nowhere"))
	})
}

// checkConsistent is shared with the fuzz test.
func checkConsistent(t interface{ Fatalf(string, ...any) }, tb *Table, self string, regions []string) {
	for _, r := range regions {
		d := tb.Distance(r)
		rtt, ok := tb.RTT(r)
		switch {
		case r == self:
			if d != 0 || rtt != 0 || !ok {
				t.Fatalf("self %q: Distance %d, RTT %v %v", r, d, rtt, ok)
			}
		case !ok:
			if d != Unknown || rtt != 0 {
				t.Fatalf("%q without estimate: Distance %d, RTT %v", r, d, rtt)
			}
		default:
			if rtt < 0 || rtt > MaxRTT || d != max(int(rtt/time.Microsecond), 1) {
				t.Fatalf("%q: Distance %d for RTT %v", r, d, rtt)
			}
		}
	}
	list := tb.Regions()
	if self != "" && (len(list) == 0 || list[0] != Entry{Region: self, Fixed: true}) {
		t.Fatalf("Regions does not start with self %q: %+v", self, list)
	}
	seen := map[string]bool{}
	for i, e := range list {
		if seen[e.Region] {
			t.Fatalf("%q listed twice: %+v", e.Region, list)
		}
		seen[e.Region] = true
		if rtt, ok := tb.RTT(e.Region); !ok || rtt != e.RTT {
			t.Fatalf("Regions lists %+v, RTT says %v %v", e, rtt, ok)
		}
		if e.Fixed && e.Measured {
			t.Fatalf("fixed and measured: %+v", e)
		}
		if i > 1 && list[i-1].RTT > e.RTT {
			t.Fatalf("Regions not nearest first: %+v", list)
		}
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
