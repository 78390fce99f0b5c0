//go:build linux

package iox

import (
	"errors"
	"sync"
	"syscall"
	"time"
)

// Parker holds idle connections without a goroutine each: a connection
// waiting for its client's next request is registered with an epoll
// instance of the Parker's own, and a goroutine is started for it again
// only when its socket becomes readable (or ends), when its idle time runs
// out, or when the Parker is told to let it go. An idle keep-alive
// connection then costs its state on the heap, not a goroutine's stack
// (8 KiB or more once it has served a request): nginx and HAProxy keep an
// idle connection in about 1 KiB.
//
// The socket stays registered with Go's own poller too; the Parker only
// watches it while nobody reads it. One goroutine, locked in epoll_wait on
// an OS thread of its own, serves every parked connection.
type Parker struct {
	epfd int
	// stop is a pipe whose read end is registered with token 0: a byte
	// written to it ends run at once, and done closes when run returned.
	stop [2]int
	done chan struct{}

	mu     sync.Mutex
	parked map[uint64]*parked
	next   uint64
	closed bool
	// wakes counts the wake callbacks running, which Close waits for.
	wakes sync.WaitGroup
}

// parked is one connection waiting.
type parked struct {
	wake  func(readable bool)
	timer *time.Timer
}

// ErrParkerClosed is returned by Park once the Parker is closed.
var ErrParkerClosed = errors.New("iox: parker closed")

// NewParker starts a Parker.
func NewParker() (*Parker, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &Parker{epfd: epfd, parked: map[uint64]*parked{}, done: make(chan struct{})}
	if err := syscall.Pipe2(p.stop[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.stop[0], &ev); err != nil {
		p.closeFDs()
		return nil, err
	}
	go p.run()
	return p, nil
}

// Park waits for fd to become readable or to end, for at most idle (0:
// no limit), without a goroutine. wake runs on a new goroutine, once:
// with true when the socket has something to read (bytes or its end),
// with false when the idle time ran out or Unpark let it go. The returned
// token names the registration for Unpark.
func (p *Parker) Park(fd int, idle time.Duration, wake func(readable bool)) (uint64, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, ErrParkerClosed
	}
	p.next++
	tok := p.next
	w := &parked{wake: wake}
	p.parked[tok] = w
	if idle > 0 {
		w.timer = time.AfterFunc(idle, func() { p.release(tok, false) })
	}
	p.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	// The token goes in the event's data: a closed and reused fd number
	// can never wake another connection's registration.
	ev.Fd, ev.Pad = int32(tok), int32(tok>>32)
	// A socket parked before keeps its (disarmed) registration: see
	// release. The kernel drops it when the socket is closed.
	err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
	if err == syscall.EEXIST {
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, fd, &ev)
	}
	if err != nil {
		p.mu.Lock()
		delete(p.parked, tok)
		p.mu.Unlock()
		if w.timer != nil {
			w.timer.Stop()
		}
		return 0, err
	}
	return tok, nil
}

// Unpark lets a parked connection go: its wake runs with false, unless it
// already ran or is about to.
func (p *Parker) Unpark(tok uint64) { p.release(tok, false) }

// release ends a registration once and starts its wake.
func (p *Parker) release(tok uint64, readable bool) {
	p.mu.Lock()
	w := p.parked[tok]
	delete(p.parked, tok)
	p.mu.Unlock()
	if w == nil {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	// The registration is left in place, never deleted by fd: the
	// socket may have been closed meanwhile (a connection's age limit)
	// and its number given to another connection, parked under another
	// token, whose registration a delete would remove. EPOLLONESHOT
	// disarmed it if it fired; one that did not fire belongs to a
	// connection that is about to close (a wake with false ends it), and
	// an event it still reports names a token no longer parked.
	p.wakes.Go(func() { w.wake(readable) })
}

// Close lets every parked connection go, waits for their wake callbacks
// and stops the Parker.
func (p *Parker) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	toks := make([]uint64, 0, len(p.parked))
	for tok := range p.parked {
		toks = append(toks, tok)
	}
	p.mu.Unlock()
	for _, tok := range toks {
		p.release(tok, false)
	}
	p.wakes.Wait()
	syscall.Write(p.stop[1], []byte{1})
	<-p.done
	p.closeFDs()
}

func (p *Parker) closeFDs() {
	syscall.Close(p.stop[0])
	syscall.Close(p.stop[1])
	syscall.Close(p.epfd)
}

func (p *Parker) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil && err != syscall.EINTR {
			// Only a broken epoll fd fails here; idle connections then wait
			// out their timers, which release them.
			return
		}
		for i := range max(n, 0) {
			tok := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if tok == 0 {
				return // Close
			}
			p.release(tok, true)
		}
	}
}

// Parked counts the connections parked now.
func (p *Parker) Parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}
