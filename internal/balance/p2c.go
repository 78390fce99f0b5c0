package balance

import "math/bits"

// PickP2C chooses a candidate by the power of two choices, scored by load
// and measured latency.
//
// Pick's least-loaded rule is blind to speed: when connection counts are
// low (a few slow, CPU-bound requests per machine) every machine looks
// equally idle, and a machine that takes ten times longer per request
// keeps getting its share. Scoring by (Load+1) × Latency sees that. But
// always sending work to the best score would herd: latencies are smoothed
// and loads change between updates, so every edge and every concurrent
// request would pile onto the one machine that looked best a moment ago.
// Comparing two machines drawn at random keeps most of the benefit (the
// worse of each pair is avoided, so a uniquely worst machine is never
// chosen) while spreading work over every machine that is good enough.
//
// Exclusions and Full are exactly as for Pick: unusable and at-hard
// machines are never chosen, and Full is set when nothing was chosen but
// some usable machine is at its hard limit. Region and band come first as
// in Pick: only the lowest Distance, then the best Band among it, are
// drawn from, so soft limits and region preference behave the same under
// both policies. A machine with no measurement yet (Latency 0) scores 0,
// so new machines are tried rather than starved. Equal scores go to the
// lower Load, then to the first drawn.
//
// intn(n) must return a value in [0, n); it is called only with n >= 2,
// at most twice, and only when the group has two or more members.
// PickP2C does not allocate.
func PickP2C(cands []Candidate, intn func(n int) int) Result {
	res := Result{Index: -1, Rival: -1}
	// First pass: the best group's key, its size and its first member.
	first, size := -1, 0
	var dist int
	var band Band
	away := false
	for i, c := range cands {
		if !c.Usable {
			continue
		}
		b := BandOf(c.Load, c.Soft, c.Hard)
		if b == AtHard {
			res.Full = true
			continue
		}
		switch {
		case first < 0 || c.Distance < dist || (c.Distance == dist && b < band) ||
			(c.Distance == dist && b == band && away && !c.Away):
			first, size, dist, band, away = i, 1, c.Distance, b, c.Away
		case c.Distance == dist && b == band && c.Away == away:
			size++
		}
	}
	if first < 0 {
		return res
	}
	res.Full, res.Band, res.Ties = false, band, size
	if size == 1 {
		res.Index = first
		return res
	}

	// Two distinct positions in the group, uniform over ordered pairs:
	// the second is drawn from the size-1 positions left and shifted past
	// the first.
	a := intn(size)
	b := 0
	if size > 2 {
		b = intn(size - 1)
	}
	if b >= a {
		b++
	}
	// Second pass: map the positions to indexes. Counting group members
	// again is cheaper than remembering them, which would allocate for
	// large groups.
	ia, ib, k := -1, -1, 0
	for i := first; i < len(cands) && (ia < 0 || ib < 0); i++ {
		c := cands[i]
		if !c.Usable || c.Distance != dist || BandOf(c.Load, c.Soft, c.Hard) != band || c.Away != away {
			continue
		}
		switch k {
		case a:
			ia = i
		case b:
			ib = i
		}
		k++
	}
	if beats(cands[ib], cands[ia]) {
		ia, ib = ib, ia
	}
	res.Index, res.Rival = ia, ib
	return res
}

// beats reports whether x is strictly better than y: a lower score, or an
// equal score and a lower load.
func beats(x, y Candidate) bool {
	xh, xl := score(x)
	yh, yl := score(y)
	switch {
	case xh != yh:
		return xh < yh
	case xl != yl:
		return xl < yl
	}
	return x.Load < y.Load
}

// score is (Load+1) × Latency as a 128-bit product, so large loads or
// latencies cannot overflow into a wrong order. A negative load (releases
// that overshot) counts as idle and a negative latency as unmeasured,
// as BandOf treats negative loads.
func score(c Candidate) (hi, lo uint64) {
	if c.Latency <= 0 {
		return 0, 0
	}
	var load uint64
	if c.Load > 0 {
		load = uint64(c.Load)
	}
	return bits.Mul64(load+1, uint64(c.Latency))
}
