package server_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// TestStatusShowsTheFleet: the status document of an edge lists the
// fleet's nodes with their roles, and the worker's machine with its
// region and load.
func TestStatusShowsTheFleet(t *testing.T) {
	b := startBackhaulPair(t, proxytest.Options{})
	waitFor(t, "the edge to see both nodes and the machine", 10*time.Second, func() bool {
		st := b.edge.Server.Status()
		return st.Fleet != nil && len(st.Fleet.Nodes) == 2 && len(st.Machines) == 1
	})
	st := b.edge.Server.Status()
	if !st.Fleet.Connected {
		t.Error("fleet not connected")
	}
	roles := map[string]string{}
	for _, n := range st.Fleet.Nodes {
		roles[n.Name] = n.Role
		if n.HeartbeatSecs > 60 {
			t.Errorf("node %s last heard from %s ago", n.Name, n.HeartbeatAge)
		}
	}
	if roles["w1"] != "worker" || roles["e1"] != "edge" {
		t.Errorf("nodes: %v", roles)
	}
	if st.Node.Name != "e1" || st.Node.Role != "edge" || st.Node.Region != "iad" {
		t.Errorf("node: %+v", st.Node)
	}
	if len(st.Machines) != 1 || st.Machines[0].ID != "m1" {
		t.Fatalf("machines: %+v", st.Machines)
	}

	// Requests through the edge show in its totals.
	before := st.Totals.Requests
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("GET", "http://"+b.edge.Addr(80)+"/", nil)
		req.Host = "app.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	waitFor(t, "the requests to be counted", 5*time.Second, func() bool {
		return b.edge.Server.Status().Totals.Requests >= before+3
	})
}
