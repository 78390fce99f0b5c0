package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/backhaul"
	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// Dialer connects to machines.
type Dialer struct {
	Picker *Picker
	// Timeout bounds one TCP connect.
	Timeout time.Duration
	// Attempts bounds how many machines are tried for one piece of work.
	Attempts int
	// DialContext opens TCP connections; nil uses a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Observe, if set, is told of every connect: for which app, to which
	// region, how long it took and how it failed (nil on success).
	Observe func(app, region string, took time.Duration, err *perr.Error)
	// Span, if set, starts a tracing span around each connect and returns
	// the function that ends it.
	Span func(ctx context.Context, app string, addr netip.AddrPort) (context.Context, func(error))
	// Backhaul, if set, reaches the machines other nodes run.
	Backhaul Backhaul
}

// Backhaul reaches a machine through the worker that runs it.
type Backhaul interface {
	// Worker is the node that runs m, or "" when this node reaches m
	// itself (its own, or one outside any worker).
	Worker(m *catalog.Machine) string
	// DialStream opens a stream to machine t through worker node.
	DialStream(ctx context.Context, node string, t backhaul.Target) (net.Conn, error)
}

// DialMachine connects to machine m's internal port for app: directly,
// or through its worker over the backhaul when another node runs it.
// client is the connection the work came on, for the worker's logs.
func (d *Dialer) DialMachine(ctx context.Context, app string, m *catalog.Machine, port int, client netip.AddrPort) (net.Conn, error) {
	if d.Backhaul == nil {
		return d.Dial(ctx, app, m.Region, m.AddrFor(port))
	}
	node := d.Backhaul.Worker(m)
	if node == "" {
		return d.Dial(ctx, app, m.Region, m.AddrFor(port))
	}
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	start := time.Now()
	c, err := d.Backhaul.DialStream(ctx, node, backhaul.Target{App: app, Machine: m.ID, Port: port, Client: client})
	if d.Observe != nil {
		// The region's round-trip time is measured on backhaul connects
		// too: they are this edge's way to the region.
		pe, _ := perr.As(err)
		d.Observe(app, m.Region, time.Since(start), pe)
	}
	return c, err
}

// Dial makes one connection to addr and classifies its failure: refused
// (PC01) and timed out (PC02) are retryable on another machine because no
// byte of the client's work has reached any app.
func (d *Dialer) Dial(ctx context.Context, app, region string, addr netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	dial := d.DialContext
	if dial == nil {
		var nd net.Dialer
		dial = nd.DialContext
	}
	end := func(error) {}
	if d.Span != nil {
		ctx, end = d.Span(ctx, app, addr)
	}
	start := time.Now()
	c, err := dial(ctx, "tcp", addr.String())
	var pe *perr.Error
	if err != nil {
		pe = ClassifyDial(err)
		end(pe)
	} else {
		end(nil)
	}
	if d.Observe != nil {
		d.Observe(app, region, time.Since(start), pe)
	}
	if pe != nil {
		return nil, pe
	}
	return c, nil
}

// ClassifyDial turns a connect error into a coded error.
func ClassifyDial(err error) *perr.Error {
	if e, ok := perr.As(err); ok {
		return e
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		// The client left; no machine is at fault and none should be tried.
		return perr.New(perr.ClientClosed, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return perr.New(perr.InstanceRefused, err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return perr.New(perr.ConnectTimeout, err)
	default:
		return perr.New(perr.ConnectFailed, err)
	}
}

// Connect acquires a machine for svc and connects to it, trying other
// machines when a connect fails, within Attempts. On success the caller
// owns the connection and must Release the lease when done.
func (d *Dialer) Connect(ctx context.Context, svc *catalog.Service, client netip.AddrPort) (net.Conn, *Lease, error) {
	return Retry(ctx, d, svc, nil, func(l *Lease) (net.Conn, error) {
		start := time.Now()
		c, err := d.DialMachine(ctx, svc.App.Name, l.Machine, svc.InternalPort, client)
		if err == nil {
			// A TCP service has no response to time: p2c-latency weighs
			// its machines by connect time.
			l.Load().ObserveLatency(time.Since(start))
		}
		return c, err
	})
}

// Retry runs try on machine after machine until it succeeds, fails with an
// error that is not retryable, runs out of machines or of attempts. The
// lease of the successful try is returned held; all others are released.
// want (nil: any machine) says where the work may go; its Exclude lists
// machines to skip, Attempted of which the caller already tried (they
// count against Attempts).
func Retry[T any](ctx context.Context, d *Dialer, svc *catalog.Service, want *Want, try func(*Lease) (T, error)) (T, *Lease, error) {
	var zero T
	w := Want{}
	if want != nil {
		w = *want
	}
	w.Exclude = append([]*catalog.Machine(nil), w.Exclude...)
	var last *perr.Error
	for attempt := w.Attempted; attempt < d.Attempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return zero, nil, perr.New(perr.ClientClosed, err)
		}
		lease, err := d.Picker.Acquire(ctx, svc, &w)
		if err != nil {
			if last != nil {
				// Report why the machines we did try failed, not merely that
				// none is left: PC01's hint is what the user needs.
				return zero, nil, attemptsError(last, attempt)
			}
			return zero, nil, err
		}
		v, err := try(lease)
		if err == nil {
			return v, lease, nil
		}
		lease.Release()
		pe, ok := perr.As(err)
		if !ok || !pe.Retryable {
			return zero, nil, err
		}
		last = pe
		w.Exclude = append(w.Exclude, lease.Machine)
	}
	return zero, nil, attemptsError(last, d.Attempts)
}

// attemptsError reports failed attempts: one failure keeps its own code
// (PC01's hint is what a one-machine app needs); several become PM05,
// carrying the last cause.
func attemptsError(last *perr.Error, attempts int) error {
	if last == nil {
		return perr.New(perr.MachineUnreachable, fmt.Errorf("after %d attempt(s)", attempts))
	}
	if attempts <= 1 {
		e := *last
		e.Retryable = false
		return &e
	}
	return perr.New(perr.MachineUnreachable, fmt.Errorf("after %d attempts: %w", attempts, last))
}
