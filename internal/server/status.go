package server

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// StatusView is what the admin /status page shows, as /v1/status: one
// document an operator's browser polls, so that everything the page
// shows is from the same moment.
type StatusView struct {
	Time     string        `json:"time"`
	Node     NodeStatus    `json:"node"`
	Totals   StatusTotals  `json:"totals"`
	Apps     []AppView     `json:"apps"`
	Machines []MachineView `json:"machines"`
	Fleet    *FleetStatus  `json:"fleet,omitempty"`
	Guard    []LayerStatus `json:"guard"`
	Tripwire TripwireView  `json:"tripwire"`
	// Busiest and Oldest are the live connections that moved the most
	// bytes and that have lived longest, with their layer chains.
	Busiest []ConnView `json:"busiest"`
	Oldest  []ConnView `json:"oldest"`
}

// NodeStatus says which proxy this is.
type NodeStatus struct {
	Name       string `json:"name,omitempty"`
	Role       string `json:"role,omitempty"`
	Region     string `json:"region"`
	Version    string `json:"version"`
	Uptime     string `json:"uptime"`
	Goroutines int    `json:"goroutines"`
}

// StatusTotals are the process's counters since it started, summed over
// their labels.
type StatusTotals struct {
	ConnectionsActive   int64 `json:"connections_active"`
	ConnectionsAccepted int64 `json:"connections_accepted"`
	Requests            int64 `json:"requests"`
	Errors              int64 `json:"errors"`
	BytesIn             int64 `json:"bytes_in"`
	BytesOut            int64 `json:"bytes_out"`
	SpinKills           int64 `json:"spin_kills"`
	ZeroProgressReads   int64 `json:"zero_progress_reads"`
	TripwireTrips       int64 `json:"tripwire_trips"`
}

// FleetStatus is the fleet as this node sees it.
type FleetStatus struct {
	Connected  bool         `json:"connected"`
	CatalogAge string       `json:"catalog_age"`
	Nodes      []NodeRecord `json:"nodes"`
}

// NodeRecord is one fleet node and how long since it was heard from.
type NodeRecord struct {
	Name          string `json:"name"`
	Role          string `json:"role"`
	Region        string `json:"region"`
	Version       string `json:"version"`
	HeartbeatAge  string `json:"heartbeat_age"`
	HeartbeatSecs int64  `json:"heartbeat_secs"`
}

// LayerStatus is one guarded layer's counters: the spin detector's view.
type LayerStatus struct {
	Layer             string           `json:"layer"`
	Reads             int64            `json:"reads"`
	ZeroProgressReads int64            `json:"zero_progress_reads"`
	ReadsAfterEOF     int64            `json:"reads_after_eof"`
	Kills             map[string]int64 `json:"kills,omitempty"`
}

// TripwireView is the CPU tripwire and the profiles it left.
type TripwireView struct {
	Enabled bool          `json:"enabled"`
	Dir     string        `json:"dir,omitempty"`
	Trips   int64         `json:"trips"`
	Files   []ProfileFile `json:"files"`
}

// ProfileFile is one file the tripwire wrote, the newest first.
type ProfileFile struct {
	Name  string `json:"name"`
	Time  string `json:"time"`
	Bytes int64  `json:"bytes"`
}

// statusConns is how many connections each list of the page shows.
const statusConns = 10

// Status builds the status page's document.
func (s *Server) Status() StatusView {
	now := time.Now()
	rt := s.runtime()
	cfg := rt.Config
	v := StatusView{
		Time: now.UTC().Format(time.RFC3339),
		Node: NodeStatus{Region: cfg.Proxy.Region, Version: s.version,
			Uptime: now.Sub(s.started).Round(time.Second).String(), Goroutines: runtime.NumGoroutine()},
		Apps:     s.Apps(),
		Machines: s.Machines(),
	}
	// One pass over the connections for both lists.
	views := s.connViews()
	v.Busiest = sortConns(slices.Clone(views), statusConns, "busiest")
	v.Oldest = sortConns(views, statusConns, "oldest")
	if f := cfg.Fleet; f != nil {
		v.Node.Name, v.Node.Role = f.Node, f.Role
	}
	v.Totals = s.totals()
	s.guardStats.Each(func(name string, ls *iox.LayerStats) {
		l := LayerStatus{Layer: name, Reads: ls.Reads.Load(), ZeroProgressReads: ls.ZeroProgressReads.Load(), ReadsAfterEOF: ls.ReadsAfterEOF.Load()}
		ls.Kills.Range(func(k, n any) bool {
			if l.Kills == nil {
				l.Kills = map[string]int64{}
			}
			l.Kills[string(k.(iox.KillReason))] = n.(interface{ Load() int64 }).Load()
			return true
		})
		v.Guard = append(v.Guard, l)
	})
	sort.Slice(v.Guard, func(i, j int) bool { return v.Guard[i].Layer < v.Guard[j].Layer })
	tw := cfg.Tripwire
	v.Tripwire = TripwireView{Enabled: tw.TripwireEnabled(), Trips: v.Totals.TripwireTrips, Files: []ProfileFile{}}
	if v.Tripwire.Enabled {
		v.Tripwire.Dir = telemetry.TripwireDir(tw.Dir)
		v.Tripwire.Files = profileFiles(v.Tripwire.Dir, 5)
	}
	if n := s.fleet.Load(); n != nil {
		f := &FleetStatus{Connected: n.nc != nil && n.nc.IsConnected(), Nodes: []NodeRecord{},
			CatalogAge: n.age().Round(time.Second).String()}
		if nodes := s.nodes.Load(); nodes != nil {
			for _, r := range *nodes {
				f.Nodes = append(f.Nodes, nodeRecord(r, now))
			}
		}
		sort.Slice(f.Nodes, func(i, j int) bool { return f.Nodes[i].Name < f.Nodes[j].Name })
		v.Fleet = f
	}
	return v
}

func nodeRecord(r fleet.NodeRecord, now time.Time) NodeRecord {
	seen := r.Seen
	if seen.IsZero() {
		seen = r.Heartbeat
	}
	age := now.Sub(seen)
	return NodeRecord{Name: r.Name, Role: r.Role, Region: r.Region, Version: r.Version,
		HeartbeatAge: age.Round(time.Second).String(), HeartbeatSecs: int64(age.Seconds())}
}

// totals sums the counters the page shows from the metrics registry, so
// that the page and /metrics never disagree.
func (s *Server) totals() StatusTotals {
	var t StatusTotals
	fams, err := s.metrics.Registry.Gather()
	if err != nil && len(fams) == 0 {
		return t
	}
	fields := map[string]*int64{
		telemetry.ConnectionsActive: &t.ConnectionsActive, telemetry.ConnectionsAccepted: &t.ConnectionsAccepted,
		telemetry.HTTPRequests: &t.Requests, telemetry.Errors: &t.Errors,
		telemetry.BytesIn: &t.BytesIn, telemetry.BytesOut: &t.BytesOut,
		telemetry.SpinKills: &t.SpinKills, telemetry.GuardZeroProgressReads: &t.ZeroProgressReads,
		telemetry.TripwireTrips: &t.TripwireTrips,
	}
	for _, f := range fams {
		if dst, ok := fields[f.GetName()]; ok {
			*dst = int64(sumFamily(f))
		}
	}
	return t
}

func sumFamily(f *dto.MetricFamily) float64 {
	var sum float64
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		}
	}
	return sum
}

// profileFiles lists the newest files the tripwire wrote.
func profileFiles(dir string, n int) []ProfileFile {
	out := []ProfileFile{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		out = append(out, ProfileFile{Name: filepath.Join(dir, e.Name()), Time: info.ModTime().UTC().Format(time.RFC3339), Bytes: info.Size()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time > out[j].Time })
	if len(out) > n {
		out = out[:n]
	}
	return out
}
