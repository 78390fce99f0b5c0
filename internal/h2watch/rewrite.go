package h2watch

import (
	"encoding/binary"

	"golang.org/x/net/http2/hpack"
)

// The rewrites: frames that net/http's HTTP/2 server (Go 1.27) answers
// otherwise than RFC 9113 asks are changed on their way in so that it
// answers as asked. Each leaves the server's view of the connection as
// the client's: no frame is added that the server would count as one the
// client sent (a SETTINGS frame stays one frame, so one ACK), and the HPACK
// state stays the client's.

// maxSettings is the most settings net/http takes in one SETTINGS frame; it
// hangs up on more, and such a frame is not rewritten.
const maxSettings = 100

// SETTINGS parameters (RFC 9113 section 6.5.2, RFC 8441).
const (
	settingHeaderTableSize       = 0x1
	settingEnablePush            = 0x2
	settingInitialWindowSize     = 0x4
	settingMaxFrameSize          = 0x5
	settingEnableConnectProtocol = 0x8
)

// mustHold reports whether the frame whose header is h must be held back
// until whole, and follows the order of header blocks.
func (w *Watcher) mustHold(h []byte, length uint32) bool {
	typ, flags := h[3], h[4]
	if w.blocks.stream != 0 && typ != frameContinuation {
		// Any other frame inside a header block is a connection error.
		w.blocks.stop()
	}
	switch typ {
	case frameSettings:
		// Only a frame that can name a setting twice; others pass, and
		// the server refuses the malformed ones (stream id, length).
		return flags&flagAck == 0 && length >= 12 && length <= 6*maxSettings && length%6 == 0 &&
			binary.BigEndian.Uint32(h[5:])&0x7fffffff == 0
	case frameHeaders, frameContinuation:
		if w.blocks.off {
			return false
		}
		if length > w.maxFrame {
			// The server refuses it (FRAME_SIZE_ERROR) and hangs up.
			w.blocks.stop()
			return false
		}
		return true
	}
	return false
}

// finish rewrites the frame held back, now whole, and queues it.
func (w *Watcher) finish() {
	w.holding = false
	f := w.out[w.hs:]
	switch f[3] {
	case frameSettings:
		w.out = w.out[:w.hs+dedupSettings(f)]
	case frameHeaders, frameContinuation:
		w.out = w.blocks.frame(w.out, w.hs, w.maxFrame)
	}
}

// dedupSettings rewrites the SETTINGS frame f (header and payload) that
// names a setting more than once so that it names each once, and returns
// its new length. RFC 9113 section 6.5.3 applies the values in order, so
// the last one wins; net/http instead ends the connection with
// PROTOCOL_ERROR (h2spec http2/6.5.3/1). For SETTINGS_HEADER_TABLE_SIZE the
// smallest wins: the encoder must signal the smallest size of the
// interval (RFC 7541 section 4.2), and any size up to the last is one the
// client accepts. An invalid value stops the rewrite there: the server
// reads the settings in order and ends the connection at that one with
// its proper error, so what follows it is dropped (it could repeat a
// setting, which would make the server's error PROTOCOL_ERROR instead).
// The order of distinct settings does not matter to the server. A frame
// without duplicates is left as it is.
func dedupSettings(f []byte) int {
	pl := f[headerLen:]
	n := len(pl) / 6
	if !hasDuplicates(pl, n) {
		return len(f)
	}
	kept := 0
	for i := range n {
		id := binary.BigEndian.Uint16(pl[6*i:])
		val := binary.BigEndian.Uint32(pl[6*i+2:])
		j := 0
		for j < kept && binary.BigEndian.Uint16(pl[6*j:]) != id {
			j++
		}
		if j < kept {
			if id == settingHeaderTableSize {
				val = min(val, binary.BigEndian.Uint32(pl[6*j+2:]))
			}
			binary.BigEndian.PutUint32(pl[6*j+2:], val)
		} else {
			copy(pl[6*kept:6*kept+6], pl[6*i:6*i+6]) // kept <= i
			kept++
		}
		if !validSetting(id, val) {
			break
		}
	}
	putLength(f, 6*kept)
	return headerLen + 6*kept
}

func hasDuplicates(pl []byte, n int) bool {
	for i := range n {
		id := binary.BigEndian.Uint16(pl[6*i:])
		for j := i + 1; j < n; j++ {
			if binary.BigEndian.Uint16(pl[6*j:]) == id {
				return true
			}
		}
	}
	return false
}

// validSetting is net/http's Setting.Valid.
func validSetting(id uint16, val uint32) bool {
	switch id {
	case settingEnablePush, settingEnableConnectProtocol:
		return val <= 1
	case settingInitialWindowSize:
		return val <= 1<<31-1
	case settingMaxFrameSize:
		return val >= 1<<14 && val <= 1<<24-1
	}
	return true
}

func putLength(f []byte, n int) {
	f[0], f[1], f[2] = byte(n>>16), byte(n>>8), byte(n)
}

// marker is the header field added at the end of a block that has a
// connection-specific field: a literal never indexed, so the HPACK table
// does not change, whose upper-case name net/http refuses as a stream error
// of type PROTOCOL_ERROR (RST_STREAM; the connection goes on), which is
// what RFC 9113 section 8.2.2 asks for the block itself (h2spec
// http2/8.1.2.2). net/http would answer 400 instead.
var marker = []byte("\x10\x13CONNECTION-SPECIFIC\x00")

// headerBlocks decodes the client's header blocks as the server will, with
// an HPACK table that mirrors the server's, to find connection-specific
// fields. The decoding allocates the fields' strings, as the server's own
// does, for header blocks only.
type headerBlocks struct {
	tableSize, maxString uint32
	dec                  *hpack.Decoder
	// off: blocks are no longer followed, because the server is ending the
	// connection (a frame out of order, a decoding error) or its table is
	// out of reach (a frame too large to hold).
	off bool
	// stream is the stream of the block in progress, 0 between blocks.
	stream uint32
	// skip: the server does not decode the block in progress.
	skip bool
	// bad: the block in progress has a connection-specific field; te
	// counts its "te" fields.
	bad bool
	te  int
}

func (b *headerBlocks) stop() {
	b.off, b.dec, b.stream = true, nil, 0
}

// emit checks a decoded field as net/http's checkValidHTTP2RequestHeaders
// does: it answers 400 for these names, for a "te" other than "trailers"
// (or empty) and for more than one "te". Names are lower case on the
// wire; any other is refused by the server already.
func (b *headerBlocks) emit(f hpack.HeaderField) {
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		b.bad = true
	case "te":
		b.te++
		if b.te > 1 || f.Value != "trailers" && f.Value != "" {
			b.bad = true
		}
	}
}

// frame decodes the HEADERS or CONTINUATION frame at out[at:] and returns
// out, with a marker added when the frame ends a block that needs one.
func (b *headerBlocks) frame(out []byte, at int, maxFrame uint32) []byte {
	f := out[at:]
	typ, flags := f[3], f[4]
	stream := binary.BigEndian.Uint32(f[5:]) & 0x7fffffff
	frag := f[headerLen:]
	pad := 0
	if typ == frameHeaders {
		// What net/http's parseHeadersFrame refuses as a connection error
		// ends the following; a padding longer than the frame is a stream
		// error, and the server leaves that block undecoded.
		if b.stream != 0 || stream == 0 {
			b.stop()
			return out
		}
		if flags&flagPadded != 0 {
			if len(frag) < 1 {
				b.stop()
				return out
			}
			pad, frag = int(frag[0]), frag[1:]
		}
		if flags&flagPriority != 0 {
			if len(frag) < 5 {
				b.stop()
				return out
			}
			frag = frag[5:]
		}
		b.stream, b.bad, b.te = stream, false, 0
		b.skip = pad > len(frag)
		if !b.skip {
			frag = frag[:len(frag)-pad]
		}
	} else if b.stream == 0 || stream != b.stream {
		// A CONTINUATION out of place: a connection error.
		b.stop()
		return out
	}
	end := flags&flagEndHeaders != 0
	if !b.skip {
		if b.dec == nil {
			b.dec = hpack.NewDecoder(b.tableSize, b.emit)
			b.dec.SetMaxStringLength(int(b.maxString))
		}
		if _, err := b.dec.Write(frag); err != nil {
			b.stop() // the server ends the connection: COMPRESSION_ERROR
			return out
		}
		if end {
			if err := b.dec.Close(); err != nil {
				b.stop()
				return out
			}
		}
	}
	if !end {
		return out
	}
	b.stream = 0
	if b.skip || !b.bad {
		return out
	}
	return addMarker(out, at, pad, maxFrame)
}

// addMarker adds the marker at the end of the block that the frame at
// out[at:] ends: in the frame, before its padding, or, when that would
// make the frame larger than the server reads, in a CONTINUATION of its
// own after it. Either way it is in the block's last fragment, where
// net/http checks it without ending the connection.
func addMarker(out []byte, at, pad int, maxFrame uint32) []byte {
	length := len(out) - at - headerLen
	if uint32(length+len(marker)) <= maxFrame {
		out = append(out, marker...)
		f := out[at:]
		end := len(f) - len(marker)
		copy(f[end-pad+len(marker):], f[end-pad:end])
		copy(f[end-pad:], marker)
		putLength(f, length+len(marker))
		return out
	}
	out[at+4] &^= flagEndHeaders
	var c [headerLen]byte
	putLength(c[:], len(marker))
	c[3], c[4] = frameContinuation, flagEndHeaders
	copy(c[5:], out[at+5:at+headerLen])
	out = append(out, c[:]...)
	return append(out, marker...)
}
