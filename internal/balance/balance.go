// Package balance chooses the machine that gets a connection or request.
// It is pure: callers pass the candidates with their current load, the
// distance to each one's region and a source of randomness, and get back
// an index and the reason for the choice. Nothing here reads clocks,
// counters or globals, so every choice can be replayed in a test.
//
// The order of preference follows the platform: the nearest region that
// has any machine able to take work, then machines under their soft limit
// before those between soft and hard, then, between regions equally
// near, the app's primary region, then the least loaded, with ties
// broken at random. Machines that are unhealthy, excluded (already tried)
// or at their hard limit are never chosen. PickP2C keeps the same region
// and band order but, within the best group, weighs each machine's
// measured response time as well as its load.
package balance

// Candidate is one machine as the balancer sees it.
type Candidate struct {
	// Distance orders regions: lower is closer (0 is this edge's region).
	Distance int
	// Away marks a machine outside the app's primary region: between
	// machines equally near and equally loaded by band, the app's home
	// wins.
	Away bool
	// Load is the machine's current concurrency for this service.
	Load int64
	// Latency is the machine's smoothed response time in nanoseconds;
	// 0 means not measured yet. Only PickP2C reads it.
	Latency int64
	// Soft and Hard are the service's limits; Hard 0 means none.
	Soft, Hard int
	// Usable is false for machines that must not be chosen: unhealthy,
	// stopped, or already tried for this request.
	Usable bool
}

// Band is where a machine's load sits relative to its limits.
type Band uint8

const (
	UnderSoft Band = iota // below soft_limit: preferred
	OverSoft              // at or above soft_limit, below hard_limit
	AtHard                // at hard_limit: takes no new work
)

func (b Band) String() string {
	switch b {
	case UnderSoft:
		return "under_soft"
	case OverSoft:
		return "over_soft"
	default:
		return "at_hard"
	}
}

// BandOf places a load in its band.
func BandOf(load int64, soft, hard int) Band {
	switch {
	case hard > 0 && load >= int64(hard):
		return AtHard
	case load >= int64(soft):
		return OverSoft
	default:
		return UnderSoft
	}
}

// Result explains a choice.
type Result struct {
	Index int  // chosen candidate, -1 if none
	Band  Band // band of the chosen machine
	// Ties is how many candidates the random draw chose among: the equally
	// good ones for Pick, the whole best group for PickP2C.
	Ties int
	// Rival is the other candidate PickP2C drew and compared against, -1
	// when there was none (a group of one, no choice, or Pick).
	Rival int
	// Full is true when no candidate was chosen but some usable ones exist
	// at their hard limit: waiting may help, unlike when none are usable.
	Full bool
}

// Pick chooses a candidate. intn(n) must return a value in [0, n); it is
// called only when there is a tie.
func Pick(cands []Candidate, intn func(n int) int) Result {
	best := Result{Index: -1, Rival: -1}
	var bestKey [4]int64
	for i, c := range cands {
		if !c.Usable {
			continue
		}
		band := BandOf(c.Load, c.Soft, c.Hard)
		if band == AtHard {
			best.Full = true
			continue
		}
		key := [4]int64{int64(c.Distance), int64(band), b2i(c.Away), c.Load}
		switch {
		case best.Index < 0 || less(key, bestKey):
			best.Index, best.Band, best.Ties, bestKey = i, band, 1, key
		case key == bestKey:
			// Reservoir sampling keeps the draw uniform over all ties
			// without allocating a list of them.
			best.Ties++
			if intn(best.Ties) == 0 {
				best.Index = i
			}
		}
	}
	if best.Index >= 0 {
		best.Full = false
	}
	return best
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func less(a, b [4]int64) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
