package demo

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// The handshake example of RFC 6455 section 1.3.
const (
	rfcKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	rfcAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// wsDial performs the opening handshake by hand and returns the connection and a reader that
// may already hold the first server frames.
func wsDial(t *testing.T, addr string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c := dial(t, addr)
	_, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: demo\r\nUpgrade: websocket\r\n"+
		"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: "+rfcKey+"\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake status = %d, want 101", resp.StatusCode)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != rfcAccept {
		t.Errorf("Sec-WebSocket-Accept = %q, want %q", got, rfcAccept)
	}
	if got := resp.Header.Get("Demo-Machine-Id"); got != "m" {
		t.Errorf("Demo-Machine-Id = %q, want m", got)
	}
	return c, br
}

// clientFrame encodes a masked client frame by hand, independently of appendFrame.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n <= 0xFFFF:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	out = append(out, key[:]...)
	for i, b := range payload {
		out = append(out, b^key[i%4])
	}
	return out
}

// expectFrame reads one server frame and checks it.
func expectFrame(t *testing.T, br *bufio.Reader, fin bool, op byte, payload []byte) {
	t.Helper()
	f, err := readFrame(br, 1<<21)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if f.masked {
		t.Error("server frame is masked")
	}
	if f.fin != fin || f.opcode != op || !bytes.Equal(f.payload, payload) {
		t.Errorf("frame fin=%v op=%#x %d bytes %.30q; want fin=%v op=%#x %d bytes %.30q",
			f.fin, f.opcode, len(f.payload), f.payload, fin, op, len(payload), payload)
	}
}

func TestWebSocketEcho(t *testing.T) {
	addr := startMachine(t, "m")
	c, br := wsDial(t, addr)
	write := func(b []byte) {
		t.Helper()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}

	// RFC 6455 section 5.7: a single-frame masked text message containing "Hello".
	write([]byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58})
	expectFrame(t, br, true, opText, []byte("Hello"))

	bin16 := bytes.Repeat([]byte{0x00, 0xff, 0x10}, 100) // 300 bytes: 16-bit length
	write(clientFrame(true, opBinary, bin16))
	expectFrame(t, br, true, opBinary, bin16)

	bin64 := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80,000 bytes: 64-bit length
	write(clientFrame(true, opBinary, bin64))
	expectFrame(t, br, true, opBinary, bin64)

	// A fragmented text message with a ping in the middle: fragments echo as they came and the
	// ping is answered in between.
	write(clientFrame(false, opText, []byte("Hel")))
	write(clientFrame(true, opPing, []byte("are you there")))
	write(clientFrame(true, opContinuation, []byte("lo")))
	expectFrame(t, br, false, opText, []byte("Hel"))
	expectFrame(t, br, true, opPong, []byte("are you there"))
	expectFrame(t, br, true, opContinuation, []byte("lo"))

	write(clientFrame(true, opClose, append(closePayload(1000), "bye"...)))
	expectFrame(t, br, true, opClose, closePayload(1000))
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after close: %q, %v; want EOF", rest, err)
	}
}

func TestWebSocketProtocolErrors(t *testing.T) {
	addr := startMachine(t, "m")
	unmasked := appendFrame(nil, wsFrame{fin: true, opcode: opText, payload: []byte("hi")})
	tooBig := clientFrame(true, opBinary, make([]byte, wsMaxPayload+1))
	tests := []struct {
		name string
		send []byte
		code uint16
	}{
		{"unmasked", unmasked, closeProtocolError},
		{"continuation without start", clientFrame(true, opContinuation, []byte("x")), closeProtocolError},
		{"reserved opcode", clientFrame(true, 0x3, nil), closeProtocolError},
		{"too big", tooBig, closeTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := wsDial(t, addr)
			go c.Write(tt.send) // may fail once the machine gives up; the close frame is what counts
			expectFrame(t, br, true, opClose, closePayload(tt.code))
		})
	}
}

func TestWebSocketBadHandshake(t *testing.T) {
	addr := startMachine(t, "m")
	c := h1Client(t)
	good := map[string]string{
		"Upgrade":               "websocket",
		"Connection":            "Upgrade",
		"Sec-WebSocket-Key":     rfcKey,
		"Sec-WebSocket-Version": "13",
	}
	tests := []struct {
		name   string
		change func(http.Header)
		want   int
	}{
		{"no upgrade", func(h http.Header) { h.Del("Upgrade") }, http.StatusUpgradeRequired},
		{"version 8", func(h http.Header) { h.Set("Sec-WebSocket-Version", "8") }, http.StatusUpgradeRequired},
		{"short key", func(h http.Header) { h.Set("Sec-WebSocket-Key", "c2hvcnQ=") }, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(t, http.MethodGet, "http://"+addr+"/ws", nil)
			for k, v := range good {
				req.Header.Set(k, v)
			}
			tt.change(req.Header)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == http.StatusUpgradeRequired && strings.Contains(tt.name, "version") &&
				resp.Header.Get("Sec-WebSocket-Version") != "13" {
				t.Error("426 does not name version 13")
			}
		})
	}
}
