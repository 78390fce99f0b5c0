package iox

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
)

// splice(2) flags, which package syscall does not name.
const (
	spliceMove     = 0x1
	spliceNonblock = 0x2
)

// spliceChunk is the most one splice moves from a socket into the pipe,
// and the pipe's capacity (F_SETPIPE_SZ), so the pipe is always drained
// before the next read and a splice into it never blocks on a full pipe.
// Larger moves mean fewer syscalls per byte.
const spliceChunk = 256 << 10

const fSetPipeSz = 1031 // F_SETPIPE_SZ

// errSpliceUnsupported means the kernel refused to splice these sockets;
// the caller falls back to copying, which is only safe before any byte
// moved.
var errSpliceUnsupported = errors.New("iox: splice not supported")

// trySplice moves src to dst with splice(2) when both are stacks of
// Transparent layers over TCP sockets. handled is false when it did not
// apply and nothing moved: the caller copies instead.
func trySplice(dst, src net.Conn, moved *atomic.Bool) (written int64, err error, handled bool) {
	srcSock, srcLayers, ok := spliceChain(src, true)
	if !ok {
		return 0, nil, false
	}
	dstSock, dstLayers, ok := spliceChain(dst, false)
	if !ok {
		return 0, nil, false
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return 0, nil, false
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	chunk := spliceChunk
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(p[1]), fSetPipeSz, spliceChunk); e != 0 {
		// Over the unprivileged limit (/proc/sys/fs/pipe-max-size): keep
		// the default 64 KiB pipe.
		chunk = 64 << 10
	}
	rc, err := srcSock.SyscallConn()
	if err != nil {
		return 0, nil, false
	}
	wc, err := dstSock.SyscallConn()
	if err != nil {
		return 0, nil, false
	}
	acct := &spliceAccount{src: srcLayers, dst: dstLayers, moved: moved}
	written, err = splicePump(rc, wc, p[0], p[1], chunk, acct)
	if errors.Is(err, errSpliceUnsupported) && written == 0 {
		return 0, nil, false
	}
	return written, err, true
}

// splicePump is the loop: one splice from the socket into the pipe (a
// "read", reported to the source layers), then splices from the pipe to
// the other socket until the pipe is empty (reported to the destination
// layers). Waiting happens in the runtime's poller through RawConn, so an
// empty socket parks the goroutine; the loop never retries on its own.
func splicePump(rc, wc syscall.RawConn, pr, pw, chunk int, acct *spliceAccount) (written int64, err error) {
	for {
		var n int64
		var serr error
		rerr := rc.Read(func(fd uintptr) bool {
			for {
				n, serr = syscall.Splice(int(fd), nil, pw, nil, chunk, spliceMove|spliceNonblock)
				if serr != syscall.EINTR {
					break
				}
			}
			// EAGAIN: nothing to read yet; park until the socket is readable.
			return serr != syscall.EAGAIN
		})
		if rerr == nil {
			rerr = serr
		}
		if errors.Is(rerr, syscall.EINVAL) || errors.Is(rerr, syscall.ENOSYS) {
			return written, errSpliceUnsupported
		}
		seen := rerr
		if n == 0 && rerr == nil {
			seen = io.EOF // the layers see the end as a Read would report it
		}
		if kerr := acct.read(int(n), seen); kerr != nil {
			return written, kerr
		}
		if rerr != nil {
			return written, rerr
		}
		if n == 0 {
			return written, nil // the peer's FIN: end of stream
		}
		for n > 0 {
			var m int64
			var werr error
			err := wc.Write(func(fd uintptr) bool {
				for {
					m, werr = syscall.Splice(pr, nil, int(fd), nil, int(n), spliceMove|spliceNonblock)
					if werr != syscall.EINTR {
						break
					}
				}
				return werr != syscall.EAGAIN
			})
			if err == nil {
				err = werr
			}
			if err != nil {
				return written, err
			}
			if m <= 0 {
				return written, errors.New("iox: splice wrote nothing")
			}
			n -= m
			written += m
			acct.wrote(int(m))
		}
	}
}
