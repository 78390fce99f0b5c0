package server_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// TestApplyFleetChanges: a catalog told which apps changed rebuilds only
// those when nothing but their machines differ, and takes the whole path,
// with the same checks, for anything else.
func TestApplyFleetChanges(t *testing.T) {
	p := quietEdge(t, proxytest.Machine(t, "local"))
	fa, fb := proxytest.Machine(t, "fa"), proxytest.Machine(t, "fb")
	dead := proxytest.DeadPort(t)
	mk := func(id string, port int, state string) config.Machine {
		return config.Machine{ID: id, Region: "iad", Address: "127.0.0.1", Ports: map[string]int{"8080": port}, State: state}
	}
	check := config.HTTPCheck{TCPCheck: config.TCPCheck{Interval: config.CheckDuration(50 * time.Millisecond),
		Timeout: config.CheckDuration(40 * time.Millisecond)}}
	apps := []config.App{
		{Name: "a", Hostnames: []string{"a.test"}, HTTPService: &config.HTTPService{InternalPort: 8080,
			Checks: []config.HTTPCheck{check}}, Machines: []config.Machine{mk("fa", fa, "started")}},
		{Name: "b", Hostnames: []string{"b.test"}, HTTPService: &config.HTTPService{InternalPort: 8080},
			Machines: []config.Machine{mk("fb", fb, "started")}},
	}
	for i := range apps {
		// As the fleet watcher makes them (fleet.AppConfig): defaults
		// filled without a region, which is the edge's business.
		config.AppDefaults(&apps[i], "")
	}
	if err := p.ApplyFleet(apps); err != nil {
		t.Fatal(err)
	}
	until(t, "a served", func() bool {
		code, body := getHost(t, p, "a.test")
		return code == 200 && strings.Contains(body, `"fa"`)
	})
	change := func(name string, edit func(a *config.App)) {
		t.Helper()
		next := slices.Clone(apps)
		i := slices.IndexFunc(next, func(a config.App) bool { return a.Name == name })
		next[i].Machines = slices.Clone(next[i].Machines)
		edit(&next[i])
		if err := p.ApplyFleetChanges(next, []string{name}); err != nil {
			t.Fatal(err)
		}
		apps = next
	}

	// A machine stopped: its app is rebuilt, the other is shared as it was.
	b := p.Catalog().App("b")
	change("a", func(a *config.App) { a.Machines[0].State = "stopped" })
	if got := p.Catalog().App("a").Machines[0].State; got != "stopped" {
		t.Fatalf("state %q after the change", got)
	}
	if p.Catalog().App("b") != b {
		t.Error("an unchanged app was built again")
	}
	if code, _ := getHost(t, p, "a.test"); code == 200 {
		t.Error("a stopped machine still served")
	}
	if code, body := getHost(t, p, "b.test"); code != 200 || !strings.Contains(body, `"fb"`) {
		t.Errorf("the unchanged app: %d %s", code, body)
	}

	// A machine added whose check fails: the changed app's checks are
	// planned again, so it never takes traffic; the first one does.
	change("a", func(a *config.App) {
		a.Machines[0].State = "started"
		a.Machines = append(a.Machines, mk("fdead", dead, "started"))
	})
	until(t, "the machine whose check fails is out", func() bool {
		h := p.Catalog().App("a").Services[0].Health(p.Catalog().App("a").Machine("fdead"))
		return h != nil && !h.Healthy()
	})
	for range 10 {
		if code, body := getHost(t, p, "a.test"); code != 200 || !strings.Contains(body, `"fa"`) {
			t.Fatalf("with an unhealthy machine: %d %s", code, body)
		}
	}

	// Not a machine change: a new hostname takes the whole path.
	change("b", func(a *config.App) { a.Hostnames = []string{"b2.test"} })
	if code, body := getHost(t, p, "b2.test"); code != 200 || !strings.Contains(body, `"fb"`) {
		t.Errorf("renamed host: %d %s", code, body)
	}

	// A machine the config refuses refuses its app, as the whole path
	// would; the other app is untouched.
	change("b", func(a *config.App) { a.Machines[0].Address = "nowhere" })
	if p.Catalog().App("b") != nil {
		t.Error("an app with a bad machine address applied")
	}
	if code, body := getHost(t, p, "a.test"); code != 200 || !strings.Contains(body, `"fa"`) {
		t.Errorf("the other app: %d %s", code, body)
	}
	// And once fixed, it comes back (it was refused, so not a change to
	// the running catalog).
	change("b", func(a *config.App) { a.Machines[0].Address = "127.0.0.1" })
	if code, body := getHost(t, p, "b2.test"); code != 200 || !strings.Contains(body, `"fb"`) {
		t.Errorf("the fixed app: %d %s", code, body)
	}
}
