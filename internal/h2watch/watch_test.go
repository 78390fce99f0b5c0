package h2watch

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

func frame(typ, flags byte, stream uint32, payload []byte) []byte {
	f := make([]byte, headerLen, headerLen+len(payload))
	f[0], f[1], f[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	f[3], f[4] = typ, flags
	binary.BigEndian.PutUint32(f[5:], stream)
	return append(f, payload...)
}

// clock advances by step on every read.
type clock struct {
	t    time.Time
	step time.Duration
	n    int
}

func (c *clock) now() time.Time { c.n++; c.t = c.t.Add(c.step); return c.t }

func rapidReset(n int) []byte {
	var b bytes.Buffer
	b.WriteString(Preface)
	b.Write(frame(frameSettings, 0, 0, nil))
	for i := 0; i < n; i++ {
		id := uint32(2*i + 1)
		b.Write(frame(0x1, 0x5, id, []byte{0x82, 0x84, 0x86, 0x41, 0x01, 'a'}))
		b.Write(frame(frameRSTStream, 0, id, []byte{0, 0, 0, 8}))
	}
	return b.Bytes()
}

func TestRapidResetIsCaught(t *testing.T) {
	in := rapidReset(1000)
	for _, split := range []int{1, 7, 4096, len(in)} {
		c := &clock{t: time.Unix(0, 0), step: time.Microsecond}
		w := New(Config{Limits: Limits{ResetsPerSecond: 100}, Preface: len(Preface)}, c.now)
		_, got := pump(w, in, split, 64<<10)
		if got != Resets {
			t.Fatalf("split %d: got %q, want %q", split, got, Resets)
		}
		if w.LastStream() != 201 {
			t.Fatalf("split %d: last stream %d, want 201 (the 101st reset's)", split, w.LastStream())
		}
		if c.n > 3 {
			t.Fatalf("split %d: %d clock reads, want a few per window", split, c.n)
		}
	}
}

func TestSlowResetsPass(t *testing.T) {
	// 1000 resets at 50 per second: within the limit.
	t0 := time.Unix(0, 0)
	w := New(Config{Limits: Limits{ResetsPerSecond: 100}, Preface: len(Preface)}, func() time.Time { return t0 })
	in := rapidReset(1000)
	start := len(Preface) + headerLen
	feed(t, w, in[:start])
	pair := (len(in) - start) / 1000
	for i := 0; i < 1000; i++ {
		t0 = t0.Add(20 * time.Millisecond)
		if got := feed(t, w, in[start+i*pair:start+(i+1)*pair]); got != "" {
			t.Fatalf("reset %d: got %q for resets under the limit", i, got)
		}
	}
}

func TestFloods(t *testing.T) {
	for _, tc := range []struct {
		f    []byte
		want Kind
	}{
		{frame(frameSettings, 0, 0, make([]byte, 6)), Settings},
		{frame(framePing, 0, 0, make([]byte, 8)), Pings},
		{frame(framePing, flagAck, 0, make([]byte, 8)), ""},
		{frame(frameSettings, flagAck, 0, nil), ""},
		{frame(0x0, 0, 1, make([]byte, 100)), ""},
	} {
		c := &clock{t: time.Unix(0, 0), step: time.Microsecond}
		w := New(Config{Limits: Limits{SettingsPerSecond: 10, PingsPerSecond: 10, ResetsPerSecond: 10}}, c.now)
		var got Kind
		for i := 0; i < 50 && got == ""; i++ {
			got = feed(t, w, tc.f)
		}
		if got != tc.want {
			t.Errorf("frame type %d flags %d: got %q, want %q", tc.f[3], tc.f[4], got, tc.want)
		}
	}
}

func TestBoundaries(t *testing.T) {
	var b Boundaries
	f := frame(0x0, 0, 1, make([]byte, 20000))
	for i := 0; i < len(f); i += 4096 {
		b.Wrote(f[i:min(i+4096, len(f))])
		if end := i+4096 >= len(f); b.AtBoundary() != end {
			t.Fatalf("after %d bytes: at boundary %v", min(i+4096, len(f)), b.AtBoundary())
		}
	}
	g := GoAway(7)
	if len(g) != 17 || g[3] != 0x7 || binary.BigEndian.Uint32(g[9:]) != 7 || binary.BigEndian.Uint32(g[13:]) != 0xb {
		t.Fatalf("GOAWAY frame %x", g)
	}
}
