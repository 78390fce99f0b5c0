package server_test

import (
	"fmt"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// BenchmarkApplyFleet is the cost of applying a fleet catalog of 10,000
// apps with 30,000 machines after one change: what every edge pays per
// coalesced batch of updates.
//
//	go test -run NONE -bench ApplyFleet -benchtime 10x ./internal/server/
func BenchmarkApplyFleet(b *testing.B) {
	p := proxytest.Start(b, `
[proxy]
region = "iad"
[log]
access_log = "off"
`+singleApp(machine("local", 1), httpService), proxytest.Options{})
	var apps []config.App
	for i := range 10000 {
		a := config.App{Name: fmt.Sprintf("app-%d", i), Hostnames: []string{fmt.Sprintf("app-%d.test", i)},
			HTTPService: &config.HTTPService{InternalPort: 8080}}
		for k := range 3 {
			a.Machines = append(a.Machines, config.Machine{ID: fmt.Sprintf("m%d", i+k*10000), Region: "iad",
				Address: "127.0.0.1", Ports: map[string]int{"8080": 1}, State: "started"})
		}
		apps = append(apps, a)
	}
	if err := p.ApplyFleet(apps); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		apps[0].Machines[0].Cordoned = i%2 == 0
		if err := p.ApplyFleet(apps); err != nil {
			b.Fatal(err)
		}
	}
}
