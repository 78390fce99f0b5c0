package httpproxy

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/edgeproxy/edgeproxy/internal/replay"
)

// errStaleAttempt ends the body of an attempt that a newer one replaced
// (a retry or a replay): the transport of the old attempt must stop
// sending, and what it had read stays for the new one.
var errStaleAttempt = errors.New("request body handed to a newer attempt")

// errNotReplayable ends an attempt whose body can no longer be sent from
// the start; callers check Replayable first, so it signals a race lost.
var errNotReplayable = errors.New("request body is larger than the replay buffer")

// replayBody is a client's request body that can be sent more than once,
// for retries and fly-replay. It records what it passes on, up to
// replay.MaxBufferedBody, while it streams: nothing waits for the whole
// body before the first attempt (a gRPC stream or a large upload would
// stall or need unbounded memory), yet a small body, or the part of any
// body read so far, can be sent again from its first byte. Past the limit
// recording stops and the body can only be streamed once (PA01 if a
// replay is asked for).
//
// Each attempt reads through its own reader. The transport of an attempt
// may still be reading (blocked on the client) when the next attempt
// starts; only one reader reads the client at a time, and bytes a
// replaced reader gets are kept for the new one, so no byte is lost or
// sent twice.
type replayBody struct {
	src io.Reader

	mu   sync.Mutex
	cond sync.Cond
	buf  []byte
	// total counts bytes read from the client.
	total int64
	// overflow is set once bytes past the limit were streamed without
	// being kept: the body can no longer be sent again.
	overflow bool
	// srcErr is the client body's terminal error (io.EOF at its end).
	srcErr error
	// reading is true while some reader is inside src.Read.
	reading bool
	gen     int

	// started and failed are read without the lock by the error path:
	// whether any byte flowed, and whether the client cut the body short.
	started, failed atomic.Bool
}

func newReplayBody(src io.Reader, contentLength int64) *replayBody {
	b := &replayBody{src: src}
	b.cond.L = &b.mu
	if contentLength > replay.MaxBufferedBody {
		// Known to be too large: do not copy a byte of it.
		b.overflow = true
	}
	return b
}

// Attempt returns the body for a new attempt, from the first byte. The
// previous attempt's reader stops at its next read.
func (b *replayBody) Attempt() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	return &attemptBody{b: b, gen: b.gen}
}

// Replayable reports whether the body can still be sent from its start:
// everything read so far was kept, or nothing was read yet (a connect that
// failed before any byte flowed can be retried even for a large body).
func (b *replayBody) Replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow || b.total == 0
}

// Complete reports whether the whole body has been received and kept.
func (b *replayBody) Complete() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow && b.srcErr == io.EOF
}

// Fill reads the rest of a body of known length into the buffer, so a
// request whose machine failed can be sent again whole. Only bodies the
// client announced as fitting are filled: an open-ended stream (gRPC)
// would wait on a client that waits for a response.
func (b *replayBody) Fill(contentLength int64) bool {
	if contentLength < 0 || contentLength > replay.MaxBufferedBody || !b.Replayable() {
		return b.Complete()
	}
	io.Copy(io.Discard, b.Attempt())
	return b.Complete()
}

// Size is how many body bytes were read from the client so far.
func (b *replayBody) Size() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

type attemptBody struct {
	b   *replayBody
	gen int
	pos int64
}

func (r *attemptBody) Read(p []byte) (int, error) {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if r.gen != b.gen {
			return 0, errStaleAttempt
		}
		if r.pos < b.total {
			if b.overflow {
				return 0, errNotReplayable
			}
			n := copy(p, b.buf[r.pos:])
			r.pos += int64(n)
			return n, nil
		}
		if b.srcErr != nil {
			return 0, b.srcErr
		}
		if !b.reading {
			break
		}
		// Another (replaced) reader is waiting on the client; its bytes
		// will be kept, so wait for them rather than read past them.
		b.cond.Wait()
	}
	if len(p) == 0 {
		return 0, nil
	}
	b.reading = true
	b.mu.Unlock()
	if !b.started.Load() {
		b.started.Store(true)
	}
	n, err := b.src.Read(p)
	b.mu.Lock()
	b.reading = false
	b.cond.Broadcast()
	if n > 0 {
		active := r.gen == b.gen
		switch {
		case b.overflow:
		case active && len(b.buf)+n > replay.MaxBufferedBody:
			// This reader is at the end of what is kept and passes the
			// bytes on itself: nobody needs the copy any more.
			b.overflow, b.buf = true, nil
		default:
			// A replaced reader keeps its bytes even past the limit (by
			// at most one read) so the new attempt gets them.
			b.buf = append(b.buf, p[:n]...)
		}
		b.total += int64(n)
	}
	if err != nil {
		b.srcErr = err
		if err != io.EOF {
			b.failed.Store(true)
		}
	}
	if r.gen != b.gen {
		return 0, errStaleAttempt
	}
	r.pos += int64(n)
	return n, err
}

// Close is the transport saying it is done with this attempt; the client
// body itself is closed by net/http after the handler returns.
func (r *attemptBody) Close() error { return nil }
