package balance

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"pgregory.net/rapid"
)

// key is the order Pick promises: nearer, then better band, then lighter.
func key(c Candidate) [4]int64 {
	return [4]int64{int64(c.Distance), int64(BandOf(c.Load, c.Soft, c.Hard)), b2i(c.Away), c.Load}
}

func eligible(c Candidate) bool {
	return c.Usable && BandOf(c.Load, c.Soft, c.Hard) != AtHard
}

// checkPick states every promise of Pick about one call, independently of
// how Pick is written, so the property and fuzz tests share one oracle.
func checkPick(cands []Candidate, got Result) error {
	best := -1
	ties := 0
	full := false
	for i, c := range cands {
		switch {
		case !c.Usable:
		case !eligible(c):
			full = true
		case best < 0 || less(key(c), key(cands[best])):
			best, ties = i, 1
		case key(c) == key(cands[best]):
			ties++
		}
	}
	if best < 0 {
		want := Result{Index: -1, Rival: -1, Full: full}
		if got != want {
			return fmt.Errorf("no eligible candidate: got %+v, want %+v", got, want)
		}
		return nil
	}
	if got.Index < 0 || got.Index >= len(cands) {
		return fmt.Errorf("index %d out of range with eligible candidate %d", got.Index, best)
	}
	c := cands[got.Index]
	if !c.Usable {
		return fmt.Errorf("chose unusable candidate %d: %+v", got.Index, c)
	}
	if b := BandOf(c.Load, c.Soft, c.Hard); b == AtHard || b != got.Band {
		return fmt.Errorf("chose %d in band %v, reported %v", got.Index, b, got.Band)
	}
	for j, o := range cands {
		if j != got.Index && eligible(o) && less(key(o), key(c)) {
			return fmt.Errorf("chose %d %v but %d %v is strictly better", got.Index, key(c), j, key(o))
		}
	}
	if got.Ties != ties {
		return fmt.Errorf("Ties = %d, want %d", got.Ties, ties)
	}
	if got.Full {
		return fmt.Errorf("Full reported with a choice: %+v", got)
	}
	if got.Rival != -1 {
		return fmt.Errorf("Pick reported Rival %d, want -1", got.Rival)
	}
	return nil
}

// candidateGen draws small values so that ties, band edges and hard limits
// come up often rather than by luck.
var candidateGen = rapid.Custom(func(t *rapid.T) Candidate {
	soft := rapid.IntRange(0, 6).Draw(t, "soft")
	return Candidate{
		Distance: rapid.IntRange(-1, 3).Draw(t, "distance"),
		Load:     rapid.Int64Range(-1, 8).Draw(t, "load"),
		Soft:     soft,
		Hard:     rapid.IntRange(0, 8).Draw(t, "hard"),
		Usable:   rapid.Float64Range(0, 1).Draw(t, "usable") < 0.8,
		Away:     rapid.Bool().Draw(t, "away"),
	}
})

func TestPickProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cands := rapid.SliceOfN(candidateGen, 0, 12).Draw(t, "cands")
		intn := func(n int) int {
			if n < 2 {
				t.Fatalf("intn(%d) called: a draw needs at least two ties", n)
			}
			return rapid.IntRange(0, n-1).Draw(t, "tie")
		}
		got := Pick(cands, intn)
		if err := checkPick(cands, got); err != nil {
			t.Fatalf("%v\ncands: %+v", err, cands)
		}
	})
}

// TestPickTieCoverage checks that a uniform intn spreads choices over every
// tied candidate and never elsewhere. Bounds are loose (±35% of the mean
// with 20,000 draws): the point is reachability and rough fairness, and a
// fixed seed keeps the test from flaking.
func TestPickTieCoverage(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	rapid.Check(t, func(rt *rapid.T) {
		cands := rapid.SliceOfN(candidateGen, 1, 10).Draw(rt, "cands")
		var tied []int
		for i, c := range cands {
			if !eligible(c) {
				continue
			}
			if len(tied) == 0 || less(key(c), key(cands[tied[0]])) {
				tied = []int{i}
			} else if key(c) == key(cands[tied[0]]) {
				tied = append(tied, i)
			}
		}
		if len(tied) < 2 {
			return
		}
		const draws = 20000
		counts := make([]int, len(cands))
		for range draws {
			counts[Pick(cands, r.IntN).Index]++
		}
		mean := float64(draws) / float64(len(tied))
		isTied := map[int]bool{}
		for _, i := range tied {
			isTied[i] = true
			if f := float64(counts[i]); f < 0.65*mean || f > 1.35*mean {
				rt.Fatalf("tied candidate %d chosen %d times of %d, mean %.0f: counts %v", i, counts[i], draws, mean, counts)
			}
		}
		for i, n := range counts {
			if n > 0 && !isTied[i] {
				rt.Fatalf("non-tied candidate %d chosen %d times", i, n)
			}
		}
	})
}
