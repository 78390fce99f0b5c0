package listen

import (
	"context"
	"net"
	"sync"
)

// Queue is a net.Listener whose connections are handed to it rather than
// accepted from a socket: a server that has already accepted, sniffed or
// terminated a connection gives it to net/http this way.
type Queue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

// NewQueue makes a queue that reports addr as its address.
func NewQueue(addr net.Addr) *Queue {
	return &Queue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Handoff gives c to whoever calls Accept. It reports false, leaving c to
// the caller, if the queue is closed or ctx ends first.
func (q *Queue) Handoff(ctx context.Context, c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	case <-ctx.Done():
		return false
	}
}

// Accept returns the next handed-off connection, or net.ErrClosed.
func (q *Queue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept and Handoff return; it may be called more than once.
func (q *Queue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

// Addr is the address given to NewQueue.
func (q *Queue) Addr() net.Addr { return q.addr }
