//go:build unix

package upstream

import "syscall"

// peekNothing reports whether the socket has no byte and no end of stream
// waiting: a non-blocking peek that would block.
func peekNothing(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
}
