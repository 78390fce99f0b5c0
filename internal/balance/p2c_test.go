package balance

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// seq returns an intn that answers vs in turn and records each n asked.
func seq(t *testing.T, calls *[]int, vs ...int) func(int) int {
	return func(n int) int {
		t.Helper()
		*calls = append(*calls, n)
		if len(vs) == 0 {
			t.Fatalf("intn(%d) called more often than expected", n)
		}
		v := vs[0]
		vs = vs[1:]
		if v >= n {
			t.Fatalf("test answer %d out of range for intn(%d)", v, n)
		}
		return v
	}
}

// lc is a usable candidate with soft 20, no hard limit and a latency.
func lc(dist int, load, latency int64) Candidate {
	return Candidate{Distance: dist, Load: load, Latency: latency, Soft: 20, Usable: true}
}

func TestPickP2C(t *testing.T) {
	hard := func(c Candidate) Candidate { c.Soft, c.Hard = 2, 5; return c }
	unusable := func(c Candidate) Candidate { c.Usable = false; return c }
	tests := []struct {
		name  string
		cands []Candidate
		draws []int // intn answers, in order; the n asked are checked below
		want  Result
	}{
		{"no candidates", nil, nil, Result{Index: -1, Rival: -1}},
		{"group of one needs no draw", []Candidate{lc(0, 3, 100)}, nil,
			Result{Index: 0, Band: UnderSoft, Ties: 1, Rival: -1}},
		{
			"nearest region wins even when slow and loaded",
			[]Candidate{lc(1, 0, 1), lc(0, 19, 1_000_000), lc(2, 0, 0)}, nil,
			Result{Index: 1, Band: UnderSoft, Ties: 1, Rival: -1},
		},
		{
			"under soft before over soft even when slower",
			[]Candidate{lc(0, 20, 1), lc(0, 19, 1_000_000)}, nil,
			Result{Index: 1, Band: UnderSoft, Ties: 1, Rival: -1},
		},
		{
			"group is distance and band, not load",
			[]Candidate{lc(0, 20, 1), lc(0, 25, 1), lc(0, 3, 9)}, nil,
			Result{Index: 2, Band: UnderSoft, Ties: 1, Rival: -1},
		},
		{
			"over soft group when nothing is under soft",
			[]Candidate{lc(1, 0, 1), lc(0, 22, 5), lc(0, 30, 1)}, []int{0},
			Result{Index: 2, Band: OverSoft, Ties: 2, Rival: 1},
		},
		{
			"hard-limited nearest is skipped for a farther one",
			[]Candidate{hard(lc(0, 5, 1)), hard(lc(3, 4, 50))}, nil,
			Result{Index: 1, Band: OverSoft, Ties: 1, Rival: -1},
		},
		{"all at hard reports Full", []Candidate{hard(lc(0, 5, 1)), hard(lc(1, 9, 1))}, nil,
			Result{Index: -1, Rival: -1, Full: true}},
		{"Full only when nothing chosen", []Candidate{hard(lc(0, 5, 1)), hard(lc(1, 0, 1))}, nil,
			Result{Index: 1, Band: UnderSoft, Ties: 1, Rival: -1}},
		{
			"unusable never chosen even when fastest",
			[]Candidate{unusable(lc(0, 0, 1)), lc(0, 9, 1000)}, nil,
			Result{Index: 1, Band: UnderSoft, Ties: 1, Rival: -1},
		},
		{"all unusable is not Full", []Candidate{unusable(lc(0, 0, 1)), unusable(hard(lc(0, 5, 1)))}, nil,
			Result{Index: -1, Rival: -1}},
		{
			"unmeasured explored first, drawn first",
			[]Candidate{lc(0, 0, 1), lc(0, 3, 0)}, []int{1},
			Result{Index: 1, Band: UnderSoft, Ties: 2, Rival: 0},
		},
		{
			"unmeasured explored first, drawn second",
			[]Candidate{lc(0, 0, 1), lc(0, 3, 0)}, []int{0},
			Result{Index: 1, Band: UnderSoft, Ties: 2, Rival: 0},
		},
		{
			"faster wins at equal load, drawn first",
			[]Candidate{lc(0, 4, 10), lc(0, 4, 100)}, []int{0},
			Result{Index: 0, Band: UnderSoft, Ties: 2, Rival: 1},
		},
		{
			"faster wins at equal load, drawn second",
			[]Candidate{lc(0, 4, 10), lc(0, 4, 100)}, []int{1},
			Result{Index: 0, Band: UnderSoft, Ties: 2, Rival: 1},
		},
		{
			// (9+1)×10 = 100 > (0+1)×50 = 50.
			"loaded fast machine loses to idle slow one",
			[]Candidate{lc(0, 9, 10), lc(0, 0, 50)}, []int{0},
			Result{Index: 1, Band: UnderSoft, Ties: 2, Rival: 0},
		},
		{
			// (3+1)×10 = 40 < (0+1)×50 = 50.
			"lightly loaded fast machine still beats idle slow one",
			[]Candidate{lc(0, 3, 10), lc(0, 0, 50)}, []int{1},
			Result{Index: 0, Band: UnderSoft, Ties: 2, Rival: 1},
		},
		{
			// (1+1)×10 = (3+1)×5 = 20.
			"equal scores go to the lower load",
			[]Candidate{lc(0, 3, 5), lc(0, 1, 10)}, []int{0},
			Result{Index: 1, Band: UnderSoft, Ties: 2, Rival: 0},
		},
		{
			"equal scores and loads go to the first drawn",
			[]Candidate{lc(0, 2, 7), lc(0, 2, 7)}, []int{1},
			Result{Index: 1, Band: UnderSoft, Ties: 2, Rival: 0},
		},
		{
			"two unmeasured: lower load",
			[]Candidate{lc(0, 2, 0), lc(0, 1, 0)}, []int{0},
			Result{Index: 1, Band: UnderSoft, Ties: 2, Rival: 0},
		},
		{
			"negative load counts as idle, and as lower",
			[]Candidate{lc(0, 0, 10), lc(0, -3, 10)}, []int{0},
			Result{Index: 1, Band: UnderSoft, Ties: 2, Rival: 0},
		},
		{
			// Both products overflow int64; the 128-bit score keeps order.
			"huge loads and latencies do not overflow",
			[]Candidate{lc(0, 1<<62, 1<<40), lc(0, 1<<61, 1<<40)}, []int{0},
			Result{Index: 1, Band: OverSoft, Ties: 2, Rival: 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []int
			got := PickP2C(tt.cands, seq(t, &calls, tt.draws...))
			if got != tt.want {
				t.Errorf("PickP2C = %+v, want %+v", got, tt.want)
			}
			if len(calls) != len(tt.draws) {
				t.Errorf("intn called %v, want %d calls", calls, len(tt.draws))
			}
		})
	}
}

// TestPickP2CDrawMapping pins down how the two positions become indexes:
// members of the group are counted in candidate order, skipping the rest,
// and the second draw skips the first position.
func TestPickP2CDrawMapping(t *testing.T) {
	// Group members at 1, 3 and 5; identical, so the first drawn wins.
	cands := []Candidate{
		lc(1, 0, 0), lc(0, 2, 7), lc(0, 25, 1), lc(0, 2, 7), {Distance: 0, Load: 2, Latency: 7, Soft: 20},
		lc(0, 2, 7),
	}
	tests := []struct {
		draws        []int
		index, rival int
	}{
		{[]int{0, 0}, 1, 3},
		{[]int{0, 1}, 1, 5},
		{[]int{1, 0}, 3, 1},
		{[]int{1, 1}, 3, 5},
		{[]int{2, 0}, 5, 1},
		{[]int{2, 1}, 5, 3},
	}
	for _, tt := range tests {
		var calls []int
		got := PickP2C(cands, seq(t, &calls, tt.draws...))
		want := Result{Index: tt.index, Rival: tt.rival, Band: UnderSoft, Ties: 3}
		if got != want {
			t.Errorf("draws %v: PickP2C = %+v, want %+v", tt.draws, got, want)
		}
		if len(calls) != 2 || calls[0] != 3 || calls[1] != 2 {
			t.Errorf("draws %v: intn called with %v, want [3 2]", tt.draws, calls)
		}
	}
}

// TestPickP2CStatistics checks the policy's aim with a seeded source, so it
// cannot flake: a faster machine takes the work at equal load, and the
// fast half of a group takes most of it without starving the slow half
// (which is what keeps p2c from herding).
func TestPickP2CStatistics(t *testing.T) {
	const picks = 10000
	r := rand.New(rand.NewPCG(3, 9))

	two := []Candidate{lc(0, 4, 100), lc(0, 4, 10)}
	for i := range picks {
		if got := PickP2C(two, r.IntN); got.Index != 1 {
			t.Fatalf("pick %d: chose %d (%+v), want the 10x faster machine 1", i, got.Index, got)
		}
	}

	four := []Candidate{lc(0, 4, 1), lc(0, 4, 1), lc(0, 4, 10), lc(0, 4, 10)}
	var counts [4]int
	for range picks {
		counts[PickP2C(four, r.IntN).Index]++
	}
	// Only a slow-slow pair (1 of 6) goes slow: 5/6 ≈ 83% fast.
	if fast := counts[0] + counts[1]; fast*100 <= 80*picks {
		t.Errorf("fast pair chose %d of %d (counts %v), want > 80%%", fast, picks, counts)
	}
	for i, n := range counts {
		if n == 0 {
			t.Errorf("machine %d never chosen (counts %v): p2c should still spread work", i, counts)
		}
	}
}

// TestPickP2CAllocs holds the hot-path rule: no allocation per pick, even
// for a group larger than any stack buffer a caller might use.
func TestPickP2CAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	intn := r.IntN
	cands := benchCandidates(64)
	if n := testing.AllocsPerRun(1000, func() { PickP2C(cands, intn) }); n != 0 {
		t.Errorf("PickP2C allocates %v times per pick", n)
	}
}

// benchCandidates is a realistic app: most machines in the nearest region,
// some loaded past soft, the last one unusable, every fourth farther away.
func benchCandidates(n int) []Candidate {
	cands := make([]Candidate, n)
	for i := range cands {
		cands[i] = lc(0, int64(i%7), int64(1_000_000+i*1000))
		if i%4 == 3 {
			cands[i].Distance = 10_000
		}
		if i%6 == 5 {
			cands[i].Load = 25
		}
	}
	cands[n-1].Usable = false
	return cands
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{4, 16, 64} {
		cands := benchCandidates(n)
		intn := rand.New(rand.NewPCG(1, 1)).IntN
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Pick(cands, intn)
			}
		})
	}
}

func BenchmarkPickP2C(b *testing.B) {
	for _, n := range []int{4, 16, 64} {
		cands := benchCandidates(n)
		intn := rand.New(rand.NewPCG(1, 1)).IntN
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				PickP2C(cands, intn)
			}
		})
	}
}
