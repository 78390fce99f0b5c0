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
	"slices"
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
	// Distance orders regions from this edge (lower is nearer, 0 for this
	// edge's region); nil puts every other region at distance 1.
	Distance func(region string) int
	// Intn breaks ties; it must be safe for concurrent use.
	Intn func(n int) int
	// QueueTimeout bounds the wait for a machine under its hard limit.
	QueueTimeout time.Duration
	// Autostart, if set, starts one of svc's stopped machines for work
	// that want describes. With wait, it returns once the machine takes
	// work, with svc as the runtime in force now routes it and the
	// machine's id (nil when nothing can be started; an empty id when svc
	// was from an older runtime, returned as the current one has it
	// without starting anything); without, it begins a start for the
	// arrivals to come and returns at once.
	Autostart func(ctx context.Context, svc *catalog.Service, want *Want, wait bool) (*catalog.Service, string, error)
	// Current is svc as the runtime in force now has it: work that waited
	// looks again there, since machines may have started meanwhile.
	Current func(svc *catalog.Service) *catalog.Service
	// Down, if set, reports machines that cannot be reached now though
	// their records say started: those of a worker that left the fleet
	// (its heartbeat expired). They take no work until it is back.
	Down func(m *catalog.Machine) bool
}

// Want narrows and orders the machines one piece of work may go to: the
// routing headers of a request (fly-prefer-region and friends), a
// fly-replay instruction, and the machines already tried. The zero value
// (or nil) wants any machine, nearest first.
type Want struct {
	// Regions are preferred in this order, before every other region;
	// with ForceRegion no other region is used.
	Regions     []string
	ForceRegion bool
	// Instance is a machine id preferred over every other machine; with
	// ForceInstance no other machine is used, and work waits (up to the
	// queue timeout) while that machine is unhealthy or full.
	Instance      string
	ForceInstance bool
	// Exclude lists machines never to choose: already tried, or the
	// machine that asked for a replay elsewhere.
	Exclude []*catalog.Machine
	// Attempted is how many machines of Exclude were tried and failed;
	// they count against the dialer's attempts.
	Attempted int
	// Explain records the candidates on the lease for the debug header.
	Explain bool
}

// Lease is one unit of a machine's concurrency, held while work runs on it.
type Lease struct {
	Machine *catalog.Machine
	Addr    netip.AddrPort
	Band    balance.Band
	// Candidates and Ties explain the choice for debug output.
	Candidates, Ties int
	// Explain is the full account of the choice when Want.Explain was set.
	Explain *Explanation
	// Started is the machine started for this work, and StartWait how
	// long the work waited for starts ("", 0: none).
	Started   string
	StartWait time.Duration

	once sync.Once
	load *catalog.Load
	svc  *catalog.Service
	// relay: the lease counts relayed work (Relay), not this node's own.
	relay bool
}

// Service is the service the lease counts against.
func (l *Lease) Service() *catalog.Service { return l.svc }

// Load is the machine's load counter for the service (its smoothed
// response time is recorded there).
func (l *Lease) Load() *catalog.Load { return l.load }

// Release returns the unit; calling it more than once is harmless, so every
// path may release without tracking whether another did.
func (l *Lease) Release() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		if l.relay {
			l.load.ReleaseRelay()
		} else {
			l.load.Release()
		}
		l.svc.Waiters().Wake()
	})
}

// Relay leases machine m of svc for work an edge sent over the backhaul:
// the edge chose the machine, so there is no choice here, only the
// worker's own view: the machine must be started, not cordoned, healthy
// by this node's checks and under its hard limit by this node's exact
// count. A refusal is retryable: the edge tries another machine.
func Relay(svc *catalog.Service, m *catalog.Machine) (*Lease, error) {
	load := svc.Load(m)
	switch {
	case load == nil:
		return nil, perr.New(perr.WorkerRefused, fmt.Errorf("machine %s has no service on port %d here", m.ID, svc.InternalPort))
	case !svc.Usable(m):
		why := "not started"
		switch {
		case m.Cordoned:
			why = "cordoned"
		case m.Started():
			why = "unhealthy: " + svc.Health(m).Reason()
		}
		return nil, perr.New(perr.WorkerRefused, fmt.Errorf("machine %s is %s on its worker", m.ID, why))
	case !load.TryRelay(svc.Hard):
		return nil, perr.New(perr.WorkerRefused, fmt.Errorf("machine %s is at its hard limit (%d) on its worker", m.ID, svc.Hard))
	}
	return &Lease{Machine: m, Addr: m.AddrFor(svc.InternalPort), load: load, svc: svc, relay: true}, nil
}

// Acquire picks a machine for svc as want asks, and takes a unit of its
// load. When every usable machine is at its hard limit (or a forced
// instance is unhealthy) it waits up to QueueTimeout for that to change
// (PL02, or PR01 for the unhealthy instance); when none is usable at all
// it fails at once (PR01).
func (p *Picker) Acquire(ctx context.Context, svc *catalog.Service, want *Want) (*Lease, error) {
	if want == nil {
		want = &Want{}
	}
	var deadline <-chan time.Time
	// Apps have a handful of machines: their candidates fit on the stack,
	// so choosing one allocates nothing per request.
	var buf [16]balance.Candidate
	cands := candidates(buf[:], svc)
	var started string
	var startWait time.Duration
	stale := 0
	for {
		// Once queued, take the wake channel before looking so a release
		// that happens while we look is not missed. Work that finds a
		// machine at once never registers, so the common path takes no
		// lock.
		var wake <-chan struct{}
		if deadline != nil {
			wake = svc.Waiters().Chan()
		}
		lease, wait, err := p.try(ctx, svc, want, cands)
		if lease != nil || err != nil || wait == nil {
			if wake != nil {
				svc.Waiters().Done()
			}
			if lease == nil && err == nil {
				continue // lost a race for the last slot; look again
			}
			if err != nil && p.canStart(svc) && startWait == 0 {
				// Nothing started can take the work: start a machine and
				// wait for it.
				next, serr := p.start(ctx, &svc, want, &started, &startWait, &stale)
				if serr != nil {
					return nil, serr
				}
				if next {
					cands = candidates(buf[:], svc)
					continue
				}
			}
			if lease != nil {
				lease.Started, lease.StartWait = started, startWait
			}
			return lease, err
		}
		if deadline == nil {
			// First time full. With a machine to start, the work waits for
			// it (up to the start timeout, longer than the queue's);
			// otherwise arm the queue timer and look once more with a wake
			// channel held.
			if p.canStart(svc) && startWait == 0 {
				next, serr := p.start(ctx, &svc, want, &started, &startWait, &stale)
				if serr != nil {
					return nil, serr
				}
				if next {
					cands = candidates(buf[:], svc)
					continue
				}
			}
			t := time.NewTimer(p.QueueTimeout)
			defer t.Stop()
			deadline = t.C
			continue
		}
		if err := waitWake(ctx, svc, wake, deadline, wait); err != nil {
			return nil, err
		}
		if p.Current != nil {
			svc = p.Current(svc)
			cands = candidates(buf[:], svc)
		}
	}
}

// start starts a machine for the work and waits for it, once per
// Acquire: a machine started and still unable to take the work is not
// followed by another. It reports whether one started, then *svc is the
// service as the runtime that routes to it has it.
func (p *Picker) start(ctx context.Context, svc **catalog.Service, want *Want, started *string, waited *time.Duration, stale *int) (bool, error) {
	began := time.Now()
	next, id, err := p.Autostart(ctx, *svc, want, true)
	if err == nil && next == nil {
		return false, nil // nothing to start
	}
	if err == nil && id == "" {
		// svc was from an older runtime: look again in the one in force,
		// which may route the work, before starting anything. A few
		// times at most, should runtimes keep changing meanwhile.
		if *stale++; *stale > 3 {
			return false, nil
		}
		*svc = next
		return true, nil
	}
	*waited = max(time.Since(began), 1)
	if err != nil {
		return false, err
	}
	*svc, *started = next, id
	return true, nil
}

// candidates is a slice for svc's machines, in buf when they fit: apps
// have a handful of machines, so choosing one allocates nothing.
func candidates(buf []balance.Candidate, svc *catalog.Service) []balance.Candidate {
	if n := len(svc.Machines); n <= len(buf) {
		return buf[:n]
	}
	return make([]balance.Candidate, len(svc.Machines))
}

// canStart reports whether a stopped machine of svc's app could be
// started for work.
func (p *Picker) canStart(svc *catalog.Service) bool {
	return p.Autostart != nil && svc.App.Autostart
}

// try makes one balancing decision. It returns a lease, or wait (the error
// to give if waiting times out) when waiting may help, or an error when
// nothing can; all three empty means the chosen machine filled up
// meanwhile.
func (p *Picker) try(ctx context.Context, svc *catalog.Service, want *Want, cands []balance.Candidate) (*Lease, error, error) {
	var forced *catalog.Machine
	for i, m := range svc.Machines {
		load := svc.Load(m)
		c := balance.Candidate{
			Distance: p.distance(m.Region, want),
			Load:     load.Value(),
			Latency:  int64(load.Latency()),
			Soft:     svc.Soft,
			Hard:     svc.Hard,
			Usable:   svc.Usable(m) && !excluded(want.Exclude, m) && (p.Down == nil || !p.Down(m)),
			Away:     svc.App.PrimaryRegion != "" && m.Region != svc.App.PrimaryRegion,
		}
		if want.Instance != "" && m.ID == want.Instance {
			// Ahead of every region, so it wins whenever it can take work;
			// otherwise the others are chosen as usual.
			c.Distance = -1
			forced = m
		} else if want.ForceInstance {
			c.Usable = false
		}
		if want.ForceRegion && !slices.Contains(want.Regions, m.Region) {
			c.Usable = false
		}
		cands[i] = c
	}
	var res balance.Result
	if svc.Balance == catalog.P2CLatency {
		res = balance.PickP2C(cands, p.Intn)
	} else {
		res = balance.Pick(cands, p.Intn)
	}
	if res.Index >= 0 {
		m := svc.Machines[res.Index]
		load := svc.Load(m)
		if !load.TryAcquire(svc.Hard) {
			return nil, nil, nil
		}
		l := &Lease{Machine: m, Addr: m.AddrFor(svc.InternalPort), Band: res.Band,
			Candidates: len(cands), Ties: res.Ties, load: load, svc: svc}
		if want.Explain {
			l.Explain = p.explain(svc, want, cands, res)
		}
		if res.Band == balance.OverSoft && p.canStart(svc) {
			// Every machine that could take the work is at its soft
			// limit: start one for the arrivals to come; this work goes
			// on now.
			p.Autostart(ctx, svc, want, false)
		}
		return l, nil, nil
	}
	if res.Full {
		return nil, perr.New(perr.QueueTimeout, fmt.Errorf("every machine of %s at hard limit %d", svc.App.Name, svc.Hard)), nil
	}
	if want.ForceInstance {
		if forced == nil {
			return nil, nil, perr.New(perr.NoHealthyInstances, fmt.Errorf("app %s has no machine %q", svc.App.Name, want.Instance))
		}
		if forced.Started() && !excluded(want.Exclude, forced) {
			// Forced to a machine that is failing its checks: the platform
			// waits for it rather than sending the work elsewhere.
			return nil, perr.New(perr.NoHealthyInstances, fmt.Errorf("machine %s of %s is unhealthy: %s",
				forced.ID, svc.App.Name, svc.Health(forced).Reason())), nil
		}
	}
	if len(want.Exclude) > 0 && p.anyUsable(svc, want) {
		return nil, nil, perr.New(perr.NoCandidate, fmt.Errorf("within %d attempts", len(want.Exclude)))
	}
	return nil, nil, noHealthy(svc, want)
}

// anyUsable reports whether some machine would qualify but for Exclude.
func (p *Picker) anyUsable(svc *catalog.Service, want *Want) bool {
	for _, m := range svc.Machines {
		if svc.Usable(m) && (!want.ForceRegion || slices.Contains(want.Regions, m.Region)) &&
			(!want.ForceInstance || m.ID == want.Instance) {
			return true
		}
	}
	return false
}

// noHealthy is PR01 with the reason a user needs: no machine started,
// every machine failing its checks (and which check), or none in the
// regions or instance the request insisted on.
func noHealthy(svc *catalog.Service, want *Want) error {
	var started, healthy int
	reason := ""
	for _, m := range svc.Machines {
		if !m.Started() {
			continue
		}
		started++
		if h := svc.Health(m); h.Healthy() {
			healthy++
		} else if reason == "" {
			reason = fmt.Sprintf("machine %s: %s", m.ID, h.Reason())
		}
	}
	switch {
	case started == 0:
		return perr.New(perr.NoHealthyInstances, fmt.Errorf("app %s has no started machine", svc.App.Name))
	case healthy == 0:
		return perr.New(perr.NoHealthyInstances, fmt.Errorf("app %s: every machine fails its health checks (%s)", svc.App.Name, reason))
	case want.ForceInstance:
		return perr.New(perr.NoHealthyInstances, fmt.Errorf("app %s: machine %q is not started", svc.App.Name, want.Instance))
	case want.ForceRegion:
		return perr.New(perr.NoHealthyInstances, fmt.Errorf("app %s has no healthy machine in region %v", svc.App.Name, want.Regions))
	}
	return perr.New(perr.NoHealthyInstances, fmt.Errorf("app %s has no usable machine", svc.App.Name))
}

// waitWake waits for a release, the queue deadline or the caller leaving,
// and ends the wait registered by Chan.
func waitWake(ctx context.Context, svc *catalog.Service, wake <-chan struct{}, deadline <-chan time.Time, timeout error) error {
	defer svc.Waiters().Done()
	select {
	case <-wake:
		return nil
	case <-deadline:
		return timeout
	case <-ctx.Done():
		return perr.New(perr.ClientClosed, ctx.Err())
	}
}

// Rank is how near region is for work that want describes: lower first.
func (p *Picker) Rank(region string, want *Want) int { return p.distance(region, want) }

// distance ranks a region: preferred regions first in the order given,
// then every other region by its distance from this edge.
func (p *Picker) distance(region string, want *Want) int {
	if len(want.Regions) > 0 {
		if i := slices.Index(want.Regions, region); i >= 0 {
			return i
		}
		return len(want.Regions) + p.baseDistance(region)
	}
	return p.baseDistance(region)
}

func (p *Picker) baseDistance(region string) int {
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
