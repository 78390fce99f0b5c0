package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

// Change is one line of an apply's plan.
type Change struct {
	Op   string // add, update, remove
	Kind string // app, machine
	Name string // app, or app/machine@region
	app  *AppRecord
	mach *MachineRecord
}

func (c Change) String() string { return fmt.Sprintf("%-6s %-7s %s", c.Op, c.Kind, c.Name) }

// Plan compares a config file's apps and machines with the fleet's, for
// owner: what would be added, updated, and removed (only records owner
// wrote are ever removed). region is where machines without one run.
func (s *Store) Plan(ctx context.Context, apps []config.App, owner, region string) ([]Change, error) {
	have, err := s.Apps(ctx)
	if err != nil {
		return nil, err
	}
	machines, err := s.Machines(ctx, "")
	if err != nil {
		return nil, err
	}
	haveApps := map[string]*AppRecord{}
	for _, a := range have {
		haveApps[a.Name] = a
	}
	haveMachines := map[string]*MachineRecord{}
	for _, m := range machines {
		haveMachines[m.Region+"/"+MachineKey(m.App, m.ID)] = m
	}
	var plan []Change
	wantApps, wantMachines := map[string]bool{}, map[string]bool{}
	for _, a := range apps {
		rec := &AppRecord{Name: a.Name, Hostnames: a.Hostnames, Services: a.Services, HTTPService: a.HTTPService, Owner: owner}
		wantApps[a.Name] = true
		switch old := haveApps[a.Name]; {
		case old == nil:
			plan = append(plan, Change{Op: "add", Kind: "app", Name: a.Name, app: rec})
		case !sameApp(old, rec):
			plan = append(plan, Change{Op: "update", Kind: "app", Name: a.Name, app: rec})
		}
		for _, m := range a.Machines {
			r := m.Region
			if r == "" {
				r = region
			}
			rec := &MachineRecord{ID: m.ID, App: a.Name, Region: r, Address: m.Address, Ports: m.Ports,
				State: m.State, Cordoned: m.Cordoned, Owner: owner, ProcessGroup: m.ProcessGroup}
			if rec.State == "" {
				rec.State = "started"
			}
			key := r + "/" + MachineKey(a.Name, m.ID)
			wantMachines[key] = true
			name := a.Name + "/" + m.ID + "@" + r
			switch old := haveMachines[key]; {
			case old == nil:
				plan = append(plan, Change{Op: "add", Kind: "machine", Name: name, mach: rec})
			case !sameMachine(old, rec):
				rec.Version = old.Version
				plan = append(plan, Change{Op: "update", Kind: "machine", Name: name, mach: rec})
			}
		}
	}
	for key, m := range haveMachines {
		if m.Owner == owner && !wantMachines[key] {
			plan = append(plan, Change{Op: "remove", Kind: "machine", Name: m.App + "/" + m.ID + "@" + m.Region, mach: m})
		}
	}
	for name, a := range haveApps {
		if a.Owner == owner && !wantApps[name] {
			plan = append(plan, Change{Op: "remove", Kind: "app", Name: name, app: a})
		}
	}
	slices.SortStableFunc(plan, func(a, b Change) int { return order(a) - order(b) })
	return plan, nil
}

// order applies apps before their machines, and removes machines before
// their apps.
func order(c Change) int {
	switch {
	case c.Op != "remove" && c.Kind == "app":
		return 0
	case c.Op != "remove":
		return 1
	case c.Kind == "machine":
		return 2
	}
	return 3
}

// Apply carries out a plan, reporting each change to w.
func (s *Store) Apply(ctx context.Context, plan []Change, w io.Writer) error {
	for _, c := range plan {
		var err error
		switch {
		case c.Kind == "app" && c.Op == "remove":
			err = s.DeleteApp(ctx, c.app.Name)
		case c.Kind == "app":
			err = s.PutApp(ctx, c.app)
		case c.Op == "remove":
			err = s.DeleteMachine(ctx, c.mach.Region, c.mach.App, c.mach.ID)
		default:
			err = s.PutMachine(ctx, c.mach)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", c, err)
		}
		fmt.Fprintln(w, c)
	}
	return nil
}

func sameApp(a, b *AppRecord) bool {
	return a.Owner == b.Owner && slices.Equal(a.Hostnames, b.Hostnames) && sameJSON(a.Services, b.Services) &&
		sameJSON(a.HTTPService, b.HTTPService)
}

func sameMachine(a, b *MachineRecord) bool {
	return a.Address == b.Address && a.State == b.State && a.Cordoned == b.Cordoned && a.Owner == b.Owner &&
		a.ProcessGroup == b.ProcessGroup && reflect.DeepEqual(a.Ports, b.Ports)
}

// sameJSON compares values as they are stored.
func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
