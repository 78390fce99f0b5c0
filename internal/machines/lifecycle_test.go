package machines

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// memDriver is a driver whose machines are entries in a map.
type memDriver struct {
	mu     sync.Mutex
	states map[string]State
	stops  []string
}

func (d *memDriver) set(id string, s State) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.states[id] = s
}

func (d *memDriver) Start(_ context.Context, m Machine) error { d.set(m.ID, Started); return nil }
func (d *memDriver) Stop(_ context.Context, m Machine, _ syscall.Signal, _ time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.states[m.ID] = Stopped
	d.stops = append(d.stops, m.ID)
	return nil
}
func (d *memDriver) Suspend(_ context.Context, m Machine) error { d.set(m.ID, Suspended); return nil }
func (d *memDriver) State(_ context.Context, m Machine) (State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.states[m.ID]; ok {
		return s, nil
	}
	return Stopped, nil
}
func (d *memDriver) Wait(context.Context, Machine, State) error { return nil }
func (d *memDriver) Close() error                               { return nil }

// TestAutostopDecisions: one pass stops at most one machine per region:
// the least loaded, where started machines exceed those over their soft
// limit plus one; a lone machine only at zero load; never below
// min_machines_running in the primary region.
func TestAutostopDecisions(t *testing.T) {
	cases := []struct {
		name     string
		machines map[string]string // id → region, all started
		load     map[string]int64  // in flight; >= 10 is over soft
		min      int
		want     []string // stopped by one pass
	}{
		{"idle pair: one stops", map[string]string{"a": "iad", "b": "iad"}, nil, 0, []string{"a"}},
		{"least loaded stops", map[string]string{"a": "iad", "b": "iad"}, map[string]int64{"a": 3, "b": 1}, 0, []string{"b"}},
		{"all over soft: none", map[string]string{"a": "iad", "b": "iad"}, map[string]int64{"a": 12, "b": 11}, 0, nil},
		{"one over soft of three: one stops", map[string]string{"a": "iad", "b": "iad", "c": "iad"}, map[string]int64{"a": 12, "b": 2, "c": 1}, 0, []string{"c"}},
		{"lone idle machine stops", map[string]string{"a": "iad"}, nil, 0, []string{"a"}},
		{"lone busy machine stays", map[string]string{"a": "iad"}, map[string]int64{"a": 1}, 0, nil},
		{"min_machines_running in the primary region", map[string]string{"a": "iad", "b": "iad"}, nil, 2, nil},
		{"min_machines_running counts only the primary region", map[string]string{"a": "iad", "o": "ord"}, nil, 1, []string{"o"}},
		{"one per region per pass", map[string]string{"a": "iad", "b": "iad", "c": "iad", "o": "ord", "p": "ord"}, nil, 0, []string{"a", "o"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &memDriver{states: map[string]State{}}
			var mu sync.Mutex
			applied := 0
			c := NewController(slog.New(slog.NewTextHandler(io.Discard, nil)), nil, Hooks{
				Apply: func(string) { mu.Lock(); applied++; mu.Unlock() },
				Ready: func(context.Context, string, Machine) error { return nil },
				Load: func(_, id string) (int64, bool) {
					mu.Lock()
					defer mu.Unlock()
					n := tc.load[id]
					if slices.Contains(d.stops, id) {
						n = 0
					}
					return n, n >= 10
				},
			})
			c.drain = 50 * time.Millisecond
			defer c.Close()
			spec := AppSpec{Name: "web", Driver: d, KillTimeout: time.Second, StartTimeout: time.Second,
				Autostop: "stop", Interval: time.Hour, MinRunning: tc.min, PrimaryRegion: "iad"}
			for id, region := range tc.machines {
				d.set(id, Started)
				spec.Machines = append(spec.Machines, MachineSpec{Machine: Machine{App: "web", ID: id, Region: region}, Initial: Started})
			}
			slices.SortFunc(spec.Machines, func(x, y MachineSpec) int { return strings.Compare(x.ID, y.ID) })
			c.Sync([]AppSpec{spec})
			// Discovery reads every machine started.
			deadline := time.Now().Add(5 * time.Second)
			for {
				n := 0
				for id := range tc.machines {
					if s, _ := c.Status("web", id); s.State == Started {
						n++
					}
				}
				if n == len(tc.machines) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("machines not discovered started")
				}
				time.Sleep(5 * time.Millisecond)
			}
			c.mu.Lock()
			a := c.apps["web"]
			c.mu.Unlock()
			c.autostop(a)
			// The stops run in the background: wait for them.
			want := slices.Clone(tc.want)
			slices.Sort(want)
			deadline = time.Now().Add(15 * time.Second)
			var got []string
			for {
				d.mu.Lock()
				got = slices.Clone(d.stops)
				d.mu.Unlock()
				slices.Sort(got)
				if len(got) >= len(want) || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			// A stop beyond the wanted ones would show by now (after the
			// drain of a machine with work).
			time.Sleep(c.drain + 150*time.Millisecond)
			d.mu.Lock()
			got = slices.Clone(d.stops)
			d.mu.Unlock()
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("stopped %v, want %v", got, want)
			}
		})
	}
}
