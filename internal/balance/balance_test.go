package balance

import (
	"math/rand/v2"
	"testing"
)

// fixed returns an intn that always answers v (clamped into [0, n)), and
// records every n it was asked about so tests can see when ties happened.
func fixed(v int, calls *[]int) func(int) int {
	return func(n int) int {
		if calls != nil {
			*calls = append(*calls, n)
		}
		if v >= n {
			return n - 1
		}
		return v
	}
}

// noTies fails the test if Pick draws: the cases using it have a unique best.
func noTies(t *testing.T) func(int) int {
	return func(n int) int {
		t.Helper()
		t.Errorf("intn(%d) called although no tie was expected", n)
		return 0
	}
}

func TestBandOf(t *testing.T) {
	tests := []struct {
		name       string
		load       int64
		soft, hard int
		want       Band
	}{
		{"idle", 0, 20, 0, UnderSoft},
		{"just under soft", 19, 20, 25, UnderSoft},
		{"at soft is over soft", 20, 20, 25, OverSoft},
		{"between soft and hard", 24, 20, 25, OverSoft},
		{"at hard", 25, 20, 25, AtHard},
		{"beyond hard", 26, 20, 25, AtHard},
		{"no hard limit never at hard", 1 << 40, 20, 0, OverSoft},
		{"soft equals hard goes straight to hard", 5, 5, 5, AtHard},
		{"soft zero is over soft from the start", 0, 0, 3, OverSoft},
		// A soft limit above the hard one (catalog's default soft 20 with a
		// small hard_limit) must still stop at hard.
		{"soft above hard, under hard", 4, 20, 5, UnderSoft},
		{"soft above hard, at hard", 5, 20, 5, AtHard},
		// Releases that overshoot must not push a machine into a worse band.
		{"negative load", -3, 20, 25, UnderSoft},
		{"negative hard means none", 100, 20, -1, OverSoft},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BandOf(tt.load, tt.soft, tt.hard); got != tt.want {
				t.Errorf("BandOf(%d, %d, %d) = %v, want %v", tt.load, tt.soft, tt.hard, got, tt.want)
			}
		})
	}
}

func TestBandString(t *testing.T) {
	for b, want := range map[Band]string{UnderSoft: "under_soft", OverSoft: "over_soft", AtHard: "at_hard"} {
		if got := b.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", b, got, want)
		}
	}
}

func TestPick(t *testing.T) {
	u := func(dist int, load int64, soft, hard int) Candidate {
		return Candidate{Distance: dist, Load: load, Soft: soft, Hard: hard, Usable: true}
	}
	unusable := func(c Candidate) Candidate { c.Usable = false; return c }
	tests := []struct {
		name  string
		cands []Candidate
		want  Result
	}{
		{"no candidates", nil, Result{Index: -1}},
		{"empty slice", []Candidate{}, Result{Index: -1}},
		{"single", []Candidate{u(0, 3, 20, 0)}, Result{Index: 0, Band: UnderSoft, Ties: 1}},
		{
			"nearest region wins even when more loaded",
			[]Candidate{u(1, 0, 20, 0), u(0, 19, 20, 0), u(2, 0, 20, 0)},
			Result{Index: 1, Band: UnderSoft, Ties: 1},
		},
		{
			"nearest region wins even over soft",
			[]Candidate{u(1, 0, 20, 25), u(0, 22, 20, 25)},
			Result{Index: 1, Band: OverSoft, Ties: 1},
		},
		{
			"under soft before over soft in the same region",
			[]Candidate{u(0, 20, 20, 0), u(0, 19, 20, 0)},
			Result{Index: 1, Band: UnderSoft, Ties: 1},
		},
		{
			// Different soft limits: the band, not the raw load, comes first.
			"band beats load",
			[]Candidate{u(0, 3, 2, 0), u(0, 10, 50, 0)},
			Result{Index: 1, Band: UnderSoft, Ties: 1},
		},
		{
			"least loaded within a band",
			[]Candidate{u(0, 7, 20, 0), u(0, 2, 20, 0), u(0, 5, 20, 0)},
			Result{Index: 1, Band: UnderSoft, Ties: 1},
		},
		{
			"least loaded among over soft",
			[]Candidate{u(0, 23, 20, 25), u(0, 21, 20, 25)},
			Result{Index: 1, Band: OverSoft, Ties: 1},
		},
		{
			"hard-limited nearest is skipped for a farther one",
			[]Candidate{u(0, 5, 2, 5), u(3, 4, 2, 5)},
			Result{Index: 1, Band: OverSoft, Ties: 1},
		},
		{
			"all at hard reports Full",
			[]Candidate{u(0, 5, 2, 5), u(1, 9, 2, 5)},
			Result{Index: -1, Full: true},
		},
		{
			"beyond hard also Full",
			[]Candidate{u(0, 6, 2, 5)},
			Result{Index: -1, Full: true},
		},
		{
			"Full only when nothing chosen",
			[]Candidate{u(0, 5, 2, 5), u(1, 0, 2, 5)},
			Result{Index: 1, Band: UnderSoft, Ties: 1},
		},
		{
			"unusable never chosen even when best",
			[]Candidate{unusable(u(0, 0, 20, 0)), u(5, 19, 20, 0)},
			Result{Index: 1, Band: UnderSoft, Ties: 1},
		},
		{
			"all unusable is not Full: waiting cannot help",
			[]Candidate{unusable(u(0, 0, 20, 0)), unusable(u(0, 5, 2, 5))},
			Result{Index: -1},
		},
		{
			"unusable at hard does not make Full",
			[]Candidate{unusable(u(0, 5, 2, 5))},
			Result{Index: -1},
		},
		{
			"no hard limit never Full",
			[]Candidate{u(0, 1<<50, 20, 0)},
			Result{Index: 0, Band: OverSoft, Ties: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Rival = -1 // Pick never has a rival
			if got := Pick(tt.cands, noTies(t)); got != tt.want {
				t.Errorf("Pick = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestPickTies pins down the reservoir draw: with intn always 0 every new
// tie replaces the choice (the last tied wins); with intn never 0 the first
// stays. Only tied candidates ever reach intn, and n counts them.
func TestPickTies(t *testing.T) {
	c := func(dist int, load int64) Candidate {
		return Candidate{Distance: dist, Load: load, Soft: 20, Hard: 30, Usable: true}
	}
	cands := []Candidate{
		c(0, 4), c(1, 0), c(0, 4), {Distance: 0, Load: 4, Soft: 20, Hard: 30}, // unusable tie
		c(0, 30), c(0, 5), c(0, 4),
	}
	tests := []struct {
		name      string
		v         int
		wantIndex int
	}{
		{"intn always 0 keeps the last tie", 0, 6},
		{"intn never 0 keeps the first tie", 1 << 30, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []int
			got := Pick(cands, fixed(tt.v, &calls))
			want := Result{Index: tt.wantIndex, Band: UnderSoft, Ties: 3, Rival: -1}
			if got != want {
				t.Errorf("Pick = %+v, want %+v", got, want)
			}
			if len(calls) != 2 || calls[0] != 2 || calls[1] != 3 {
				t.Errorf("intn called with %v, want [2 3]", calls)
			}
		})
	}

	t.Run("deterministic with a seeded source", func(t *testing.T) {
		run := func() []int {
			r := rand.New(rand.NewPCG(7, 7))
			var out []int
			for range 50 {
				out = append(out, Pick(cands, r.IntN).Index)
			}
			return out
		}
		a, b := run(), run()
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("draw %d differs between identical seeds: %d vs %d", i, a[i], b[i])
			}
		}
	})

	t.Run("a better candidate after ties resets the count", func(t *testing.T) {
		got := Pick([]Candidate{c(0, 4), c(0, 4), c(0, 3)}, fixed(1, nil))
		if want := (Result{Index: 2, Band: UnderSoft, Ties: 1, Rival: -1}); got != want {
			t.Errorf("Pick = %+v, want %+v", got, want)
		}
	})
}

// Between regions equally near, the app's home (primary region) wins
// within a band; a better band elsewhere still wins.
func TestPickPrefersHomeOnTies(t *testing.T) {
	never := func(int) int { t.Fatal("no tie expected"); return 0 }
	c := func(load int64, away bool) Candidate {
		return Candidate{Distance: 1, Load: load, Soft: 10, Hard: 20, Usable: true, Away: away}
	}
	for _, pick := range []struct {
		name string
		f    func([]Candidate, func(int) int) Result
	}{{"Pick", Pick}, {"PickP2C", PickP2C}} {
		if r := pick.f([]Candidate{c(1, true), c(5, false)}, never); r.Index != 1 {
			t.Errorf("%s: chose %d, want the home machine though busier", pick.name, r.Index)
		}
		if r := pick.f([]Candidate{c(1, true), c(12, false)}, never); r.Index != 0 {
			t.Errorf("%s: chose %d, want the machine under its soft limit elsewhere", pick.name, r.Index)
		}
		local := Candidate{Distance: 0, Load: 9, Soft: 10, Hard: 20, Usable: true, Away: true}
		if r := pick.f([]Candidate{c(0, false), local}, never); r.Index != 1 {
			t.Errorf("%s: chose %d, want this edge's region over a farther home", pick.name, r.Index)
		}
	}
}
