package demo

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestReadFrame(t *testing.T) {
	long16 := bytes.Repeat([]byte{'a'}, 256)
	long64 := bytes.Repeat([]byte{'b'}, 65536)
	tests := []struct {
		name    string
		in      []byte
		want    wsFrame
		wantErr error // nil, io.EOF, io.ErrUnexpectedEOF, errFrameTooBig; protoErr for the RFC's rejects
	}{
		// The examples of RFC 6455 section 5.7.
		{"unmasked text", []byte{0x81, 0x05, 'H', 'e', 'l', 'l', 'o'},
			wsFrame{fin: true, opcode: opText, payload: []byte("Hello")}, nil},
		{"masked text", []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
			wsFrame{fin: true, opcode: opText, masked: true, maskKey: [4]byte{0x37, 0xfa, 0x21, 0x3d}, payload: []byte("Hello")}, nil},
		{"first fragment", []byte{0x01, 0x03, 'H', 'e', 'l'},
			wsFrame{opcode: opText, payload: []byte("Hel")}, nil},
		{"last fragment", []byte{0x80, 0x02, 'l', 'o'},
			wsFrame{fin: true, opcode: opContinuation, payload: []byte("lo")}, nil},
		{"ping", []byte{0x89, 0x05, 'H', 'e', 'l', 'l', 'o'},
			wsFrame{fin: true, opcode: opPing, payload: []byte("Hello")}, nil},
		{"16-bit length", append([]byte{0x82, 0x7E, 0x01, 0x00}, long16...),
			wsFrame{fin: true, opcode: opBinary, payload: long16}, nil},
		{"64-bit length", append([]byte{0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0}, long64...),
			wsFrame{fin: true, opcode: opBinary, payload: long64}, nil},
		{"empty close", []byte{0x88, 0x00}, wsFrame{fin: true, opcode: opClose, payload: []byte{}}, nil},

		{"nothing", nil, wsFrame{}, io.EOF},
		{"one byte", []byte{0x81}, wsFrame{}, io.ErrUnexpectedEOF},
		{"short extended length", []byte{0x82, 0x7E, 0x01}, wsFrame{}, io.ErrUnexpectedEOF},
		{"short mask", []byte{0x81, 0x85, 0x37}, wsFrame{}, io.ErrUnexpectedEOF},
		{"short payload", []byte{0x81, 0x05, 'H'}, wsFrame{}, io.ErrUnexpectedEOF},
		{"too big", []byte{0x82, 0x7F, 0, 0, 0, 0, 0, 0x20, 0, 0}, wsFrame{}, errFrameTooBig},

		{"rsv1 set", []byte{0xC1, 0x00}, wsFrame{}, protoErr},
		{"reserved opcode", []byte{0x83, 0x00}, wsFrame{}, protoErr},
		{"fragmented ping", []byte{0x09, 0x00}, wsFrame{}, protoErr},
		{"long ping", append([]byte{0x89, 0x7E, 0x00, 0x7E}, make([]byte, 126)...), wsFrame{}, protoErr},
		{"64-bit length MSB", []byte{0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0}, wsFrame{}, protoErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readFrame(bytes.NewReader(tt.in), 1<<20)
			switch {
			case tt.wantErr == protoErr:
				var pe *wsProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("err = %v, want a protocol error", err)
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("err = %v", err)
			}
			if !framesEqual(got, tt.want) {
				t.Errorf("frame fin=%v op=%#x masked=%v %d bytes, want fin=%v op=%#x masked=%v %d bytes",
					got.fin, got.opcode, got.masked, len(got.payload), tt.want.fin, tt.want.opcode, tt.want.masked, len(tt.want.payload))
			}
		})
	}
}

// protoErr marks table rows that expect a *wsProtocolError.
var protoErr = errors.New("protocol error expected")

func framesEqual(a, b wsFrame) bool {
	return a.fin == b.fin && a.opcode == b.opcode && a.masked == b.masked &&
		a.maskKey == b.maskKey && bytes.Equal(a.payload, b.payload)
}

func TestAppendFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 0xFFFF, 0x10000} {
		for _, masked := range []bool{false, true} {
			f := wsFrame{fin: n%2 == 0, opcode: opBinary, masked: masked, payload: bytes.Repeat([]byte{0x5A}, n)}
			if masked {
				f.maskKey = [4]byte{1, 2, 3, 4}
			}
			enc := appendFrame(nil, f)
			if !bytes.Equal(f.payload, bytes.Repeat([]byte{0x5A}, n)) {
				t.Fatal("appendFrame modified the payload")
			}
			got, err := readFrame(bytes.NewReader(enc), 1<<20)
			if err != nil || !framesEqual(got, f) {
				t.Errorf("n=%d masked=%v: round trip gave fin=%v op=%#x masked=%v key=%v %d bytes, err %v",
					n, masked, got.fin, got.opcode, got.masked, got.maskKey, len(got.payload), err)
			}
		}
	}
}

func TestAcceptKey(t *testing.T) {
	if got := acceptKey(rfcKey); got != rfcAccept {
		t.Errorf("acceptKey = %q, want %q", got, rfcAccept)
	}
}

// FuzzReadFrame checks that no input makes readFrame panic or allocate past its limit, and that
// every frame it accepts re-encodes to an equal frame.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58})
	f.Add([]byte{0x82, 0x7E, 0x00, 0x02, 'h', 'i'})
	f.Add([]byte{0x82, 0x7F, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x88, 0x02, 0x03, 0xe8})
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 16
		fr, err := readFrame(bytes.NewReader(data), limit)
		if err != nil {
			return
		}
		if len(fr.payload) > limit {
			t.Fatalf("payload of %d bytes exceeds the limit", len(fr.payload))
		}
		again, err := readFrame(bytes.NewReader(appendFrame(nil, fr)), limit)
		if err != nil || !framesEqual(again, fr) {
			t.Fatalf("re-encoded frame differs (err %v)", err)
		}
	})
}
