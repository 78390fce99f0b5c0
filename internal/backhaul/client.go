package backhaul

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// ClientOptions is what an edge's side of the backhaul needs.
type ClientOptions struct {
	// Identity is the node's fleet identity now (it changes on reload).
	Identity func() *Identity
	// Address is the backhaul address of worker node, if it is known and
	// alive (from the fleet's node records).
	Address func(node string) (string, bool)
	// DialTimeout bounds the TCP connect and the TLS handshake to a
	// worker, and a stream's answer.
	DialTimeout time.Duration
	// IdleTimeout closes an HTTP/2 connection to a worker unused for that
	// long.
	IdleTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a relayed response's head.
	ResponseHeaderTimeout time.Duration
	// MaxResponseHeaderBytes bounds a relayed response's head.
	MaxResponseHeaderBytes int64
	Guard                  Guard
	Metrics                *Metrics
	// Dial opens TCP connections (nil: a net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Connected, if set, is told how long each TCP connect to worker
	// node took: one round trip to the worker's region.
	Connected func(node string, took time.Duration)
}

// Client is an edge's side of the backhaul: HTTP/2 connections to
// workers, shared by every request to their machines, and raw streams.
type Client struct {
	opts ClientOptions
	h2   *http.Transport

	mu   sync.Mutex
	id   *Identity
	tlsc map[string]*tls.Config // per worker and protocol, for id
}

// NewClient makes an edge's backhaul client.
func NewClient(opts ClientOptions) *Client {
	c := &Client{opts: opts, tlsc: map[string]*tls.Config{}}
	c.h2 = &http.Transport{
		// A relayed request's URL names the worker as its host: the
		// transport keeps a pool of connections per worker.
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			node, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			bc, err := c.dial(ctx, node, ProtoHTTP)
			if err != nil {
				return nil, err
			}
			return newBatchConn(bc), nil
		},
		DisableCompression:     true,
		IdleConnTimeout:        opts.IdleTimeout,
		ResponseHeaderTimeout:  opts.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: opts.MaxResponseHeaderBytes,
		HTTP2: &http.HTTP2Config{
			// A worker that stops answering is found by a ping, not by
			// the next request's timeout.
			SendPingTimeout: 15 * time.Second,
			PingTimeout:     5 * time.Second,
			// No dynamic table for the request fields the edge sends:
			// each request carries values of its own (request id, client
			// address, start time), and net/http's encoder moves its
			// whole table on every eviction. Literal fields cost a few
			// bytes more on a connection that is local or nearly so, and
			// measured a twentieth less CPU per relayed request.
			MaxEncoderHeaderTableSize: 1,
		},
	}
	c.h2.Protocols = new(http.Protocols)
	c.h2.Protocols.SetUnencryptedHTTP2(true)
	return c
}

// Close closes the idle HTTP/2 connections; busy ones end with their
// requests.
func (c *Client) Close() { c.h2.CloseIdleConnections() }

// RoundTrip sends a relayed request to worker node over the HTTP/2
// connections the edge keeps to it. A failure to reach the worker is
// WorkerUnreachable (retryable: nothing reached a machine); a connection
// lost after the request went is BackhaulBroken.
func (c *Client) RoundTrip(node string, req *http.Request) (*http.Response, error) {
	req.URL.Scheme, req.URL.Host = "http", node+":1"
	resp, err := c.h2.RoundTrip(req)
	if err != nil {
		var pe *perr.Error
		switch {
		case errors.As(err, &pe):
			// The dial's own error: the worker was not reached.
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		default:
			pe = perr.New(perr.BackhaulBroken, fmt.Errorf("worker %s: %w", node, err))
		}
		if pe != nil {
			c.opts.Metrics.Request(node, string(pe.Code))
			return nil, pe
		}
		return nil, err
	}
	return resp, nil
}

// DialStream opens a raw stream to machine t through worker node: the
// worker checks t is its own, connects, and answers; then the stream is
// the machine's connection. Its errors say which side failed.
func (c *Client) DialStream(ctx context.Context, node string, t Target) (net.Conn, error) {
	bc, err := c.dial(ctx, node, ProtoStream)
	if err != nil {
		c.opts.Metrics.stream(node, "edge", string(perr.WorkerUnreachable))
		return nil, err
	}
	deadline := time.Now().Add(c.opts.DialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	bc.raw.SetDeadline(deadline)
	_, err = bc.Write(AppendHeader(make([]byte, 0, 128), t))
	var line []byte
	if err == nil {
		line, err = readLine(bc)
	}
	if err != nil {
		bc.Close()
		pe := perr.New(perr.WorkerUnreachable, fmt.Errorf("worker %s: stream not answered: %w", node, err))
		c.opts.Metrics.stream(node, "edge", string(pe.Code))
		return nil, pe
	}
	if err := ParseAnswer(line, node); err != nil {
		bc.Close()
		pe, _ := perr.As(err)
		c.opts.Metrics.stream(node, "edge", string(pe.Code))
		return nil, err
	}
	bc.raw.SetDeadline(time.Time{})
	c.opts.Metrics.stream(node, "edge", "ok")
	return bc, nil
}

// dial connects to worker node's backhaul for proto, under the guard,
// and checks the worker is the fleet node it should be.
func (c *Client) dial(ctx context.Context, node, proto string) (*conn, error) {
	addr, ok := c.opts.Address(node)
	if !ok {
		return nil, perr.New(perr.WorkerUnreachable, fmt.Errorf("worker %s: no backhaul address (not in the fleet's live nodes)", node))
	}
	cfg, err := c.config(node, proto)
	if err != nil {
		return nil, perr.New(perr.WorkerUnreachable, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	dial := c.opts.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	start := time.Now()
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, perr.New(perr.WorkerUnreachable, fmt.Errorf("worker %s at %s: %w", node, addr, err))
	}
	if c.opts.Connected != nil {
		c.opts.Connected(node, time.Since(start))
	}
	bc := newConn(raw, c.opts.Guard, func(under net.Conn) *tls.Conn { return tls.Client(under, cfg) })
	bc.peer = node
	if err := bc.tls.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, perr.New(perr.WorkerUnreachable, fmt.Errorf("worker %s at %s: handshake: %w", node, addr, err))
	}
	bc.meter.ps = peerSide{node, "edge"}
	bc.metrics = c.opts.Metrics
	c.opts.Metrics.opened(bc.meter)
	return bc, nil
}

// config is the TLS configuration for worker node and proto, kept while
// the identity stays (its session cache makes later handshakes to the
// same worker resumptions).
func (c *Client) config(node, proto string) (*tls.Config, error) {
	id := c.opts.Identity()
	if id == nil {
		return nil, errors.New("this node has no fleet identity (backhaul_cert_file)")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if id != c.id {
		c.id, c.tlsc = id, map[string]*tls.Config{}
	}
	key := node + " " + proto
	cfg := c.tlsc[key]
	if cfg == nil {
		cfg = id.ClientConfig(node, proto)
		c.tlsc[key] = cfg
	}
	return cfg, nil
}

// Request counts a relayed request's result (the core reads the worker's
// answer, so it says how it went).
func (c *Client) Request(node, result string) { c.opts.Metrics.Request(node, result) }
