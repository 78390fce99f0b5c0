package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"time"
)

// sslRequestCode is PostgreSQL's SSLRequest: length 8, then 1234 << 16 | 5679.
const sslRequestCode = 80877103

// acceptSSLRequest answers the SSLRequest a PostgreSQL client sends before
// TLS on a pg_tls port: it reads exactly the 8-byte request and replies
// 'S' (TLS will follow). Anything else is refused, since this port speaks
// only TLS-wrapped PostgreSQL.
func acceptSSLRequest(c net.Conn, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	var msg [8]byte
	if _, err := io.ReadFull(c, msg[:]); err != nil {
		return fmt.Errorf("reading SSLRequest: %w", err)
	}
	if binary.BigEndian.Uint32(msg[:4]) != 8 || binary.BigEndian.Uint32(msg[4:]) != sslRequestCode {
		return errors.New("first message is not an SSLRequest (is the client using sslmode=disable?)")
	}
	if _, err := c.Write([]byte{'S'}); err != nil {
		return err
	}
	return c.SetDeadline(time.Time{})
}

// slogLogger adapts the structured logger for net/http's error log, whose
// lines (TLS and protocol errors from clients) are debug material.
func slogLogger(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}
