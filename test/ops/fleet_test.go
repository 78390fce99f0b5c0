//go:build linux

package ops_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// TestUpgradeWithEmbeddedFleet: a node that runs the fleet's NATS server
// itself is upgraded with "edgeproxy upgrade" under load on a fleet app.
// The old process lets go of the NATS port and serves from the catalog it
// applied last; the new one opens the port on the same store, so no
// request fails, the fleet's apps stay, and a change written after the
// upgrade applies.
func TestUpgradeWithEmbeddedFleet(t *testing.T) {
	e := startEnv(t, variant{fleet: true})
	st := proxytest.FleetStore(t, "nats://"+e.natsAddr)
	ctx := t.Context()
	if err := st.PutApp(ctx, &fleet.AppRecord{Name: "fleetapp", Hostnames: []string{"fleet.test"},
		HTTPService: &config.HTTPService{InternalPort: 8080}}); err != nil {
		t.Fatal(err)
	}
	m := &fleet.MachineRecord{ID: "f1", App: "fleetapp", Region: "iad", Address: "127.0.0.1",
		Ports: map[string]int{"8080": e.demo[2]}, State: "started"}
	if err := st.PutMachine(ctx, m); err != nil {
		t.Fatal(err)
	}
	url := "http://127.0.0.1:" + strconv.Itoa(e.ports.p80) + "/"
	get := func(c *http.Client) (int, string, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = "fleet.test"
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	fresh := func() *http.Client { return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}} }
	if !waitFor(10*time.Second, func() bool {
		code, body, err := get(fresh())
		return err == nil && code == 200 && strings.Contains(body, `"d3"`)
	}) {
		t.Fatal("the fleet app is not served")
	}

	var served, failed atomic.Int64
	var firstErr atomic.Pointer[string]
	loadCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			c := fresh()
			defer c.CloseIdleConnections()
			for loadCtx.Err() == nil {
				code, body, err := get(c)
				if err == nil && code == 200 && strings.Contains(body, `"d3"`) {
					served.Add(1)
				} else {
					failed.Add(1)
					msg := strconv.Itoa(code) + " " + body
					if err != nil {
						msg = err.Error()
					}
					firstErr.CompareAndSwap(nil, &msg)
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	old, cur := e.upgrade()
	if st, err := e.sup.waitExit(old, exitWait); err != nil || st != 0 {
		t.Errorf("old pid %d: status %d, %v", old, st, err)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()
	t.Logf("upgrade of a node running the embedded NATS server (pid %d -> %d) under load: %d requests served, %d failed",
		old, cur, served.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d requests failed across the upgrade, the first: %s", failed.Load(), *firstErr.Load())
	}

	// The new process holds the store: a change written now applies.
	m.Cordoned = true
	if !waitFor(10*time.Second, func() bool { return st.PutMachine(ctx, m) == nil }) {
		t.Fatal("the store does not take writes after the upgrade")
	}
	if !waitFor(10*time.Second, func() bool { code, _, err := get(fresh()); return err == nil && code == 503 }) {
		code, body, err := get(fresh())
		t.Errorf("a machine cordoned after the upgrade still served: %d %s %v", code, body, err)
	}
}
