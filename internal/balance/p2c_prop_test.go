package balance

import (
	"fmt"
	"math"
	"math/big"
	"testing"

	"pgregory.net/rapid"
)

// draw is one call PickP2C made to intn: what it asked and what it got.
type draw struct{ n, v int }

// recorder wraps intn so the oracle can replay the draws PickP2C made.
func recorder(intn func(int) int, log *[]draw) func(int) int {
	return func(n int) int {
		v := intn(n)
		*log = append(*log, draw{n, v})
		return v
	}
}

// p2cScore is the score PickP2C promises, in big integers so the oracle
// shares no overflow handling with the code under test.
func p2cScore(c Candidate) *big.Int {
	if c.Latency <= 0 {
		return new(big.Int)
	}
	load := max(c.Load, 0)
	s := new(big.Int).Add(big.NewInt(load), big.NewInt(1))
	return s.Mul(s, big.NewInt(c.Latency))
}

// p2cBetter is the oracle's "x strictly beats y".
func p2cBetter(x, y Candidate) bool {
	if c := p2cScore(x).Cmp(p2cScore(y)); c != 0 {
		return c < 0
	}
	return x.Load < y.Load
}

// checkP2C states every promise of PickP2C about one call given the draws
// it made, independently of how PickP2C is written: the property and fuzz
// tests share it.
func checkP2C(cands []Candidate, got Result, draws []draw) error {
	// The best group: eligible candidates with the lowest distance, then
	// the best band, kept in candidate order.
	var group []int
	full := false
	// Pick's key without the load: P2C weighs load itself.
	groupKey := func(c Candidate) [4]int64 {
		k := key(c)
		k[3] = 0
		return k
	}
	for i, c := range cands {
		switch {
		case !c.Usable:
		case !eligible(c):
			full = true
		case len(group) == 0 || less(groupKey(c), groupKey(cands[group[0]])):
			group = []int{i}
		case groupKey(c) == groupKey(cands[group[0]]):
			group = append(group, i)
		}
	}
	if len(group) == 0 {
		want := Result{Index: -1, Rival: -1, Full: full}
		if got != want {
			return fmt.Errorf("no eligible candidate: got %+v, want %+v", got, want)
		}
		if len(draws) > 0 {
			return fmt.Errorf("drew %v with nothing to choose", draws)
		}
		return nil
	}
	inGroup := func(i int) bool {
		for _, g := range group {
			if g == i {
				return true
			}
		}
		return false
	}
	if got.Full {
		return fmt.Errorf("Full reported with a choice: %+v", got)
	}
	if got.Ties != len(group) {
		return fmt.Errorf("Ties = %d, want group size %d (group %v)", got.Ties, len(group), group)
	}
	if !inGroup(got.Index) {
		return fmt.Errorf("chose %d outside the best group %v", got.Index, group)
	}
	if b := BandOf(cands[got.Index].Load, cands[got.Index].Soft, cands[got.Index].Hard); b != got.Band {
		return fmt.Errorf("chose %d in band %v, reported %v", got.Index, b, got.Band)
	}
	if len(group) == 1 {
		if got.Rival != -1 || len(draws) > 0 {
			return fmt.Errorf("group of one: Rival %d, draws %v; want -1 and none", got.Rival, draws)
		}
		return nil
	}
	if !inGroup(got.Rival) || got.Rival == got.Index {
		return fmt.Errorf("rival %d not another member of group %v (index %d)", got.Rival, group, got.Index)
	}
	if p2cBetter(cands[got.Rival], cands[got.Index]) {
		return fmt.Errorf("chose %d %+v over strictly better rival %d %+v", got.Index, cands[got.Index], got.Rival, cands[got.Rival])
	}

	// Replay the draws: which two were drawn, and in what order.
	wantDraws := 1
	if len(group) > 2 {
		wantDraws = 2
	}
	if len(draws) != wantDraws || draws[0].n != len(group) || (wantDraws == 2 && draws[1].n != len(group)-1) {
		return fmt.Errorf("group of %d: draws %v", len(group), draws)
	}
	a, b := draws[0].v, 0
	if wantDraws == 2 {
		b = draws[1].v
	}
	if b >= a {
		b++
	}
	first, second := group[a], group[b]
	if p2cBetter(cands[second], cands[first]) {
		first, second = second, first
	}
	if got.Index != first || got.Rival != second {
		return fmt.Errorf("draws %v over group %v: got index %d rival %d, want %d %d", draws, group, got.Index, got.Rival, first, second)
	}
	return nil
}

// p2cCandidateGen adds latencies to candidateGen: small values so equal
// scores are common, 0 and negatives for unmeasured, and the extremes to
// catch overflow in the score.
var p2cCandidateGen = rapid.Custom(func(t *rapid.T) Candidate {
	c := candidateGen.Draw(t, "cand")
	c.Latency = rapid.SampledFrom([]int64{0, 0, 1, 2, 3, 5, 10, -1, math.MaxInt64}).Draw(t, "latency")
	if rapid.IntRange(0, 19).Draw(t, "huge load") == 0 {
		c.Load = math.MaxInt64
	}
	return c
})

func TestPickP2CProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cands := rapid.SliceOfN(p2cCandidateGen, 0, 12).Draw(t, "cands")
		var draws []draw
		intn := recorder(func(n int) int {
			if n < 2 {
				t.Fatalf("intn(%d) called: a draw needs at least two", n)
			}
			return rapid.IntRange(0, n-1).Draw(t, "draw")
		}, &draws)
		got := PickP2C(cands, intn)
		if err := checkP2C(cands, got, draws); err != nil {
			t.Fatalf("%v\ncands: %+v", err, cands)
		}

		// Deterministic given intn: the same answers give the same result.
		replay := draws
		again := PickP2C(cands, func(n int) int {
			v := replay[0].v
			replay = replay[1:]
			return v
		})
		if again != got {
			t.Fatalf("replayed draws %v gave %+v, first call %+v", draws, again, got)
		}
	})
}

// TestPickP2CAgreesWithPickOnExclusions: both policies see the same
// machines as choosable, so they fail, and report Full, alike.
func TestPickP2CAgreesWithPickOnExclusions(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cands := rapid.SliceOfN(p2cCandidateGen, 0, 12).Draw(t, "cands")
		zero := func(int) int { return 0 }
		p, q := Pick(cands, zero), PickP2C(cands, zero)
		if (p.Index < 0) != (q.Index < 0) || p.Full != q.Full {
			t.Fatalf("Pick %+v, PickP2C %+v", p, q)
		}
		if p.Index >= 0 && (cands[p.Index].Distance != cands[q.Index].Distance || p.Band != q.Band) {
			t.Fatalf("Pick chose distance %d band %v, PickP2C distance %d band %v",
				cands[p.Index].Distance, p.Band, cands[q.Index].Distance, q.Band)
		}
	})
}
