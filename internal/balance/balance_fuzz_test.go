package balance

import (
	"math"
	"testing"
)

// decodeCandidates turns fuzz bytes into candidates, five bytes each, with
// signed small values so negative loads and distances are explored too.
// What is left over after the last whole candidate feeds the tie draws.
func decodeCandidates(data []byte) ([]Candidate, []byte) {
	var cands []Candidate
	for len(data) >= 5 {
		cands = append(cands, Candidate{
			Distance: int(int8(data[0])) % 8,
			Load:     int64(int8(data[1])),
			Soft:     int(int8(data[2])),
			Hard:     int(int8(data[3])),
			Usable:   data[4]&1 == 1,
			Away:     data[4]&2 == 2,
		})
		data = data[5:]
	}
	return cands, data
}

func FuzzPick(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 3, 20, 0, 1})
	// Two tied machines and one draw byte.
	f.Add([]byte{0, 4, 20, 30, 1, 0, 4, 20, 30, 1, 1})
	// Nearest at hard, farther under soft.
	f.Add([]byte{0, 5, 2, 5, 1, 2, 0, 2, 5, 1})
	// All at hard: Full.
	f.Add([]byte{0, 5, 2, 5, 1, 1, 9, 2, 5, 1})
	// Negative load and hard.
	f.Add([]byte{0, 0xff, 20, 0xff, 1, 0x80, 0x80, 0x80, 0x80, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		cands, draws := decodeCandidates(data)
		intn := func(n int) int {
			if n < 2 {
				t.Fatalf("intn(%d) called", n)
			}
			if len(draws) == 0 {
				return 0
			}
			v := int(draws[0]) % n
			draws = draws[1:]
			return v
		}
		got := Pick(cands, intn)
		if err := checkPick(cands, got); err != nil {
			t.Fatalf("%v\ncands: %+v", err, cands)
		}
	})
}

// decodeP2C is decodeCandidates with a sixth byte for latency. 0x7f in
// the load or latency byte stands for the largest int64, so the score's
// overflow handling is explored, not just small products.
func decodeP2C(data []byte) ([]Candidate, []byte) {
	var cands []Candidate
	for len(data) >= 6 {
		c, _ := decodeCandidates(data[:5])
		c[0].Latency = int64(int8(data[5]))
		if data[1] == 0x7f {
			c[0].Load = math.MaxInt64
		}
		if data[5] == 0x7f {
			c[0].Latency = math.MaxInt64
		}
		cands = append(cands, c[0])
		data = data[6:]
	}
	return cands, data
}

func FuzzPickP2C(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 3, 20, 0, 1, 10})
	// Two in the group, fast and slow, and one draw byte.
	f.Add([]byte{0, 4, 20, 30, 1, 10, 0, 4, 20, 30, 1, 100, 1})
	// Three in the group with an unmeasured one, two draws.
	f.Add([]byte{0, 4, 20, 30, 1, 10, 0, 4, 20, 30, 1, 0, 0, 2, 20, 30, 1, 5, 2, 1})
	// Nearest at hard, farther under soft.
	f.Add([]byte{0, 5, 2, 5, 1, 1, 2, 0, 2, 5, 1, 9})
	// All at hard: Full.
	f.Add([]byte{0, 5, 2, 5, 1, 1, 1, 9, 2, 5, 1, 1})
	// Largest load and latency: the product overflows int64.
	f.Add([]byte{0, 0x7f, 20, 0, 1, 0x7f, 0, 0x7e, 20, 0, 1, 0x7f, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		cands, rest := decodeP2C(data)
		var draws []draw
		intn := recorder(func(n int) int {
			if n < 2 {
				t.Fatalf("intn(%d) called", n)
			}
			if len(rest) == 0 {
				return 0
			}
			v := int(rest[0]) % n
			rest = rest[1:]
			return v
		}, &draws)
		got := PickP2C(cands, intn)
		if err := checkP2C(cands, got, draws); err != nil {
			t.Fatalf("%v\ncands: %+v", err, cands)
		}
	})
}
