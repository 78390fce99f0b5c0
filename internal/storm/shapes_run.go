package storm

import (
	"context"
	"crypto/tls"
	"time"
)

// runner makes connections of every shape; one per storm, read-only once
// built, shared by all workers.
type runner struct {
	cfg     Config
	addrs   []string
	tlsConf *tls.Config // nil when plain
	req     requests
}

func newRunner(cfg Config, addrs []string) *runner {
	r := &runner{cfg: cfg, addrs: addrs, req: buildRequests(cfg)}
	if !cfg.Plain {
		r.tlsConf = &tls.Config{
			ServerName: cfg.SNI,
			// The storm tests connection handling, not certificates, and
			// targets are usually local proxies with self-signed ones.
			InsecureSkipVerify: true,
			NextProtos:         []string{"http/1.1"},
			// Every connection does a full handshake, as the partner's
			// fresh clients did; resumption would also hide handshake cost.
			SessionTicketsDisabled: true,
		}
	}
	return r
}

// result is one finished connection.
type result struct {
	shape    Shape
	outcome  Outcome
	statuses []int // status codes of the responses that arrived, complete or not
	latency  time.Duration
	err      error // kept for Other outcomes, to show in the report
	aborted  bool  // the storm was cancelled mid-connection; not counted
}

// one makes one connection of the given shape. ctx is the storm's: its
// cancellation closes the socket at once; the per-connection bound is the
// socket deadline, so a slow server shows up as a timeout, not an abort.
func (r *runner) one(ctx context.Context, shape Shape) result {
	start := time.Now()
	res := result{shape: shape}
	c, err := dial(ctx, r.addrs, r.tlsConf, start.Add(r.cfg.Timeout))
	if err != nil {
		res.fail(err)
	} else {
		stop := context.AfterFunc(ctx, func() { c.raw.Close() })
		switch shape {
		case CNJunkHold, CNJunkFIN, CNJunkRST:
			r.cnJunk(c, shape, &res)
		case FINMidBody:
			r.finMidBody(c, &res)
		case CompleteCN:
			r.completeCN(c, &res)
		case KeepAlive:
			r.keepAlive(c, &res)
		}
		if shape != CNJunkRST {
			c.close()
		}
		stop()
	}
	res.latency = time.Since(start)
	if ctx.Err() != nil && res.outcome != OK {
		res.aborted = true
	}
	if res.outcome != Other {
		res.err = nil
	}
	return res
}

// fail records a failure when no response byte arrived: the error alone
// decides the outcome.
func (res *result) fail(err error) {
	res.outcome, res.err = errOutcome(err, ClosedEarly), err
}

// readAfter reads the response that follows the write steps of a shape.
// A failed step does not decide alone: a server that answers and closes at
// once makes a later FIN fail (ENOTCONN) while its response still waits in
// the receive queue. But when nothing arrived, the step's error is the
// better witness, because the kernel reports a reset once, to whichever
// call comes first, and the read after it sees a plain EOF.
func (res *result) readAfter(c *conn, stepErr error, onEOF Outcome) response {
	resp := c.readResponse()
	if stepErr != nil && !resp.got {
		res.fail(stepErr)
		return resp
	}
	if resp.status != 0 {
		res.statuses = append(res.statuses, resp.status)
	}
	res.outcome, res.err = resp.outcome(onEOF), resp.err
	return resp
}

// steps runs write steps in order and stops at the first failure.
func steps(fns ...func() error) error {
	for _, f := range fns {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// cnJunk is the incident's shape: a complete request, close_notify, junk
// behind it, then a hold, a FIN or a RST. The response is optional to the
// shape but a correct server sends it (the request was complete), so ok
// means it arrived; for cn-junk-fin ok also needs the server to close,
// because a server that never notices the FIN (crypto/tls does not look
// at the socket after close_notify) leaks the connection.
func (r *runner) cnJunk(c *conn, shape Shape, res *result) {
	err := steps(
		func() error { return c.write(r.req.full) },
		c.closeNotify,
		func() error { return c.writeJunk(r.req.junk) },
	)
	switch shape {
	case CNJunkRST:
		// The reset is the point; the outcome says whether the shape could
		// be delivered.
		if err == nil {
			err = c.reset()
		}
		if err != nil {
			c.raw.Close()
			res.fail(err)
			return
		}
		res.outcome = OK
	case CNJunkHold:
		c.holdUntil(time.Now().Add(r.cfg.Hold))
		if resp := res.readAfter(c, err, ClosedEarly); resp.complete {
			// Keep holding whatever the server does: the client side of
			// the incident never let go.
			c.drain()
		}
	case CNJunkFIN:
		if err == nil {
			err = c.fin()
		}
		if resp := res.readAfter(c, err, ClosedEarly); resp.complete {
			if err := c.drain(); errOutcome(err, OK) == Timeout {
				res.outcome, res.err = Timeout, err
			}
		}
	}
}

// finMidBody announces a body, sends half, then close_notify and FIN. Any
// reaction is ok: a complete error response, or a close without one. What
// is not ok is a reset, a cut response, or silence until the timeout.
func (r *runner) finMidBody(c *conn, res *result) {
	err := steps(func() error { return c.write(r.req.partial) }, c.closeNotify, c.fin)
	res.readAfter(c, err, OK)
}

// completeCN half-closes after a complete request and wants the whole
// response: net/http cancels such requests, and a proxy that follows it
// answers 502 or nothing. Statuses in the report tell a 502 from a 200.
func (r *runner) completeCN(c *conn, res *result) {
	err := steps(func() error { return c.write(r.req.full) }, c.closeNotify)
	res.readAfter(c, err, ClosedEarly)
}

// keepAlive is the control group: ordinary requests, each read fully.
func (r *runner) keepAlive(c *conn, res *result) {
	for range r.cfg.RequestsPerConn {
		if resp := res.readAfter(c, c.write(r.req.full), ClosedEarly); !resp.complete {
			return
		}
	}
}
