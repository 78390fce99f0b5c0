package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/h2watch"
	"github.com/edgeproxy/edgeproxy/internal/httpproxy"
)

// scriptConn returns its chunks in order, each in as many reads as the
// reader's buffer needs, then err.
type scriptConn struct {
	net.Conn
	chunks [][]byte
	err    error
}

func (s *scriptConn) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, s.err
	}
	n := copy(p, s.chunks[0])
	if s.chunks[0] = s.chunks[0][n:]; len(s.chunks[0]) == 0 {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

func h2frame(typ, flags byte, stream uint32, payload []byte) []byte {
	f := make([]byte, 9, 9+len(payload))
	f[0], f[1], f[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	f[3], f[4] = typ, flags
	binary.BigEndian.PutUint32(f[5:], stream)
	return append(f, payload...)
}

// readAllH2 reads h to its error as the server would, with reads of size
// bytes, and fails on a read that returns neither bytes nor an error.
func readAllH2(t *testing.T, h *httpConn, size int) ([]byte, error) {
	t.Helper()
	var out []byte
	p := make([]byte, size)
	for {
		n, err := h.Read(p)
		out = append(out, p[:n]...)
		if err != nil {
			return out, err
		}
		if n == 0 {
			t.Fatal("a read returned (0, nil)")
		}
	}
}

// TestH2ReadPath: the client's HTTP/2 bytes reach the server rewritten,
// whatever the sizes of the socket's and the server's reads, the read
// error after them all.
func TestH2ReadPath(t *testing.T) {
	settings := func(vals ...uint32) []byte {
		var pl []byte
		for _, v := range vals {
			pl = append(pl, 0, 4) // INITIAL_WINDOW_SIZE
			pl = binary.BigEndian.AppendUint32(pl, v)
		}
		return h2frame(0x4, 0, 0, pl)
	}
	data := h2frame(0x0, 0, 1, bytes.Repeat([]byte("d"), 5000))
	var in, want []byte
	in = append(in, h2watch.Preface...)
	in = append(in, settings(100, 200)...) // named twice: rewritten
	in = append(in, data...)
	in = append(in, h2frame(0x6, 0, 0, make([]byte, 8))...)
	want = append(want, h2watch.Preface...)
	want = append(want, settings(200)...)
	want = append(want, data...)
	want = append(want, h2frame(0x6, 0, 0, make([]byte, 8))...)

	errEnd := errors.New("end of script")
	{
		for _, chunk := range []int{1, 7, 20, 30, 4096, len(in)} {
			for _, size := range []int{1, 9, 4096} {
				var chunks [][]byte
				for i := 0; i < len(in); i += chunk {
					chunks = append(chunks, bytes.Clone(in[i:min(i+chunk, len(in))]))
				}
				h := &httpConn{Conn: &scriptConn{chunks: chunks, err: errEnd}, info: &httpproxy.Conn{}}
				h.h2in = &h2Inspect{h2conf: h2watch.Config{Preface: len(h2watch.Preface)}}
				h.h2in.h2 = h2watch.New(h.h2in.h2conf, time.Now)
				got, err := readAllH2(t, h, size)
				if err != errEnd {
					t.Fatalf("chunks of %d, reads of %d: error %v, want the socket's", chunk, size, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("chunks of %d, reads of %d: got\n%x\nwant\n%x", chunk, size, got, want)
				}
			}
		}
	}
}

// TestH2ReadPathHeldAtEOF: a frame cut by the end of the stream is not
// handed on; the error is.
func TestH2ReadPathHeldAtEOF(t *testing.T) {
	in := append([]byte(h2watch.Preface), h2frame(0x1, 0x4, 1, []byte{0x82, 0x87})[:10]...)
	h := &httpConn{Conn: &scriptConn{chunks: [][]byte{in}, err: io.EOF}, info: &httpproxy.Conn{}}
	h.h2in = &h2Inspect{h2: h2watch.New(h2watch.Config{Preface: len(h2watch.Preface)}, time.Now)}
	got, err := readAllH2(t, h, 4096)
	if err != io.EOF || string(got) != h2watch.Preface {
		t.Fatalf("got %q, %v; want the preface, then EOF", got, err)
	}
}
