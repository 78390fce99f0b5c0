//go:build unix

package upstream

import "syscall"

// PeekSupported says SocketQuiet can look at a socket without blocking.
const PeekSupported = true

// SocketQuiet reports whether the socket fd has no byte and no end of
// stream waiting.
func SocketQuiet(fd uintptr) bool { return peekNothing(fd) }

// peekNothing reports whether the socket has no byte and no end of stream
// waiting: a non-blocking peek that would block.
func peekNothing(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
}
