// Package wsframe follows the frame boundaries of a WebSocket byte
// stream (RFC 6455 section 5.2) without buffering payloads, so the proxy
// can add a frame of its own between two of the client's: a close frame
// when it drains, which the machine then answers as if the client had
// said goodbye. It is pure: bytes in, state out.
package wsframe

import "encoding/binary"

// Tracker is fed a direction's bytes in order and knows whether the
// stream is between two frames.
type Tracker struct {
	hdr     [14]byte
	have    int   // header bytes collected
	need    int   // header bytes needed (2 until the length byte is read)
	payload int64 // payload bytes still to pass
}

// AtBoundary reports whether every byte fed so far ends a whole frame.
func (t *Tracker) AtBoundary() bool { return t.have == 0 && t.payload == 0 }

// Feed advances over b.
func (t *Tracker) Feed(b []byte) {
	for len(b) > 0 {
		if t.payload > 0 {
			n := int64(len(b))
			if n > t.payload {
				n = t.payload
			}
			t.payload -= n
			b = b[n:]
			continue
		}
		if t.have == 0 {
			t.need = 2
		}
		c := copy(t.hdr[t.have:t.need], b)
		t.have += c
		b = b[c:]
		if t.have < t.need {
			continue
		}
		if t.have == 2 {
			// The second byte says how long the header is.
			t.need = 2 + extLen(t.hdr[1]&0x7f)
			if t.hdr[1]&0x80 != 0 {
				t.need += 4 // masking key
			}
			if t.have < t.need {
				continue
			}
		}
		t.payload = payloadLen(t.hdr[:t.have])
		t.have = 0
	}
}

func extLen(l7 byte) int {
	switch l7 {
	case 126:
		return 2
	case 127:
		return 8
	}
	return 0
}

func payloadLen(h []byte) int64 {
	switch l7 := h[1] & 0x7f; l7 {
	case 126:
		return int64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		// RFC 6455 requires the top bit clear; a hostile length still
		// only makes the tracker wait, it is never allocated.
		return int64(binary.BigEndian.Uint64(h[2:10]) & (1<<63 - 1))
	default:
		return int64(l7)
	}
}

// ClientClose is a masked close frame with status 1001 (going away), as a
// client sends it; the zero masking key leaves the payload readable.
func ClientClose() []byte {
	return []byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9}
}
