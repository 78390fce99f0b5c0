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
	"syscall"
	"time"
)

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

// Park stops a listener listening and closes it. Shutting the socket's
// read side takes it out of the LISTEN state for every descriptor that
// shares it, which matters because a graceful-restart handoff keeps a
// copy of each listener to pass on: closing only ours would leave the
// kernel accepting connections that nobody serves. Clients connecting to a
// parked port are refused at once, and the address is free to bind again.
func Park(ln net.Listener) error {
	if sc, ok := ln.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RD) })
		}
	}
	return ln.Close()
}

// Listening reports whether ln's socket is in the LISTEN state: one
// inherited from a parent that had parked it is not, and must not be used.
func Listening(ln net.Listener) bool {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	listening := true
	rc.Control(func(fd uintptr) {
		v, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
		listening = err != nil || v != 0
	})
	return listening
}

// Opener opens listeners through open (a graceful-restart handoff, or
// net.Listen), replacing a parked socket handed down by a parent with a
// fresh one.
func Opener(open func(network, addr string) (net.Listener, error)) func(network, addr string) (net.Listener, error) {
	return func(network, addr string) (net.Listener, error) {
		ln, err := open(network, addr)
		if err != nil || Listening(ln) {
			return ln, err
		}
		ln.Close()
		// The handoff now counts the dead socket as used, so this opens a
		// new one in its place.
		return open(network, addr)
	}
}
