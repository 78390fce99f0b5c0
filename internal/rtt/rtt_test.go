package rtt

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

const ms = time.Millisecond

func newTable() *Table {
	return New("iad",
		map[string]time.Duration{"ord": 20 * ms, "lhr": 80 * ms, "syd": 200 * ms, "iad": 5 * ms, "nrt": 0, "gru": -ms},
		map[string]time.Duration{"syd": 150 * ms, "fra": 90 * ms, "iad": 7 * ms, "ewr": 0, "mia": -ms})
}

func TestDistance(t *testing.T) {
	tb := newTable()
	tests := []struct {
		region string
		want   int
	}{
		{"iad", 0},      // self, whatever start and fixed say
		{"ord", 20_000}, // start, in microseconds
		{"lhr", 80_000},
		{"syd", 150_000}, // fixed wins over start
		{"fra", 90_000},  // fixed only
		{"ewr", 1},       // fixed 0 still ranks after self
		{"mia", 1},       // negative fixed counts as 0
		{"nrt", Unknown}, // zero start is no estimate
		{"gru", Unknown}, // negative start is no estimate
		{"ams", Unknown},
		{"", Unknown},
	}
	for _, tt := range tests {
		if got := tb.Distance(tt.region); got != tt.want {
			t.Errorf("Distance(%q) = %d, want %d", tt.region, got, tt.want)
		}
	}
}

func TestUnknownRanksAfterEveryEstimate(t *testing.T) {
	tb := New("iad", map[string]time.Duration{"far": time.Hour}, map[string]time.Duration{"pinned": time.Hour})
	tb.Observe("slow", time.Hour)
	for _, r := range []string{"far", "pinned", "slow"} {
		if d := tb.Distance(r); d >= Unknown || d != int(MaxRTT/time.Microsecond) {
			t.Errorf("Distance(%q) = %d, want capped at %d < Unknown %d", r, d, MaxRTT/time.Microsecond, Unknown)
		}
	}
	if Unknown != 10_000_001 {
		t.Errorf("Unknown = %d, want 10 s in µs + 1", Unknown)
	}
}

func TestObserve(t *testing.T) {
	t.Run("first sample of an unknown region is taken as is", func(t *testing.T) {
		tb := newTable()
		tb.Observe("ams", 70*ms)
		if d, ok := tb.RTT("ams"); !ok || d != 70*ms {
			t.Errorf("RTT(ams) = %v %v, want 70ms true", d, ok)
		}
	})
	t.Run("later samples weigh 1/8", func(t *testing.T) {
		tb := newTable()
		tb.Observe("ord", 100*ms) // 20 + (100-20)/8 = 30
		if d, _ := tb.RTT("ord"); d != 30*ms {
			t.Errorf("RTT(ord) = %v, want 30ms", d)
		}
		tb.Observe("ord", 14*ms) // 30 + (14-30)/8 = 28
		if d, _ := tb.RTT("ord"); d != 28*ms {
			t.Errorf("RTT(ord) = %v, want 28ms", d)
		}
	})
	t.Run("converges to a steady sample", func(t *testing.T) {
		tb := newTable()
		for range 200 {
			tb.Observe("lhr", 40*ms)
		}
		if d, _ := tb.RTT("lhr"); d < 40*ms-8 || d > 40*ms+8 {
			t.Errorf("RTT(lhr) = %v after 200 samples of 40ms", d)
		}
	})
	t.Run("ignored for self, fixed, and non-positive samples", func(t *testing.T) {
		tb := newTable()
		tb.Observe("iad", 50*ms)
		tb.Observe("syd", ms)
		tb.Observe("fra", ms)
		tb.Observe("ord", 0)
		tb.Observe("ord", -ms)
		tb.Observe("ams", 0)
		tb.Observe("ams", -ms)
		for r, want := range map[string]int{"iad": 0, "syd": 150_000, "fra": 90_000, "ord": 20_000, "ams": Unknown} {
			if got := tb.Distance(r); got != want {
				t.Errorf("Distance(%q) = %d, want %d", r, got, want)
			}
		}
		if d, ok := tb.RTT("iad"); d != 0 || !ok {
			t.Errorf("RTT(self) = %v %v, want 0 true", d, ok)
		}
	})
	t.Run("samples above MaxRTT count as MaxRTT", func(t *testing.T) {
		tb := newTable()
		tb.Observe("ams", time.Hour)
		if d, _ := tb.RTT("ams"); d != MaxRTT {
			t.Errorf("RTT(ams) = %v, want %v", d, MaxRTT)
		}
	})
	t.Run("sub-microsecond estimates still rank after self", func(t *testing.T) {
		tb := newTable()
		tb.Observe("ams", 300)
		if got := tb.Distance("ams"); got != 1 {
			t.Errorf("Distance(ams) = %d, want 1", got)
		}
	})
}

func TestRTT(t *testing.T) {
	tb := newTable()
	for r, want := range map[string]time.Duration{"iad": 0, "ord": 20 * ms, "syd": 150 * ms, "ewr": 0} {
		if d, ok := tb.RTT(r); !ok || d != want {
			t.Errorf("RTT(%q) = %v %v, want %v true", r, d, ok, want)
		}
	}
	if d, ok := tb.RTT("ams"); ok || d != 0 {
		t.Errorf("RTT(ams) = %v %v, want 0 false", d, ok)
	}
}

func TestRegions(t *testing.T) {
	tb := newTable()
	tb.Observe("ord", 20*ms)
	tb.Observe("ams", 90*ms)
	want := []Entry{
		{Region: "iad", Fixed: true},
		{Region: "ewr", Fixed: true},
		{Region: "mia", Fixed: true},
		{Region: "ord", RTT: 20 * ms, Measured: true},
		{Region: "lhr", RTT: 80 * ms},
		{Region: "ams", RTT: 90 * ms, Measured: true},
		{Region: "fra", RTT: 90 * ms, Fixed: true},
		{Region: "syd", RTT: 150 * ms, Fixed: true},
	}
	if got := tb.Regions(); !slices.Equal(got, want) {
		t.Errorf("Regions =\n%+v\nwant\n%+v", got, want)
	}

	// An edge without a region name lists no entry for itself.
	anon := New("", map[string]time.Duration{"ord": ms}, nil)
	if got := anon.Regions(); !slices.Equal(got, []Entry{{Region: "ord", RTT: ms}}) {
		t.Errorf("Regions without self = %+v", got)
	}
}

func TestCarry(t *testing.T) {
	prev := newTable()
	prev.Observe("ord", 100*ms) // measured: 30ms
	prev.Observe("ams", 60*ms)  // learned
	prev.Observe("cdg", 70*ms)  // learned, fixed in the next table
	prev.Observe("sea", 50*ms)  // learned, self of the next table

	next := New("sea",
		map[string]time.Duration{"ord": 25 * ms, "lhr": 70 * ms, "iad": 3 * ms},
		map[string]time.Duration{"cdg": 75 * ms})
	next.Carry(prev)
	next.Carry(nil) // no-op
	next.Carry(next)

	want := map[string]struct {
		d  time.Duration
		ok bool
	}{
		"ord": {30 * ms, true}, // measured beats the new starting guess
		"ams": {60 * ms, true}, // measured, new to next
		"cdg": {75 * ms, true}, // fixed in next wins
		"sea": {0, true},       // self
		"lhr": {70 * ms, true}, // only in next
		"iad": {3 * ms, true},  // prev's self was never measured: next's start stays
		"syd": {0, false},      // fixed in prev, not measured: not carried
		"fra": {0, false},
	}
	for r, w := range want {
		if d, ok := next.RTT(r); d != w.d || ok != w.ok {
			t.Errorf("after Carry RTT(%q) = %v %v, want %v %v", r, d, ok, w.d, w.ok)
		}
	}
	// Carried values are independent: prev moving on does not move next.
	prev.Observe("ams", 900*ms)
	if d, _ := next.RTT("ams"); d != 60*ms {
		t.Errorf("next RTT(ams) followed prev to %v", d)
	}
	for _, e := range next.Regions() {
		if e.Region == "ord" && !e.Measured {
			t.Errorf("carried ord not marked measured: %+v", e)
		}
	}
}

func TestLearnedBound(t *testing.T) {
	tb := newTable()
	for i := range 3 * MaxLearned {
		tb.Observe(fmt.Sprintf("r%d", i), ms)
	}
	// Configured regions do not count toward the bound.
	if got, want := len(tb.Regions()), 1+6+MaxLearned; got != want {
		t.Errorf("%d regions listed, want %d (self, 6 configured, MaxLearned)", got, want)
	}
	if got := tb.Distance(fmt.Sprintf("r%d", MaxLearned)); got != Unknown {
		t.Errorf("region past the bound has distance %d", got)
	}
	// Known regions keep learning once the table is full.
	tb.Observe("r0", 9*ms)
	tb.Observe("ord", 100*ms)
	if d, _ := tb.RTT("r0"); d != 2*ms {
		t.Errorf("RTT(r0) = %v, want 2ms", d)
	}
	if d, _ := tb.RTT("ord"); d != 30*ms {
		t.Errorf("RTT(ord) = %v, want 30ms", d)
	}

	// Carry respects the same bound.
	next := New("iad", nil, nil)
	next.Carry(tb)
	if got := len(next.Regions()); got != 1+MaxLearned {
		t.Errorf("carry into an empty table listed %d regions, want %d", got, 1+MaxLearned)
	}
}

// TestConcurrent is for -race: observers learning and refining regions
// while balancers read distances and admins list and carry.
func TestConcurrent(t *testing.T) {
	tb := newTable()
	var wg sync.WaitGroup
	const workers, rounds, regions = 8, 2000, 40
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				tb.Observe(fmt.Sprintf("r%d", (i+w)%regions), time.Duration(1+(i*w)%50)*ms)
				tb.Observe("ord", time.Duration(10+i%20)*ms)
			}
		})
		wg.Go(func() {
			for i := range rounds {
				r := fmt.Sprintf("r%d", (i*7+w)%regions)
				if d := tb.Distance(r); d < 1 || d > Unknown {
					t.Errorf("Distance(%q) = %d", r, d)
					return
				}
				if tb.Distance("iad") != 0 {
					t.Error("self distance moved")
					return
				}
				if _, ok := tb.RTT("syd"); !ok {
					t.Error("fixed region lost")
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			tb.Regions()
			New("iad", nil, nil).Carry(tb)
		}
	})
	wg.Wait()
	for i := range regions {
		if d := tb.Distance(fmt.Sprintf("r%d", i)); d < 1000 || d > 50_000 {
			t.Errorf("r%d distance %d outside the samples' range", i, d)
		}
	}
	if d := tb.Distance("syd"); d != 150_000 {
		t.Errorf("fixed syd moved to %d", d)
	}
}

// TestDistanceAllocs holds the hot-path rule: reading a distance, or
// observing a known region, allocates nothing.
func TestDistanceAllocs(t *testing.T) {
	tb := newTable()
	for _, r := range []string{"iad", "ord", "syd", "ams"} {
		if n := testing.AllocsPerRun(1000, func() { tb.Distance(r) }); n != 0 {
			t.Errorf("Distance(%q) allocates %v times", r, n)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { tb.Observe("ord", 20*ms) }); n != 0 {
		t.Errorf("Observe of a known region allocates %v times", n)
	}
}

func BenchmarkDistance(b *testing.B) {
	tb := newTable()
	for i := range 30 {
		tb.Observe(fmt.Sprintf("r%d", i), time.Duration(i+1)*ms)
	}
	for _, r := range []string{"iad", "ord", "r17", "unknown"} {
		b.Run(r, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tb.Distance(r)
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tb.Distance("r17")
			}
		})
	})
}

func BenchmarkObserve(b *testing.B) {
	tb := newTable()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tb.Observe("ord", 20*ms)
		}
	})
}
