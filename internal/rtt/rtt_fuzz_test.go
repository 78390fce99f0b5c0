package rtt

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// FuzzTable drives a table with arbitrary region names and durations:
// nothing panics, self is always 0, and every distance is within
// [0, Unknown] and agrees with RTT and Regions. Region names come from a
// comma-separated list; each op is a region byte and eight duration
// bytes, and a region byte with the top bit set carries the table so far
// into a fresh one instead.
func FuzzTable(f *testing.F) {
	f.Add("iad", "ord,lhr", []byte{})
	f.Add("iad", "ord,lhr,iad", []byte{1, 0, 0x2d, 0x31, 0x01, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add("", ",x", []byte{0, 1, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add("iad", "ord", []byte{0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0, 0, 0, 0, 0, 0x80})
	f.Fuzz(func(t *testing.T, self, names string, data []byte) {
		regions := strings.Split(names, ",")
		// Configuration from the same names: starts from the first bytes,
		// fixes every third region.
		start, fixed := map[string]time.Duration{}, map[string]time.Duration{}
		for i, r := range regions {
			d := time.Duration(i+1) * time.Duration(len(data)+1) * time.Millisecond
			if i%3 == 2 {
				fixed[r] = d
			} else {
				start[r] = d - 2*time.Millisecond // some zero or negative
			}
		}
		tb := New(self, start, fixed)
		for len(data) >= 9 {
			op, d := data[0], time.Duration(binary.LittleEndian.Uint64(data[1:9]))
			data = data[9:]
			if op&0x80 != 0 {
				next := New(self, start, fixed)
				next.Carry(tb)
				tb = next
				continue
			}
			r := regions[int(op)%len(regions)]
			if d&1 == 1 {
				r += "!" // a region nobody configured
			}
			tb.Observe(r, d)
		}
		all := append([]string{self, "unconfigured"}, regions...)
		for _, r := range regions {
			all = append(all, r+"!")
		}
		checkConsistent(t, tb, self, all)
		if len(tb.Regions()) > 1+len(start)+len(fixed)+MaxLearned {
			t.Fatalf("table grew to %d regions", len(tb.Regions()))
		}
	})
}
