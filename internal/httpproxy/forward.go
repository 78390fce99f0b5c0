package httpproxy

import (
	"context"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// The pick, connect and forward phases: one machine after another while
// a failure allows a retry.

// forward sends the request to a machine of entry's service chosen as want
// says, trying others while the failure allows it. acquire bounds the wait
// for a machine and the attempts (a replay's timeout); the request itself
// runs under the exchange's context. On success the exchange's target is
// the machine that answered.
func (h *Handler) forward(acquire context.Context, x *Exchange, entry *catalog.Port, want *upstream.Want) (*upResponse, error) {
	svc := entry.Service
	client := x.env.Pools.client(x.Conn, entry)
	var lastCode perr.Code
	w := *want
	send := func(l *upstream.Lease) (*upResponse, error) {
		if lastCode != "" && x.env.Metrics != nil {
			x.env.Metrics.RequestRetries.WithLabelValues(svc.App.Name, string(lastCode)).Inc()
		}
		x.target.entry = entry
		preferred := ""
		if w.Instance != "" && !w.ForceInstance && l.Machine.ID != w.Instance {
			// The machine learns it was not the one the client asked for.
			preferred = w.Instance
		}
		cl := client
		if node := x.relayVia(entry, l); node != "" {
			cl = relayClient{x.env.Relay, node}
		}
		resp, err := h.attempt(x, cl, l, preferred)
		if pe, ok := perr.As(err); ok {
			lastCode = pe.Code
		}
		return resp, err
	}
	plain := want.Instance == "" && len(want.Regions) == 0 && len(want.Exclude) == 0
	pinning := svc.Unit == catalog.Connections && plain
	if pinning {
		if pin := x.Conn.pinned(svc); pin != nil {
			resp, err := send(pin)
			if err == nil {
				x.pinned = true
				return resp, nil
			}
			if pe, ok := perr.As(err); !ok || !pe.Retryable {
				return nil, err
			}
			x.Conn.unpin(pin)
			w.Exclude = append(w.Exclude, pin.Machine)
			w.Attempted++
		}
	}
	resp, lease, err := upstream.Retry(acquire, x.env.Dialer, svc, &w, send)
	if err != nil {
		return nil, err
	}
	x.target.entry, x.target.lease = entry, lease
	if pinning {
		x.Conn.setPin(lease)
		x.pinned = false
		x.ownLease = false
		return resp, nil
	}
	// Work routed by headers or replays holds its machine for the request
	// only: the connection's pin stays where the balancer put it.
	x.ownLease = true
	return resp, nil
}

// attempt sends the request to the machine of lease l through client and
// reads the head of its answer.
func (h *Handler) attempt(x *Exchange, client machineClient, l *upstream.Lease, preferred string) (*upResponse, error) {
	x.target.lease = l
	bp := headBufs.Get().(*[]byte)
	out := x.requestHead((*bp)[:0], preferred)
	start := time.Now()
	var resp *upResponse
	var err error
	if x.body != nil {
		resp, err = client.roundTrip(x, l.Addr, out, x.body.Attempt(), x.Body.Length)
	} else {
		resp, err = client.roundTrip(x, l.Addr, out, nil, 0)
	}
	*bp = out[:0]
	headBufs.Put(bp)
	if err != nil {
		return nil, classify(err, x)
	}
	// Time to the response head: what p2c-latency weighs machines by.
	l.Load().ObserveLatency(time.Since(start))
	return resp, nil
}

// endAttempt gives back what an attempt holds once its response is done
// with: the machine connection (pooled when clean) and the lease, unless
// the client connection keeps it pinned.
func (x *Exchange) endAttempt(r *upResponse, clean bool) {
	r.src.release(clean)
	if x.ownLease {
		x.target.lease.Release()
		x.ownLease = false
	}
}
