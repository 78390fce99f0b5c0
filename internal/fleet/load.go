package fleet

import (
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Load sharing. In-flight counts change thousands of times a second, so
// they are not state: each node publishes its share of every machine's
// load on a plain subject (not JetStream), only what changed, every
// LoadInterval, and a full report every loadFull. Every node keeps each
// other node's last report and balances on the sum; a node that goes
// quiet for loadExpiry is dropped, so a dead node's load decays to zero
// instead of pinning machines at their limit.
//
// Staleness bound: another node's share is at most LoadInterval plus the
// delivery time old (a few milliseconds on a LAN), and a dead node's share
// lingers at most loadExpiry. Two edges together can therefore admit, in
// the worst case, one interval's worth of requests over a machine's
// hard_limit before each sees the other's share.

const (
	// LoadInterval is how often a node reports what changed.
	LoadInterval = 250 * time.Millisecond
	loadFull     = 5 * time.Second
	loadExpiry   = 3 * time.Second
	loadSubject  = "ep.load." // + machine region + "." + node
)

// LoadKey names one machine's load for one service: app, service index
// and machine id.
type LoadKey struct {
	App     string `json:"a"`
	Service int    `json:"s"`
	Machine string `json:"m"`
}

// loadReport is one node's message: its share of each machine's load,
// only what changed (all of it every loadFull, for nodes that just
// joined); 0 means none, also for a machine that left the sender's
// catalog.
type loadReport struct {
	Schema int              `json:"schema"`
	Node   string           `json:"node"`
	Loads  map[string]int64 `json:"loads"`
}

// LoadView is what the sharing reads and writes of the node's catalog.
type LoadView interface {
	// Local lists this node's share of every machine's load, with the
	// machine's region.
	Local(yield func(k LoadKey, region string, n int64))
	// SetRemote sets the other nodes' share of one machine's load.
	SetRemote(k LoadKey, n int64)
}

// LoadSharing publishes this node's loads and sums the others'.
type LoadSharing struct {
	nc   *nats.Conn
	node string
	view func() LoadView
	log  *slog.Logger

	mu     sync.Mutex
	others map[string]*contribution // by node
	// sent is what was last reported of each key, and in which Tick the
	// key was last seen (Tick owns it): keys not seen in a Tick left the
	// catalog. Keys are the LoadKey values themselves, so a Tick over an
	// unchanged catalog builds no strings.
	sent map[LoadKey]sentLoad
	tick uint64
	full time.Time
}

type sentLoad struct {
	n      int64
	tick   uint64
	region string
}

type contribution struct {
	loads map[LoadKey]int64
	seen  time.Time
}

// ShareLoad starts publishing and receiving loads; regions are those whose
// machines' loads this node wants (nil: all). Stop it with Close.
func ShareLoad(nc *nats.Conn, node string, regions []string, view func() LoadView, log *slog.Logger) (*LoadSharing, error) {
	ls := &LoadSharing{nc: nc, node: node, view: view, log: log, others: map[string]*contribution{}, sent: map[LoadKey]sentLoad{}}
	subjects := []string{loadSubject + ">"}
	if len(regions) > 0 {
		// The "_" region carries the reports of nodes with nothing new.
		subjects = []string{loadSubject + "_.*"}
		for _, r := range regions {
			subjects = append(subjects, loadSubject+r+".*")
		}
	}
	for _, s := range subjects {
		if _, err := nc.Subscribe(s, ls.receive); err != nil {
			return nil, err
		}
	}
	return ls, nil
}

// Tick publishes what changed (all of it every loadFull) and drops nodes
// gone quiet. Call it every LoadInterval.
func (ls *LoadSharing) Tick(now time.Time) {
	full := now.Sub(ls.full) >= loadFull
	if full {
		ls.full = now
	}
	ls.tick++
	byRegion := map[string]*loadReport{}
	report := func(k LoadKey, region string, n int64) {
		r := byRegion[region]
		if r == nil {
			r = &loadReport{Schema: Schema, Node: ls.node, Loads: map[string]int64{}}
			byRegion[region] = r
		}
		r.Loads[jsonKey(k)] = n
	}
	ls.view().Local(func(k LoadKey, region string, n int64) {
		old, known := ls.sent[k]
		ls.sent[k] = sentLoad{n: n, tick: ls.tick, region: region}
		if full || !known || old.n != n {
			report(k, region, n)
		}
	})
	for k, v := range ls.sent {
		if v.tick != ls.tick {
			// The machine left this node's catalog: its share is none.
			delete(ls.sent, k)
			if v.n != 0 {
				report(k, v.region, 0)
			}
		}
	}
	for region, r := range byRegion {
		b, _ := json.Marshal(r)
		ls.nc.Publish(loadSubject+region+"."+ls.node, b)
	}
	if len(byRegion) == 0 {
		// Nothing changed: still say this node is alive, so its share
		// does not expire.
		b, _ := json.Marshal(&loadReport{Schema: Schema, Node: ls.node})
		ls.nc.Publish(loadSubject+"_."+ls.node, b)
	}
	ls.expire(now)
}

// jsonKey is a LoadKey as a report's map key.
func jsonKey(k LoadKey) string {
	b, _ := json.Marshal(k)
	return string(b)
}

func (ls *LoadSharing) receive(m *nats.Msg) {
	var r loadReport
	if json.Unmarshal(m.Data, &r) != nil || r.Schema < 1 || r.Schema > Schema || r.Node == ls.node || r.Node == "" {
		return
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	c := ls.others[r.Node]
	if c == nil {
		c = &contribution{loads: map[LoadKey]int64{}}
		ls.others[r.Node] = c
	}
	c.seen = time.Now()
	var touched []LoadKey
	for jk, n := range r.Loads {
		var k LoadKey
		if json.Unmarshal([]byte(jk), &k) != nil || n < 0 {
			continue
		}
		if n == 0 {
			delete(c.loads, k)
		} else {
			c.loads[k] = n
		}
		touched = append(touched, k)
	}
	ls.apply(touched)
}

// Reapply sets every remote share again: after the catalog was rebuilt,
// machines new to it start from zero.
func (ls *LoadSharing) Reapply() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var all []LoadKey
	for _, c := range ls.others {
		for k := range c.loads {
			all = append(all, k)
		}
	}
	ls.apply(all)
}

// expire drops nodes not heard from for loadExpiry.
func (ls *LoadSharing) expire(now time.Time) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var touched []LoadKey
	for node, c := range ls.others {
		if now.Sub(c.seen) > loadExpiry {
			for k := range c.loads {
				touched = append(touched, k)
			}
			delete(ls.others, node)
			ls.log.Info("fleet: a node's load report expired", "node", node)
		}
	}
	ls.apply(touched)
}

// apply sets the summed remote share of each touched key; ls.mu is held.
func (ls *LoadSharing) apply(keys []LoadKey) {
	if len(keys) == 0 {
		return
	}
	v := ls.view()
	for _, k := range keys {
		var sum int64
		for _, c := range ls.others {
			sum += c.loads[k]
		}
		v.SetRemote(k, sum)
	}
}
