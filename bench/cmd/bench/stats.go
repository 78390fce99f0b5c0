package main

import (
	"math"
	"slices"
)

// spread is the median of repeated runs with their range.
type spread struct {
	Med, Min, Max float64
	N             int
}

func summarize(v []float64) spread {
	var clean []float64
	for _, x := range v {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			clean = append(clean, x)
		}
	}
	if len(clean) == 0 {
		return spread{Med: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(clean)
	s := spread{Min: clean[0], Max: clean[len(clean)-1], N: len(clean)}
	if n := len(clean); n%2 == 1 {
		s.Med = clean[n/2]
	} else {
		s.Med = (clean[n/2-1] + clean[n/2]) / 2
	}
	return s
}

// ratio of edgeproxy's figure to a peer's; NaN when either is missing or
// the peer's is zero.
func ratio(edge, peer float64) float64 {
	if math.IsNaN(edge) || math.IsNaN(peer) || peer == 0 {
		return math.NaN()
	}
	return edge / peer
}

// mostCommon returns the most frequent string (ties: the first seen).
func mostCommon(v []string) string {
	best, bestN := "", 0
	count := map[string]int{}
	for _, s := range v {
		count[s]++
		if count[s] > bestN {
			best, bestN = s, count[s]
		}
	}
	return best
}
