package wsframe

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func frame(masked bool, payload int) []byte {
	b := []byte{0x82}
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch {
	case payload < 126:
		b = append(b, m|byte(payload))
	case payload < 1<<16:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(payload))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(payload))
	}
	if masked {
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, bytes.Repeat([]byte{'x'}, payload)...)
}

// TestBoundaries feeds frames of every length class in pieces of every
// size and checks the tracker is at a boundary exactly between frames.
func TestBoundaries(t *testing.T) {
	var stream []byte
	var ends []int
	for _, f := range [][]byte{frame(true, 0), frame(true, 5), frame(false, 125), frame(true, 126), frame(true, 70000), frame(false, 3), ClientClose()} {
		stream = append(stream, f...)
		ends = append(ends, len(stream))
	}
	for piece := 1; piece <= 17; piece++ {
		var tr Tracker
		for off := 0; off < len(stream); {
			n := min(piece, len(stream)-off)
			tr.Feed(stream[off : off+n])
			off += n
			atEnd := false
			for _, e := range ends {
				if e == off {
					atEnd = true
				}
			}
			// Inside a frame the tracker must never claim a boundary.
			if tr.AtBoundary() && !atEnd {
				t.Fatalf("piece %d: boundary claimed at %d", piece, off)
			}
			if atEnd && !tr.AtBoundary() {
				t.Fatalf("piece %d: no boundary at frame end %d", piece, off)
			}
		}
	}
}

func FuzzFeed(f *testing.F) {
	f.Add(frame(true, 10), 3)
	f.Add(frame(false, 300), 7)
	f.Fuzz(func(t *testing.T, b []byte, piece int) {
		if piece <= 0 || piece > 64 {
			piece = 1
		}
		var a, c Tracker
		a.Feed(b)
		for off := 0; off < len(b); off += piece {
			c.Feed(b[off:min(off+piece, len(b))])
		}
		// Splitting the stream differently never changes the state.
		if a != c {
			t.Fatalf("state differs: whole %+v pieces %+v", a, c)
		}
	})
}
