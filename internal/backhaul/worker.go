package backhaul

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/listen"
	"github.com/edgeproxy/edgeproxy/internal/meter"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// WorkerOptions is what a worker's backhaul listener needs from the node.
type WorkerOptions struct {
	// Identity is the node's fleet identity now (it changes on reload).
	Identity func() *Identity
	// HandshakeTimeout bounds the TLS handshake and a stream's header.
	HandshakeTimeout time.Duration
	// IdleTimeout ends an HTTP/2 backhaul connection with no stream for
	// that long (the edge opens another when it needs one).
	IdleTimeout time.Duration
	// Guard is the progress guard every backhaul connection runs under.
	Guard Guard
	// Connect connects to one of this node's own machines for a stream,
	// or says why not (the error's code goes back to the edge). done ends
	// the machine's accounting.
	Connect func(ctx context.Context, peer string, t Target) (c net.Conn, done func(), err error)
	// Pipe moves a stream's bytes both ways until both ends are done.
	Pipe func(edge, machine net.Conn)
	// HTTP serves relayed requests; ConnContext tells it the edge's node.
	HTTP        http.Handler
	ConnContext func(ctx context.Context, peer string) context.Context
	Log         *slog.Logger
	Metrics     *Metrics
}

// Guard is the progress guard's settings for backhaul connections.
type Guard struct {
	Limits iox.GuardLimits
	Stats  *iox.Stats
	// OnKill is told of a spin kill, with the peer node ("" before the
	// handshake named it).
	OnKill func(peer string, k iox.Kill)
}

// Worker is a worker's backhaul listener.
type Worker struct {
	opts  WorkerOptions
	ln    net.Listener
	queue *listen.Queue
	hs    *http.Server

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewWorker makes a worker's listener on ln; Serve runs it.
func NewWorker(ln net.Listener, opts WorkerOptions) *Worker {
	w := &Worker{opts: opts, ln: ln, queue: listen.NewQueue(ln.Addr()), conns: map[net.Conn]struct{}{}}
	w.hs = &http.Server{
		Handler:     opts.HTTP,
		IdleTimeout: opts.IdleTimeout,
		// The edge's HTTP/2 runs inside the backhaul's TLS, whose
		// handshake already chose it: to net/http it is HTTP/2 with prior
		// knowledge on a connection of the backhaul's own layers.
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: MaxStreams},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if bc, ok := c.(*batchConn); ok && opts.ConnContext != nil {
				if pc, ok := bc.Conn.(*conn); ok {
					return opts.ConnContext(ctx, pc.peer)
				}
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(opts.Log.Handler(), slog.LevelDebug),
	}
	w.hs.Protocols = new(http.Protocols)
	w.hs.Protocols.SetUnencryptedHTTP2(true)
	return w
}

// MaxStreams is how many requests an edge may have in flight on one
// backhaul connection; beyond it the edge opens another connection.
const MaxStreams = 1000

// Addr is where the worker listens.
func (w *Worker) Addr() net.Addr { return w.ln.Addr() }

// Serve accepts backhaul connections until Close.
func (w *Worker) Serve() error {
	w.wg.Go(func() { _ = w.hs.Serve(w.queue) })
	return listen.Serve(w.ln, w.opts.Log, w.accept)
}

// Close stops the listener and ends every backhaul connection.
func (w *Worker) Close() error {
	w.mu.Lock()
	w.closed = true
	conns := w.conns
	w.conns = map[net.Conn]struct{}{}
	w.mu.Unlock()
	err := w.ln.Close()
	w.hs.Close()
	w.queue.Close()
	for c := range conns {
		c.Close()
	}
	w.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (w *Worker) track(c net.Conn, on bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if on {
		if w.closed {
			return false
		}
		w.conns[c] = struct{}{}
		w.wg.Add(1)
		return true
	}
	delete(w.conns, c)
	w.wg.Done()
	return true
}

// accept authenticates a connection and serves it by its ALPN protocol.
func (w *Worker) accept(raw net.Conn) {
	if !w.track(raw, true) {
		raw.Close()
		return
	}
	go func() {
		handedOff := false
		defer func() {
			if !handedOff {
				w.track(raw, false)
			}
		}()
		c, err := serverConn(raw, w.opts)
		if err != nil {
			w.opts.Metrics.refusedConn()
			w.opts.Log.Warn("backhaul connection refused", "code", string(perr.NotFleetMember),
				"peer_addr", raw.RemoteAddr().String(), "error", err.Error())
			raw.Close()
			return
		}
		c.meter.ps = peerSide{c.peer, "worker"}
		c.metrics = w.opts.Metrics
		w.opts.Metrics.opened(c.meter)
		switch c.tls.ConnectionState().NegotiatedProtocol {
		case ProtoHTTP:
			// net/http closes it; its Close untracks it.
			c.onClose = func() { w.track(raw, false) }
			handedOff = true
			if !w.queue.Handoff(context.Background(), newBatchConn(c)) {
				c.Close()
			}
		case ProtoStream:
			w.stream(c)
		default:
			c.Close()
		}
	}()
}

// serverConn runs the TLS handshake under the guard and names the peer.
func serverConn(raw net.Conn, opts WorkerOptions) (*conn, error) {
	id := opts.Identity()
	if id == nil {
		return nil, errors.New("this node has no fleet identity")
	}
	c := newConn(raw, opts.Guard, func(under net.Conn) *tls.Conn { return tls.Server(under, id.ServerConfig()) })
	raw.SetDeadline(time.Now().Add(opts.HandshakeTimeout))
	if err := c.tls.Handshake(); err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	peer, err := PeerNode(c.tls.ConnectionState())
	if err != nil {
		return nil, err
	}
	c.peer = peer
	return c, nil
}

// newConn builds a backhaul connection's layers over its socket: the
// meter (wire bytes), the guarded socket, TLS, the guarded TLS.
func newConn(raw net.Conn, g Guard, mkTLS func(net.Conn) *tls.Conn) *conn {
	if g.Stats == nil {
		g.Stats, g.Limits = &iox.Stats{}, iox.DefaultGuardLimits()
	}
	c := &conn{raw: raw, meter: &meteredConn{m: meter.New(raw)}}
	guard := iox.NewGuard(raw, g.Limits, g.Stats, func(k iox.Kill) {
		if g.OnKill != nil {
			g.OnKill(c.peer, k)
		}
	})
	c.tls = mkTLS(guard.Wrap("backhaul-tcp", c.meter.m))
	c.Conn = guard.Wrap("backhaul-tls", c.tls)
	return c
}

// stream serves one raw stream: header, the worker's own checks and
// connect, the answer, then the bytes both ways.
func (w *Worker) stream(c *conn) {
	defer c.Close()
	c.raw.SetReadDeadline(time.Now().Add(w.opts.HandshakeTimeout))
	line, err := readLine(c)
	if err != nil {
		w.opts.Metrics.stream(c.peer, "worker", string(perr.BackhaulProtocol))
		w.opts.Log.Warn("backhaul stream without a header", "peer", c.peer, "error", err.Error())
		return
	}
	c.raw.SetReadDeadline(time.Time{})
	t, err := ParseHeader(line)
	if err != nil {
		w.answer(c, perr.New(perr.BackhaulProtocol, err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.opts.HandshakeTimeout)
	m, done, err := w.opts.Connect(ctx, c.peer, t)
	cancel()
	if err != nil {
		w.opts.Log.Info("backhaul stream refused", "peer", c.peer, "app", t.App, "machine", t.Machine,
			"port", t.Port, "client", t.Client.String(), "error", err.Error())
		w.answer(c, err)
		return
	}
	defer done()
	defer m.Close()
	if !w.answer(c, nil) {
		return
	}
	w.opts.Metrics.stream(c.peer, "worker", "ok")
	w.opts.Pipe(c, m)
}

// answer writes a stream's answer; false if it could not be sent.
func (w *Worker) answer(c *conn, err error) bool {
	if err != nil {
		code := "error"
		if pe, ok := perr.As(err); ok {
			code = string(pe.Code)
		}
		w.opts.Metrics.stream(c.peer, "worker", code)
	}
	c.raw.SetWriteDeadline(time.Now().Add(w.opts.HandshakeTimeout))
	_, werr := c.Write(AppendAnswer(make([]byte, 0, 64), err))
	c.raw.SetWriteDeadline(time.Time{})
	return werr == nil && err == nil
}

// readLine reads one line of at most MaxLine bytes, byte by byte: the
// bytes after it are the stream's and must stay unread. It runs once per
// stream, over TLS's own buffer.
func readLine(c net.Conn) ([]byte, error) {
	var b [MaxLine]byte
	for n := 0; n < len(b); n++ {
		if _, err := c.Read(b[n : n+1]); err != nil {
			return nil, err
		}
		if b[n] == '\n' {
			return b[:n], nil
		}
	}
	return nil, fmt.Errorf("%w: longer than %d bytes", errLine, MaxLine)
}

// conn is a backhaul connection: the guarded TLS layer over the guarded
// socket, and the fleet node at the other end.
type conn struct {
	net.Conn // the guard over TLS
	tls      *tls.Conn
	raw      net.Conn
	peer     string
	meter    *meteredConn
	metrics  *Metrics
	once     sync.Once
	onClose  func()
}

// Close sends close_notify and a FIN, reads what the peer still sends for
// a moment (a reset would destroy the end of what was sent), then closes.
func (c *conn) Close() error {
	c.once.Do(func() {
		c.raw.SetDeadline(time.Now().Add(lingerTime))
		c.tls.CloseWrite()
		if tc, ok := c.raw.(*net.TCPConn); ok && tc.CloseWrite() == nil {
			var b [512]byte
			for range 64 {
				if _, err := c.raw.Read(b[:]); err != nil {
					break
				}
			}
		}
		c.raw.Close()
		c.metrics.ended(c.meter)
		if c.onClose != nil {
			c.onClose()
		}
	})
	return nil
}

// CloseWrite passes a half-close on as close_notify: the peer's stream
// sees its end.
func (c *conn) CloseWrite() error { return c.tls.CloseWrite() }

// Unwrap is the layer below, for the layer chain a spin kill logs.
func (c *conn) Unwrap() net.Conn { return c.Conn }

// lingerTime bounds a backhaul connection's lingering close.
const lingerTime = time.Second
