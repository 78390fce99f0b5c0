package httpproxy

import (
	"math/rand/v2"

	"github.com/edgeproxy/edgeproxy/internal/compress"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// ErrorCodeHeader carries the error code on responses the proxy makes
// itself, so clients and tests need not parse the body.
const ErrorCodeHeader = perr.CodeHeader

// Handler is the forwarding core shared by every port, runtime and front
// end: stateless apart from the shared pools it reaches through each
// request's Env, the copy buffers and the rendered Date.
type Handler struct {
	bufs  *iox.BufferPool
	dates dateCache
	// compress keeps the response encoders for reuse.
	compress compress.Pools
}

// NewHandler makes the core; bufs lends the body copy buffers (nil: a
// pool of 32 KiB buffers of its own).
func NewHandler(bufs *iox.BufferPool) *Handler {
	if bufs == nil {
		bufs = iox.NewBufferPool(32 << 10)
	}
	return &Handler{bufs: bufs}
}

// Compressing is how many responses are being compressed now.
func (h *Handler) Compressing() int { return int(h.compress.InUse()) }

func via(major int) string {
	if major == 2 {
		return "2 edgeproxy"
	}
	return "1.1 edgeproxy"
}

// requestID holds an id unique enough to find one request in logs: 64
// random bits and the edge's region, like the platform's ids. It is kept
// as bytes in the exchange: headers take it as it is, and only a log line
// makes a string of it.
type requestID [64]byte

func (b *requestID) set(region string) []byte {
	const hexdigits = "0123456789abcdef"
	v := rand.Uint64()
	for i := range 16 {
		b[i] = hexdigits[v&0xf]
		v >>= 4
	}
	b[16] = '-'
	n := 17 + copy(b[17:], region)
	return b[:n]
}
