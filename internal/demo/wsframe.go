package demo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// WebSocket frame codec (RFC 6455 section 5.2), just enough for an echo server and its tests:
// no extensions, so the RSV bits must be zero.

const (
	opContinuation byte = 0x0
	opText         byte = 0x1
	opBinary       byte = 0x2
	opClose        byte = 0x8
	opPing         byte = 0x9
	opPong         byte = 0xA
)

// Close status codes the echo sends (RFC 6455 section 7.4.1).
const (
	closeProtocolError uint16 = 1002
	closeTooBig        uint16 = 1009
)

// maxControlPayload is the RFC's limit for close, ping and pong payloads.
const maxControlPayload = 125

// errFrameTooBig is returned before any payload is read or allocated, so a length field alone
// cannot make the reader allocate more than its limit.
var errFrameTooBig = errors.New("websocket: frame payload too big")

// wsProtocolError is a frame that breaks RFC 6455; the peer gets a 1002 close for it.
type wsProtocolError struct{ reason string }

func (e *wsProtocolError) Error() string { return "websocket: protocol error: " + e.reason }

type wsFrame struct {
	fin     bool
	opcode  byte
	masked  bool
	maskKey [4]byte
	// payload is unmasked after readFrame and before appendFrame masks it.
	payload []byte
}

func isControl(op byte) bool { return op&0x8 != 0 }

// readFrame reads one frame from r and returns it with its payload unmasked. It returns io.EOF
// only when r ends before the first byte, io.ErrUnexpectedEOF when a frame is cut short,
// errFrameTooBig when the payload would exceed maxPayload and a *wsProtocolError for frames the
// RFC forbids.
func readFrame(r io.Reader, maxPayload int) (wsFrame, error) {
	var f wsFrame
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:2]); err != nil {
		return f, err
	}
	b0, b1 := hdr[0], hdr[1]
	f.fin = b0&0x80 != 0
	f.opcode = b0 & 0x0F
	f.masked = b1&0x80 != 0
	if b0&0x70 != 0 {
		return f, &wsProtocolError{"reserved bits set without an extension"}
	}
	switch f.opcode {
	case opContinuation, opText, opBinary, opClose, opPing, opPong:
	default:
		return f, &wsProtocolError{fmt.Sprintf("unknown opcode %#x", f.opcode)}
	}

	var length uint64
	switch l7 := b1 & 0x7F; l7 {
	case 126:
		if err := readFull(r, hdr[:2]); err != nil {
			return f, err
		}
		length = uint64(binary.BigEndian.Uint16(hdr[:2]))
	case 127:
		if err := readFull(r, hdr[:8]); err != nil {
			return f, err
		}
		length = binary.BigEndian.Uint64(hdr[:8])
		if length>>63 != 0 {
			return f, &wsProtocolError{"64-bit length with the most significant bit set"}
		}
	default:
		length = uint64(l7)
	}
	if isControl(f.opcode) && (!f.fin || length > maxControlPayload) {
		return f, &wsProtocolError{"control frame fragmented or longer than 125 bytes"}
	}
	if length > uint64(maxPayload) {
		return f, errFrameTooBig
	}
	if f.masked {
		if err := readFull(r, f.maskKey[:]); err != nil {
			return f, err
		}
	}
	f.payload = make([]byte, length)
	if err := readFull(r, f.payload); err != nil {
		return f, err
	}
	if f.masked {
		maskBytes(f.maskKey, f.payload)
	}
	return f, nil
}

// readFull is io.ReadFull for the middle of a frame, where even a clean EOF cuts a frame short.
func readFull(r io.Reader, b []byte) error {
	_, err := io.ReadFull(r, b)
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendFrame appends f to dst with the shortest length encoding, masking the payload with
// f.maskKey when f.masked. f.payload itself is left unmasked.
func appendFrame(dst []byte, f wsFrame) []byte {
	b0 := f.opcode & 0x0F
	if f.fin {
		b0 |= 0x80
	}
	var maskBit byte
	if f.masked {
		maskBit = 0x80
	}
	switch n := len(f.payload); {
	case n <= 125:
		dst = append(dst, b0, maskBit|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, b0, maskBit|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, b0, maskBit|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if !f.masked {
		return append(dst, f.payload...)
	}
	dst = append(dst, f.maskKey[:]...)
	start := len(dst)
	dst = append(dst, f.payload...)
	maskBytes(f.maskKey, dst[start:])
	return dst
}

// maskBytes applies (or removes: XOR is its own inverse) the frame mask in place.
func maskBytes(key [4]byte, b []byte) {
	for i := range b {
		b[i] ^= key[i&3]
	}
}

// closePayload builds a close frame body carrying code.
func closePayload(code uint16) []byte {
	return binary.BigEndian.AppendUint16(nil, code)
}
