package h2watch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
)

// pump runs in through w as the server's read path does (see Watcher):
// the client's bytes arrive in reads of at most split bytes, the server
// reads with a buffer of bufSize. It returns what the server got and the
// flood found.
func pump(w *Watcher, in []byte, split, bufSize int) ([]byte, Kind) {
	var out []byte
	p := make([]byte, bufSize)
	read := func(b []byte) int {
		n := min(len(b), split, len(in))
		copy(b, in[:n])
		in = in[n:]
		return n
	}
	for {
		if q := w.Queued(); len(q) > 0 {
			n := copy(p, q)
			w.Dequeue(n)
			out = append(out, p[:n]...)
			continue
		}
		if len(in) == 0 {
			return out, ""
		}
		if s := w.Space(); s != nil {
			w.Filled(read(s))
			continue
		}
		n := read(p)
		ready, kind := w.Filter(p[:n])
		if kind != "" {
			return out, kind
		}
		if ready > n {
			panic(fmt.Sprintf("Filter of %d bytes made %d ready", n, ready))
		}
		out = append(out, p[:ready]...)
	}
}

// feed passes p through w in one read and reports the flood.
func feed(t *testing.T, w *Watcher, p []byte) Kind {
	t.Helper()
	_, kind := pump(w, p, len(p)+1, len(p)+1)
	return kind
}

func newWatcher() *Watcher {
	return New(Config{Preface: len(Preface)}, time.Now)
}

// setting is one SETTINGS parameter.
type setting struct {
	id  uint16
	val uint32
}

func settingsFrame(flags byte, stream uint32, s ...setting) []byte {
	var pl []byte
	for _, e := range s {
		pl = binary.BigEndian.AppendUint16(pl, e.id)
		pl = binary.BigEndian.AppendUint32(pl, e.val)
	}
	return frame(frameSettings, flags, stream, pl)
}

// rawFrame is a frame of a byte stream, as parseFrames splits it.
type rawFrame struct {
	typ, flags byte
	stream     uint32
	payload    []byte
}

func parseFrames(t *testing.T, b []byte) []rawFrame {
	t.Helper()
	b = bytes.TrimPrefix(b, []byte(Preface))
	var fs []rawFrame
	for len(b) > 0 {
		if len(b) < headerLen {
			t.Fatalf("%d bytes left, not a frame header: %x", len(b), b)
		}
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		if len(b) < headerLen+n {
			t.Fatalf("frame of %d bytes with %d left", n, len(b)-headerLen)
		}
		fs = append(fs, rawFrame{b[3], b[4], binary.BigEndian.Uint32(b[5:]) & 0x7fffffff, b[headerLen : headerLen+n]})
		b = b[headerLen+n:]
	}
	return fs
}

// Sizes of the client's reads and of the server's buffer that the tests
// try: every split of a frame header, a server reading headers alone
// (net/http reads 9 bytes, then the payload), and large reads.
var (
	splits   = []int{1, 2, 5, 9, 10, 100, 4096, 1 << 20}
	bufSizes = []int{1, 9, 64, 16<<10 + 9, 64 << 10}
)

// filterAll passes in through a new watcher for each split and buffer
// size, checks that they all give the same output, and returns it.
func filterAll(t *testing.T, in []byte) []byte {
	t.Helper()
	var want []byte
	for i, split := range splits {
		for j, size := range bufSizes {
			got, kind := pump(newWatcher(), in, split, size)
			if kind != "" {
				t.Fatalf("split %d buffer %d: flood %q", split, size, kind)
			}
			if i == 0 && j == 0 {
				want = got
			} else if !bytes.Equal(got, want) {
				t.Fatalf("split %d buffer %d: output differs from split 1 buffer 1:\n%x\n%x", split, size, got, want)
			}
		}
	}
	return want
}

func TestPassesFramesAsTheyAre(t *testing.T) {
	var in []byte
	in = append(in, Preface...)
	in = append(in, settingsFrame(0, 0, setting{settingInitialWindowSize, 1 << 20}, setting{settingMaxFrameSize, 1 << 15})...)
	in = append(in, settingsFrame(flagAck, 0)...)
	in = append(in, frame(0x8, 0, 0, []byte{0, 0, 1, 0})...) // WINDOW_UPDATE
	in = append(in, frame(framePing, 0, 0, make([]byte, 8))...)
	in = append(in, frame(0x0, 0, 1, bytes.Repeat([]byte("d"), 40000))...) // DATA larger than any read
	in = append(in, frame(0x0, 1, 1, nil)...)
	in = append(in, frame(0x2, 0, 3, make([]byte, 5))...) // PRIORITY
	in = append(in, frame(frameRSTStream, 0, 3, []byte{0, 0, 0, 8})...)
	in = append(in, frame(0x7, 0, 0, make([]byte, 8))...) // GOAWAY
	if got := filterAll(t, in); !bytes.Equal(got, in) {
		t.Fatalf("frames were changed:\n got %x\nwant %x", got, in)
	}
}

// TestPassesInPlace: frames that pass are handed on in the reader's own
// buffer, without a copy or an allocation, and only the frame held back
// is queued.
func TestPassesInPlace(t *testing.T) {
	w := New(Config{}, time.Now)
	data := frame(0x0, 0, 1, bytes.Repeat([]byte("d"), 1000))
	if ready, _ := w.Filter(data); ready != len(data) || len(w.Queued()) != 0 || w.outp != nil {
		t.Fatalf("ready %d of %d, %d queued", ready, len(data), len(w.Queued()))
	}
	allocs := testing.AllocsPerRun(100, func() { w.Filter(data) })
	if allocs != 0 {
		t.Fatalf("%v allocations per DATA frame", allocs)
	}
	// DATA, then a SETTINGS frame split by the end of the read: the DATA
	// is ready, the SETTINGS frame waits for its last bytes.
	s := settingsFrame(0, 0, setting{settingInitialWindowSize, 5}, setting{settingMaxFrameSize, 1 << 14})
	p := append(slices.Clone(data), s[:15]...)
	if ready, _ := w.Filter(p); ready != len(data) || len(w.Queued()) != 0 {
		t.Fatalf("ready %d, want %d (the DATA frame); %d queued", ready, len(data), len(w.Queued()))
	}
	space := w.Space()
	if len(space) != len(s)-15 {
		t.Fatalf("space for %d bytes, want the %d the frame lacks", len(space), len(s)-15)
	}
	w.Filled(copy(space, s[15:]))
	if !bytes.Equal(w.Queued(), s) {
		t.Fatalf("queued %x, want the SETTINGS frame %x", w.Queued(), s)
	}
	w.Dequeue(len(s))
	if w.outp != nil || len(w.Queued()) != 0 {
		t.Fatal("the buffer was not given back once its output was read")
	}
}

func TestSettingsDeduplicated(t *testing.T) {
	const (
		hts = settingHeaderTableSize
		ep  = settingEnablePush
		mcs = 0x3
		iws = settingInitialWindowSize
		mfs = settingMaxFrameSize
	)
	for _, tc := range []struct {
		name      string
		flags     byte
		stream    uint32
		in, want  []setting
		unchanged bool
	}{
		{name: "twice, the last wins (h2spec http2/6.5.3/1)",
			in: []setting{{iws, 100}, {iws, 1}}, want: []setting{{iws, 1}}},
		{name: "three times among others",
			in:   []setting{{iws, 100}, {mcs, 7}, {iws, 200}, {mfs, 1 << 15}, {iws, 300}},
			want: []setting{{iws, 300}, {mcs, 7}, {mfs, 1 << 15}}},
		{name: "header table size: the smallest wins (RFC 7541 4.2)",
			in: []setting{{hts, 0}, {hts, 4096}}, want: []setting{{hts, 0}}},
		{name: "header table size, the smallest in the middle",
			in: []setting{{hts, 4096}, {hts, 100}, {hts, 200}}, want: []setting{{hts, 100}}},
		{name: "unknown settings are settings too",
			in: []setting{{0xff, 1}, {0xff, 2}}, want: []setting{{0xff, 2}}},
		{name: "no duplicates: as it was",
			in: []setting{{iws, 1}, {mfs, 1 << 14}, {hts, 0}}, unchanged: true},
		{name: "an invalid value without duplicates: as it was",
			in: []setting{{ep, 2}, {iws, 1}}, unchanged: true},
		// The server stops at the first invalid value, with its error
		// (FLOW_CONTROL_ERROR here); a duplicate after it would turn
		// that into PROTOCOL_ERROR, so what follows is dropped.
		{name: "invalid, then a duplicate",
			in: []setting{{iws, 1 << 31}, {iws, 5}}, want: []setting{{iws, 1 << 31}}},
		{name: "duplicate, then invalid in the same slot",
			in:   []setting{{iws, 5}, {mcs, 10}, {iws, 1 << 31}, {mfs, 1}, {mfs, 2}},
			want: []setting{{iws, 1 << 31}, {mcs, 10}}},
		{name: "invalid enable_push after a duplicate",
			in: []setting{{ep, 0}, {ep, 0}, {ep, 7}, {iws, 1}}, want: []setting{{ep, 7}}},
		{name: "invalid max frame size",
			in: []setting{{mfs, 1 << 14}, {mfs, 1 << 24}, {iws, 1}}, want: []setting{{mfs, 1 << 24}}},
		{name: "ACK: not rewritten", flags: flagAck,
			in: []setting{{iws, 1}, {iws, 2}}, unchanged: true},
		{name: "on a stream: the server refuses it as it is", stream: 1,
			in: []setting{{iws, 1}, {iws, 2}}, unchanged: true},
		{name: "more than net/http takes: refused as it is",
			in: slices.Repeat([]setting{{iws, 1}}, maxSettings+1), unchanged: true},
		{name: "as many as net/http takes",
			in: slices.Repeat([]setting{{iws, 1}}, maxSettings), want: []setting{{iws, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := settingsFrame(tc.flags, tc.stream, tc.in...)
			in := append([]byte(Preface), f...)
			in = append(in, frame(framePing, 0, 0, make([]byte, 8))...)
			got := filterAll(t, in)
			want := in
			if !tc.unchanged {
				want = append([]byte(Preface), settingsFrame(tc.flags, tc.stream, tc.want...)...)
				want = append(want, frame(framePing, 0, 0, make([]byte, 8))...)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got\n%x\nwant\n%x", got, want)
			}
		})
	}
	t.Run("length not a multiple of 6", func(t *testing.T) {
		in := append([]byte(Preface), frame(frameSettings, 0, 0, make([]byte, 13))...)
		if got := filterAll(t, in); !bytes.Equal(got, in) {
			t.Fatalf("got %x", got)
		}
	})
}

// encoder encodes header blocks with one HPACK table, as a client does.
type encoder struct {
	buf bytes.Buffer
	enc *hpack.Encoder
}

func newEncoder() *encoder {
	e := &encoder{}
	e.enc = hpack.NewEncoder(&e.buf)
	return e
}

// block encodes a request's fields: the pseudo-headers, then pairs.
func (e *encoder) block(pairs ...string) []byte {
	e.buf.Reset()
	fields := []string{":method", "GET", ":scheme", "https", ":path", "/", ":authority", "example.com"}
	fields = append(fields, pairs...)
	for i := 0; i < len(fields); i += 2 {
		e.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return slices.Clone(e.buf.Bytes())
}

// decodeBlocks decodes the header blocks of frames with a fresh table, as
// the server does, and returns each block's field names.
func decodeBlocks(t *testing.T, fs []rawFrame) [][]string {
	t.Helper()
	var blocks [][]string
	var names []string
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) { names = append(names, f.Name) })
	for _, f := range fs {
		frag := f.payload
		switch f.typ {
		case frameHeaders:
			pad := 0
			if f.flags&flagPadded != 0 {
				pad, frag = int(frag[0]), frag[1:]
			}
			if f.flags&flagPriority != 0 {
				frag = frag[5:]
			}
			frag = frag[:len(frag)-pad]
		case frameContinuation:
		default:
			continue
		}
		if _, err := dec.Write(frag); err != nil {
			t.Fatalf("decoding the output: %v", err)
		}
		if f.flags&flagEndHeaders != 0 {
			if err := dec.Close(); err != nil {
				t.Fatal(err)
			}
			blocks = append(blocks, names)
			names = nil
		}
	}
	return blocks
}

const markerName = "CONNECTION-SPECIFIC"

func TestConnectionSpecificHeaders(t *testing.T) {
	for _, tc := range []struct {
		pairs []string
		bad   bool
	}{
		{[]string{"user-agent", "x", "accept", "*/*"}, false},
		{[]string{"connection", "keep-alive"}, true}, // h2spec http2/8.1.2.2/1
		{[]string{"te", "trailers, deflate"}, true},  // h2spec http2/8.1.2.2/2
		{[]string{"te", "trailers"}, false},
		{[]string{"te", ""}, false},
		{[]string{"te", "gzip"}, true},
		{[]string{"te", "trailers", "te", "trailers"}, true}, // net/http takes one
		{[]string{"keep-alive", "timeout=5"}, true},
		{[]string{"proxy-connection", "close"}, true},
		{[]string{"transfer-encoding", "chunked"}, true},
		{[]string{"upgrade", "websocket"}, true},
		{[]string{"x-connection", "close", "connections", "1"}, false},
	} {
		t.Run(fmt.Sprint(tc.pairs), func(t *testing.T) {
			e := newEncoder()
			in := append([]byte(Preface), frame(frameHeaders, flagEndHeaders|0x1, 1, e.block(tc.pairs...))...)
			// The next request on the connection is passed as it is.
			in = append(in, frame(frameHeaders, flagEndHeaders|0x1, 3, e.block("accept", "*/*"))...)
			got := filterAll(t, in)
			fs := parseFrames(t, got)
			blocks := decodeBlocks(t, fs)
			if len(fs) != 2 || len(blocks) != 2 {
				t.Fatalf("%d frames, %d blocks, want 2", len(fs), len(blocks))
			}
			first := blocks[0]
			marked := first[len(first)-1] == markerName
			if marked != tc.bad {
				t.Fatalf("fields %v: marked %v, want %v", first, marked, tc.bad)
			}
			if !tc.bad && !bytes.Equal(got, in) {
				t.Fatalf("a good block was changed")
			}
			if slices.Contains(blocks[1], markerName) {
				t.Fatalf("the second request was marked: %v", blocks[1])
			}
		})
	}
}

// TestMarkerPlacement: the marker ends the block, in its last frame,
// before any padding, or in a CONTINUATION of its own when the last frame
// is as large as the server reads.
func TestMarkerPlacement(t *testing.T) {
	e := newEncoder()
	bad := e.block("connection", "close", "accept", "*/*")

	t.Run("padded and with priority", func(t *testing.T) {
		pl := append([]byte{3}, 0x80, 0, 0, 1, 15) // pad length 3, priority
		pl = append(pl, bad...)
		pl = append(pl, 0, 0, 0)
		in := append([]byte(Preface), frame(frameHeaders, flagEndHeaders|flagPadded|flagPriority, 1, pl)...)
		fs := parseFrames(t, filterAll(t, in))
		if len(fs) != 1 {
			t.Fatalf("%d frames", len(fs))
		}
		p := fs[0].payload
		if len(p) != len(pl)+len(marker) || !bytes.Equal(p[:len(pl)-3], pl[:len(pl)-3]) ||
			!bytes.Equal(p[len(pl)-3:len(p)-3], marker) || !bytes.Equal(p[len(p)-3:], []byte{0, 0, 0}) {
			t.Fatalf("payload %x, want the block, the marker, the padding", p)
		}
		if names := decodeBlocks(t, fs)[0]; names[len(names)-1] != markerName {
			t.Fatalf("fields %v", names)
		}
	})

	t.Run("across HEADERS and CONTINUATION", func(t *testing.T) {
		in := append([]byte(Preface), frame(frameHeaders, 0x1, 1, bad[:5])...)
		in = append(in, frame(frameContinuation, 0, 1, bad[5:10])...)
		in = append(in, frame(frameContinuation, flagEndHeaders, 1, bad[10:])...)
		fs := parseFrames(t, filterAll(t, in))
		if len(fs) != 3 || len(fs[2].payload) != len(bad)-10+len(marker) {
			t.Fatalf("frames %+v", fs)
		}
		if names := decodeBlocks(t, fs)[0]; names[len(names)-1] != markerName || !slices.Contains(names, "connection") {
			t.Fatalf("fields %v", names)
		}
	})

	t.Run("last frame full: a CONTINUATION of its own", func(t *testing.T) {
		// A block of exactly 16 KiB: '~' is longer in Huffman code, so
		// the value is sent as it is and its length sets the block's.
		blk := func(n int) []byte {
			return newEncoder().block("connection", "close", "x-long", string(bytes.Repeat([]byte{'~'}, n)))
		}
		full := blk(16000)
		full = blk(16000 + DefaultMaxFrameSize - len(full))
		if len(full) != DefaultMaxFrameSize {
			t.Fatalf("test block of %d bytes", len(full))
		}
		in := append([]byte(Preface), frame(frameHeaders, flagEndHeaders|0x1, 1, full)...)
		fs := parseFrames(t, filterAll(t, in))
		if len(fs) != 2 || fs[0].flags != 0x1 || !bytes.Equal(fs[0].payload, full) ||
			fs[1].typ != frameContinuation || fs[1].flags != flagEndHeaders || fs[1].stream != 1 || !bytes.Equal(fs[1].payload, marker) {
			t.Fatalf("%d frames: want HEADERS without END_HEADERS, then a CONTINUATION with the marker", len(fs))
		}
		if names := decodeBlocks(t, fs)[0]; names[len(names)-1] != markerName {
			t.Fatalf("fields %v", names)
		}
	})
}

// TestHPACKTableFollowed: a field the client indexed in one block and
// refers to by index in the next is found in the next, where the server's
// table has it too.
func TestHPACKTableFollowed(t *testing.T) {
	get := []byte{0x82, 0x87, 0x84} // :method GET, :scheme https, :path / (static)
	// Literal with incremental indexing: "connection: close" becomes 62.
	first := append(slices.Clone(get), 0x40, 10)
	first = append(first, "connection"...)
	first = append(first, 5)
	first = append(first, "close"...)
	second := append(slices.Clone(get), 0x80|62)
	in := append([]byte(Preface), frame(frameHeaders, flagEndHeaders|0x1, 1, first)...)
	in = append(in, frame(frameHeaders, flagEndHeaders|0x1, 3, second)...)
	in = append(in, frame(frameHeaders, flagEndHeaders|0x1, 5, get)...)
	blocks := decodeBlocks(t, parseFrames(t, filterAll(t, in)))
	if len(blocks) != 3 {
		t.Fatalf("%d blocks", len(blocks))
	}
	for i, want := range []bool{true, true, false} {
		if got := slices.Contains(blocks[i], markerName); got != want {
			t.Errorf("block %d %v: marked %v, want %v", i, blocks[i], got, want)
		}
	}
}

// TestBlocksNoLongerFollowed: once the server is bound to end the
// connection, or could not follow a block, blocks pass as they are.
func TestBlocksNoLongerFollowed(t *testing.T) {
	e := newEncoder()
	bad := e.block("connection", "close")
	for _, tc := range []struct {
		name   string
		before []byte
	}{
		{"a decoding error", frame(frameHeaders, flagEndHeaders, 1, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})},
		{"CONTINUATION without HEADERS", frame(frameContinuation, flagEndHeaders, 1, nil)},
		{"a frame inside a block", append(frame(frameHeaders, 0, 1, nil), frame(framePing, 0, 0, make([]byte, 8))...)},
		{"a frame larger than the server reads", frame(frameHeaders, flagEndHeaders, 1, make([]byte, DefaultMaxFrameSize+1))},
		{"HEADERS on stream 0", frame(frameHeaders, flagEndHeaders, 0, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]byte(Preface), tc.before...)
			in = append(in, frame(frameHeaders, flagEndHeaders, 3, bad)...)
			if got := filterAll(t, in); !bytes.Equal(got, in) {
				t.Fatalf("changed:\n got %x\nwant %x", got, in)
			}
		})
	}
}

// TestUndecodedBlockSkipped: net/http resets the stream of a HEADERS
// frame whose padding is longer than the frame without decoding its block
// (nor the CONTINUATIONs after it), so the table must not learn from it
// either.
func TestUndecodedBlockSkipped(t *testing.T) {
	// Had the table learnt from block 1 (padding too long) and its
	// CONTINUATION, it would have "a: b" as 62 and "connection: close" as
	// 63, which the next block refers to; the server's table has no entry
	// 63 (a decoding error: the connection ends).
	lit := append([]byte{0x40, 10}, "connection"...)
	lit = append(lit, 5)
	lit = append(lit, "close"...)
	pl := append([]byte{200}, lit...)
	in := append([]byte(Preface), frame(frameHeaders, flagPadded, 1, pl)...)
	in = append(in, frame(frameContinuation, flagEndHeaders, 1, []byte{0x40, 1, 'a', 1, 'b'})...)
	in = append(in, frame(frameHeaders, flagEndHeaders, 3, []byte{0x82, 0x87, 0x84, 0x80 | 63})...)
	if got := filterAll(t, in); !bytes.Equal(got, in) {
		t.Fatalf("changed:\n got %x\nwant %x", got, in)
	}
	// The blocks after it are still checked.
	in = append([]byte(Preface), frame(frameHeaders, flagPadded|flagEndHeaders, 1, pl)...)
	in = append(in, frame(frameHeaders, flagEndHeaders, 3, newEncoder().block("te", "gzip"))...)
	if got := filterAll(t, in); bytes.Equal(got, in) {
		t.Fatal("the block after an undecoded one was not checked")
	}
}

func BenchmarkFilter(b *testing.B) {
	data := frame(0x0, 0, 1, bytes.Repeat([]byte("d"), 16<<10))
	b.Run("data", func(b *testing.B) {
		w := New(Config{}, time.Now)
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			w.Filter(data)
		}
	})
	// A request as a browser sends it, header then payload as net/http
	// reads them.
	e := newEncoder()
	var stream []byte
	for i := range 64 {
		stream = append(stream, frame(frameHeaders, flagEndHeaders|0x1, uint32(2*i+1),
			e.block("user-agent", "Mozilla/5.0 (X11; Linux x86_64)", "accept", "text/html", "accept-encoding", "gzip, br", "cookie", "a=b"))...)
	}
	b.Run("headers", func(b *testing.B) {
		w := New(Config{}, time.Now)
		p := make([]byte, 16<<10)
		b.SetBytes(int64(len(stream)))
		b.ReportAllocs()
		for b.Loop() {
			in := stream
			for len(in) > 0 || len(w.Queued()) > 0 {
				if q := w.Queued(); len(q) > 0 {
					w.Dequeue(copy(p, q))
					continue
				}
				if s := w.Space(); s != nil {
					n := copy(s, in)
					in = in[n:]
					w.Filled(n)
					continue
				}
				n := copy(p[:headerLen], in)
				in = in[n:]
				w.Filter(p[:n])
			}
		}
	})
}

func FuzzFilter(f *testing.F) {
	// Seeds: each kind of frame the watcher holds back or rewrites, and
	// a flood; the fuzzer splices them.
	e := newEncoder()
	bad := e.block("connection", "close")
	f.Add(rapidReset(3), uint8(1), uint8(9))
	f.Add(append([]byte(Preface), settingsFrame(0, 0, setting{4, 1}, setting{4, 2}, setting{1, 0})...), uint8(5), uint8(3))
	f.Add(append([]byte(Preface), frame(frameHeaders, flagEndHeaders|flagPadded, 1, append(append([]byte{2}, bad...), 0, 0))...), uint8(7), uint8(1))
	f.Add(append(append([]byte(Preface), frame(frameHeaders, 0, 1, bad[:3])...), frame(frameContinuation, flagEndHeaders, 1, bad[3:])...), uint8(2), uint8(200))
	f.Fuzz(func(t *testing.T, in []byte, split, size uint8) {
		// The rewriting of a stream must not depend on how it is read:
		// all at once (the reference) or in pieces of any size.
		c1 := &clock{t: time.Unix(0, 0), step: time.Millisecond}
		conf := Config{Limits: Limits{ResetsPerSecond: 5, SettingsPerSecond: 5, PingsPerSecond: 5}, Preface: len(Preface)}
		whole := New(conf, c1.now)
		want, wantKind := pump(whole, in, len(in)+1, len(in)+1)
		c2 := &clock{t: time.Unix(0, 0), step: time.Millisecond}
		pieces := New(conf, c2.now)
		got, gotKind := pump(pieces, in, int(split)%13+1, int(size)%31+1)
		if gotKind != wantKind || wantKind == "" && !bytes.Equal(got, want) {
			t.Fatalf("in pieces: %q %x\nwhole: %q %x", gotKind, got, wantKind, want)
		}
		if wantKind == "" && pieces.LastStream() != whole.LastStream() {
			t.Fatalf("last stream %d in pieces, %d whole", pieces.LastStream(), whole.LastStream())
		}
		// Rewrites add at most a marker and a frame header per block.
		if len(want) > len(in)+len(in)/headerLen*(len(marker)+headerLen) {
			t.Fatalf("%d bytes out of %d", len(want), len(in))
		}
		// What is held back is at most one frame.
		if len(whole.out) > headerLen+DefaultMaxFrameSize+headerLen+len(marker) {
			t.Fatalf("%d bytes held", len(whole.out))
		}
	})
}
