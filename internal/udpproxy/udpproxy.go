// Package udpproxy forwards a public UDP port's datagrams to machines,
// per flow: the first datagram from a client address and port picks a
// machine, and the flow keeps it until it has been idle for a while. Each
// flow has a socket of its own toward the machine, so the machine sees
// one peer per client, as a stateful protocol (QUIC, WireGuard, a game)
// needs, and its replies go back to the client from the public socket.
//
// The flow table is bounded: a datagram that would open a flow beyond
// the bound is dropped and counted, so a flood of new source ports costs
// one map lookup each, not a socket and a goroutine. The machine side of
// every flow runs under the progress guard: a flow whose reads spin
// without moving bytes is killed and named, like a TCP connection.
package udpproxy

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/iox"
)

// Options configure a Forwarder.
type Options struct {
	// Pick chooses the machine for a new flow from client, and returns
	// what ends the flow's claim on it.
	Pick func(client netip.AddrPort) (machine netip.AddrPort, release func(), err error)
	// Dial opens the flow's socket toward the machine (nil: a connected
	// UDP socket).
	Dial func(machine netip.AddrPort) (net.Conn, error)
	// MaxFlows bounds the flow table; IdleTimeout ends a flow with no
	// datagram either way for that long.
	MaxFlows    int
	IdleTimeout time.Duration
	// Guard is the progress guard's limits for each flow's machine side.
	Guard  iox.GuardLimits
	Stats  *iox.Stats
	OnKill func(client netip.AddrPort, k iox.Kill)
	Log    *slog.Logger
}

// Forwarder forwards one public UDP socket's flows.
type Forwarder struct {
	pc   *net.UDPConn
	sock *socket
	opts Options

	mu     sync.Mutex
	flows  map[netip.AddrPort]*flow
	closed bool
	ended  Stats // counters of the flows that ended
	wg     sync.WaitGroup
	stop   chan struct{}
}

// Stats are a forwarder's counters: flows open now, and totals.
type Stats struct {
	Flows                         int
	PacketsIn, PacketsOut         int64 // client to machine, machine to client
	BytesIn, BytesOut             int64
	Dropped, PickFailed, Oversize int64
}

// flow is one client address and port and its socket to a machine.
type flow struct {
	client netip.AddrPort
	// local is the public address the client sent to, where replies
	// leave from (invalid: the socket's only address).
	local   netip.Addr
	conn    net.Conn // the guarded socket to the machine
	release func()
	// active is set by traffic either way and cleared by the janitor:
	// no clock read per datagram.
	active    atomic.Bool
	idleTicks int // the janitor's only
	// Per-flow counters: each written by one goroutine.
	pin, pout, bin, bout, oversize atomic.Int64
	once                           sync.Once
}

// New makes a forwarder for pc; Serve runs it.
func New(pc *net.UDPConn, o Options) *Forwarder {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Stats == nil {
		o.Stats = &iox.Stats{}
	}
	return &Forwarder{pc: pc, sock: newSocket(pc), opts: o, flows: map[netip.AddrPort]*flow{}, stop: make(chan struct{})}
}

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// Serve reads client datagrams until Close.
func (f *Forwarder) Serve() error {
	f.wg.Go(f.janitor)
	buf := make([]byte, maxDatagram)
	for {
		n, client, local, err := f.sock.read(buf)
		if err != nil {
			f.mu.Lock()
			closed := f.closed
			f.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		fl := f.flow(client, local)
		if fl == nil {
			continue
		}
		fl.active.Store(true)
		fl.pin.Add(1)
		fl.bin.Add(int64(n))
		if _, err := fl.conn.Write(buf[:n]); err != nil {
			f.end(fl, "write to machine: "+err.Error())
		}
	}
}

// flow finds client's flow or opens one; nil when the datagram is to be
// dropped (table full, no machine).
func (f *Forwarder) flow(client netip.AddrPort, local netip.Addr) *flow {
	f.mu.Lock()
	fl := f.flows[client]
	full := fl == nil && len(f.flows) >= f.opts.MaxFlows
	if full {
		f.ended.Dropped++
	}
	f.mu.Unlock()
	if fl != nil || full {
		return fl
	}
	machine, release, err := f.opts.Pick(client)
	if err != nil {
		f.mu.Lock()
		f.ended.PickFailed++
		f.mu.Unlock()
		f.opts.Log.Debug("udp flow not opened", "client", client.String(), "error", err.Error())
		return nil
	}
	dial := f.opts.Dial
	if dial == nil {
		dial = func(m netip.AddrPort) (net.Conn, error) { return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(m)) }
	}
	raw, err := dial(machine)
	if err != nil {
		release()
		f.mu.Lock()
		f.ended.PickFailed++
		f.mu.Unlock()
		f.opts.Log.Info("udp flow: machine unreachable", "client", client.String(), "machine", machine.String(), "error", err.Error())
		return nil
	}
	fl = &flow{client: client, local: local, release: release}
	guard := iox.NewGuard(raw, f.opts.Guard, f.opts.Stats, func(k iox.Kill) {
		if f.opts.OnKill != nil {
			f.opts.OnKill(client, k)
		}
	})
	fl.conn = guard.Wrap("udp-machine", raw)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		raw.Close()
		release()
		return nil
	}
	f.flows[client] = fl
	f.wg.Add(1)
	f.mu.Unlock()
	go func() {
		defer f.wg.Done()
		f.replies(fl)
	}()
	return fl
}

// replyBuffer starts a flow's reply buffer at a path MTU's worth; a
// datagram that fills it may have been cut, so it is dropped (counted)
// and the buffer grows to the largest datagram for the flow's next ones.
const replyBuffer = 2048

// replies sends the machine's datagrams to the client until the flow
// ends.
func (f *Forwarder) replies(fl *flow) {
	buf := make([]byte, replyBuffer)
	for {
		n, err := fl.conn.Read(buf)
		if err != nil {
			f.end(fl, "read from machine: "+err.Error())
			return
		}
		if n == len(buf) && len(buf) < maxDatagram {
			fl.oversize.Add(1)
			buf = make([]byte, maxDatagram)
			continue
		}
		fl.active.Store(true)
		if err := f.sock.write(buf[:n], fl.client, fl.local); err != nil {
			f.end(fl, "write to client: "+err.Error())
			return
		}
		fl.pout.Add(1)
		fl.bout.Add(int64(n))
	}
}

// end closes a flow once and folds its counters into the totals.
func (f *Forwarder) end(fl *flow, why string) {
	fl.once.Do(func() {
		fl.conn.Close()
		fl.release()
		f.mu.Lock()
		if f.flows[fl.client] == fl {
			delete(f.flows, fl.client)
		}
		f.ended.add(fl)
		f.mu.Unlock()
		f.opts.Log.Debug("udp flow ended", "client", fl.client.String(), "why", why)
	})
}

func (s *Stats) add(fl *flow) {
	s.PacketsIn += fl.pin.Load()
	s.PacketsOut += fl.pout.Load()
	s.BytesIn += fl.bin.Load()
	s.BytesOut += fl.bout.Load()
	s.Oversize += fl.oversize.Load()
}

// janitor ends flows idle for IdleTimeout: it looks every half of it,
// and a flow that showed no traffic in two looks in a row is done.
func (f *Forwarder) janitor() {
	t := time.NewTicker(max(f.opts.IdleTimeout/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		var idle []*flow
		f.mu.Lock()
		for _, fl := range f.flows {
			if fl.active.Swap(false) {
				fl.idleTicks = 0
			} else if fl.idleTicks++; fl.idleTicks >= 2 {
				idle = append(idle, fl)
			}
		}
		f.mu.Unlock()
		for _, fl := range idle {
			f.end(fl, "idle")
		}
	}
}

// Stats are the counters now: the ended flows' totals plus the open ones.
func (f *Forwarder) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.ended
	s.Flows = len(f.flows)
	for _, fl := range f.flows {
		s.add(fl)
	}
	return s
}

// Close stops reading, ends every flow and waits for their goroutines.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	flows := make([]*flow, 0, len(f.flows))
	for _, fl := range f.flows {
		flows = append(flows, fl)
	}
	f.mu.Unlock()
	close(f.stop)
	err := f.pc.Close()
	for _, fl := range flows {
		f.end(fl, "closed")
	}
	f.wg.Wait()
	return err
}
