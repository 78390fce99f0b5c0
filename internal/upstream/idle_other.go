//go:build !unix

package upstream

// peekNothing cannot peek without blocking here; the response framing
// checks still retire connections with bytes left over.
func peekNothing(uintptr) bool { return true }

// PeekSupported says SocketQuiet can look at a socket without blocking.
const PeekSupported = false

// SocketQuiet cannot look without blocking here.
func SocketQuiet(uintptr) bool { return true }
