// Package listen owns the public sockets: binding a port and running its
// accept loop. Accept errors that come from resource exhaustion (too many
// open files) back off instead of spinning, and never end the loop; only
// closing the listener does.
package listen

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// Bind listens on TCP addr:port. Port 0 picks a free port, for tests and
// for port_map entries that ask for any port.
func Bind(addr string, port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
}

// Serve accepts connections on ln and calls handle for each in its own
// goroutine, until ln is closed; it then returns nil.
func Serve(ln net.Listener, log *slog.Logger, handle func(net.Conn)) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE, ENFILE, ECONNABORTED and the like are transient: wait
			// a little longer each time so a full fd table does not turn
			// the loop into a spinner.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Warn("accept failed; backing off", "addr", ln.Addr().String(), "error", err.Error(), "backoff", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go handle(c)
	}
}

// AddrPort returns a connection address as netip.AddrPort, or the zero
// value for non-IP addresses.
func AddrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap
	}
	return netip.AddrPort{}
}
