package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/upstream"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// How a connection ends: settle, drain, release, count and log, once.

// finish ends the connection exactly once: settle the meter, close with a
// lingering close so unread bytes do not reset the tail of a response,
// release permits and counters.
func (c *conn) finish() {
	c.finishOnce.Do(func() {
		if c.ageTimer != nil {
			c.ageTimer.Stop()
		}
		c.lingeringClose()
		c.mu.Lock()
		if c.meter != nil && c.app != "" {
			c.meter.Settle(c.s.meters, c.app, &c.settled)
		}
		c.mu.Unlock()
		if c.permit != nil {
			c.permit.Release()
		}
		c.s.untrack(c.raw)
		c.ps.active.Dec()
		c.s.metrics.Closed.WithLabelValues(c.getReason()).Inc()
		if c.code != "" {
			c.s.metrics.Errors.WithLabelValues(string(c.code)).Inc()
		}
		if c.tcp {
			c.accessLog()
		}
		if c.span != nil {
			c.span.SetAttributes(attribute.String("edgeproxy.end", c.getReason()))
			var err error
			if c.code != "" {
				err = errors.New(string(c.code))
			}
			endSpan(c.span, err)
		}
	})
}

// startSpan starts a child span of the connection's, when tracing.
func (c *conn) startSpan(name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if c.span == nil {
		return c.ctx, nil
	}
	return c.s.tracing.Tracer.Start(c.ctx, name, trace.WithAttributes(attrs...))
}

// accessLog writes the one line a raw TCP connection gets.
func (c *conn) accessLog() {
	l := c.s.accessLog
	if l == nil {
		return
	}
	var in, out int64
	if c.meter != nil {
		in, out = c.meter.Bytes()
	}
	attrs := []slog.Attr{
		slog.String("type", "tcp"),
		slog.Uint64("conn_id", c.id),
		slog.String("app", c.app),
		slog.String("region", c.rt.Config.Proxy.Region),
		slog.String("client", c.client.Addr().String()),
		slog.Int("port", c.pr.Public),
		slog.Int64("bytes_in", in),
		slog.Int64("bytes_out", out),
		slog.Float64("duration_ms", float64(time.Since(c.start).Microseconds())/1000),
		slog.String("end", c.getReason()),
	}
	if c.machine != nil {
		attrs = append(attrs, slog.String("machine", c.machine.ID), slog.String("machine_region", c.machine.Region))
	}
	if c.code != "" {
		attrs = append(attrs, slog.String("error_code", string(c.code)))
	}
	l.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)
}

// lingeringClose sends close_notify and a FIN, then reads and discards
// what the client still sends, bounded in time and bytes, before closing:
// closing a socket with unread bytes makes Linux send a reset, and a
// client that gets one may lose the end of the response it was reading.
func (c *conn) lingeringClose() {
	if c.guard != nil && c.guard.Killed() {
		c.raw.Close()
		return
	}
	p := c.rt.Config.Proxy
	if c.tls != nil {
		c.tls.SetWriteDeadline(time.Now().Add(time.Second))
		c.tls.CloseWrite() // close_notify
	}
	tcp, ok := c.raw.(*net.TCPConn)
	if !ok || p.LingeringTimeout.D() <= 0 || tcp.CloseWrite() != nil {
		c.raw.Close()
		return
	}
	tcp.SetReadDeadline(time.Now().Add(p.LingeringTimeout.D()))
	n, err := c.discard(tcp, int64(p.LingeringMaxBytes)+1)
	outcome := "clean"
	switch {
	case n > int64(p.LingeringMaxBytes):
		outcome = "limit"
	case iox.IsTimeout(err):
		outcome = "timeout"
	case err != nil:
		outcome = "error"
	}
	c.s.metrics.Lingering.WithLabelValues(outcome).Inc()
	c.raw.Close()
}

// discard reads and discards up to max bytes until the client's end, an
// error or the read deadline. It holds a buffer only while bytes wait to
// be read: connections often end together (an idle timeout reached by
// thousands at once, a drain), and each holding a copy buffer for its
// whole lingering time would cost 32 KiB apiece.
func (c *conn) discard(tcp *net.TCPConn, max int64) (int64, error) {
	rc, err := tcp.SyscallConn()
	if err != nil || !upstream.PeekSupported {
		buf := c.s.bufs.Get()
		defer c.s.bufs.Put(buf)
		return iox.Copy(io.Discard, io.LimitReader(tcp, max), *buf)
	}
	var total int64
	for total < max {
		// Wait for bytes or the end without reading: the first call
		// looks, a later one is the poller's wake-up.
		looked := false
		if err := rc.Read(func(fd uintptr) bool {
			if !looked {
				looked = true
				return !upstream.SocketQuiet(fd)
			}
			return true
		}); err != nil {
			return total, err
		}
		buf := c.s.bufs.Get()
		b := *buf
		if rest := max - total; int64(len(b)) > rest {
			b = b[:rest]
		}
		n, err := tcp.Read(b)
		c.s.bufs.Put(buf)
		total += int64(n)
		switch {
		case err == io.EOF:
			return total, nil
		case err != nil:
			return total, err
		case n == 0:
			// Readable yet nothing read: never loop on it.
			return total, io.ErrNoProgress
		}
	}
	return total, nil
}
