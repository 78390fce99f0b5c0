package upstream

import (
	"net"
	"syscall"
)

// IdleProbe tells whether a pooled connection that has sat idle may carry
// another request: nothing arrived on it and the machine did not close
// it. Any byte a machine sends while no request is outstanding (a 408, the
// rest of an over-long body, a second response) belongs to no client; a
// connection that carries one must be retired, or the next client on it
// would be served another request's answer.
//
// It peeks at the socket without blocking and without a goroutine per
// idle connection, with the socket found once and no allocation per
// check. A connection it cannot see through (no socket under its
// wrappers) counts as quiet, as it did before the check existed.
type IdleProbe struct {
	raw   syscall.RawConn
	quiet bool
	peek  func(fd uintptr) bool
}

// NewIdleProbe finds c's socket below its wrappers.
func NewIdleProbe(c net.Conn) *IdleProbe {
	p := &IdleProbe{}
	if sc := socketOf(c); sc != nil {
		if raw, err := sc.SyscallConn(); err == nil {
			p.raw = raw
		}
	}
	p.peek = func(fd uintptr) bool {
		p.quiet = peekNothing(fd)
		return true // never wait for readability
	}
	return p
}

// Quiet reports whether nothing arrived on the connection and it is still
// open.
func (p *IdleProbe) Quiet() bool {
	if p.raw == nil {
		return true
	}
	p.quiet = false
	err := p.raw.Read(p.peek)
	return err == nil && p.quiet
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
