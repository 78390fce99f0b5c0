package upstream_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

const region = "ams"

// mach describes one machine of the test app; port, when set, is where
// the machine really listens for internal port 8080 (config `ports`).
type mach struct {
	id, region, state string
	port              int
}

// service builds app "web" with one TCP service on internal port 8080
// through config.Load and catalog.Build, as the server does.
func service(t testing.TB, hard int, ms ...mach) *catalog.Service {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[proxy]\nregion = %q\n[[apps]]\nname = \"web\"\n", region)
	b.WriteString("  [[apps.services]]\n  internal_port = 8080\n    [[apps.services.ports]]\n    port = 8080\n")
	if hard > 0 {
		fmt.Fprintf(&b, "    [apps.services.concurrency]\n    soft_limit = %d\n    hard_limit = %d\n", hard, hard)
	}
	for _, m := range ms {
		fmt.Fprintf(&b, "  [[apps.machines]]\n  id = %q\n  address = \"127.0.0.1\"\n", m.id)
		if m.region != "" {
			fmt.Fprintf(&b, "  region = %q\n", m.region)
		}
		if m.state != "" {
			fmt.Fprintf(&b, "  state = %q\n", m.state)
		}
		if m.port != 0 {
			fmt.Fprintf(&b, "  ports = { \"8080\" = %d }\n", m.port)
		}
	}
	path := filepath.Join(t.TempDir(), "edgeproxy.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := catalog.Build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return snap.App("web").Services[0]
}

func machine(t testing.TB, svc *catalog.Service, id string) *catalog.Machine {
	t.Helper()
	for _, m := range svc.App.Machines {
		if m.ID == id {
			return m
		}
	}
	t.Fatalf("no machine %q", id)
	return nil
}

func loadOf(t testing.TB, svc *catalog.Service, id string) int64 {
	t.Helper()
	return svc.Load(machine(t, svc, id)).Value()
}

// preload puts n units of load on a machine without a lease.
func preload(t testing.TB, svc *catalog.Service, id string, n int) {
	t.Helper()
	for range n {
		svc.Load(machine(t, svc, id)).TryAcquire(0)
	}
}

// wantCode fails unless err is a *perr.Error with the code.
func wantCode(t testing.TB, err error, code perr.Code) *perr.Error {
	t.Helper()
	pe, ok := perr.As(err)
	if !ok {
		t.Fatalf("error %v (%T) is not a *perr.Error, want %s", err, err, code)
	}
	if pe.Code != code {
		t.Fatalf("error code %s (%v), want %s", pe.Code, err, code)
	}
	return pe
}

// Intn sources that make the tie break deterministic. Pick keeps the
// first tied candidate unless intn answers 0, so lastTie always replaces
// and firstTie never does.
func lastTie(int) int    { return 0 }
func firstTie(n int) int { return n - 1 }

// deadPort is a loopback port that was bound and released, so a connect
// to it is refused.
func deadPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// liveMachine listens on loopback and greets every connection with its id,
// so a test can tell which machine it reached. It stops, with its accept
// loop and connection goroutines, when the test ends.
func liveMachine(t testing.TB, id string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("accept: %v", err)
				}
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.Write([]byte(id + "\n"))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}
