//go:build linux

package fleet_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

const readyTimeout = 15 * time.Second

var (
	bin     proctest.Bin
	natsBin string
	natsErr error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// The NATS server edgeproxy embeds, as its own program: the same
	// version, nothing to install.
	path, cleanup, err := proctest.BuildProgram(context.Background(), "github.com/nats-io/nats-server/v2", "nats-server")
	defer cleanup()
	natsBin, natsErr = path, err
	return bin.Main(m, "fleet", true)
}

func startProc(t *testing.T, name, path string, args ...string) *proctest.Proc {
	t.Helper()
	lim := proctest.Limits{Lifetime: 5 * time.Minute, Grace: 10 * time.Second}
	return proctest.Run(t, lim, name, path, args...)
}

func edgeproxy(t *testing.T) string {
	t.Helper()
	return bin.Path(t, "the fleet suite runs three edges and NATS for a minute; skipped in -short mode")
}
