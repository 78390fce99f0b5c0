package upstream

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/balance"
	"github.com/edgeproxy/edgeproxy/internal/catalog"
)

// Explanation is the account of one balancing decision, for the opt-in
// debug header (http_options.debug_routing). It is built only when asked
// for, so ordinary requests pay nothing for it.
type Explanation struct {
	Policy catalog.Policy
	Chosen string
	// Why says what decided, most important first.
	Why []string
	// Candidates are every machine of the app, in catalog order.
	Candidates []Considered
}

// Considered is one machine as the balancer saw it.
type Considered struct {
	ID, Region string
	// Distance is the region's rank value (RTT in microseconds, or the
	// position in a preference list).
	Distance int
	Load     int64
	Latency  time.Duration
	Band     balance.Band
	// Skipped says why the machine could not be chosen ("" if it could).
	Skipped string
}

func (p *Picker) explain(svc *catalog.Service, want *Want, cands []balance.Candidate, res balance.Result) *Explanation {
	e := &Explanation{Policy: svc.Balance, Chosen: svc.Machines[res.Index].ID}
	chosen := cands[res.Index]
	for i, m := range svc.Machines {
		c := cands[i]
		k := Considered{ID: m.ID, Region: m.Region, Distance: c.Distance, Load: c.Load,
			Latency: time.Duration(c.Latency), Band: balance.BandOf(c.Load, c.Soft, c.Hard)}
		switch {
		case !m.Started():
			k.Skipped = "state " + m.State
		case m.Cordoned:
			k.Skipped = "cordoned"
		case !svc.Health(m).Healthy():
			k.Skipped = "unhealthy"
		case excluded(want.Exclude, m):
			k.Skipped = "already tried or excluded"
		case want.ForceInstance && m.ID != want.Instance:
			k.Skipped = "not the forced instance"
		case !c.Usable:
			k.Skipped = "outside the forced regions"
		case k.Band == balance.AtHard:
			k.Skipped = "at hard limit"
		}
		e.Candidates = append(e.Candidates, k)
	}
	switch {
	case want.Instance != "" && e.Chosen == want.Instance:
		e.Why = append(e.Why, "requested instance")
	case want.Instance != "":
		e.Why = append(e.Why, "requested instance "+want.Instance+" unavailable")
	}
	if len(want.Regions) > 0 && chosen.Distance < len(want.Regions) && chosen.Distance >= 0 {
		e.Why = append(e.Why, "requested region "+want.Regions[chosen.Distance])
	} else if chosen.Distance >= 0 {
		e.Why = append(e.Why, "nearest region with capacity")
	}
	e.Why = append(e.Why, res.Band.String())
	if svc.Balance == catalog.P2CLatency {
		if res.Rival >= 0 {
			e.Why = append(e.Why, "p2c over "+svc.Machines[res.Rival].ID)
		} else {
			e.Why = append(e.Why, "only candidate")
		}
	} else {
		e.Why = append(e.Why, "least loaded")
	}
	if res.Ties > 1 {
		e.Why = append(e.Why, "random among "+strconv.Itoa(res.Ties))
	}
	return e
}

// String renders the explanation as one header value:
//
//	machine=m1; policy=least-loaded; why=nearest region with capacity, under_soft, least loaded;
//	candidates=m1 iad d=0 load=0 under_soft, m2 ord d=20000 load=3 under_soft, m3 iad unhealthy
func (e *Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "machine=%s; policy=%s; why=%s; candidates=", e.Chosen, e.Policy, strings.Join(e.Why, ", "))
	for i, c := range e.Candidates {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", c.ID, c.Region)
		if c.Skipped != "" {
			b.WriteString(" " + c.Skipped)
			continue
		}
		fmt.Fprintf(&b, " d=%d load=%d %s", c.Distance, c.Load, c.Band)
		if c.Latency > 0 {
			fmt.Fprintf(&b, " rt=%s", c.Latency.Round(time.Microsecond))
		}
	}
	return b.String()
}
