// Package upstream owns the way to a machine: choosing one through the
// balancer and holding a unit of its concurrency (a Lease), waiting
// briefly when every machine is full, connecting with a bounded number of
// attempts across machines, and classifying failures into error codes
// that say whether another machine may be tried.
package upstream

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/balance"
	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// Picker chooses machines for services. It is built per runtime; its
// function fields are injected so tests are deterministic.
type Picker struct {
	// Region is this edge's region.
	Region string
	// Distance orders regions from this edge; nil puts every other region
	// at distance 1.
	Distance func(region string) int
	// Intn breaks ties; it must be safe for concurrent use.
	Intn func(n int) int
	// QueueTimeout bounds the wait for a machine under its hard limit.
	QueueTimeout time.Duration
}

// Lease is one unit of a machine's concurrency, held while work runs on it.
type Lease struct {
	Machine *catalog.Machine
	Addr    netip.AddrPort
	Band    balance.Band
	// Candidates and Ties explain the choice for debug output.
	Candidates, Ties int

	once sync.Once
	load *catalog.Load
	svc  *catalog.Service
}

// Service is the service the lease counts against.
func (l *Lease) Service() *catalog.Service { return l.svc }

// Release returns the unit; calling it more than once is harmless, so every
// path may release without tracking whether another did.
func (l *Lease) Release() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		l.load.Release()
		l.svc.Waiters().Wake()
	})
}

// Acquire picks a machine for svc, skipping those in exclude, and takes a
// unit of its load. When every usable machine is at its hard limit it
// waits up to QueueTimeout for one to free up (PL02); when none is usable
// at all it fails at once (PR01).
func (p *Picker) Acquire(ctx context.Context, svc *catalog.Service, exclude []*catalog.Machine) (*Lease, error) {
	var deadline <-chan time.Time
	// Apps have a handful of machines: their candidates fit on the stack,
	// so choosing one allocates nothing per request.
	var buf [16]balance.Candidate
	cands := buf[:0]
	if n := len(svc.App.Machines); n <= len(buf) {
		cands = buf[:n]
	} else {
		cands = make([]balance.Candidate, n)
	}
	for {
		// Once queued, take the wake channel before looking so a release
		// that happens while we look is not missed. Work that finds a
		// machine at once never registers, so the common path takes no
		// lock.
		var wake <-chan struct{}
		if deadline != nil {
			wake = svc.Waiters().Chan()
		}
		lease, full, err := p.try(svc, exclude, cands)
		if lease != nil || err != nil || !full {
			if wake != nil {
				svc.Waiters().Done()
			}
			if lease == nil && err == nil {
				continue // lost a race for the last slot; look again
			}
			return lease, err
		}
		if deadline == nil {
			// First time full: arm the queue timer and look once more with
			// a wake channel held.
			t := time.NewTimer(p.QueueTimeout)
			defer t.Stop()
			deadline = t.C
			continue
		}
		if err := waitWake(ctx, svc, wake, deadline); err != nil {
			return nil, err
		}
	}
}

// try makes one balancing decision. It returns a lease, or full when every
// usable machine is at its hard limit, or an error when none is usable;
// all three empty means the chosen machine filled up meanwhile.
func (p *Picker) try(svc *catalog.Service, exclude []*catalog.Machine, cands []balance.Candidate) (*Lease, bool, error) {
	for i, m := range svc.App.Machines {
		cands[i] = balance.Candidate{
			Distance: p.distance(m.Region),
			Load:     svc.Load(m).Value(),
			Soft:     svc.Soft,
			Hard:     svc.Hard,
			Usable:   m.Started() && !excluded(exclude, m),
		}
	}
	res := balance.Pick(cands, p.Intn)
	if res.Index >= 0 {
		m := svc.App.Machines[res.Index]
		load := svc.Load(m)
		if !load.TryAcquire(svc.Hard) {
			return nil, false, nil
		}
		return &Lease{Machine: m, Addr: m.AddrFor(svc.InternalPort), Band: res.Band,
			Candidates: len(cands), Ties: res.Ties, load: load, svc: svc}, false, nil
	}
	if res.Full {
		return nil, true, nil
	}
	if len(exclude) > 0 {
		return nil, false, perr.New(perr.NoCandidate, fmt.Errorf("within %d attempts", len(exclude)))
	}
	return nil, false, perr.New(perr.NoHealthyInstances, fmt.Errorf("app %s has no started machine", svc.App.Name))
}

// waitWake waits for a release, the queue deadline or the caller leaving,
// and ends the wait registered by Chan.
func waitWake(ctx context.Context, svc *catalog.Service, wake <-chan struct{}, deadline <-chan time.Time) error {
	defer svc.Waiters().Done()
	select {
	case <-wake:
		return nil
	case <-deadline:
		return perr.New(perr.QueueTimeout, fmt.Errorf("every machine of %s at hard limit %d", svc.App.Name, svc.Hard))
	case <-ctx.Done():
		return perr.New(perr.ClientClosed, ctx.Err())
	}
}

func (p *Picker) distance(region string) int {
	if region == p.Region {
		return 0
	}
	if p.Distance != nil {
		return p.Distance(region)
	}
	return 1
}

func excluded(list []*catalog.Machine, m *catalog.Machine) bool {
	for _, x := range list {
		if x.ID == m.ID {
			return true
		}
	}
	return false
}
