package upstream

import (
	"net"
	"syscall"
)

// Quiet reports whether a pooled connection that has sat idle may carry
// another request: nothing arrived on it and the machine did not close
// it. Any byte a machine sends while no request is outstanding (a 408, the
// rest of an over-long body, a second response) belongs to no client; a
// connection that carries one must be retired, or the next client on it
// would be served another request's answer.
//
// It peeks at the socket without blocking and without a goroutine per
// idle connection. A connection it cannot see through (no socket under
// its wrappers) counts as quiet, as it did before the check existed.
func Quiet(c net.Conn) bool {
	sc := socketOf(c)
	if sc == nil {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	quiet := false
	err = raw.Read(func(fd uintptr) bool {
		quiet = peekNothing(fd)
		return true // never wait for readability
	})
	return err == nil && quiet
}

// socketOf unwraps c down to a connection that exposes its socket.
func socketOf(c net.Conn) syscall.Conn {
	for c != nil {
		if sc, ok := c.(syscall.Conn); ok {
			return sc
		}
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			return nil
		}
		c = u.Unwrap()
	}
	return nil
}
