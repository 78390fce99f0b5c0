package backhaul

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// Target is what an edge asks a worker to connect to: one of the
// worker's own machines, on the internal port of one of the app's
// services, for a client.
type Target struct {
	App     string
	Machine string
	Port    int            // internal port
	Client  netip.AddrPort // the original client, for the worker's logs
}

// The stream header is one line, "EPS1 APP MACHINE PORT CLIENT\n", and
// the answer one line, "OK\n" or "ERR CODE R MESSAGE\n" (R is 1 when
// another machine may be tried). A line, not a binary frame: it is short,
// sent once per stream, and readable in a packet capture.
const (
	streamMagic = "EPS1"
	// MaxLine bounds a header or answer line: app and machine names are
	// short, and a worker must not buffer what an edge sends without end.
	MaxLine = 512
)

var errLine = errors.New("backhaul: malformed stream line")

// AppendHeader appends t's stream header.
func AppendHeader(b []byte, t Target) []byte {
	b = append(b, streamMagic...)
	b = append(b, ' ')
	b = AppendTarget(b, t)
	return append(b, '\n')
}

// AppendTarget appends "APP MACHINE PORT CLIENT": the stream header's
// words, and the value of the field that names a relayed request's
// machine.
func AppendTarget(b []byte, t Target) []byte {
	b = append(b, t.App...)
	b = append(b, ' ')
	b = append(b, t.Machine...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(t.Port), 10)
	b = append(b, ' ')
	if !t.Client.IsValid() {
		// No client to name (work the node makes itself).
		return append(b, '-')
	}
	return t.Client.AppendTo(b)
}

// ParseHeader reads a stream header line (without its newline).
func ParseHeader(line []byte) (Target, error) {
	rest, ok := bytes.CutPrefix(line, []byte(streamMagic+" "))
	if !ok {
		return Target{}, errLine
	}
	return ParseTarget(rest)
}

// ParseTarget reads "APP MACHINE PORT CLIENT".
func ParseTarget(v []byte) (Target, error) {
	f := bytes.Split(v, []byte{' '})
	if len(f) != 4 {
		return Target{}, errLine
	}
	t := Target{App: string(f[0]), Machine: string(f[1])}
	if !validName(t.App) || !validName(t.Machine) {
		return Target{}, fmt.Errorf("%w: bad app or machine name", errLine)
	}
	port := 0
	for _, c := range f[2] {
		if c < '0' || c > '9' || port > 65535 {
			port = -1
			break
		}
		port = port*10 + int(c-'0')
	}
	if port < 1 || port > 65535 {
		return Target{}, fmt.Errorf("%w: bad port", errLine)
	}
	t.Port = port
	if string(f[3]) == "-" {
		return t, nil
	}
	var err error
	if t.Client, err = netip.ParseAddrPort(string(f[3])); err != nil {
		return Target{}, fmt.Errorf("%w: bad client address", errLine)
	}
	return t, nil
}

// validName: app and machine names are printable tokens without spaces.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// AppendAnswer appends the answer to a stream header: OK for nil, else
// ERR and the error (AppendError).
func AppendAnswer(b []byte, err error) []byte {
	if err == nil {
		return append(b, "OK\n"...)
	}
	b = AppendError(append(b, "ERR "...), err)
	return append(b, '\n')
}

// AppendError appends "CODE R MESSAGE": the error's code, 1 if another
// machine may be tried (else 0), and its message on one line. It is also
// the value of the field a worker's error response to a relayed request
// carries.
func AppendError(b []byte, err error) []byte {
	pe, ok := perr.As(err)
	code, retry := perr.InternalError, false
	if ok {
		code, retry = pe.Code, pe.Retryable
	}
	start := len(b)
	b = append(b, code...)
	if retry {
		b = append(b, " 1 "...)
	} else {
		b = append(b, " 0 "...)
	}
	msg := err.Error()
	if room := MaxLine - 1 - (len(b) - start); len(msg) > room {
		msg = msg[:room]
	}
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < ' ' || c == 0x7f {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

// ParseAnswer reads an answer line (without its newline): nil for OK,
// else the worker's error (ParseError).
func ParseAnswer(line []byte, worker string) error {
	if string(line) == "OK" {
		return nil
	}
	rest, ok := bytes.CutPrefix(line, []byte("ERR "))
	if !ok {
		return perr.New(perr.BackhaulProtocol, fmt.Errorf("worker %s: %w", worker, errLine))
	}
	return ParseError(string(rest), worker)
}

// ParseError reads "CODE R MESSAGE" from worker into an error with that
// code and retryability, its message saying the worker answered it.
func ParseError(v, worker string) *perr.Error {
	code, rest, _ := strings.Cut(v, " ")
	retry, msg, _ := strings.Cut(rest, " ")
	c, known := perr.Lookup(code)
	if !known {
		return perr.New(perr.BackhaulProtocol, fmt.Errorf("worker %s answered an unknown code %q: %s", worker, code, msg))
	}
	e := perr.New(c, fmt.Errorf("worker %s: %s", worker, msg))
	e.Retryable = retry == "1"
	return e
}
