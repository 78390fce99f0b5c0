// Package demo owns the "demo machine": a small backend that the quick start points the proxy at
// and that the proxy's integration tests use as a real upstream.
//
// One listener speaks every protocol the proxy may send to a machine, decided per connection by
// looking at the first bytes:
//
//	accept ─► optional PROXY v1/v2 header ─► sniff ─┬─► HTTP/1.x or h2c (prior knowledge)
//	                                                 └─► raw TCP echo (with half-close)
//
// Over HTTP it answers with a JSON report of what it received (method, path, headers, body size,
// protocol, PROXY addresses), so a test can assert what the proxy forwarded. It also offers a
// full-duplex body echo, a chunked stream, arbitrary status codes, a slow endpoint, a
// fly-replay answer (/replay?to=instance=ID) and a
// WebSocket echo written against the standard library only. Every response names the machine in
// the Demo-Machine-Id header, so balancing tests can count who answered.
package demo

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/listen"
)

// Timeouts are deliberately generous: the demo machine must never be the reason a proxy test
// fails, but it must not hold connections forever either.
const (
	// defaultSniffTimeout bounds how long a connection may take to send enough bytes to tell
	// PROXY, HTTP and raw TCP apart. A client that sends nothing is echoed, not dropped: TCP
	// clients that wait before speaking are legal.
	defaultSniffTimeout = 5 * time.Second
	// idleTimeout closes raw TCP echo and WebSocket connections, and idle HTTP keep-alives.
	idleTimeout = 2 * time.Minute
	// readHeaderTimeout is the HTTP server's limit for a request's header block.
	readHeaderTimeout = 10 * time.Second
)

// config holds the knobs tests need to turn; Serve always uses the defaults.
type config struct {
	id           string
	log          *slog.Logger
	sniffTimeout time.Duration
}

// Serve accepts on ln until ctx is done or ln is closed, handling each connection in its own
// goroutine. When it returns, every connection it accepted has been closed and every goroutine it
// started has finished. It returns nil after a normal shutdown (ctx done or ln closed) and the
// accept error otherwise. A nil log discards logs.
func Serve(ctx context.Context, ln net.Listener, id string, log *slog.Logger) error {
	return serve(ctx, ln, config{id: id, log: log, sniffTimeout: defaultSniffTimeout})
}

// Listen listens on addr (for example "127.0.0.1:0") and runs Serve on it in a goroutine. Callers
// read the bound address from the returned listener; the channel receives Serve's result once,
// after ctx is done (or the listener is closed) and every connection has ended.
func Listen(ctx context.Context, addr, id string, log *slog.Logger) (net.Listener, <-chan error, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, ln, id, log) }()
	return ln, errc, nil
}

// machine is the state of one Serve call; nothing is shared between calls.
type machine struct {
	cfg     config
	log     *slog.Logger
	connSeq atomic.Uint64
	// httpLn feeds connections that were sniffed as HTTP to srv, one shared server for all of
	// them, so HTTP/1 keep-alive, h2c and hijacking behave exactly as net/http does.
	httpLn *listen.Queue
	srv    *http.Server
}

func serve(ctx context.Context, ln net.Listener, cfg config) error {
	log := cfg.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("machine_id", cfg.id)

	// connCtx outlives ctx only until the accept loop stops: a listener closed by its owner
	// must also end the connections, or Serve could not promise to return with none left.
	connCtx, cancelConns := context.WithCancel(ctx)
	defer cancelConns()

	m := &machine{cfg: cfg, log: log, httpLn: listen.NewQueue(ln.Addr())}
	m.srv = m.newHTTPServer(connCtx)

	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		// Serve only returns once srv.Close runs below, which is the expected way out.
		_ = m.srv.Serve(m.httpLn)
	}()

	stopClosing := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stopClosing()

	var wg sync.WaitGroup
	err := m.acceptLoop(ctx, ln, func(c net.Conn) {
		wg.Go(func() { m.handle(connCtx, c) })
	})
	cancelConns()
	wg.Wait()
	_ = m.srv.Close()
	<-httpDone
	return err
}

// acceptLoop calls start for every accepted connection. Temporary accept errors (for example
// running out of file descriptors) are retried with a capped backoff instead of spinning or
// giving up, the way net/http does.
func (m *machine) acceptLoop(ctx context.Context, ln net.Listener, start func(net.Conn)) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			delay = 0
			start(c)
			continue
		}
		if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
			return nil
		}
		var te interface{ Temporary() bool }
		if !errors.As(err, &te) || !te.Temporary() {
			return err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		m.log.Warn("accept failed, retrying", "err", err, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// handle owns one accepted connection from sniff to close.
func (m *machine) handle(ctx context.Context, raw net.Conn) {
	c := newDemoConn(raw, m.connSeq.Add(1))
	defer c.Close()
	// Shutdown must interrupt whatever the connection is blocked in, including an HTTP handler
	// or a hijacked WebSocket that only net/http's goroutines know about.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()

	log := m.log.With("conn_id", c.info.id, "remote", raw.RemoteAddr().String())
	// Nothing can be decided before the first byte, and a pooled proxy
	// connection may sit idle a long time before its first request: wait
	// for it up to the idle timeout, then give the rest the sniff timeout.
	_ = raw.SetReadDeadline(time.Now().Add(idleTimeout))
	if _, err := c.br.Peek(1); err != nil {
		return
	}
	_ = raw.SetReadDeadline(time.Now().Add(m.cfg.sniffTimeout))
	res, err := sniff(c.br)
	if err != nil {
		log.Debug("closing connection with malformed PROXY header", "err", err)
		return
	}
	_ = raw.SetReadDeadline(time.Time{})
	c.info.proxy = res.proxy

	if !res.http {
		log.Debug("raw TCP echo", "proxy", res.proxy != nil)
		if err := echoTCP(c, idleTimeout); err != nil && ctx.Err() == nil {
			log.Debug("echo ended", "err", err)
		}
		return
	}
	if !m.httpLn.Handoff(ctx, c) {
		return
	}
	// net/http now owns the connection; it (or a hijacking handler) closes it when done, and
	// waiting for that keeps this goroutine an honest count of live connections.
	<-c.closed
}
