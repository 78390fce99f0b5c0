package demo

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

const (
	// wsGUID is the fixed string RFC 6455 section 1.3 appends to the client's key.
	wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	// wsMaxPayload caps one frame; fragmented messages are echoed frame by frame, so no
	// message is ever assembled in memory.
	wsMaxPayload = 1 << 20
	// wsLinger bounds the drain after the echo stops, see lingerClose.
	wsLinger = 2 * time.Second
)

// websocket upgrades /ws (HTTP/1.1 only; RFC 8441 over HTTP/2 is not offered) and then echoes
// frames until the client closes.
func (h *handler) websocket(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 {
		h.fail(w, http.StatusBadRequest, "WebSocket is served over HTTP/1.1 only")
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		h.fail(w, http.StatusMethodNotAllowed, "WebSocket handshake must be a GET")
		return
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Upgrade", "websocket")
		h.fail(w, http.StatusUpgradeRequired, "expected Connection: Upgrade and Upgrade: websocket")
		return
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		// RFC 6455 section 4.4: name the versions we do speak.
		w.Header().Set("Sec-WebSocket-Version", "13")
		h.fail(w, http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version")
		return
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		h.fail(w, http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64")
		return
	}

	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.fail(w, http.StatusInternalServerError, "hijack: "+err.Error())
		return
	}
	defer conn.Close()

	// The 101 is written by hand because headers set on w are lost once the connection is
	// hijacked; http.Header.Write still strips CR and LF from values such as the machine id.
	resp := http.Header{}
	resp.Set("Upgrade", "websocket")
	resp.Set("Connection", "Upgrade")
	resp.Set("Sec-WebSocket-Accept", acceptKey(key))
	resp.Set("Demo-Machine-Id", h.id)
	_ = conn.SetWriteDeadline(time.Now().Add(idleTimeout))
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = resp.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if brw.Flush() != nil {
		return
	}
	// brw.Reader may already hold the client's first frames, sent right after the handshake.
	wsEcho(conn, brw.Reader)
	lingerClose(conn, brw.Reader)
}

func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// headerHasToken reports whether a comma-separated header such as Connection lists token,
// ignoring case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// wsEcho echoes data frames unmasked with their opcode and FIN bit unchanged, so fragmentation
// is preserved; answers pings with pongs; and answers a close with a close carrying the same
// status code. Frames that break the RFC get a close with 1002 (or 1009 when too big) and end
// the session.
func wsEcho(conn net.Conn, br *bufio.Reader) {
	var out []byte
	write := func(f wsFrame) error {
		out = appendFrame(out[:0], f)
		_ = conn.SetWriteDeadline(time.Now().Add(idleTimeout))
		_, err := conn.Write(out)
		return err
	}
	closeWith := func(code uint16) {
		_ = write(wsFrame{fin: true, opcode: opClose, payload: closePayload(code)})
	}

	inMessage := false // a text or binary frame without FIN awaits its continuations
	for {
		_ = conn.SetReadDeadline(time.Now().Add(idleTimeout))
		f, err := readFrame(br, wsMaxPayload)
		var pe *wsProtocolError
		switch {
		case errors.Is(err, errFrameTooBig):
			closeWith(closeTooBig)
			return
		case errors.As(err, &pe):
			closeWith(closeProtocolError)
			return
		case err != nil:
			return
		}
		// RFC 6455 section 5.1: a server must close on an unmasked client frame.
		if !f.masked {
			closeWith(closeProtocolError)
			return
		}
		switch f.opcode {
		case opText, opBinary, opContinuation:
			if (f.opcode == opContinuation) != inMessage {
				closeWith(closeProtocolError)
				return
			}
			inMessage = !f.fin
			if write(wsFrame{fin: f.fin, opcode: f.opcode, payload: f.payload}) != nil {
				return
			}
		case opPing:
			if write(wsFrame{fin: true, opcode: opPong, payload: f.payload}) != nil {
				return
			}
		case opPong:
			// Unsolicited pongs are allowed and need no answer.
		case opClose:
			switch len(f.payload) {
			case 0:
				_ = write(wsFrame{fin: true, opcode: opClose})
			case 1:
				closeWith(closeProtocolError)
			default:
				_ = write(wsFrame{fin: true, opcode: opClose, payload: f.payload[:2]})
			}
			return
		}
	}
}

// lingerClose half-closes and drains what the client still sends for a bounded time before the
// deferred Close: closing with unread bytes queued (say, the rest of an oversized frame) makes
// Linux send a reset, and the client could lose the close frame it is owed.
func lingerClose(conn net.Conn, br *bufio.Reader) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = conn.SetReadDeadline(time.Now().Add(wsLinger))
	_, _ = io.Copy(io.Discard, io.LimitReader(br, 16*wsMaxPayload))
}
