package server_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// BenchmarkApplyFleet is the cost of applying a fleet catalog of 10,000
// apps with 30,000 machines after one change, whole and as a change to one
// app's machines: what every edge pays per coalesced batch of updates.
//
//	go test -run NONE -bench ApplyFleet -benchtime 10x ./internal/server/
func BenchmarkApplyFleet(b *testing.B) {
	p := quietEdge(b, 1)
	var apps []config.App
	for i := range 10000 {
		a := config.App{Name: fmt.Sprintf("app-%d", i), Hostnames: []string{fmt.Sprintf("app-%d.test", i)},
			HTTPService: &config.HTTPService{InternalPort: 8080}}
		for k := range 3 {
			a.Machines = append(a.Machines, config.Machine{ID: fmt.Sprintf("m%d", i+k*10000), Region: "iad",
				Address: "127.0.0.1", Ports: map[string]int{"8080": 1}, State: "started"})
		}
		config.AppDefaults(&a, "") // as the fleet watcher makes them
		apps = append(apps, a)
	}
	if err := p.ApplyFleet(apps); err != nil {
		b.Fatal(err)
	}
	b.Run("whole", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			apps[0].Machines[0].Cordoned = i%2 == 0
			if err := p.ApplyFleet(apps); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A machine change told as such: what an edge pays per batch of
	// starts, stops and cordons.
	b.Run("machine", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			next := slices.Clone(apps)
			next[0].Machines = slices.Clone(next[0].Machines)
			next[0].Machines[0].Cordoned = i%2 == 0
			if err := p.ApplyFleetChanges(next, []string{next[0].Name}); err != nil {
				b.Fatal(err)
			}
			apps = next
		}
		if m := p.Catalog().App(apps[0].Name).Machines[0]; m.Cordoned != apps[0].Machines[0].Cordoned {
			b.Fatal("the change was not applied")
		}
	})
}

// quietEdge is an edge in iad without an access log, serving the file's
// one app from a machine on port local.
func quietEdge(t testing.TB, local int) *proxytest.Proxy {
	return proxytest.Start(t, `
[proxy]
region = "iad"
[log]
access_log = "off"
`+singleApp(machine("local", local), httpService), proxytest.Options{})
}
